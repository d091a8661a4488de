"""Fuzzing of raftgrpc's wire decoders.

``fuzz/oracles.py`` says what every decode entry point may do with bytes from a peer; the
atheris harnesses ``fuzz/fuzz_codec.py`` and ``fuzz/fuzz_frames.py`` and the hypothesis
tests in ``tests/test_fuzz.py`` share it. Run a harness with
``python fuzz/fuzz_codec.py -atheris_runs=100000`` (``pip install -e '.[fuzz]'`` first).
"""
