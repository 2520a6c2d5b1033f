"""--export-format: each export, run in its own runtime, gives the Keras model's predictions; none overwrites."""

import errno
import os
import shutil
import sys

import keras
import numpy as np
import pytest
import skimage.io
from conftest import HEIGHT, N_CLASSES, TINY, WIDTH, write_book_dataset

from model import build_model
from segmentation import inference
from segmentation.config import EXPORT_FORMATS
from segmentation.errors import SaveError, UsageError
from segmentation.inference import SAVED_MODEL_FILE, check_export_tools, export_model, export_paths

# How close an export must stay to the Keras model on the same images.
PROBABILITY_TOLERANCE = 1e-4
MIN_ARGMAX_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def tiny_network(tmp_path_factory):
    """An untrained tiny FCN, its weights file, three of the book-format test images and the CLI flags."""
    workdir = tmp_path_factory.mktemp("export")
    data_path = str(workdir / "drinks")
    splits = write_book_dataset(data_path, num_train=2, num_test=3)
    images = np.stack([skimage.io.imread(os.path.join(data_path, name)) for name in splits["test"]])
    keras.utils.set_random_seed(0)
    # An 8-filter head: a network quick to convert.
    _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=N_CLASSES, n=1, head_filters=8)
    weights = str(workdir / "tiny.weights.h5")
    fcn.save_weights(weights)
    flags = [*TINY, "--head-filters", "8", "--data-path", data_path, "--save-dir", str(workdir / "weights"),
             "--restore-weights", weights]
    return fcn, images.astype(np.float32) / 255.0, flags


