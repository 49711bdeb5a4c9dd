# Every target creates and uses the project virtual environment (.venv) from requirements.lock.
VENV   := .venv
PY     := $(VENV)/bin/python
CTLOOP := $(VENV)/bin/ctloop
UV     := $(VENV)/bin/uv
BUILD  ?= build

.PHONY: setup demo test compile lint bench docs clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	test -x $(UV) || $(PY) -m pip install -q "$$(grep '^uv==' requirements.lock)"
	$(UV) pip sync -q --python $(PY) requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	touch $@

demo: setup
	$(CTLOOP) demo

test: setup
	$(PY) -m pytest -q

compile: setup
	$(CTLOOP) compile --output-dir $(BUILD)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup
	$(PY) tests/benchmarks/bench_training.py
	$(PY) tests/benchmarks/bench_pipeline.py

clean:
	rm -rf $(VENV) $(BUILD) .ctloop

docs: setup
	$(PY) -c "from ctloop.pipelines.reference_docs import update_readme; update_readme('README.md')"
