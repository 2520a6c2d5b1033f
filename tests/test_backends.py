"""The command line under JAX and PyTorch, TensorFlow absent (`pytest --run-slow -m backends`), and the backend checks.

Each backend runs `tests/backend_run.py` in a process of its own (Keras reads
`KERAS_BACKEND` once, when imported) with `import tensorflow` made to fail, as
on a GPU machine without TensorFlow: a tiny `--train --epochs 1`, `--resume`,
`--evaluate` with `--plot` and `--image-file`, `--predict-dir` and the `.keras`
export, the refusals, weights files across backends and `--remat`; JAX's
`--distribute mirrored` runs on two CPU devices, and `--tensorboard` under
PyTorch where TensorFlow is installed. The `backends` tests run with
`--run-slow` (`make test-slow`), where the backend is installed (`make
backends-extras` installs both).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from backend_run import CALIBRATION_SHAPE, calibrated_network, calibration_images
from conftest import HEIGHT, N_CLASSES, ROOT, WIDTH, write_book_dataset

from model import build_model
from segmentation import backend
from segmentation.checks import check_backend
from segmentation.config import RunConfig
from segmentation.errors import UsageError

RUNNER = os.path.join(os.path.dirname(__file__), "backend_run.py")
BACKENDS = ("jax", "torch")
WEIGHTS = "ResNet11v2-1layer-drinks-best-iou.weights.h5"
# Predictions of the same weights on two backends: float32 arithmetic in another order. A network trained for
# two epochs has larger activations, whose rounding moves probabilities by up to about 1e-4 (as much as between
# TensorFlow's fused BatchNormalization and Keras' own, on one backend).
CROSS_BACKEND_ATOL = 1e-5
TRAINED_ATOL = 1e-3
# Two training steps an epoch: JAX's CPU kernels take seconds a step (docs/speed.md).
NUM_TRAIN, NUM_TEST = 4, 2
MODULES = ["model", "resnet", "data_generator"] + [
    f"{package}.{name[:-3]}" for package in ("segmentation", "segmentation.tools")
    for name in sorted(os.listdir(os.path.join(ROOT, *package.split("."))))
    if name.endswith(".py") and name != "__init__.py"
]


def backend_environment(name: str, devices: int = 1) -> dict[str, str]:
    """The environment of a child process on backend `name`, on the CPU (as `devices` devices under JAX)."""
    environment = dict(os.environ, KERAS_BACKEND=name, PYTHONPATH=ROOT)
    if name == "jax":
        environment["JAX_PLATFORMS"] = "cpu"
    if devices > 1:
        environment["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    return environment


def run_backend(name: str, work_dir, *options: str, devices: int = 1) -> dict:
    """`backend_run.py WORK_DIR --no-tensorflow OPTIONS` on backend `name`; returns its results."""
    completed = subprocess.run([sys.executable, RUNNER, str(work_dir), "--no-tensorflow", *options],
                               env=backend_environment(name, devices), capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = "results-mirrored.json" if "--mirrored" in options else "results.json"
    with open(work_dir / results, encoding="utf-8") as file:
        return json.load(file)


def tiny_network(input_shape=(HEIGHT, WIDTH, 3)) -> keras.Model:
    return build_model(input_shape, n_layers=1, n_classes=N_CLASSES, n=1)[1]


@pytest.fixture(scope="module", params=BACKENDS)
def backend_run(request, tmp_path_factory):
    """`backend_run.py` on one backend: (backend, its results, its work folder)."""
    name = request.param
    pytest.importorskip(name)
    work_dir = tmp_path_factory.mktemp(f"on_{name}")
    write_book_dataset(str(work_dir / "drinks"), num_train=NUM_TRAIN, num_test=NUM_TEST)
    inputs = np.random.default_rng(5).random((3, HEIGHT, WIDTH, 3), dtype=np.float32)
    np.save(work_dir / "inputs.npy", inputs)
    fcn = calibrated_network(inputs, seed=7)
    fcn.save_weights(str(work_dir / "tf.weights.h5"))
    np.save(work_dir / "tf_predictions.npy", fcn.predict_on_batch(calibration_images(inputs)))
    return name, run_backend(name, work_dir), work_dir


@pytest.mark.backends
@pytest.mark.parametrize("name", BACKENDS)
def test_every_module_imports_without_tensorflow(name):
    pytest.importorskip(name)
    code = ("import sys\nfor blocked in ('tensorflow', 'tf_keras', 'tensorboard'): sys.modules[blocked] = None\n"
            f"import {', '.join(MODULES)}\nimport keras\nprint(keras.backend.backend())")
    completed = subprocess.run([sys.executable, "-c", code], env=backend_environment(name), capture_output=True,
                               text=True, timeout=300, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.split()[-1] == name


@pytest.mark.backends
def test_train_resume_evaluate_predict_and_export_run_without_tensorflow(backend_run):
    name, results, work_dir = backend_run
    assert results["backend"] == name and not results["tensorflow_imported"]
    for step in ("train", "resume", "evaluate", "image_file", "infer"):
        assert results[step]["status"] == 0, (step, results[step]["stderr"])
    weights = work_dir / "weights"
    for written in (WEIGHTS, "ResNet11v2-1layer-drinks-best-iou.json", "report.png", "history.csv",
                    "miou_history.npy"):
        assert (weights / written).is_file(), written
    # The resumed run trained epoch 2 only, after the saved epoch 1.
    assert len((weights / "history.csv").read_text().splitlines()) == 1 + 2
    assert "Resuming" in results["resume"]["stdout"]
    assert "mIoU (book, mean of per-image mIoU)" in results["evaluate"]["stdout"]
    for image in ("test000", "test001"):
        for figure in ("input", "mask", "triptych"):
            assert (work_dir / "prediction" / f"{image}-{figure}.png").is_file()
    assert len(os.listdir(work_dir / "masks")) == 2 * (NUM_TRAIN + NUM_TEST)  # a mask and an overlay each
    assert (work_dir / "export" / "fcn.keras").is_file()
    assert results["export_max_difference"] <= 1e-6


@pytest.mark.backends
def test_what_needs_tensorflow_is_refused_in_one_line_before_anything_is_written(backend_run):
    name, results, _ = backend_run
    for step, flag in (("savedmodel", "--export-format savedmodel"), ("tensorboard", "--tensorboard")):
        assert results[step]["status"] == 2, step
        assert results[step]["stderr"].startswith(f"fcn-12.3.1.py: error: {flag}")
        assert len(results[step]["stderr"].splitlines()) == 1
    assert results["refused_outputs_written"] == []
    if name == "torch":
        assert results["distribute"]["status"] == 2
        assert "--distribute mirrored needs tf.distribute" in results["distribute"]["stderr"]


@pytest.mark.backends
def test_jax_trains_mirrored_on_every_local_device(tmp_path):
    pytest.importorskip("jax")
    write_book_dataset(str(tmp_path / "drinks"), num_train=NUM_TRAIN, num_test=NUM_TEST)
    # keras.distribution.DataParallel over two CPU devices.
    results = run_backend("jax", tmp_path, "--mirrored", devices=2)
    assert results["distribute"]["status"] == 0, results["distribute"]["stderr"]
    assert "Distributed training (mirrored): 2 replicas, global batch 2" in results["distribute"]["stdout"]
    assert (tmp_path / "mirrored" / WEIGHTS).is_file()
    assert results["odd_batch"]["status"] == 2
    assert results["odd_batch"]["stderr"].startswith("fcn-12.3.1.py: error: --batch-size 3 is the global batch")


@pytest.mark.backends
def test_weights_files_load_across_backends(backend_run):
    _, results, work_dir = backend_run
    inputs = np.load(work_dir / "inputs.npy")
    # Saved by TensorFlow (this process), loaded there.
    assert results["tf_weights_max_difference"] <= CROSS_BACKEND_ATOL
    # Saved there, loaded by TensorFlow here.
    fcn = tiny_network(CALIBRATION_SHAPE)
    fcn.load_weights(str(work_dir / "backend.weights.h5"))
    np.testing.assert_allclose(fcn.predict_on_batch(calibration_images(inputs)),
                               np.load(work_dir / "backend_predictions.npy"), atol=CROSS_BACKEND_ATOL)
    # The best weights trained there.
    fcn = tiny_network()
    fcn.load_weights(str(work_dir / "weights" / WEIGHTS))
    np.testing.assert_allclose(fcn.predict_on_batch(inputs), np.load(work_dir / "predictions.npy"),
                               atol=TRAINED_ATOL)


@pytest.mark.backends
def test_remat_recomputes_with_keras_remat_and_changes_no_number(backend_run):
    _, results, _ = backend_run
    assert results["remat_max_difference"] <= 1e-5
    assert results["remat_recomputes"], results["remat_calls"]


@pytest.mark.backends
def test_tensorboard_logs_under_pytorch_where_tensorflow_is_installed(tmp_path):
    pytest.importorskip("torch")
    write_book_dataset(str(tmp_path / "drinks"), num_train=NUM_TRAIN, num_test=NUM_TEST)
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "fcn-12.3.1.py"), "--train", "--epochs", "1", "--height", "64", "--width",
         "64", "--depth", "11", "--layers", "1", "--batch-size", "2", "--workers", "1", "--verbose", "0",
         "--data-path", str(tmp_path / "drinks"), "--save-dir", str(tmp_path / "weights"),
         "--tensorboard", str(tmp_path / "logs")],
        env=backend_environment("torch"), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert [name for name in os.listdir(tmp_path / "logs" / "train") if name.startswith("events.out.tfevents.")]


def check(backend_name: str, tensorflow_installed: bool = False, **flags) -> None:
    check_backend(RunConfig(**flags), backend_name, tensorflow_installed)


@pytest.mark.parametrize("backend_name", ["jax", "torch"])
def test_the_book_s_commands_pass_the_backend_checks(backend_name):
    check(backend_name, train=True)
    check(backend_name, evaluate=True, restore_weights="w.weights.h5", plot=True)
    check(backend_name, restore_weights="w.weights.h5", export="fcn", export_format=("keras",), predict_dir="d")


@pytest.mark.parametrize("flags, backend_name, tensorflow_installed, message", [
    ({"export": "fcn"}, "jax", True, "--export-format savedmodel (with keras, the default pair) is converted"),
    ({"export": "fcn", "export_format": ("keras", "onnx")}, "torch", True, "--export-format onnx is converted"),
    ({"export": "fcn", "export_format": ("litert",)}, "jax", True, "--export-format litert is converted"),
    ({"train": True, "tensorboard": "tb"}, "jax", False, "--tensorboard writes its event files with TensorFlow"),
    ({"train": True, "distribute": "mirrored"}, "torch", True, "--distribute mirrored needs tf.distribute"),
    ({"train": True, "distribute": "multi-worker", "seed": 0}, "jax", True, "--distribute multi-worker needs tf"),
    ({"train": True}, "numpy", False, "KERAS_BACKEND=numpy here: this program trains"),
])
def test_what_the_backend_cannot_do_is_refused(flags, backend_name, tensorflow_installed, message):
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(").replace(")", r"\)")) as error:
        check(backend_name, tensorflow_installed, **flags)
    assert f"KERAS_BACKEND={backend_name} here" in str(error.value)


def test_tensorboard_and_jax_mirrored_pass_where_they_work():
    check("jax", True, train=True, tensorboard="tb", distribute="mirrored")
    check("tensorflow", True, train=True, tensorboard="tb", distribute="multi-worker", seed=0,
          export="fcn", export_format=("keras", "savedmodel", "onnx", "litert"))


def test_this_process_runs_tensorflow_by_default():
    assert backend.name() == backend.TENSORFLOW and backend.tensorflow_installed()


@pytest.mark.parametrize("value, expected", [("8.0", (8, 0)), ("9.0", (9, 0)), ((8, 6), (8, 6)), ("12", (12, 0)),
                                             (None, None), ("gfx90a", None)])
def test_compute_capabilities_are_read_from_each_backend_s_form(value, expected):
    assert backend.parse_compute_capability(value) == expected
