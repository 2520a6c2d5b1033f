"""Class balancing weights and the weighted cross-entropy, Dice and Lovász-softmax losses."""

import keras
import numpy as np
import pytest

from segmentation.losses import (
    WeightedCrossentropy,
    build_loss,
    lovasz_softmax_loss,
    median_frequency_weights,
    soft_dice_loss,
)


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
    assert both == pytest.approx(ce + float(np.mean(keras.ops.convert_to_numpy(soft_dice_loss(y_true, y_pred)))),
                                 rel=1e-5)


def test_build_loss_keeps_the_books_loss_by_default_and_round_trips_its_config():
    assert build_loss("ce", None, 4) == "categorical_crossentropy"
    loss = build_loss("ce+dice", np.array([0.5, 2, 2, 2], dtype=np.float32), 4)
    restored = WeightedCrossentropy.from_config(loss.get_config())
    assert restored.class_weights == [0.5, 2.0, 2.0, 2.0] and restored.dice_weight == 1.0


def numpy_lovasz_softmax(y_true, y_pred):
    """Berman et al.'s Lovász-softmax, one image and one present class at a time, ignored pixels removed."""
    losses = []
    for truth, probabilities in zip(y_true.reshape(len(y_true), -1, y_true.shape[-1]),
                                    y_pred.reshape(len(y_pred), -1, y_pred.shape[-1])):
        labelled = truth.sum(-1) > 0
        truth, probabilities = truth[labelled].astype(np.float64), probabilities[labelled].astype(np.float64)
        per_class = []
        for c in range(truth.shape[-1]):
            foreground = truth[:, c]
            if foreground.sum() == 0:
                continue
            errors = np.abs(foreground - probabilities[:, c])
            order = np.argsort(-errors, kind="stable")
            sorted_foreground = foreground[order]
            intersection = foreground.sum() - np.cumsum(sorted_foreground)
            union = foreground.sum() + np.cumsum(1.0 - sorted_foreground)
            jaccard = 1.0 - intersection / union
            jaccard[1:] = jaccard[1:] - jaccard[:-1]
            per_class.append(np.dot(errors[order], jaccard))
        losses.append(np.mean(per_class) if per_class else 0.0)
    return np.array(losses)


def gradient_of(function, value: np.ndarray) -> np.ndarray:
    """d function(value) / d value for a scalar function, on the active Keras backend."""
    # Only the active backend need be installed, so its module is imported here.
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        value = tf.constant(value)
        with tf.GradientTape() as tape:
            tape.watch(value)
            result = function(value)
        return keras.ops.convert_to_numpy(tape.gradient(result, value))
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(function)(value))
    import torch

    value = torch.tensor(value, requires_grad=True)
    function(value).backward()
    return value.grad.numpy()


def lovasz(y_true, y_pred) -> np.ndarray:
    return keras.ops.convert_to_numpy(lovasz_softmax_loss(y_true, y_pred))


# One 2x2 image, 2 classes: truth [[0, 0], [1, 1]], P(class 1) [[0.1, 0.6], [0.8, 0.3]].
HAND_LABELS = np.array([[[0, 0], [1, 1]]])
HAND_TRUE = np.eye(2, dtype=np.float32)[HAND_LABELS]
HAND_PRED = np.stack([1 - np.array([[[0.1, 0.6], [0.8, 0.3]]]), np.array([[[0.1, 0.6], [0.8, 0.3]]])],
                     axis=-1).astype(np.float32)
# Class 0 (|Y| = 2): errors of pixels 0..3 are 0.1, 0.6, 0.2, 0.7; sorted 0.7 (bg), 0.6 (fg), 0.2 (bg),
# 0.1 (fg). Intersection 2 - [0, 1, 1, 2] = [2, 1, 1, 0], union 2 + [1, 1, 2, 2] = [3, 3, 4, 4],
# Jaccard loss [1/3, 2/3, 3/4, 1], steps [1/3, 1/3, 1/12, 1/4]: 0.7/3 + 0.6/3 + 0.2/12 + 0.1/4 = 0.475.
# Class 1: the same errors; sorted 0.7 (fg), 0.6 (bg), 0.2 (fg), 0.1 (bg). Intersection [1, 1, 0, 0],
# union [2, 3, 3, 4], Jaccard loss [1/2, 2/3, 1, 1], steps [1/2, 1/6, 1/3, 0]: 0.35 + 0.1 + 0.2/3 = 0.31/0.6.
HAND_LOSS = (0.475 + 0.31 / 0.6) / 2


def test_lovasz_of_a_hand_computed_image():
    np.testing.assert_allclose(lovasz(HAND_TRUE, HAND_PRED), [HAND_LOSS], rtol=1e-6)


def test_lovasz_is_zero_for_a_perfect_prediction_only():
    y_true, y_pred = random_batch(seed=4, shape=(2, 5, 7, 4))
    np.testing.assert_allclose(lovasz(y_true, y_true), 0.0, atol=1e-7)
    assert np.all(lovasz(y_true, y_pred) > 0.1)


def test_lovasz_averages_the_classes_present_only():
    # A third class, absent from the truth, takes 0.1 of every pixel from class 0. Class 0's errors become
    # 0.2, 0.7, 0.1, 0.6: sorted 0.7 (fg), 0.6 (bg), 0.2 (fg), 0.1 (bg), class 1's order above, so 0.31/0.6.
    # Class 1 is unchanged (0.31/0.6). Counted, class 2 would add 0.1 (all its errors 0.1, first step 1).
    y_true = np.concatenate([HAND_TRUE, np.zeros_like(HAND_TRUE[..., :1])], axis=-1)
    y_pred = np.concatenate([HAND_PRED[..., :1] - 0.1, HAND_PRED[..., 1:], np.full_like(HAND_PRED[..., :1], 0.1)],
                            axis=-1)
    np.testing.assert_allclose(lovasz(y_true, y_pred), [0.31 / 0.6], rtol=1e-6)


