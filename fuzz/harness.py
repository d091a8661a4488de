"""The ``main`` of the atheris harnesses: seeds when no corpus is given, then libFuzzer."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris


def run(test_one_input: Callable[[bytes], None], seeds: list[bytes], name: str) -> None:
    """Fuzz ``test_one_input`` with ``sys.argv``'s libFuzzer flags and corpus directories.

    Without a corpus directory or input file, the seeds are written to a temporary
    directory, used as the corpus, and removed when fuzzing ends. A corpus directory given
    but empty is filled with the seeds first.
    """
    argv = list(sys.argv)
    paths = [Path(a) for a in argv[1:] if not a.startswith("-")]
    made: Path | None = None
    if not paths:
        made = Path(tempfile.mkdtemp(prefix=f"raftgrpc-fuzz-{name}-"))
        argv.append(str(made))
        paths = [made]
    corpus = paths[0]
    if corpus.is_dir() or not corpus.exists():
        corpus.mkdir(parents=True, exist_ok=True)
        if not any(corpus.iterdir()):
            for i, seed in enumerate(seeds):
                (corpus / f"seed-{i:03d}").write_bytes(seed)
    atheris.Setup(argv, test_one_input)
    try:
        atheris.Fuzz()
    finally:  # reached only if libFuzzer returns rather than exits
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    sys.exit(0)
