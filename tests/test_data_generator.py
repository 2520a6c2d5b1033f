"""Loading the book's .npy ground truth and the PyDataset of batches."""

import os

import numpy as np
import pytest
import skimage.io

from conftest import HEIGHT, N_CLASSES, WIDTH
from data_generator import DataGenerator, DatasetError, load_labels, read_image


def train_labels(data_path):
    return load_labels(os.path.join(data_path, "segmentation_train.npy"), data_path, HEIGHT, WIDTH)


def test_book_npy_is_read_as_class_index_maps(book_dataset):
    data_path, splits = book_dataset
    labels = train_labels(data_path)
    assert labels.n_classes == N_CLASSES
    assert labels.keys == list(splits["train"])
    for key, one_hot in splits["train"].items():
        assert labels.masks[key].dtype == np.uint8
        np.testing.assert_array_equal(labels.masks[key], one_hot.argmax(axis=-1))


def test_batches_have_the_right_count_shapes_and_dtypes(book_dataset):
    data_path, splits = book_dataset
    generator = DataGenerator(train_labels(data_path), data_path, batch_size=3, shuffle=False)
    assert len(generator) == 8 // 3  # the last partial batch is dropped, as in the book
    images, masks = generator[1]
    assert images.shape == (3, HEIGHT, WIDTH, 3) and images.dtype == np.float32
    assert masks.shape == (3, HEIGHT, WIDTH, N_CLASSES) and masks.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    key = generator.batch_keys(1)[0]
    np.testing.assert_array_equal(masks[0], splits["train"][key])
    expected_image = skimage.io.imread(os.path.join(data_path, key)) / 255.0
    np.testing.assert_allclose(images[0], expected_image, atol=1e-6)


def test_evaluation_keeps_the_last_partial_batch(book_dataset):
    data_path, _ = book_dataset
    generator = DataGenerator(train_labels(data_path), data_path, batch_size=3, shuffle=False, drop_last=False)
    assert len(generator) == 3
    assert len(generator[2][0]) == 2


def test_shuffling_is_seeded_and_changes_every_epoch(book_dataset):
    data_path, _ = book_dataset
    labels = train_labels(data_path)
    unshuffled = DataGenerator(labels, data_path, batch_size=2, shuffle=False)
    first = DataGenerator(labels, data_path, batch_size=2, shuffle=True, seed=3)
    second = DataGenerator(labels, data_path, batch_size=2, shuffle=True, seed=3)
    assert unshuffled.keys == labels.keys
    assert first.keys == second.keys
    assert sorted(first.keys) == sorted(labels.keys)
    epoch_one = list(first.keys)
    first.on_epoch_end()
    assert first.keys != epoch_one
    assert labels.keys == list(labels.masks)  # the label set's order is untouched


def test_workers_reach_the_pydataset(book_dataset):
    data_path, _ = book_dataset
    generator = DataGenerator(train_labels(data_path), data_path, batch_size=2, workers=3)
    assert generator.workers == 3


def test_batch_size_larger_than_the_data_set_is_refused(book_dataset):
    data_path, _ = book_dataset
    with pytest.raises(DatasetError, match="--batch-size 9 is larger than the 8 images"):
        DataGenerator(train_labels(data_path), data_path, batch_size=9)


def save_dict(path, dictionary):
    np.save(path, dictionary)
    return str(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (np.zeros((3, 3)), "expected np.save of a dict"),
        ({}, "the labels dict is empty"),
        ({"train000.png": np.zeros((HEIGHT, WIDTH), np.uint8)}, "has shape \\(64, 64\\), expected \\(64, 64, n_classes\\)"),
        ({"train000.png": np.zeros((32, WIDTH, 4), np.uint8)}, "has shape \\(32, 64, 4\\)"),
        ({"train000.png": np.zeros((HEIGHT, WIDTH, 1), np.uint8)}, "1 channel"),
        ({"train000.png": np.zeros((HEIGHT, WIDTH, 4), np.uint8),
          "train001.png": np.zeros((HEIGHT, WIDTH, 3), np.uint8)}, "has 3 classes, the first mask has 4"),
        ({"missing.png": np.zeros((HEIGHT, WIDTH, 4), np.uint8)}, "key 'missing.png' has no image"),
    ],
)
def test_bad_label_files_are_refused_with_their_name(book_dataset, tmp_path, content, message):
    data_path, _ = book_dataset
    path = save_dict(tmp_path / "bad.npy", content)
    with pytest.raises(DatasetError, match=message) as error:
        load_labels(path, data_path, HEIGHT, WIDTH)
    assert str(error.value).startswith(path)


def test_missing_and_unreadable_label_files(book_dataset, tmp_path):
    data_path, _ = book_dataset
    with pytest.raises(DatasetError, match="labels file not found"):
        load_labels(str(tmp_path / "nope.npy"), data_path, HEIGHT, WIDTH)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not a numpy file")
    with pytest.raises(DatasetError, match="cannot read it as a .npy file"):
        load_labels(str(garbage), data_path, HEIGHT, WIDTH)


def test_bad_images_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetError, match="cannot read the image"):
        read_image(str(corrupt), HEIGHT, WIDTH)
    deep = tmp_path / "deep.png"
    skimage.io.imsave(deep, np.zeros((HEIGHT, WIDTH), np.uint16), check_contrast=False)
    with pytest.raises(DatasetError, match="expected an 8-bit RGB image"):
        read_image(str(deep), HEIGHT, WIDTH)
    small = tmp_path / "small.png"
    skimage.io.imsave(small, np.zeros((32, 48, 3), np.uint8), check_contrast=False)
    with pytest.raises(DatasetError, match="image is 48x32, expected 64x64"):
        read_image(str(small), HEIGHT, WIDTH)
