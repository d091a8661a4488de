"""The two I/O cores prototyped before the transport's was chosen (see bench/prototypes/run.py)."""
