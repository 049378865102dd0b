# make demo — the main job; make test — the test suite; make bench — benchmarks (ratios, one run).
# Each creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test bench quickstart clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The ladder bot (examples/ladder_bot) against the loopback Discord: ~60 users for ~30 s, then a summary.
demo: $(STAMP)
	$(BIN)/python -m autoperf run --summary --simulate examples/ladder_bot/scenario.yaml examples/ladder_bot/bot.py

quickstart: $(STAMP)
	$(BIN)/python -m autoperf run --summary --config examples/quickstart/autoperf.yaml examples/quickstart/app.py

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	@for f in tests/bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) logs reports .pytest_cache
