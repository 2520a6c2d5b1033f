"""--val-split and --val-labels: the best weights selected on held-out images, the test set scored once."""

import csv
import json
import os

import numpy as np
import pytest
from conftest import HEIGHT, RECORD, TINY, WIDTH, write_book_dataset

from segmentation.errors import DatasetError
from segmentation.ground_truth.book_labels import load_labels
from segmentation.ground_truth.splits import split_labels

FLAGS = [*TINY, "--head-filters", "8", "--workers", "1", "--seed", "0"]


def test_the_split_is_seeded_disjoint_and_whole(tmp_path):
    write_book_dataset(str(tmp_path), num_train=10, num_test=1)
    labels = load_labels(str(tmp_path / "segmentation_train.npy"), str(tmp_path), HEIGHT, WIDTH)
    training, validation = split_labels(labels, 0.2, seed=3)
    assert len(validation.masks) == 2 and len(training.masks) == 8
    assert set(training.keys) | set(validation.keys) == set(labels.keys)
    assert not set(training.keys) & set(validation.keys)
    np.testing.assert_array_equal(validation.masks[validation.keys[0]], labels.masks[validation.keys[0]])
    assert split_labels(labels, 0.2, seed=3)[1].keys == validation.keys
    with pytest.raises(DatasetError, match="would hold out all 10 training image"):
        split_labels(labels, 0.99, seed=3)


def history_columns(save_dir):
    with open(save_dir / "history.csv", newline="") as file:
        return next(csv.reader(file))


def test_selection_on_a_validation_split_scores_the_test_set_once(tmp_path, run_cli):
    data_path = str(tmp_path / "drinks")
    write_book_dataset(data_path, num_train=8, num_test=2)
    save_dir = tmp_path / "weights"
    argv = ["--train", "--epochs", "2", *FLAGS, "--data-path", data_path, "--save-dir", str(save_dir),
            "--val-split", "0.25"]
    status, out, err = run_cli(argv)
    assert status == 0, err
    assert "Selecting the best weights on 2 validation image(s)" in out
    assert "Training images: 6  Validation images: 2" in out
    columns = history_columns(save_dir)
    assert "val_miou" in columns and "val_pixel_accuracy" in columns and "test_miou" not in columns
    record = json.loads((save_dir / RECORD).read_text())
    assert record["selected_on"] == "val" and 0 <= record["val_miou"] <= 1
    # The test set's one score, with the selected weights, is in the record.
    assert 0 <= record["test_miou"] <= 1 and "Test set, scored once" in out
    assert record["settings"]["val_split"] == 0.25
    # A resume must hold out the same images.
    status, _, err = run_cli([*argv[:2], "3", *argv[3:-1], "0.5", "--resume"])
    assert status == 2 and "val_split 0.25 (now 0.5)" in err


def test_without_validation_images_the_book_selects_on_the_test_set_and_says_so(trained_run):
    # The shared tiny run gave no validation images.
    assert ("Selecting the best weights on the test set, as the book does: their test score is then optimistic"
            in trained_run.printed)
    record = json.loads((trained_run.save_dir / RECORD).read_text())
    assert record["selected_on"] == "test" and "val_miou" not in record


def test_validation_labels_from_a_file(tmp_path, run_cli):
    data_path = str(tmp_path / "drinks")
    splits = write_book_dataset(data_path, num_train=6, num_test=2)
    held_out = dict(list(splits["train"].items())[:2])
    np.save(os.path.join(data_path, "segmentation_val.npy"), held_out)
    # Held out: the validation images leave the training set (a set sharing images is refused).
    np.save(os.path.join(data_path, "segmentation_train.npy"),
            {key: mask for key, mask in splits["train"].items() if key not in held_out})
    status, out, err = run_cli(["--train", "--epochs", "1", *FLAGS, "--data-path", data_path,
                                "--save-dir", str(tmp_path / "w"), "--val-labels", "segmentation_val.npy"])
    assert status == 0, err
    assert "Selecting the best weights on 2 validation image(s)" in out


@pytest.mark.parametrize("extra, message", [
    (["--train", "--val-split", "1.5"], "--val-split 1.5: must be a share of the training images in (0, 1)"),
    (["--train", "--val-split", "0.2", "--val-labels", "v.npy"], "--val-split and --val-labels both name"),
    (["--evaluate", "--val-split", "0.2"], "--val-split is used with --train"),
])
def test_bad_validation_flags_are_refused(book_dataset, tmp_path, run_cli, extra, message):
    data_path, _ = book_dataset
    status, _, err = run_cli([*FLAGS, "--data-path", data_path, "--save-dir", str(tmp_path / "w"), *extra])
    assert status == 2 and err.count("\n") == 1 and message in err
