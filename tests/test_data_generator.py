"""Loading the book's .npy ground truth and the PyDataset of batches."""

import os
import pickle
import tracemalloc

import numpy as np
import pytest
import skimage.io
from conftest import HEIGHT, N_CLASSES, WIDTH

from data_generator import DataGenerator
from segmentation.errors import DatasetError
from segmentation.ground_truth.book_labels import load_labels
from segmentation.ground_truth.label_set import ClassMaps, PackedClassMap
from segmentation.images import read_image


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


def test_passes_go_through_every_image_that_many_times_each_in_its_own_order(book_dataset):
    data_path, _ = book_dataset
    labels = train_labels(data_path)
    one = DataGenerator(labels, data_path, batch_size=2, shuffle=True, seed=3)
    three = DataGenerator(labels, data_path, batch_size=2, shuffle=True, seed=3, passes=3)
    n_images = len(labels.keys)
    assert len(three) == 3 * len(one) and len(three.keys) == 3 * n_images
    # The first pass is drawn as the book's one-pass epoch is.
    assert three.keys[:n_images] == one.keys
    for _epoch in range(2):
        passes = [three.keys[start : start + n_images] for start in range(0, 3 * n_images, n_images)]
        assert all(sorted(one_pass) == sorted(labels.keys) for one_pass in passes)
        assert passes[0] != passes[1] or passes[1] != passes[2]
        three.on_epoch_end()
    with pytest.raises(ValueError, match="passes must be at least 1"):
        DataGenerator(labels, data_path, passes=0)


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
        ({"train000.png": np.zeros((HEIGHT, WIDTH), np.uint8)},
         "has shape \\(64, 64\\), expected \\(64, 64, n_classes\\)"),
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


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, bool])
def test_one_hot_masks_of_any_0_1_dtype_load_as_uint8_class_maps(book_dataset, tmp_path, dtype):
    data_path, splits = book_dataset
    dictionary = {key: one_hot.astype(dtype) for key, one_hot in splits["train"].items()}
    labels = load_labels(save_dict(tmp_path / "typed.npy", dictionary), data_path, HEIGHT, WIDTH)
    assert labels.n_classes == N_CLASSES
    for key, one_hot in splits["train"].items():
        assert labels.masks[key].dtype == np.uint8 and labels.masks[key].shape == (HEIGHT, WIDTH)
        np.testing.assert_array_equal(labels.masks[key], one_hot.argmax(axis=-1))


def save_dict_with_protocol(path, dictionary, protocol):
    """np.save of a dict, with a chosen pickle protocol (numpy 1.x wrote 3, numpy 2.x writes 4)."""
    wrapper = np.empty((), dtype=object)
    wrapper[()] = dictionary
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, np.lib.format.header_data_from_array_1_0(wrapper))
        pickle.dump(wrapper, file, protocol=protocol)
    return str(path)


@pytest.mark.parametrize("protocol", [2, 5])
def test_dicts_pickled_as_np_save_never_does_still_load(book_dataset, tmp_path, protocol):
    data_path, splits = book_dataset
    labels = load_labels(save_dict_with_protocol(tmp_path / "other.npy", splits["train"], protocol), data_path,
                         HEIGHT, WIDTH)
    for key, one_hot in splits["train"].items():
        np.testing.assert_array_equal(labels.masks[key], one_hot.argmax(axis=-1))


# The protocols np.save writes: 3 (numpy 1.x, the book's files) and 4 (numpy 2.x).
@pytest.mark.parametrize("protocol", [3, 4])
def test_loading_never_holds_the_whole_one_hot_dict(book_dataset, tmp_path, protocol):
    data_path, splits = book_dataset
    keys = list(splits["train"])
    # 64 float64 one-hot masks: 8 MiB together, 256 KiB as uint8 class maps.
    dictionary = {f"copy{i:02d}-{key}": splits["train"][key].astype(np.float64) for i in range(8) for key in keys}
    for name in dictionary:
        os.link(os.path.join(data_path, name.split("-", 1)[1]), os.path.join(data_path, name))
    path = save_dict_with_protocol(tmp_path / "big.npy", dictionary, protocol)
    one_hot_bytes = sum(mask.nbytes for mask in dictionary.values())
    del dictionary
    tracemalloc.start()
    try:
        labels = load_labels(path, data_path, HEIGHT, WIDTH)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(labels.masks) == 64
    for name, class_map in labels.masks.items():
        np.testing.assert_array_equal(class_map, splits["train"][name.split("-", 1)[1]].argmax(axis=-1))
    assert peak < one_hot_bytes / 4


def test_class_maps_are_kept_packed_and_unpack_to_the_argmax(book_dataset):
    data_path, splits = book_dataset
    labels = load_labels(os.path.join(data_path, "segmentation_train.npy"), data_path, HEIGHT, WIDTH)
    assert isinstance(labels.masks, ClassMaps)
    assert list(labels.masks) == list(splits["train"]) and len(labels.masks) == len(splits["train"])
    packed = labels.masks._packed
    for key, one_hot in splits["train"].items():
        np.testing.assert_array_equal(labels.masks[key], one_hot.argmax(axis=-1))
        assert labels.masks[key].dtype == np.uint8
        # Runs of one class compress: a fraction of the map's HEIGHT x WIDTH bytes.
        assert len(packed[key].data) < HEIGHT * WIDTH / 4


def test_a_packed_map_round_trips_any_class_layout():
    rng = np.random.default_rng(0)
    for class_map in (np.zeros((5, 7), np.uint8), rng.integers(0, 4, (48, 64), dtype=np.uint8)):
        np.testing.assert_array_equal(PackedClassMap.pack(class_map).unpack(), class_map)
