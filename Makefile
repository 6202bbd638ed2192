# maskwatch — the two commands a newcomer needs: `make demo` and `make test`.
# Both set up the virtualenv first when it is missing (setup is idempotent).

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.maskwatch-installed
MODELS  := models/face_detection_short_range.tflite models/face_detection_full_range.tflite \
           models/face_detection_yunet_2023mar.onnx
SHARED  ?= $(abspath ../shared)
# YuNet runs on the Pi converted to int8 TFLite at a fixed input size (calibrated on sample
# photos shipped with scikit-image and matplotlib); this must be the file make_detector("yunet")
# loads by default (DEFAULT_INPUT_SIZE, DEFAULT_QUANTIZATION in device/detectors/yunet_litert.py;
# a test checks).
YUNET_SIZE   := 640x480
YUNET_TFLITE := models/face_detection_yunet_2023mar_$(YUNET_SIZE)_int8.tflite
# Offline machines and CI take the YuNet ONNX from ../shared (still sha256-checked); users with
# internet download it from OpenCV's model zoo.
YUNET_LOCAL  := $(SHARED)/models/face_detection_yunet_2023mar.onnx
YUNET_FROM   := $(if $(wildcard $(YUNET_LOCAL)),--yunet-from $(YUNET_LOCAL))
# Offline ImageNet weights for tests and benchmarks (see ../shared/README.md); users with
# internet let Keras download them as usual.
KERAS_CACHE := $(SHARED)/keras-home
ifneq ($(wildcard $(KERAS_CACHE)/models),)
export KERAS_HOME ?= $(KERAS_CACHE)
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST_ARGS ?=
# A second, device-only environment like Raspberry Pi OS Bookworm: numpy 1.24 (what its
# picamera2 needs), no TensorFlow. The device tests must pass there too.
PI_VENV  ?= .venv-pi
PI_STAMP := $(PI_VENV)/.maskwatch-installed
WORKSTATION_TESTS := $(wildcard tests/test_data_*.py tests/test_train*.py tests/test_evaluate*.py \
                       tests/test_predict*.py tests/test_model*.py tests/test_convert*.py \
                       tests/test_masks*.py tests/test_synth*.py tests/test_demo*.py tests/test_readme*.py \
                       tests/test_weights*.py tests/test_device_benchmark*.py \
                       tests/test_provision*.py)
DEVICE_TESTS := $(filter-out $(WORKSTATION_TESTS),$(wildcard tests/test_*.py))
# Each run writes one line (passed / skipped / failed, and which environment); `make test` ends
# with both. MASKWATCH_FAIL_ON_SKIP=1 (set by .ci/run) fails any skip outside the allow-list
# of tests/skip_policy.py.
TEST_SUMMARY := .cache/test-summary

.PHONY: setup setup-pi install-device test test-workstation test-pi test-arm64 lint demo bench bench-train bench-device bench-scenes clean help

help:
	@echo "make demo    - build sample data, train, convert, benchmark, run the daemon (offline)"
	@echo "make test    - run the test suite"
	@echo "make setup   - create $(VENV), install everything, fetch the face-detector models"
	@echo "make lint    - ruff"
	@echo "make bench   - int8 vs float benchmarks (bench-train, bench-device, bench-scenes for the others)"
	@echo "make install-device - install only the device side (Raspberry Pi)"
	@echo "make test-arm64 - provision a card and boot it in an emulated arm64 Raspberry Pi OS (minutes)"

setup: $(STAMP) $(MODELS) $(YUNET_TFLITE)

# onnx2tf (convert-detector) imports tf-keras, whose metadata wants the `tensorflow` package
# rather than our tensorflow-cpu of the same version: installed without its dependencies.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[workstation,device,dev]'
	$(BIN)/python -m pip install -q --no-deps 'tf-keras==2.21.0'
	touch $@

$(MODELS) &: $(STAMP)
	$(BIN)/maskwatch-device fetch-models --dest models $(YUNET_FROM)
	touch $(MODELS)

$(YUNET_TFLITE): models/face_detection_yunet_2023mar.onnx $(STAMP)
	$(BIN)/maskwatch convert-detector $< --size $(YUNET_SIZE) --int8 --out models

install-device:
	sudo systemd/install.sh

test: test-workstation test-pi
	@echo "==> tests run per environment"
	@cat $(TEST_SUMMARY)/workstation.txt $(TEST_SUMMARY)/pi-like.txt

test-workstation: setup
	@rm -f $(TEST_SUMMARY)/workstation.txt
	MASKWATCH_TEST_SUMMARY=$(TEST_SUMMARY)/workstation.txt $(BIN)/python -m pytest $(PYTEST_ARGS)

setup-pi: $(PI_STAMP)

$(PI_STAMP): pyproject.toml
	test -x $(PI_VENV)/bin/python || $(PYTHON) -m venv $(PI_VENV)
	$(PI_VENV)/bin/python -m pip install -q --upgrade pip
	$(PI_VENV)/bin/python -m pip install -q 'numpy==1.24.*' -e '.[device]' pytest jsonschema
	touch $@

# Runs after the workstation tests, which leave the TensorFlow-built test model and the face
# photos (scikit-image, matplotlib) in .cache/test-assets.
test-pi: setup-pi $(MODELS)
	$(PI_VENV)/bin/python -c "import numpy, sys; assert numpy.__version__.startswith('1.'), numpy.__version__; assert 'tensorflow' not in sys.modules"
	@rm -f $(TEST_SUMMARY)/pi-like.txt
	MASKWATCH_TEST_SUMMARY=$(TEST_SUMMARY)/pi-like.txt $(PI_VENV)/bin/python -m pytest $(PYTEST_ARGS) $(DEVICE_TESTS)

# A card made by `maskwatch provision`, booted for real in an emulated arm64 Debian (Bookworm, and
# Trixie when the mirror serves it): first boot offline, then the installed daemon on make demo's
# video, its events received by a Mosquitto here. Minutes, not part of `make test`; the arm64
# roots are cached in .cache/arm64. tests/arm64_setup.sh installs qemu/binfmt/debootstrap (root).
ARM64_MODEL ?= demo-out/models/maskwatch_int8.tflite
ARM64_VIDEO ?= demo-out/sample.avi

test-arm64: setup
	tests/arm64_setup.sh
	@if [ ! -f $(ARM64_MODEL) ] || [ ! -f $(ARM64_VIDEO) ]; then $(MAKE) demo; fi
	MASKWATCH_ARM64_MODEL=$(abspath $(ARM64_MODEL)) MASKWATCH_ARM64_VIDEO=$(abspath $(ARM64_VIDEO)) \
		$(BIN)/python -m pytest -s -p no:cacheprovider $(PYTEST_ARGS) tests/arm64_emulated.py

lint: setup
	$(BIN)/ruff check device train convert tests benchmarks

demo: setup
	$(BIN)/python -m train.demo

bench: setup
	$(BIN)/python -m benchmarks.quantization

bench-train: setup
	$(BIN)/python -m benchmarks.train

bench-device: setup
	$(BIN)/python -m benchmarks.daemon

# Faces found and flagged on the test-split scene photos of ../shared (needs bench-train + bench).
bench-scenes: setup
	$(BIN)/python -m benchmarks.scenes

clean:
	rm -rf runs bench demo-out .pytest_cache .ruff_cache .cache
