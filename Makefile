# make demo — the main job; make test — the test suite; make bench — benchmarks (ratios, one run).
# Each creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
# The oldest discord.py we support (2.0.1) in a venv of its own; CI tests it next to the newest.
OLD       := .venv-dpy20
OLD_STAMP := $(OLD)/.installed-dev
DISCORD_TESTS := tests/test_integration_discord.py tests/test_ladder_bot.py tests/test_discord_sim.py tests/test_discord_targets.py

.PHONY: demo test bench quickstart clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(OLD_STAMP): pyproject.toml
	$(PYTHON) -m venv $(OLD)
	$(OLD)/bin/python -m pip install -q --upgrade pip
	$(OLD)/bin/python -m pip install -q -e '.[dev]' 'discord.py==2.0.1'
	touch $(OLD_STAMP)

# The ladder bot (examples/ladder_bot) against the loopback Discord: ~60 users for ~30 s, then a summary.
demo: $(STAMP)
	$(BIN)/python -m autoperf run --summary --simulate examples/ladder_bot/scenario.yaml examples/ladder_bot/bot.py

quickstart: $(STAMP)
	$(BIN)/python -m autoperf run --summary --config examples/quickstart/autoperf.yaml examples/quickstart/app.py

test: $(STAMP) $(OLD_STAMP)
	$(OLD)/bin/python -m pytest -p no:cacheprovider $(DISCORD_TESTS)
	$(BIN)/python -m pytest

bench: $(STAMP)
	@for f in tests/bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) $(OLD) logs reports .pytest_cache
