# bfs-tools: every target creates and uses its own virtualenv in .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := build/demo.img

.PHONY: install demo test test-fast lint formats-doc bench fuzz crash crash-exhaustive clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the shipped sample tree: format from a directory, check, dump.
demo: $(STAMP)
	mkdir -p build
	$(BIN)/bfs format $(DEMO) --size 64M --force --source fixtures/sample-tree
	$(BIN)/bfs check -n $(DEMO)
	$(BIN)/bfs dump super $(DEMO)
	$(BIN)/bfs ls -l -R $(DEMO) /
	$(BIN)/bfs df $(DEMO)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check bfs_tools formats tests bench

formats-doc: $(STAMP)
	$(BIN)/python -m bfs_tools.formats_gen doc > formats/FORMAT.md.new
	mv formats/FORMAT.md.new formats/FORMAT.md
	$(BIN)/python -m bfs_tools.formats_gen layouts > bfs_tools/layouts.py.new
	mv bfs_tools/layouts.py.new bfs_tools/layouts.py

# Benchmarks run a regular (non-editable) install, as users get it: the
# editable install's import hook alone costs ~50 ms per process here. Its
# interpreter is the distribution's python3 (what `apt install`/pipx users run),
# when it can make a virtualenv: Debian builds it with PGO and LTO, and on this
# machine the `python3` first on PATH is a plain pyenv build (no PGO/LTO, shared
# libpython) that runs the same bfs ~10 % slower. BENCH_PYTHON=... overrides it.
BENCH_VENV := .venv-bench
BENCH_PYTHON ?= $(shell /usr/bin/python3 -c "import ensurepip, venv" 2>/dev/null \
                  && echo /usr/bin/python3 || echo $(PYTHON))
bench:
	rm -rf $(BENCH_VENV)
	$(BENCH_PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q .
	$(BENCH_VENV)/bin/python bench/run.py $(BENCH_ARGS)

fuzz: $(STAMP)
	BFS_FUZZ_FULL=1 $(BIN)/python -m pytest -n 2 tests/fuzz -m "slow or not slow"

crash: $(STAMP)
	BFS_CRASH_FULL=1 $(BIN)/python -m pytest -n 2 tests/crash -m "slow or not slow"

crash-exhaustive: $(STAMP)
	BFS_CRASH_FULL=1 BFS_CRASH_EXHAUSTIVE=1 $(BIN)/python -m pytest -n 2 tests/crash -m "slow or not slow"

clean:
	rm -rf $(VENV) $(BENCH_VENV) build .pytest_cache
