"""atheris harness for a stream: ``read_frames`` over several raw messages, and the handshakes.

Run from the repository root, with atheris installed (``pip install -e '.[fuzz]'``)::

    python fuzz/fuzz_frames.py -atheris_runs=200000            # seeds only
    python fuzz/fuzz_frames.py CORPUS_DIR -atheris_runs=200000  # grow a corpus
    python fuzz/fuzz_frames.py crash-<sha1>                     # replay one input

An input is one stream. Its first byte holds flags: bit 0, the client's side (it reads
``StreamResponse``\\ s; else the server's, ``StreamRequest``\\ s); bit 1, tracing; bit 2,
the client's handshake expects a node id; bit 3, an inbound budget of 0 (only the floor of
32 times a frame's size is left). The rest is the stream's raw gRPC messages, each a 2-byte
big-endian length and that many bytes (the last one takes what is left). The first raw
message also goes through both handshakes (the server's Hello check, the client's Welcome
check) and ``claimed_node_id``. Without a corpus directory it starts from seeds (valid
streams of every message shape, pulses, handshakes) in a temporary directory; other
libFuzzer flags pass through (``-max_len=4096``, ``-seed=1``, ``-artifact_prefix=DIR/``).

The checks are ``fuzz/oracles.py``'s: ``read_frames`` raises nothing but ``FrameError``,
delivers exactly the well-formed frames it read before a bad one (minus orphaned chunks, and
refusing a frame above its budget), every message with a shape of DESIGN.md §3; the
handshakes accept exactly what the protocol allows. A failed check is an uncaught
exception: atheris prints it and writes the input to ``crash-<sha1>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["raftgrpc", "fuzz"]):
    from fuzz import oracles
    from fuzz.harness import run
    from raftgrpc._protocol import codec
    from raftgrpc._protocol.frames import PULSE_REQUEST, PULSE_RESPONSE


def split(data: bytes) -> tuple[int, list[bytes]]:
    """The flags byte and the raw messages of an input."""
    if not data:
        return 0, []
    flags, rest, raws = data[0], memoryview(data)[1:], []
    while rest:
        size = int.from_bytes(rest[:2], "big")
        raws.append(bytes(rest[2 : 2 + size]))
        rest = rest[2 + size :]
    return flags, raws


def join(flags: int, raws: list[bytes]) -> bytes:
    """The input that :func:`split` turns into ``flags`` and ``raws``."""
    return bytes([flags]) + b"".join(len(r).to_bytes(2, "big") + r for r in raws)


def test_one_input(data: bytes) -> None:
    flags, raws = split(data)
    budget = 0 if flags & 8 else None
    oracles.read_stream(raws, bool(flags & 1), bool(flags & 2), budget)
    if raws:
        oracles.server_handshake(raws[0])
        oracles.claimed(raws[0])
        oracles.peer_handshake(raws[0], oracles.SELF_NODE_ID if flags & 4 else None)


def seeds() -> list[bytes]:
    encoded = oracles.sample_encoded()
    out = []
    for flags in range(16):
        wrap = codec.response_frame_bytes if flags & 1 else codec.request_frame_bytes
        pulse = PULSE_RESPONSE if flags & 1 else PULSE_REQUEST
        out.append(join(flags, [wrap(encoded)]))
        out.append(join(flags, [wrap([e]) for e in encoded[:6]] + [pulse]))
    out += [join(flags, [raw]) for flags in (0, 5) for raw in oracles.sample_handshakes()]
    return out


if __name__ == "__main__":
    run(test_one_input, seeds(), "frames")
