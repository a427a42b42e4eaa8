# sandrun-p2p: every target sets up what it needs (idempotent) on a fresh Debian with Python 3.11.
#   make demo   - a real local network doing real jobs (see README)
#   make test   - everything CI runs: lint, contract artifact check, js-ipfs daemon, the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test lint testnet selfcheck bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	bash scripts/demo.sh

selfcheck: setup
	$(BIN)/sandrun-p2p selfcheck

testnet: setup
	$(BIN)/sandrun-p2p testnet --nodes 3

test: setup
	bash scripts/test.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	for b in bench/*.py; do [ $$b = bench/sampler.py ] && continue; echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .data build *.egg-info .pytest_cache .ruff_cache
