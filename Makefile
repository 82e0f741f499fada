# konspekt — the commands a person runs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch. On a machine that reaches the PyTorch index, a lighter
# install is: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
APT_PACKAGES := ffmpeg espeak-ng poppler-utils fonts-dejavu-core
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help system-deps install demo demo-train test test-fast lint test-concurrency airflow-ui whisperx-env warm-cache images locks doctor test-docker compose-up compose-down compose-purge compose-e2e bench

help:
	@echo "make demo        install, make a spoken sample lecture, run the DAG locally, print the PDF path"
	@echo "make demo VIDEO=path/to/lecture.mp4    the same on your own video (LANGUAGE=ru to set its language)"
	@echo "make demo-train  speak a small jargon dataset into data/train/demo, fine-tune Whisper on it (train_asr, local), print WER and paths"
	@echo "make demo-train BASE_MODEL=openai/whisper-small DATASET=demo2   another base model (default: the packaged Whisper base) or dataset name"
	@echo "make test        the test suite (offline; what CI runs)"
	@echo "make lint        ruff (lint, import order) and mypy on src/ and dags/ (CI runs it too)"
	@echo "make airflow-ui  Airflow standalone on http://127.0.0.1:8080 with the local runner"
	@echo "make warm-cache  download the configured models once into ./cache (needs network)"
	@echo "make whisperx-env  the whisperx backend's own venv (torch 2.8, about 7.6 GB)"
	@echo "make images      build the task images into the daemon at \$$DOCKER_HOST (IMAGES='asr summarize' for some)"
	@echo "make doctor      check daemon, images, mounts, ffmpeg/openSMILE, GPU, models (KONSPEKT_* or DOCTOR_ARGS)"
	@echo "make test-docker docker-mode end to end on a real engine (root; what CI runs)"
	@echo "make compose-up  docker-compose.yml up and healthy (stand-ins for images no registry gives); prints the UI URL"
	@echo "make compose-down  take the stack down (images and database kept)"
	@echo "make compose-purge take the stack down and delete its volumes: the database, built and pushed images (a fresh start)"
	@echo "make compose-e2e the stack up, then browser/watch-folder/training/restart tests against it (root; CI)"
	@echo "make test-concurrency  twenty videos at once through a real scheduler; pools bound the stages (~6 min)"
	@echo "make bench       benchmarks, not tests (~50 min): 1, 10, 60 min lectures, throughput, detection; BENCH_ARGS=\"--lengths 1,10 --docker unix:///var/run/docker.sock\"; real speech (../shared/data/real-speech-dev): REAL_SPEECH_ARGS=\"--repeat 4\""

system-deps:
	@missing=""; for b in ffmpeg ffprobe espeak-ng pdftotext; do command -v $$b >/dev/null || missing=1; done; \
	 [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing=1; \
	 if [ -n "$$missing" ]; then \
	   $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	 fi

# One environment with Airflow and every stage's extra: what the local runner uses.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[all,airflow,test,lint]"
	touch $@

install: system-deps $(VENV)/.installed

demo: install
	@$(PY) airflow/demo.py $(VIDEO) $(if $(LANGUAGE),--language $(LANGUAGE))

# DEMO_TRAIN_ARGS: more options of airflow/demo_train.py (--epochs, --max-steps, --learning-rate, --device)
demo-train: install
	@$(PY) airflow/demo_train.py $(if $(BASE_MODEL),--base-model $(BASE_MODEL)) $(if $(DATASET),--dataset $(DATASET)) $(DEMO_TRAIN_ARGS)

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check src dags plugins
	$(PY) -m mypy

test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Only the twenty-video concurrency test (part of `make test` too).
test-concurrency: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -s tests/e2e/test_concurrency.py $(PYTEST_ARGS)

airflow-ui: install
	airflow/run-local.sh airflow standalone

whisperx-env:
	@venv=$$(bash .ci/whisperx-env.sh) && echo "whisperx venv: $$venv" && \
	  echo "to transcribe with it in local mode: export KONSPEKT_LOCAL_PYTHONS='{\"asr\": \"$$venv/bin/python\"}'"

warm-cache: install
	HF_HOME=$(CURDIR)/cache/huggingface PYTHONPATH=dags $(PY) -m konspekt_dags.ensure_models

images:
	sh images/build.sh $(IMAGES)

locks: install
	$(PY) images/lock.py $(IMAGES)

doctor: install
	$(PY) -m konspekt.doctor $(DOCTOR_ARGS)

test-docker: install
	VENV=$(VENV) bash .ci/docker-e2e.sh

# The compose stack for a person: .env written if missing (a random admin password), then up.
compose-up:
	bash airflow/compose.sh up

compose-down:
	bash airflow/compose.sh down

# Down, and its volumes deleted: Airflow's database (runs, connections, variables, users), docker-proxy's
# images, the registry's. The way out when the database's Fernet key is lost (README: Troubleshooting).
compose-purge:
	bash airflow/compose.sh purge

# The user's path end to end against the stack (tests/e2e/compose/); .ci/run calls it.
compose-e2e: install
	VENV=$(VENV) bash .ci/compose-e2e.sh

# Benchmarks (issue 8), not part of the tests.
bench: install
	HF_HUB_OFFLINE=1 $(PY) bench/run.py $(BENCH_ARGS)
	HF_HUB_OFFLINE=1 $(PY) bench/real_speech.py $(REAL_SPEECH_ARGS)
