"""atheris harness for the codec: each input is one serialized ``RaftMessage`` and one ``Frame``.

Run from the repository root, with atheris installed (``pip install -e '.[fuzz]'``)::

    python fuzz/fuzz_codec.py -atheris_runs=200000            # seeds only
    python fuzz/fuzz_codec.py CORPUS_DIR -atheris_runs=200000  # grow a corpus
    python fuzz/fuzz_codec.py crash-<sha1>                     # replay one input

Without a corpus directory it starts from seeds (one valid message of every shape) in a
temporary directory. Other libFuzzer flags pass through (``-max_len=4096``, ``-seed=1``,
``-artifact_prefix=DIR/``). The checks are ``fuzz/oracles.py``'s: the input as a message
and as a frame is decoded or rejected with ``DecodeError`` / ``CodecError`` only, and what
is decoded has a shape of DESIGN.md §3 and encodes back to itself. A failed check is an
uncaught exception: atheris prints it and writes the input to ``crash-<sha1>``.
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


def test_one_input(data: bytes) -> None:
    oracles.decode_single(data)
    oracles.decode_frame(data)


def seeds() -> list[bytes]:
    encoded = oracles.sample_encoded()
    return [*encoded, codec.frame_bytes(encoded), codec.frame_bytes(encoded[:3]), b""]


if __name__ == "__main__":
    run(test_one_input, seeds(), "codec")