def test_lovasz_is_a_mean_per_image():
    y_true, y_pred = random_batch(seed=5, shape=(2, 5, 7, 4))
    each = [lovasz(y_true[i:i + 1], y_pred[i:i + 1])[0] for i in range(2)]
    np.testing.assert_allclose(lovasz(y_true, y_pred), each, rtol=1e-6)
    # The training loss adds the images' mean once, with or without the masked mean.
    for mask_unlabelled in (False, True):
        ce = float(WeightedCrossentropy([1, 1, 1, 1], mask_unlabelled=mask_unlabelled)(y_true, y_pred))
        both = float(WeightedCrossentropy([1, 1, 1, 1], lovasz_weight=1.0, mask_unlabelled=mask_unlabelled)(
            y_true, y_pred))
        assert both == pytest.approx(ce + np.mean(each), rel=1e-5)


def test_lovasz_leaves_ignored_pixels_out():
    # A third column of ignored pixels (all-zero targets), whatever their predictions, changes nothing.
    y_true = np.concatenate([HAND_TRUE, np.zeros((1, 2, 1, 2), dtype=np.float32)], axis=2)
    for probability in (0.0, 0.5, 1.0):
        ignored = np.array([1 - probability, probability], dtype=np.float32)
        y_pred = np.concatenate([HAND_PRED, np.broadcast_to(ignored, (1, 2, 1, 2))], axis=2)
        np.testing.assert_allclose(lovasz(y_true, y_pred), [HAND_LOSS], rtol=1e-6)
        gradient = gradient_of(lambda p: keras.ops.sum(lovasz_softmax_loss(y_true, p)), y_pred)
        assert np.all(gradient[:, :, 2] == 0) and np.any(gradient[:, :, :2] != 0)
    # An image without a labelled pixel scores 0.
    np.testing.assert_allclose(lovasz(np.zeros_like(HAND_TRUE), HAND_PRED), [0.0])


def test_lovasz_agrees_with_a_numpy_reference():
    y_true, y_pred = random_batch(seed=6, shape=(2, 5, 7, 4))
    rng = np.random.default_rng(7)
    y_true[rng.random(y_true.shape[:-1]) < 0.2] = 0.0
    # Class 3 absent from the first image.
    y_true[0, ..., 0] += y_true[0, ..., 3]
    y_true[0, ..., 3] = 0.0
    np.testing.assert_allclose(lovasz(y_true, y_pred), numpy_lovasz_softmax(y_true, y_pred), atol=1e-5)


def test_lovasz_gradient_is_finite():
    y_true, _ = random_batch(seed=8, shape=(3, 5, 7, 4))
    y_true[1] = 0.0  # an image without a labelled pixel
    y_true[2, ..., 1] += y_true[2, ..., 2]  # and one without class 2
    y_true[2, ..., 2] = 0.0
    logits = np.random.default_rng(9).normal(size=y_true.shape).astype(np.float32)
    loss = WeightedCrossentropy([1, 1, 1, 1], lovasz_weight=1.0, mask_unlabelled=True)
    gradient = gradient_of(lambda x: loss(y_true, keras.ops.softmax(x, axis=-1)), logits)
    assert np.all(np.isfinite(gradient)) and np.any(gradient != 0)
    lovasz_only = gradient_of(lambda x: keras.ops.sum(lovasz_softmax_loss(y_true, keras.ops.softmax(x))), logits)
    assert np.all(np.isfinite(lovasz_only)) and np.all(lovasz_only[1] == 0) and np.any(lovasz_only[2] != 0)


def test_lovasz_computes_in_float32_from_bfloat16_predictions():
    y_true, y_pred = random_batch(seed=10, shape=(2, 5, 7, 4))
    result = lovasz_softmax_loss(y_true, keras.ops.cast(y_pred, "bfloat16"))
    assert keras.backend.standardize_dtype(result.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(result), lovasz(y_true, y_pred), atol=1e-2)


def test_ce_plus_lovasz_trains_a_compiled_model():
    y_true, _ = random_batch(seed=11, shape=(2, 8, 8, 4))
    images = np.random.default_rng(12).random((2, 8, 8, 3)).astype(np.float32)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 1, activation="softmax")])
    model.compile(optimizer="adam", loss=build_loss("ce+lovasz", None, 4), jit_compile=False)
    assert np.isfinite(model.train_on_batch(images, y_true))


def test_build_loss_ce_plus_lovasz_and_its_config():
    assert build_loss("ce", None, 4) == "categorical_crossentropy"
    dice = build_loss("ce+dice", None, 4)
    assert (dice.dice_weight, dice.lovasz_weight) == (1.0, 0.0)
    loss = build_loss("ce+lovasz", np.array([0.5, 2, 2, 2], dtype=np.float32), 4, ignore_pixels=True)
    assert isinstance(loss, WeightedCrossentropy)
    assert (loss.dice_weight, loss.lovasz_weight, loss.mask_unlabelled) == (0.0, 1.0, True)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, WeightedCrossentropy) and restored.get_config() == loss.get_config()
    y_true, y_pred = random_batch(seed=13, shape=(2, 5, 7, 4))
    assert float(restored(y_true, y_pred)) == pytest.approx(float(loss(y_true, y_pred)), rel=1e-6)
