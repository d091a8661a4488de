# Every target bootstraps .venv from the project's own files (pyproject.toml, package.json).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BUF    := node_modules/.bin/buf
PROTO  := proto/raftgrpc/v1/transport.proto proto/raftgrpc/v1/admin.proto

.PHONY: venv test test-all demo proto proto-check lint bench bench-full bench-migration bench-prototypes fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## test: the whole suite but the slow variants (what CI runs)
test: $(STAMP)
	$(PY) -m pytest -q

## test-all: every test, the slow variants too
test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

## demo: the traced 3-node cluster (JWT, tracing, logging, a leader failover)
demo: $(STAMP)
	$(PY) examples/traced_cluster.py

## proto: regenerate raftgrpc/v1 from proto/
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO)

## proto-check: fail if the committed generated code differs from proto/
proto-check: $(STAMP)
	$(PY) -m pytest -q tests/test_generated.py

$(BUF): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $(BUF)

## lint: ruff, mypy (strict) and buf lint
lint: $(STAMP) $(BUF)
	$(VENV)/bin/ruff check raftgrpc tests examples bench fuzz
	$(VENV)/bin/ruff format --check raftgrpc tests examples bench fuzz
	$(VENV)/bin/mypy
	$(BUF) lint

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

## bench: the quick benchmark matrix against TCPTransport (docs/benchmarks.md and .svg), then
## the commit latency hop by hop (docs/breakdown.md); about 15 minutes on 2 cores
bench: $(BENCH_STAMP)
	$(PY) bench/run.py
	$(PY) bench/breakdown.py

## bench-prototypes: the I/O cores prototyped for issue 12, same run (docs/prototypes.md)
bench-prototypes: $(BENCH_STAMP)
	$(PY) bench/prototypes/run.py

## bench-full: the full matrix (about 40 minutes on 2 cores)
bench-full: $(BENCH_STAMP)
	$(PY) bench/run.py --full

FUZZ_RUNS ?= 1000000

## fuzz: both atheris harnesses (FUZZ_RUNS executions each, corpus in .fuzz/), then the long hypothesis run (~15 min)
fuzz: $(STAMP)
	mkdir -p .fuzz/codec .fuzz/frames
	$(PY) fuzz/fuzz_codec.py .fuzz/codec -atheris_runs=$(FUZZ_RUNS) -max_len=4096 -artifact_prefix=.fuzz/
	$(PY) fuzz/fuzz_frames.py .fuzz/frames -atheris_runs=$(FUZZ_RUNS) -max_len=4096 -artifact_prefix=.fuzz/
	$(PY) -m pytest -q -m slow tests/test_fuzz.py

## bench-migration: rolling migrations under a write load, 3 rounds of each plan (about 10 minutes)
bench-migration: $(BENCH_STAMP)
	$(PY) bench/migration.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis .fuzz
