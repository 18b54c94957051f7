# Two environments (their pins conflict, see README): .venv for batch/pipeline/tests, .venv-serving for Seldon.
# batch: Python 3.13 (its zipimport no longer re-reads every zip on a Spark worker's path before each task);
# serving: 3.12 (seldon-core 1.19 needs >= 3.12 and numpy < 2). Override with make PYTHON_313=... PYTHON_312=...
PYTHON_313 ?= $(shell scripts/find_python.sh 3.13)
PYTHON_312 ?= $(shell scripts/find_python.sh 3.12)
VENV := .venv
SERVING_VENV := .venv-serving
PY := $(VENV)/bin/python
# the stamp names the Python: a .venv of another version is made anew
BATCH_STAMP := $(VENV)/.installed-3.13
DEMO_LAKE ?= demo-lake
SNAPSHOTS ?= $(DEMO_LAKE)/snapshots
PYTEST_ARGS ?=
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: setup demo test serve delta-jars clean prereqs manifests pipeline

setup: $(BATCH_STAMP) $(SERVING_VENV)/.installed
	-@$(MAKE) --no-print-directory als-blas

prereqs:
	@scripts/check_prereqs.sh 3.13 "$(PYTHON_313)"
	@scripts/check_prereqs.sh 3.12 "$(PYTHON_312)"

$(BATCH_STAMP): requirements/batch.lock requirements/dev.lock setup.py
	@scripts/check_prereqs.sh 3.13 "$(PYTHON_313)"
	-@$(MAKE) --no-print-directory blas
	$(VENV)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null \
	  || { rm -rf $(VENV) && "$(PYTHON_313)" -m venv $(VENV); }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements/batch.lock
	$(VENV)/bin/pip install -q -r requirements/dev.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

$(SERVING_VENV)/.installed: requirements/serving.lock setup.py
	@scripts/check_prereqs.sh 3.12 "$(PYTHON_312)"
	test -x $(SERVING_VENV)/bin/python || "$(PYTHON_312)" -m venv $(SERVING_VENV)
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
	$(SERVING_VENV)/bin/python -m serving.serve --snapshot-root "$(SNAPSHOTS)"

## Fallback when Spark's Ivy cannot reach Maven Central: fetch Delta's jars with Maven into .jars/
## and run jobs with --jars-dir .jars (or RECSYS_JARS_DIR=.jars).
delta-jars: $(BATCH_STAMP)
	$(PY) -m jobs.delta_jars --dest .jars

clean:
	rm -rf $(DEMO_LAKE) spark-warehouse metastore_db derby.log .pytest_cache

## Regenerate the manifests (deploy/k8s, deploy/seldon) from deploy/values.yaml, and the compiled Kubeflow pipeline.
manifests: $(BATCH_STAMP)
	$(PY) -m deploy.manifests
pipeline: $(BATCH_STAMP)
	$(PY) -m deploy.kubeflow.pipeline --output deploy/kubeflow/nightly_pipeline.yaml

## Benchmark the lookup service against a trivial model in the same seldon-core-microservice (needs wrk:
## apt-get install wrk); writes bench/results/serving.json.
.PHONY: bench-serving
bench-serving: $(SERVING_VENV)/.installed
	$(SERVING_VENV)/bin/python bench/serving.py

## Benchmark batch scoring (models.topn) against Spark's recommendForAllUsers and the implicit library on the
## same factors (implicit comes from requirements/dev.lock); writes bench/results/scoring.json. Takes many minutes.
.PHONY: bench-scoring
bench-scoring: $(BATCH_STAMP)
	$(PY) bench/scoring.py

## Native BLAS for Spark ALS (several times faster than netlib's Java fallback): Debian's OpenBLAS becomes
## libblas.so.3, which Spark's dev.ludovic.netlib JNIBLAS loads. Installs as root; otherwise prints the command.
.PHONY: blas
blas:
	@if ldconfig -p | grep -q 'libopenblas'; then echo "native BLAS present: $$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo libopenblas)"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y --no-install-recommends libopenblas0-pthread; \
	else echo "as root run: apt-get install -y libopenblas0-pthread  (Spark ALS falls back to a slow Java BLAS without it)"; fi

## Spark ALS's dspr/daxpy/dppsv library (models/native/als_blas.c, see models/als_blas.py): netlib loads it in front
## of libblas.so.3 and liblapack.so.3, and ALS iterates faster (bench/results/training.json). Needs cc, libblas.so.3
## and liblapack.so.3 (make blas); without them ALS runs on OpenBLAS alone. The session factory finds it in build/native/ (or $$RECSYS_ALS_BLAS).
ALS_BLAS := build/native/librecsys_als_blas.so
.PHONY: als-blas
als-blas: $(ALS_BLAS)
$(ALS_BLAS): models/native/als_blas.c
	@-$(MAKE) --no-print-directory blas
	@mkdir -p $(dir $@)
	@if ! ldconfig -p | grep -q 'libblas\.so\.3 ' || ! ldconfig -p | grep -q 'liblapack\.so\.3 '; then \
	  echo "WARNING: no libblas.so.3 or liblapack.so.3 (make blas): Spark ALS's BLAS library not built, ALS runs on netlib's defaults" >&2; exit 1; fi
	$(CC) -O3 -fPIC -shared -Wall -Wextra -o $@.tmp $< -Wl,--no-as-needed -l:libblas.so.3 -l:liblapack.so.3 -lm
	@mv $@.tmp $@ && echo "built $@ (Spark ALS's dspr/daxpy/dppsv in front of $$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo libblas.so.3))"

## The per-rating BLAS call of Spark ALS (dspr + daxpy through JNI), our library vs OpenBLAS alone, ranks 16-128;
## writes bench/results/als_blas.json. About 2 minutes.
.PHONY: bench-als-blas
bench-als-blas: $(BATCH_STAMP) als-blas
	$(PY) bench/als_blas.py

## Benchmark ALS training per iteration against the implicit library (requirements/dev.lock) at 1M and 10M
## pairs; writes bench/results/training.json. Takes many minutes.
.PHONY: bench-training
bench-training: $(BATCH_STAMP) als-blas
	$(PY) bench/training.py

## Each speed trick (models/speed.py) against its reference path, whole jobs in fresh processes, in turns:
## scoring 100k x 20k, ALS training at ranks 32-200; writes bench/results/tricks.json. About 30 minutes.
.PHONY: bench-tricks
bench-tricks: $(BATCH_STAMP) als-blas
	$(PY) bench/tricks.py

## Benchmark the data-quality gates against ingest on 10M generated events (raw gate + ingest + silver gate,
## side by side in one Spark session, 3 rounds: the ratio of the medians); writes bench/results/validation.json.
## Takes about 20 minutes on 2 cores.
.PHONY: bench-validation
bench-validation: $(BATCH_STAMP)
	$(PY) bench/validation.py --repeats 3

## Ingest benchmark: jobs.ingest end to end vs a plain Spark copy of the same files into Delta, at 1M and 10M
## generated events (each phase in a fresh driver, local[2]); writes bench/results/ingest.json. Takes many minutes;
## other sizes: $(PY) bench/ingest.py --sizes 1000000,3000000
.PHONY: bench-ingest
bench-ingest: $(BATCH_STAMP)
	$(PY) bench/ingest.py
