"""--fine-tune: weights of another class count start every layer but the classifier."""

import os

import keras
import numpy as np
import pytest
from conftest import HEIGHT, TINY, WIDTH, write_book_dataset

from model import CLASSIFIER_NAME, build_model
from segmentation.checkpoints import restore_for_fine_tuning
from segmentation.errors import UsageError

# An 8-filter head, as the weights below.
FLAGS = [*TINY, "--head-filters", "8", "--workers", "1", "--seed", "0"]


@pytest.fixture(scope="module")
def four_class_weights(tmp_path_factory):
    """Weights of a 4-class tiny FCN, and the network they came from."""
    keras.utils.set_random_seed(1)
    _, four = build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=4, n=1, head_filters=8)
    path = str(tmp_path_factory.mktemp("fine-tune") / "four.weights.h5")
    four.save_weights(path)
    return path, four


def write_two_class_dataset(data_path):
    """The tiny book data set with every drink merged into one class: background and drink."""
    splits = write_book_dataset(data_path, num_train=4, num_test=2)
    for split, dictionary in splits.items():
        two = {name: np.stack([mask[..., 0], mask[..., 1:].max(axis=-1)], axis=-1) for name, mask in dictionary.items()}
        np.save(os.path.join(data_path, f"segmentation_{split}.npy"), two)


def test_every_layer_but_the_classifier_is_loaded(four_class_weights):
    path, four = four_class_weights
    keras.utils.set_random_seed(2)
    backbone, two = build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=2, n=1, head_filters=8)
    fresh_classifier = two.get_layer(CLASSIFIER_NAME).get_weights()
    assert restore_for_fine_tuning(two, path) == [CLASSIFIER_NAME]
    # The backbone (and every other layer) starts equal to the weights file's.
    for layer in two.layers:
        if layer.weights and layer.name != CLASSIFIER_NAME:
            for loaded, saved in zip(layer.get_weights(), four.get_layer(layer.name).get_weights(), strict=True):
                np.testing.assert_array_equal(loaded, saved)
    assert len(backbone.weights) > 0 and backbone.name in {layer.name for layer in two.layers}
    for kept, fresh in zip(two.get_layer(CLASSIFIER_NAME).get_weights(), fresh_classifier, strict=True):
        np.testing.assert_array_equal(kept, fresh)


def test_weights_of_another_network_are_refused_even_with_fine_tune(four_class_weights):
    path, _ = four_class_weights
    _, deeper = build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=2, n=2, head_filters=8)
    before = [weights.copy() for weights in deeper.get_weights()]
    with pytest.raises(UsageError, match="--fine-tune keeps every layer but the classifier"):
        restore_for_fine_tuning(deeper, path)
    for now, then in zip(deeper.get_weights(), before, strict=True):
        np.testing.assert_array_equal(now, then)


def test_a_two_class_run_trains_from_four_class_weights(four_class_weights, tmp_path, run_cli):
    path, _ = four_class_weights
    data_path = str(tmp_path / "two")
    write_two_class_dataset(data_path)
    common = ["--train", "--epochs", "1", *FLAGS, "--data-path", data_path, "--restore-weights", path]
    # Without --fine-tune, the refusal stays as it is.
    status, _, err = run_cli([*common, "--save-dir", str(tmp_path / "refused")])
    assert status == 2 and "these weights do not fit the model" in err
    status, out, err = run_cli([*common, "--save-dir", str(tmp_path / "w"), "--fine-tune"])
    assert status == 0, err
    assert f"--fine-tune: loaded every layer of {path} but {CLASSIFIER_NAME} (another class count)" in out
    assert (tmp_path / "w" / "ResNet11v2-1layer-drinks-best-iou.weights.h5").is_file()


def test_fine_tune_needs_train_and_restore_weights(book_dataset, run_cli):
    data_path, _ = book_dataset
    status, _, err = run_cli(["--train", "--fine-tune", *FLAGS, "--data-path", data_path])
    assert status == 2 and "--fine-tune is used with --train and --restore-weights" in err
