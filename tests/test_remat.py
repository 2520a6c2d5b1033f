"""`--remat`: the same training step, backbone segments run forward twice, the model's layers untouched."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from model import build_model, configure_batchnorm
from segmentation.remat import recompute_in_backward, remat_level

SHAPE = (64, 64, 3)


def tiny_models(level: str):
    keras.utils.set_random_seed(0)
    backbone, fcn = build_model(SHAPE, n_layers=1, n=1)
    configure_batchnorm(fcn, momentum=0.5)  # a fast average: a second update would show
    recompute_in_backward(backbone, level)
    return backbone, fcn


def batch():
    rng = np.random.default_rng(0)
    images = rng.random((2, *SHAPE), dtype=np.float32)
    masks = keras.utils.to_categorical(rng.integers(0, 4, (2, *SHAPE[:2])), 4)
    return images, masks


def count_ops(fcn, images, masks, op_type: str) -> int:
    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = keras.losses.categorical_crossentropy(y, fcn(x, training=True))
        return tape.gradient(loss, fcn.trainable_weights)

    graph = step.get_concrete_function(tf.constant(images), tf.constant(masks)).graph
    return sum(op.type == op_type for op in graph.get_operations())


@pytest.mark.parametrize("level", ["stage0", "all"])
def test_a_training_step_gives_the_same_weights_and_statistics_and_a_file_a_plain_network_loads(level, tmp_path):
    images, masks = batch()
    results = []
    for each in ("off", level):
        _, fcn = tiny_models(each)
        fcn.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="categorical_crossentropy")
        losses = [float(fcn.train_on_batch(images, masks)) for _ in range(2)]
        results.append((losses, [np.array(weight) for weight in fcn.weights]))
    (plain_losses, plain_weights), (remat_losses, remat_weights) = results
    np.testing.assert_allclose(remat_losses, plain_losses, rtol=1e-5)
    assert len(remat_weights) == len(plain_weights)
    for plain, recomputed in zip(plain_weights, remat_weights):
        # Moving statistics included: each batch counted once, not once more by the recomputation.
        np.testing.assert_allclose(recomputed, plain, rtol=1e-4, atol=1e-6)
    # The recomputing network's weights file (the last one trained) loads into a plain network as it was saved.
    path = str(tmp_path / "remat.weights.h5")
    fcn.save_weights(path)
    keras.utils.set_random_seed(1)
    _, plain = build_model(SHAPE, n_layers=1, n=1)
    plain.load_weights(path)
    for expected, loaded in zip(remat_weights, plain.weights):
        np.testing.assert_array_equal(np.array(loaded), expected)


@pytest.mark.parametrize("level", ["stage0", "all"])
def test_the_recomputed_segments_run_forward_again_in_the_backward_pass(level):
    images, masks = batch()
    backbone, plain = tiny_models("off")
    norms = [layer.name for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    # The stem and stage 0 end at the first stage1 layer; "all" recomputes every backbone layer.
    stage0 = norms[: next(i for i, name in enumerate(norms) if name.startswith("stage1"))]
    recomputed = stage0 if level == "stage0" else norms
    assert 0 < len(stage0) < len(norms)
    plain_count = count_ops(plain, images, masks, "FusedBatchNormV3")
    _, recomputing = tiny_models(level)
    assert count_ops(recomputing, images, masks, "FusedBatchNormV3") == plain_count + len(recomputed)
    # Inference is not touched.
    np.testing.assert_allclose(recomputing.predict_on_batch(images), plain.predict_on_batch(images), rtol=1e-5)


def test_synchronized_statistics_are_refused():
    backbone, fcn = build_model(SHAPE, n_layers=1, n=1)
    configure_batchnorm(fcn, momentum=0.9, synchronized=True)
    with pytest.raises(ValueError, match="statistics twice"):
        recompute_in_backward(backbone, "stage0")


def test_auto_recomputes_stage0_for_large_batches_only():
    assert remat_level("auto", 4, 480, 640, synchronized=False) == "stage0"  # the book's, 1.2 million pixels
    assert remat_level("auto", 3, 480, 640, synchronized=False) == "off"
    assert remat_level("auto", 4, 96, 128, synchronized=False) == "off"  # the demo's
    assert remat_level("auto", 4, 480, 640, synchronized=True) == "off"
    assert remat_level("all", 1, 64, 64, synchronized=False) == "all"


def test_an_unknown_level_is_refused():
    backbone, _ = build_model(SHAPE, n_layers=1, n=1)
    with pytest.raises(ValueError, match="Unknown recomputation level 'some'"):
        recompute_in_backward(backbone, "some")
