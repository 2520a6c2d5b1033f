"""The fused BatchNormalization computes what Keras' does, with the same weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from segmentation.batchnorm import BatchNormalization as FusedBatchNormalization

SHAPE = (2, 6, 5, 3)


def _pair(momentum: float = 0.9, **kwargs) -> tuple[keras.layers.Layer, keras.layers.Layer]:
    """A Keras layer and a fused one with the same (non-trivial) weights."""
    reference = keras.layers.BatchNormalization(momentum=momentum, **kwargs)
    fused = FusedBatchNormalization(momentum=momentum, **kwargs)
    reference.build(SHAPE)
    fused.build(SHAPE)
    rng = np.random.default_rng(0)
    weights = [rng.uniform(0.5, 1.5, SHAPE[-1]).astype("float32") for _ in reference.weights]
    reference.set_weights(weights)
    fused.set_weights(weights)
    return reference, fused


def _inputs(seed: int = 1) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).normal(2.0, 3.0, SHAPE).astype("float32"))


@pytest.mark.parametrize("center, scale", [(True, True), (False, False)])
def test_training_outputs_and_gradients_match_keras(center, scale):
    reference, fused = _pair(center=center, scale=scale)
    x = _inputs()
    upstream = tf.constant(np.random.default_rng(2).normal(size=SHAPE).astype("float32"))
    results = []
    for layer in (reference, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x, *layer.trainable_weights])
        results.append((y, grads))
    (y_ref, grads_ref), (y_fused, grads_fused) = results
    np.testing.assert_allclose(y_fused, y_ref, atol=1e-5)
    assert len(grads_fused) == 1 + 2 * center
    for g_fused, g_ref in zip(grads_fused, grads_ref):
        np.testing.assert_allclose(g_fused, g_ref, atol=1e-4)


def test_moving_statistics_follow_the_momentum_with_the_unbiased_variance():
    _, fused = _pair(momentum=0.9)
    old_mean, old_variance = fused.moving_mean.numpy(), fused.moving_variance.numpy()
    x = _inputs().numpy()
    fused(x, training=True)
    n = np.prod(SHAPE[:-1])
    batch_mean = x.mean(axis=(0, 1, 2))
    batch_variance = x.var(axis=(0, 1, 2)) * n / (n - 1)
    np.testing.assert_allclose(fused.moving_mean, 0.9 * old_mean + 0.1 * batch_mean, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance, 0.9 * old_variance + 0.1 * batch_variance, rtol=1e-5)


def test_inference_uses_the_moving_statistics_like_keras():
    reference, fused = _pair()
    x = _inputs()
    before = [w.numpy() for w in fused.weights]
    np.testing.assert_allclose(fused(x, training=False), reference(x, training=False), atol=1e-5)
    for w, b in zip(fused.weights, before):
        np.testing.assert_array_equal(w, b)


def test_a_frozen_layer_normalizes_with_the_moving_statistics():
    reference, fused = _pair()
    reference.trainable = fused.trainable = False
    x = _inputs()
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), atol=1e-5)


def test_bfloat16_inputs_give_bfloat16_outputs_close_to_float32():
    _, fused = _pair()
    mixed = FusedBatchNormalization(momentum=0.9, dtype="mixed_bfloat16")
    mixed.build(SHAPE)
    mixed.set_weights(fused.get_weights())
    x = _inputs()
    y = mixed(tf.cast(x, tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16
    assert mixed.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.cast(y, tf.float32), fused(x, training=True), atol=0.05)
    np.testing.assert_allclose(mixed.moving_mean, fused.moving_mean, rtol=1e-2)


@pytest.mark.parametrize("kwargs, shape", [({"synchronized": True}, SHAPE), ({}, (4, 3)), ({"axis": 1}, SHAPE)])
def test_what_the_fused_op_cannot_take_goes_to_keras(kwargs, shape):
    reference = keras.layers.BatchNormalization(momentum=0.9, **kwargs)
    fused = FusedBatchNormalization(momentum=0.9, **kwargs)
    x = tf.constant(np.random.default_rng(3).normal(size=shape).astype("float32"))
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), atol=1e-5)
    # Keras' own update, divided by N: identical statistics.
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, rtol=1e-6)


def test_other_keras_backends_get_keras_own_code(monkeypatch):
    # The fused op is TensorFlow's: under JAX or PyTorch (bench/gpu.py) the layer is Keras' layer.
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    reference = keras.layers.BatchNormalization(momentum=0.9)
    fused = FusedBatchNormalization(momentum=0.9)
    x = tf.constant(np.random.default_rng(4).normal(size=SHAPE).astype("float32"))
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), atol=1e-5)
    # Divided by N, as Keras does, not N - 1 as the fused op does: Keras' code ran.
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, rtol=1e-6)


def test_weights_are_interchangeable_with_keras_batchnormalization(tmp_path):
    def model(norm):
        inputs = keras.Input(SHAPE[1:])
        return keras.Model(inputs, norm(name="bn")(keras.layers.Conv2D(3, 1, name="conv")(inputs)))

    reference, fused = model(keras.layers.BatchNormalization), model(FusedBatchNormalization)
    reference.layers[-1].set_weights([np.full(3, value, "float32") for value in (1.5, 0.2, 0.3, 2.0)])
    path = str(tmp_path / "bn.weights.h5")
    reference.save_weights(path)
    fused.load_weights(path)
    x = _inputs()
    np.testing.assert_allclose(fused(x), reference(x), atol=1e-5)


def test_a_saved_model_file_loads_back(tmp_path):
    inputs = keras.Input(SHAPE[1:])
    model = keras.Model(inputs, FusedBatchNormalization(name="bn")(inputs))
    path = str(tmp_path / "bn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("bn"), FusedBatchNormalization)
    np.testing.assert_allclose(loaded(_inputs()), model(_inputs()), atol=1e-6)
