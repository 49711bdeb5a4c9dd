# Every target creates and uses the project virtual environment (.venv) from requirements.lock.
VENV   := .venv
PY     := $(VENV)/bin/python
CTLOOP := $(VENV)/bin/ctloop
UV     := $(VENV)/bin/uv
BUILD  ?= build

.PHONY: setup integrations demo test compile lint bench soak docs clean

# Installs write compiled bytecode: a local run starts a Python process a step, and the tests
# many more; where PYTHONDONTWRITEBYTECODE is set (CI, containers) each one recompiled what it
# imported from source. Importing mlflow, kfp, xgboost, pandas and kserve: 7.5 s, then 2.8 s.
export UV_COMPILE_BYTECODE := 1

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	test -x $(UV) || $(PY) -m pip install -q "$$(grep '^uv==' requirements.lock)"
	$(UV) pip sync -q --python $(PY) requirements.lock
	$(UV) pip install -q --python $(PY) --no-deps -e .
	touch $@

demo: setup
	$(CTLOOP) demo

# Optional integrations (pyproject's extras) pin what they add in locks of their own,
# requirements-extra-NAME.lock, compiled with requirements.lock as constraints so they change
# none of its versions; a tool whose pins clash with ours gets a virtual environment of its own,
# .venv-NAME, from requirements-tool-NAME.lock. `make test` installs both, so every
# integration's tests run; `make setup` alone (and the images) never does.
EXTRA_LOCKS := $(wildcard requirements-extra-*.lock)
TOOL_LOCKS  := $(wildcard requirements-tool-*.lock)

integrations: $(VENV)/.integrations

$(VENV)/.integrations: $(VENV)/.installed $(EXTRA_LOCKS) $(TOOL_LOCKS)
	for lock in $(EXTRA_LOCKS); do $(UV) pip install -q --python $(PY) -r $$lock || exit 1; done
	for lock in $(TOOL_LOCKS); do \
	  name=$${lock#requirements-tool-}; venv=.venv-$${name%.lock}; \
	  test -x $$venv/bin/python || python3 -m venv $$venv || exit 1; \
	  $(UV) pip sync -q --python $$venv/bin/python $$lock || exit 1; \
	done
	touch $@

# One pytest-xdist worker per core; tests/conftest.py keeps each module, and all the tests of an
# expensive session fixture (the training loop, the kube-apiserver), on one worker, those first.
test: setup integrations
	$(PY) -m pytest -q -n auto --dist loadgroup --no-loadscope-reorder

compile: setup
	$(CTLOOP) compile --output-dir $(BUILD)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: setup
	$(UV) pip install -q --python $(PY) -r requirements-bench.lock
	$(PY) tests/benchmarks/bench_training.py
	$(PY) tests/benchmarks/bench_pipeline.py
	$(PY) tests/benchmarks/bench_drift.py
	$(PY) tests/benchmarks/bench_serving.py
	$(PY) tests/benchmarks/bench_shadow_serving.py
	$(PY) tests/benchmarks/bench_shadow_power.py
	$(PY) tests/benchmarks/bench_prediction_log.py
	$(PY) tests/benchmarks/bench_performance_estimate.py
	$(PY) tests/benchmarks/bench_slices.py

# The predictor under load for 60 s (wrk, 32 connections, malformed and oversized requests mixed
# in): exits 1 on any 5xx, a failed readiness probe, or memory not returned (docs/performance.md).
soak: setup
	$(UV) pip install -q --python $(PY) -r requirements-bench.lock
	$(PY) tests/benchmarks/soak_serving.py

clean:
	rm -rf $(VENV) $(BUILD) .ctloop

docs: setup
	$(PY) -c "from ctloop.pipelines.reference_docs import write_reference; write_reference('docs/reference.md')"

# Images, publishing and the other compile target: the steps of .github/workflows/.
# Tags are the package version, as components/image.py names them (never :latest);
# IMAGE_REGISTRY=registry.example/team points them (and `make upload`'s compiled YAML) elsewhere.
IMAGE_REGISTRY  ?= ghcr.io/ctloop
PACKAGE_VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' __init__.py)
COMPONENT_IMAGE := $(IMAGE_REGISTRY)/ctloop:$(PACKAGE_VERSION)
SERVING_IMAGE   := $(IMAGE_REGISTRY)/ctloop-serving:$(PACKAGE_VERSION)
# The component image with the feast extra (requirements-runtime-feast.txt), for Feast steps.
FEAST_IMAGE     := $(IMAGE_REGISTRY)/ctloop-feast:$(PACKAGE_VERSION)
# The model server with Feast (serving/requirements-feast.txt), for entity-key requests.
SERVING_FEAST_IMAGE := $(IMAGE_REGISTRY)/ctloop-serving-feast:$(PACKAGE_VERSION)
# Read by the recipes' shells, never expanded by make, so the endpoint is not echoed in logs.
KFP_HOST        ?=
export KFP_HOST
# Six fields, seconds first, UTC: 02:00 daily. MONITORING_PARAMS: KEY=VALUE pairs for the runs.
MONITORING_CRON   ?= 0 0 2 * * *
MONITORING_PARAMS ?=

.PHONY: images push-images lint-images compile-vertex upload schedule

images:
	@command -v docker >/dev/null 2>&1 || { \
	  echo "make images: docker is not installed; it builds $(COMPONENT_IMAGE), $(FEAST_IMAGE), $(SERVING_IMAGE) and $(SERVING_FEAST_IMAGE)" >&2; \
	  exit 1; }
	docker build --file Dockerfile --build-arg GIT_COMMIT=$$(git rev-parse HEAD 2>/dev/null || echo unknown) --tag $(COMPONENT_IMAGE) .
	docker build --file Dockerfile --build-arg RUNTIME=requirements-runtime-feast.txt --build-arg GIT_COMMIT=$$(git rev-parse HEAD 2>/dev/null || echo unknown) --tag $(FEAST_IMAGE) .
	docker build --file serving/Dockerfile --tag $(SERVING_IMAGE) .
	docker build --file serving/Dockerfile --build-arg REQUIREMENTS=serving/requirements-feast.txt --tag $(SERVING_FEAST_IMAGE) .

push-images: images
	docker push $(COMPONENT_IMAGE)
	docker push $(FEAST_IMAGE)
	docker push $(SERVING_IMAGE)
	docker push $(SERVING_FEAST_IMAGE)

lint-images: setup
	$(VENV)/bin/hadolint Dockerfile serving/Dockerfile

compile-vertex: setup
	$(CTLOOP) compile --target vertex --output-dir $(BUILD) --image $(COMPONENT_IMAGE) --feast-image $(FEAST_IMAGE)

upload: setup
	@test -n "$$KFP_HOST" || { echo "make upload: set KFP_HOST to the KFP endpoint" >&2; exit 2; }
	$(CTLOOP) compile --output-dir $(BUILD) --image $(COMPONENT_IMAGE) --feast-image $(FEAST_IMAGE)
	$(CTLOOP) upload --host "$$KFP_HOST" --build-dir $(BUILD)

schedule: setup
	@test -n "$$KFP_HOST" || { echo "make schedule: set KFP_HOST to the KFP endpoint" >&2; exit 2; }
	$(CTLOOP) schedule --host "$$KFP_HOST" --cron "$(MONITORING_CRON)" \
	  $(foreach pair,$(MONITORING_PARAMS),--param '$(pair)')
