# Two environments (their pins conflict, see README): .venv for batch/pipeline/tests, .venv-serving for Seldon.
PY312 ?= $(shell scripts/find_python312.sh)
VENV := .venv
SERVING_VENV := .venv-serving
PY := $(VENV)/bin/python
DEMO_LAKE ?= demo-lake
SNAPSHOTS ?= $(DEMO_LAKE)/snapshots
PYTEST_ARGS ?=
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: setup demo test serve delta-jars clean prereqs manifests pipeline

setup: $(VENV)/.installed $(SERVING_VENV)/.installed

prereqs:
	@scripts/check_prereqs.sh "$(PY312)"

$(VENV)/.installed: requirements/batch.lock setup.py
	@scripts/check_prereqs.sh "$(PY312)"
	test -x $(VENV)/bin/python || "$(PY312)" -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements/batch.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

$(SERVING_VENV)/.installed: requirements/serving.lock setup.py
	@scripts/check_prereqs.sh "$(PY312)"
	test -x $(SERVING_VENV)/bin/python || "$(PY312)" -m venv $(SERVING_VENV)
	$(SERVING_VENV)/bin/pip install -q --upgrade pip
	$(SERVING_VENV)/bin/pip install -q -r requirements/serving.lock
	$(SERVING_VENV)/bin/pip install -q --no-deps -e .
	touch $@

## The main job: generate a sample log, run the nightly flow locally, serve it, send real lookups, stop.
demo: setup
	$(PY) scripts/demo.py --lake "$(DEMO_LAKE)"

## The whole test suite (unit, integration, serving, spark-submit).
test: setup
	$(VENV)/bin/pytest tests $(PYTEST_ARGS)

## Serve the latest published snapshot with the real seldon-core-microservice (Ctrl-C stops it).
serve: $(SERVING_VENV)/.installed
	$(SERVING_VENV)/bin/python -m deploy.serve --snapshot-root "$(SNAPSHOTS)"

## Fallback when Spark's Ivy cannot reach Maven Central: fetch Delta's jars with Maven into .jars/
## and run jobs with --jars-dir .jars (or RECSYS_JARS_DIR=.jars).
delta-jars: $(VENV)/.installed
	$(PY) -m jobs.delta_jars --dest .jars

clean:
	rm -rf $(DEMO_LAKE) spark-warehouse metastore_db derby.log .pytest_cache

## Regenerate the SparkApplication manifests (deploy/k8s) and the compiled Kubeflow pipeline from their sources.
manifests: $(VENV)/.installed
	$(PY) -m deploy.spark_apps --out deploy/k8s
pipeline: $(VENV)/.installed
	$(PY) -m deploy.kubeflow.pipeline --output deploy/kubeflow/nightly_pipeline.yaml
