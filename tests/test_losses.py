"""Class balancing weights and the weighted cross-entropy / Dice losses."""

import keras
import numpy as np
import pytest

from segmentation.losses import WeightedCrossentropy, build_loss, median_frequency_weights, soft_dice_loss


def test_median_frequency_weights_of_a_known_mask():
    # Image 1: 12 background, 4 class 1. Image 2: 14 background, 2 class 2. Class 3 absent.
    first = np.zeros((4, 4), dtype=np.uint8)
    first[0] = 1
    second = np.zeros((4, 4), dtype=np.uint8)
    second[0, :2] = 2
    weights = median_frequency_weights([first, second], 4)
    frequency = np.array([26 / 32, 4 / 16, 2 / 16])
    expected = np.median(frequency) / frequency
    np.testing.assert_allclose(weights[:3], expected, rtol=1e-6)
    assert weights[3] == 1.0
    # Rare classes weigh more than background.
    assert weights[2] > weights[1] > weights[0]


def random_batch(seed=0, shape=(2, 8, 8, 3)):
    rng = np.random.default_rng(seed)
    y_true = np.eye(shape[-1], dtype=np.float32)[rng.integers(0, shape[-1], shape[:-1])]
    logits = rng.normal(size=shape).astype(np.float32)
    y_pred = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return y_true, y_pred


def test_unit_weights_give_the_books_cross_entropy():
    y_true, y_pred = random_batch()
    ours = float(WeightedCrossentropy([1.0, 1.0, 1.0])(y_true, y_pred))
    books = float(keras.losses.CategoricalCrossentropy()(y_true, y_pred))
    assert ours == pytest.approx(books, rel=1e-5)


def test_weights_scale_each_class_pixels_loss():
    y_true, y_pred = random_batch(seed=1)
    per_pixel = -np.log(np.sum(y_true * y_pred, axis=-1))
    weights = np.array([0.1, 2.0, 5.0], dtype=np.float32)
    expected = np.mean(per_pixel * weights[np.argmax(y_true, -1)])
    assert float(WeightedCrossentropy(weights)(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)


def test_dice_is_zero_for_a_perfect_prediction_and_large_for_a_wrong_one():
    y_true, _ = random_batch(seed=2)
    np.testing.assert_allclose(np.asarray(soft_dice_loss(y_true, y_true)), 0.0, atol=1e-6)
    wrong = np.roll(y_true, 1, axis=-1)
    assert np.all(np.asarray(soft_dice_loss(y_true, wrong)) > 0.9)


def test_ce_plus_dice_adds_the_mean_dice_once():
    y_true, y_pred = random_batch(seed=3)
    ce = float(WeightedCrossentropy([1, 1, 1])(y_true, y_pred))
    both = float(WeightedCrossentropy([1, 1, 1], dice_weight=1.0)(y_true, y_pred))
    assert both == pytest.approx(ce + float(np.mean(soft_dice_loss(y_true, y_pred))), rel=1e-5)


def test_build_loss_keeps_the_books_loss_by_default_and_round_trips_its_config():
    assert build_loss("ce", None, 4) == "categorical_crossentropy"
    loss = build_loss("ce+dice", np.array([0.5, 2, 2, 2], dtype=np.float32), 4)
    restored = WeightedCrossentropy.from_config(loss.get_config())
    assert restored.class_weights == [0.5, 2.0, 2.0, 2.0] and restored.dice_weight == 1.0
