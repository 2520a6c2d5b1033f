# Two commands on a fresh machine: `make demo` and `make test`.
VENV := .venv
PYTHON := $(VENV)/bin/python

# The demo: a synthetic drinks set small enough to train on a 2-core CPU.
DEMO_DATA := dataset/synthetic
DEMO_SIZE := --height 96 --width 128
DEMO_TRAIN := 300
DEMO_TEST := 50
# Training, its evaluations and report end within this many minutes on any machine (--time-budget):
# the whole demo, data and plots included, within 10.
DEMO_MINUTES ?= 8
DEMO_SAVE := weights/demo
# The short-run recipe (docs/small-data.md): ResNet20v2 with a 64-filter head whose bilinear decoder joins the
# backbone's half- and full-resolution stages, cross-entropy plus the per-image Lovász-softmax loss, fast
# BatchNormalization statistics, warm-up and cosine decay to the budget's last step, and the left-right flip
# alone as augmentation (the full one slows a short run). --precision auto trains in mixed bfloat16 where the
# CPU computes it natively.
DEMO_NETWORK := --depth 20 --head-filters 64 --decoder bilinear
DEMO_RECIPE := --loss ce+lovasz --augment flip --bn-momentum 0.9 --lr-schedule cosine --learning-rate 3e-3
DEMO_ARGS := --dataset synthetic --data-path $(DEMO_DATA) $(DEMO_SIZE) $(DEMO_NETWORK) --save-dir $(DEMO_SAVE)
DEMO_TRAIN_ARGS := --time-budget $(DEMO_MINUTES) --seed 0 $(DEMO_RECIPE)

.PHONY: test test-slow lint demo bench export-extras backends-extras

# The project itself is installed in editable mode, so that the tools in utils/ import the package.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt --editable .
	touch $@

# Two test processes, a test file each at a time (pytest-xdist), in collection order, which puts the longest files
# first (tests/conftest.py): xdist's own order, by test count, leaves them last; then the tests that time the
# program, alone.
test: $(VENV)/.installed
	$(PYTHON) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not timing"
	$(PYTHON) -m pytest -q -m timing

# The tests marked slow (the benchmarks' smoke runs) and the fuzz tests at their full example counts.
test-slow: $(VENV)/.installed
	$(PYTHON) -m pytest -q --run-slow -m "slow or backends"
	$(PYTHON) -m pytest -q --run-slow tests/test_fuzz_via.py tests/test_fuzz_labels.py

# Lint and import order (pyproject.toml, [tool.ruff]).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# The optional ONNX converter and the ONNX and LiteRT runtimes (--export-format onnx; tests/test_export.py).
export-extras: $(VENV)/.installed
	$(PYTHON) -m pip install --quiet -r requirements-export.txt

# JAX and PyTorch on the CPU, the other Keras backends (KERAS_BACKEND=jax or torch; tests/test_backends.py).
backends-extras: $(VENV)/.installed
	$(PYTHON) -m pip install --quiet -r requirements-backends.txt

$(DEMO_DATA)/segmentation_train.json: | $(VENV)/.installed
	$(PYTHON) utils/generate_synthetic_drinks.py --output $(DEMO_DATA) --seed 0 \
		--num-train $(DEMO_TRAIN) --num-test $(DEMO_TEST) $(DEMO_SIZE)

$(DEMO_DATA)/segmentation_test.json: $(DEMO_DATA)/segmentation_train.json

$(DEMO_DATA)/segmentation_%.npy: $(DEMO_DATA)/segmentation_%.json
	$(PYTHON) utils/generate_gt_segmentation.py -j segmentation_$*.json -p $(DEMO_DATA) --save-filename $@

demo: $(VENV)/.installed
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory $(DEMO_DATA)/segmentation_train.npy $(DEMO_DATA)/segmentation_test.npy && \
	$(PYTHON) fcn-12.3.1.py --train $(DEMO_TRAIN_ARGS) $(DEMO_ARGS) && \
	$(PYTHON) fcn-12.3.1.py --evaluate --plot $(DEMO_ARGS) \
		--restore-weights ResNet20v2-3layer-synthetic-best-iou.weights.h5 | tail -n 8 && \
	$(PYTHON) utils/plot_history.py --history $(DEMO_SAVE)/miou_history.npy && \
	$(PYTHON) utils/plot_history.py --history $(DEMO_SAVE)/mpla_history.npy && \
	echo "Demo done in $$(( $$(date +%s) - start )) s: weights and history plots in $(DEMO_SAVE)/, triptychs in prediction/"

# Speed and memory against the book's way (docs/speed.md); about 10 minutes on a 2-core CPU.
bench: $(VENV)/.installed
	$(PYTHON) bench/bench.py