def onnx_probabilities(path, images):
    """The probabilities of an ONNX file in onnxruntime."""
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def litert_probabilities(path, images):
    """The probabilities of a `.tflite` file in the LiteRT interpreter, the batch resized to the images'."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = litert.Interpreter(model_path=path)
    source, = interpreter.get_input_details()
    interpreter.resize_tensor_input(source["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


RUNTIMES = {"onnx": onnx_probabilities, "litert": litert_probabilities}


def assert_same_predictions(probabilities, expected):
    assert probabilities.shape == expected.shape
    assert np.abs(probabilities - expected).max() <= PROBABILITY_TOLERANCE
    assert np.mean(probabilities.argmax(-1) == expected.argmax(-1)) >= MIN_ARGMAX_AGREEMENT


def test_export_paths_name_one_target_per_format():
    assert export_paths("out/fcn", EXPORT_FORMATS) == {
        "keras": "out/fcn.keras", "savedmodel": "out/fcn", "onnx": "out/fcn.onnx", "litert": "out/fcn.tflite"}
    assert export_paths("out/fcn.onnx", ("onnx", "keras")) == {"onnx": "out/fcn.onnx", "keras": "out/fcn.keras"}
    assert export_paths("out/fcn.tflite/", ("litert",)) == {"litert": "out/fcn.tflite"}
    assert list(export_paths("out/fcn.keras")) == ["keras", "savedmodel"]


@pytest.mark.parametrize("export_format", sorted(RUNTIMES))
def test_export_gives_the_keras_predictions_in_its_runtime(tiny_network, tmp_path, export_format):
    fcn, images, _ = tiny_network
    if export_format == "onnx":
        pytest.importorskip("tf2onnx")
    targets = export_paths(str(tmp_path / "fcn"), (export_format,))
    export_model(fcn, targets)
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(targets[export_format])]  # no temporary file left
    assert_same_predictions(RUNTIMES[export_format](targets[export_format], images), fcn.predict_on_batch(images))


def test_cli_exports_for_devices_and_never_overwrites(tiny_network, tmp_path, run_cli):
    pytest.importorskip("tf2onnx")
    fcn, images, flags = tiny_network
    expected = fcn.predict_on_batch(images)
    devices = ["--export", str(tmp_path / "fcn"), "--export-format", "onnx", "--export-format", "litert", *flags]
    status, stdout, stderr = run_cli(devices)
    assert status == 0, stderr
    assert sorted(os.listdir(tmp_path)) == ["fcn.onnx", "fcn.tflite"]
    assert "Exported the network" in stdout and "onnxruntime.InferenceSession" in stdout
    assert_same_predictions(onnx_probabilities(str(tmp_path / "fcn.onnx"), images), expected)
    assert_same_predictions(litert_probabilities(str(tmp_path / "fcn.tflite"), images), expected)

    written = {name: (tmp_path / name).read_bytes() for name in ("fcn.onnx", "fcn.tflite")}
    status, _, stderr = run_cli(devices)
    assert status == 2 and stderr.count("\n") == 1
    assert "exist(s) already" in stderr and "--overwrite" in stderr
    # One target in the way stops the whole export: the .keras file is not written either.
    status, _, stderr = run_cli(["--export", str(tmp_path / "fcn.onnx"), "--export-format", "keras",
                                 "--export-format", "onnx", *flags])
    assert status == 2 and f"{tmp_path / 'fcn.onnx'} exist(s) already" in stderr
    assert sorted(os.listdir(tmp_path)) == ["fcn.onnx", "fcn.tflite"]
    assert {name: (tmp_path / name).read_bytes() for name in written} == written

    status, _, stderr = run_cli([*devices, "--overwrite"])
    assert status == 0, stderr
    assert sorted(os.listdir(tmp_path)) == ["fcn.onnx", "fcn.tflite"]
    assert_same_predictions(onnx_probabilities(str(tmp_path / "fcn.onnx"), images), expected)


def test_a_missing_converter_ends_with_one_line_before_anything_is_written(tiny_network, tmp_path, run_cli,
                                                                          monkeypatch):
    _, _, flags = tiny_network
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # `import tf2onnx` now raises ImportError
    status, _, stderr = run_cli(["--export", str(tmp_path / "fcn"), "--export-format", "keras",
                                 "--export-format", "onnx", *flags])
    assert status == 2 and stderr.count("\n") == 1
    assert "--export-format onnx needs tf2onnx" in stderr
    assert "pip install -r requirements-export.txt" in stderr
    assert os.listdir(tmp_path) == []
    # The other formats need nothing beyond requirements.txt.
    check_export_tools(("keras", "savedmodel", "litert"))
    with pytest.raises(UsageError, match="needs tf2onnx"):
        check_export_tools(("onnx",))


def test_export_format_needs_export(run_cli):
    status, _, stderr = run_cli(["--evaluate", "--export-format", "onnx"])
    assert status == 2 and "--export-format is used with --export" in stderr


class FakeSavedModel:
    """Stands for the FCN in `model.export`: writes a SavedModel holding `label`, or fails as a full disk does."""

    def __init__(self, label, full_disk=False):
        self.label = label
        self.full_disk = full_disk

    def export(self, path, format, verbose):
        os.makedirs(os.path.join(path, "variables"))
        with open(os.path.join(path, SAVED_MODEL_FILE), "w") as file:
            file.write(self.label)
        if self.full_disk:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(path, "variables", "data"))


def test_a_full_disk_during_the_savedmodel_export_ends_in_one_line(tiny_network, tmp_path, run_cli, monkeypatch):
    _, _, flags = tiny_network
    monkeypatch.setattr(keras.Model, "export", lambda model, path, **kwargs: FakeSavedModel(
        "new", full_disk=True).export(path, **kwargs))
    status, _, stderr = run_cli(["--export", str(tmp_path / "fcn"), "--export-format", "savedmodel", *flags])
    assert status == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert f"{tmp_path / 'fcn'}: cannot be written (No space left on device)" in stderr
    assert os.listdir(tmp_path) == []  # nothing half-written left behind


def test_an_earlier_savedmodel_stays_whole_when_the_disk_fills(tmp_path):
    target = str(tmp_path / "fcn")
    export_model(FakeSavedModel("old"), {"savedmodel": target})
    with pytest.raises(SaveError, match="cannot be written \\(No space left on device\\)"):
        export_model(FakeSavedModel("new", full_disk=True), {"savedmodel": target})
    assert os.listdir(tmp_path) == ["fcn"]
    assert (tmp_path / "fcn" / SAVED_MODEL_FILE).read_text() == "old"


def test_a_kill_at_any_step_of_replacing_a_savedmodel_leaves_one_in_place(tmp_path, monkeypatch):
    """After every step that moves or removes a folder (where a kill could land), the target holds a whole export."""
    target = tmp_path / "fcn"
    export_model(FakeSavedModel("old"), {"savedmodel": str(target)})
    seen = []

    def checked(step):
        def run(*args, **kwargs):
            result = step(*args, **kwargs)
            seen.append((target / SAVED_MODEL_FILE).read_text() if (target / SAVED_MODEL_FILE).exists() else None)
            return result
        return run

    monkeypatch.setattr(os, "replace", checked(os.replace))
    monkeypatch.setattr(shutil, "rmtree", checked(shutil.rmtree))
    monkeypatch.setattr(inference, "_exchange", checked(inference._exchange))
    export_model(FakeSavedModel("new"), {"savedmodel": str(target)})
    assert seen and None not in seen, seen
    assert seen[-1] == "new" and os.listdir(tmp_path) == ["fcn"]
