# Two entry points: `make demo` and `make test`. Each creates the project-local
# virtual environment on first use and installs the pinned dependencies into it.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export GLOG_v ?= 3
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test env clean-env

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,demo]"
	touch $(STAMP)

# The whole workflow on the embedded demo, then its accuracy table (eval vs deployed model).
demo: $(STAMP)
	$(BIN)/snakemake --cores 2
	@cat results/demo/logs/summary.log

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean-env:
	rm -rf $(VENV)
