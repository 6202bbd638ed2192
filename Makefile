# maskwatch — the two commands a newcomer needs: `make demo` and `make test`.
# Both set up the virtualenv first when it is missing (setup is idempotent).

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.maskwatch-installed
MODELS  := models/face_detection_short_range.tflite models/face_detection_full_range.tflite
SHARED  ?= $(abspath ../shared)
# Offline ImageNet weights for tests and benchmarks (see ../shared/README.md); users with
# internet let Keras download them as usual.
KERAS_CACHE := $(SHARED)/keras-home
ifneq ($(wildcard $(KERAS_CACHE)/models),)
export KERAS_HOME ?= $(KERAS_CACHE)
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST_ARGS ?=

.PHONY: setup install-device test lint demo bench bench-train bench-device clean help

help:
	@echo "make demo    - build sample data, train, convert, benchmark, run the daemon (offline)"
	@echo "make test    - run the test suite"
	@echo "make setup   - create $(VENV), install everything, fetch the face-detector models"
	@echo "make lint    - ruff"
	@echo "make bench   - int8 vs float benchmarks (bench-train, bench-device for the others)"
	@echo "make install-device - install only the device side (Raspberry Pi)"

setup: $(STAMP) $(MODELS)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[workstation,device,dev]'
	touch $@

$(MODELS) &: $(STAMP)
	$(BIN)/maskwatch-device fetch-models --dest models
	touch $(MODELS)

install-device:
	sudo systemd/install.sh

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check device train convert tests

demo: setup
	$(BIN)/python -m train.demo

bench: setup
	$(BIN)/python -m convert.benchmark

bench-train: setup
	$(BIN)/python -m train.benchmark

bench-device: setup
	$(BIN)/python -m device.benchmark

clean:
	rm -rf runs bench demo-out .pytest_cache .ruff_cache
