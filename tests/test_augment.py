"""--augment: image and mask move together, and draws are reproducible."""

import numpy as np
import pytest

from data_generator import DataGenerator
from segmentation.augment import Augmentation, zoom_and_crop
from segmentation.config import recorded_setting

PALETTE = np.array([[0.1, 0.1, 0.1], [0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]], dtype=np.float32)


def blocky_scene(height=48, width=64, seed=0):
    """A class map of solid blocks and an image painting each class its own colour."""
    rng = np.random.default_rng(seed)
    class_map = np.zeros((height, width), dtype=np.uint8)
    for _ in range(6):
        top, left = rng.integers(0, height - 12), rng.integers(0, width - 12)
        class_map[top : top + rng.integers(6, 12), left : left + rng.integers(6, 12)] = rng.integers(1, 4)
    return PALETTE[class_map], class_map


def decode(image):
    """The class whose palette colour is nearest to each pixel."""
    return np.argmin(((image[..., None, :] - PALETTE) ** 2).sum(-1), axis=-1)


def interior(class_map):
    """Pixels whose 3x3 neighbourhood has one class (away from block edges, where bilinear mixes colours)."""
    padded = np.pad(class_map, 1, mode="edge")
    shifts = [padded[1 + dy : 1 + dy + class_map.shape[0], 1 + dx : 1 + dx + class_map.shape[1]]
              for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return np.all([shift == class_map for shift in shifts], axis=0)


@pytest.mark.parametrize("seed", range(12))
def test_a_mask_pixel_moves_where_its_image_pixel_moves(seed):
    image, class_map = blocky_scene(seed=seed)
    geometric = Augmentation(brightness=0.0, contrast=0.0, saturation=0.0)
    out_image, out_map = geometric(image, class_map, np.random.default_rng(seed))
    assert out_image.shape == image.shape and out_map.shape == class_map.shape
    assert out_image.dtype == np.float32 and out_map.dtype == np.uint8
    inside = interior(out_map)
    assert inside.mean() > 0.5
    np.testing.assert_array_equal(decode(out_image)[inside], out_map[inside])


@pytest.mark.parametrize("zoom", [0.75, 1.4])
def test_zoom_in_and_out_keep_the_size_and_the_alignment(zoom):
    image, class_map = blocky_scene(seed=3)
    out_image, out_map = zoom_and_crop(image, class_map, zoom, np.random.default_rng(0))
    assert out_image.shape == image.shape and out_map.shape == class_map.shape
    inside = interior(out_map)
    np.testing.assert_array_equal(decode(out_image)[inside], out_map[inside])
    # A zoom really changes the picture.
    assert not np.array_equal(out_map, class_map)


def test_colour_jitter_changes_the_image_only():
    image, class_map = blocky_scene(seed=5)
    colour_only = Augmentation(flip=False, scale=(1.0, 1.0))
    out_image, out_map = colour_only(image, class_map, np.random.default_rng(1))
    np.testing.assert_array_equal(out_map, class_map)
    assert not np.allclose(out_image, image)
    assert out_image.min() >= 0.0 and out_image.max() <= 1.0


def test_generator_augments_training_batches_reproducibly_and_never_evaluation(book_dataset):
    from segmentation.ground_truth.book_labels import load_labels

    data_path, _ = book_dataset
    labels = load_labels(f"{data_path}/segmentation_train.npy", data_path, 64, 64)

    def batches(augmentation):
        generator = DataGenerator(labels, data_path, batch_size=2, shuffle=True, seed=7, augmentation=augmentation)
        first = generator[0]
        generator.on_epoch_end()
        return first, generator[0], generator.batch_class_maps(0)

    (plain_x, plain_y), _, _ = batches(None)
    (aug_x, aug_y), (next_x, _), (eval_x, eval_y) = batches(Augmentation())
    (again_x, again_y), _, _ = batches(Augmentation())
    assert not np.allclose(plain_x, aug_x)
    np.testing.assert_array_equal(aug_x, again_x)
    np.testing.assert_array_equal(aug_y, again_y)
    # The next epoch draws anew, and evaluation batches are the images as they are.
    assert not np.allclose(next_x, aug_x)
    assert aug_y.shape == plain_y.shape and np.all(aug_y.sum(-1) == 1)
    plain = DataGenerator(labels, data_path, batch_size=2, shuffle=True, seed=7)
    plain.on_epoch_end()
    np.testing.assert_array_equal(eval_x, plain.batch_class_maps(0)[0])


def test_a_run_saved_when_augment_was_a_switch_reads_as_full_or_none():
    assert recorded_setting({"augment": True}, "augment") == "full"
    assert recorded_setting({"augment": False}, "augment") == "none"
    assert recorded_setting({}, "augment") == "none"
    assert recorded_setting({"augment": "flip"}, "augment") == "flip"
