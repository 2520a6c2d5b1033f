"""The book's own Keras 2 weights file loads by layer order and predicts as the book's network did.

The book's `ResNet56v2-3layer-drinks-best-iou.h5` cannot be downloaded here, so
`bench.book_keras2` rebuilds the book's network with Keras 2 (`tf_keras`), gives it
distinct weights and saves them as the book did (`save_weights` to `.h5`, the
legacy HDF5 format). Our Keras 3 network must load that file through the
command line's restore path and give the same predictions.
"""

import os

import keras
import numpy as np
import pytest
import tf_keras
from conftest import HEIGHT, WIDTH, write_book_dataset

from bench import book_keras2
from model import build_model
from segmentation import cli
from segmentation.checkpoints import resolve_weights_path, restore_weights
from segmentation.images import read_image

BOOK_WEIGHTS = "ResNet56v2-3layer-drinks-best-iou.h5"
# The book's network: --layers 3, ResNet56v2 (n = 6), 4 classes; a small input keeps it fast.
INPUT_SHAPE = (HEIGHT, WIDTH, 3)
BOOK_LAYERS, BOOK_N = 3, 6


@pytest.fixture
def float64():
    """Both Keras versions compute in float64 for the test, then go back to their settings."""
    policy, floatx, legacy_floatx = keras.config.dtype_policy(), keras.config.floatx(), tf_keras.backend.floatx()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    tf_keras.backend.set_floatx("float64")
    yield
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(policy)
    tf_keras.backend.set_floatx(legacy_floatx)


def save_book_weights(path, images, n_layers=BOOK_LAYERS, n=BOOK_N, n_classes=4):
    """Builds the book's Keras 2 network, gives it distinct weights, saves them as the book did."""
    book = book_keras2.build_book_fcn(INPUT_SHAPE, n_layers=n_layers, n=n, n_classes=n_classes)
    book_keras2.randomize_weights(book, images)
    book.save_weights(str(path))
    return book


def random_images(count, seed=1):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (count, *INPUT_SHAPE)).astype(keras.config.floatx())


def test_the_books_h5_loads_by_layer_order_and_predicts_the_same(tmp_path, float64):
    # In float64 the two frameworks' rounding differences vanish, so only a wrong mapping could show.
    images = random_images(2)
    book = save_book_weights(tmp_path / BOOK_WEIGHTS, images)
    expected = book.predict_on_batch(images)
    path, explanation = resolve_weights_path(BOOK_WEIGHTS, str(tmp_path))
    assert path == str(tmp_path / BOOK_WEIGHTS) and explanation == f"Loading weights {path}"
    _, fcn = build_model(INPUT_SHAPE, n_layers=BOOK_LAYERS, n_classes=4, n=BOOK_N)
    untrained = fcn.predict_on_batch(images)
    restore_weights(fcn, path)
    predicted = fcn.predict_on_batch(images)
    difference = np.abs(predicted - expected).max()
    print(f"max abs difference of the softmax outputs (float64, book depth 56, 3 layers): {difference:.3g}")
    # Our softmax stays float32 (see model.build_fcn), hence not exactly 0.
    assert difference < 1e-5
    # The comparison can fail: the network before loading predicts something else.
    assert np.abs(untrained - expected).max() > 0.1


def test_the_books_h5_evaluates_through_the_command_line(tmp_path, capsys):
    # float32, as the book saved its file; the reader's command with the book's name.
    data_path = str(tmp_path / "drinks")
    splits = write_book_dataset(data_path, num_train=2, num_test=2)
    save_dir = tmp_path / "weights"
    save_dir.mkdir()
    names = sorted(splits["test"])
    images = np.stack([read_image(os.path.join(data_path, name), HEIGHT, WIDTH) for name in names])
    book = save_book_weights(save_dir / BOOK_WEIGHTS, images)
    argv = ["--evaluate", f"--restore-weights={BOOK_WEIGHTS}", "--height", str(HEIGHT), "--width", str(WIDTH),
            "--data-path", data_path, "--save-dir", str(save_dir)]
    status = cli.main(argv)
    out, err = capsys.readouterr()
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == f"Loading weights {save_dir / BOOK_WEIGHTS}"
    # The per-image mIoU the command line prints is the book network's own.
    expected = np.argmax(book.predict_on_batch(images), axis=-1)
    for name, predicted in zip(names, expected):
        truth = np.argmax(splits["test"][name], axis=-1)
        present = np.unique(truth)
        miou = np.mean([((predicted == c) & (truth == c)).sum() / ((predicted == c) | (truth == c)).sum()
                        for c in present])
        line = next(line for line in lines if line.startswith(f"{name}:"))
        assert f"mIoU={miou:.4f}" in line


def test_keras2_weights_of_another_network_are_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "other.h5"
    save_book_weights(path, random_images(1), n_layers=2, n=1)
    _, fcn = build_model(INPUT_SHAPE, n_layers=1, n_classes=4, n=1)
    with pytest.raises(Exception, match="these weights do not fit the model") as raised:
        restore_weights(fcn, str(path))
    assert type(raised.value).__name__ == "UsageError" and "\n" not in str(raised.value)
