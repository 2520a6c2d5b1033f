"""`--precise-bn`: the moving statistics become the training images' population statistics, and nothing else moves."""

import os

import keras
import numpy as np
import pytest
from conftest import HEIGHT, TINY, WEIGHTS, WIDTH

from data_generator import DataGenerator
from model import build_model
from segmentation import backend, batchnorm, precise_bn
from segmentation.augment import FULL_AUGMENTATION, build_augmentation
from segmentation.checkpoints import restore_weights
from segmentation.errors import UsageError
from segmentation.ground_truth.book_labels import load_labels
from segmentation.images import read_image
from segmentation.precise_bn import batchnorm_layers, recompute_batchnorm_statistics, statistics_batches
from segmentation.remat import recompute_in_backward

FLAGS = [*TINY, "--head-filters", "8", "--precision", "float32", "--jit-compile", "off", "--seed", "0"]
MOMENTUM = 0.9


def values(variables):
    return [keras.ops.convert_to_numpy(variable).copy() for variable in variables]


def statistics(model):
    return [values([layer.moving_mean, layer.moving_variance]) for layer in batchnorm_layers(model)]


def other_variables(model):
    """Every variable of the model and its optimizer but the moving statistics."""
    moving = {id(variable) for layer in batchnorm_layers(model) for variable in (layer.moving_mean,
                                                                                  layer.moving_variance)}
    kept = [variable for variable in model.variables if id(variable) not in moving]
    return values(kept + list(model.optimizer.variables))


def assert_all_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def two_layer_model(norm_class):
    """Input -> 1x1 conv -> BN -> ReLU -> 1x1 conv -> BN: batch statistics NumPy computes by hand."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(5, 1, name="conv1")(inputs)
    x = norm_class(momentum=MOMENTUM, name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(3, 1, name="conv2")(x)
    outputs = norm_class(momentum=MOMENTUM, name="bn2")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    for name in ("bn1", "bn2"):
        layer = model.get_layer(name)
        layer.gamma.assign(rng.uniform(0.5, 2.0, layer.gamma.shape).astype("float32"))
        layer.beta.assign(rng.normal(size=layer.beta.shape).astype("float32"))
    model.compile(optimizer="adam", loss="mse")
    # A step first, so the optimizer's variables and the moving statistics are not their initial values.
    model.train_on_batch(rng.random((2, 4, 4, 3), dtype=np.float32), rng.random((2, 4, 4, 3), dtype=np.float32))
    return model


def expected_statistics(model, batches, ddof):
    """The mean over the batches of each layer's batch mean and batch variance, in training mode, by NumPy."""
    sums = {"bn1": [0.0, 0.0], "bn2": [0.0, 0.0]}
    for images in batches:
        x = images.astype(np.float64)
        for conv, norm in (("conv1", "bn1"), ("conv2", "bn2")):
            kernel, bias = (np.asarray(value, np.float64) for value in model.get_layer(conv).get_weights())
            x = x @ kernel[0, 0] + bias
            layer = model.get_layer(norm)
            mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
            sums[norm][0] = sums[norm][0] + mean
            sums[norm][1] = sums[norm][1] + x.var(axis=(0, 1, 2), ddof=ddof)
            # Training mode normalizes with the batch's own (biased) variance.
            gamma, beta = (np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in (layer.gamma, layer.beta))
            x = gamma * (x - mean) / np.sqrt(variance + layer.epsilon) + beta
            if norm == "bn1":
                x = np.maximum(x, 0.0)
    return {name: (mean / len(batches), variance / len(batches)) for name, (mean, variance) in sums.items()}


# The fused kernel of batchnorm.BatchNormalization (TensorFlow) keeps the variance divided by N - 1.
@pytest.mark.parametrize("norm_class, ddof", [
    (keras.layers.BatchNormalization, 0),
    (batchnorm.BatchNormalization, 1 if backend.is_tensorflow() else 0),
])
def test_statistics_become_the_mean_of_the_batch_statistics_and_nothing_else_moves(norm_class, ddof):
    model = two_layer_model(norm_class)
    rng = np.random.default_rng(2)
    batches = [rng.normal(0.3, 1.5, (2, 4, 4, 3)).astype(np.float32) for _ in range(3)]
    before = other_variables(model)
    moving_before = statistics(model)

    assert recompute_batchnorm_statistics(model, iter(batches)) == 3

    expected = expected_statistics(model, batches, ddof)
    for layer, (mean, variance), old in zip(batchnorm_layers(model), statistics(model), moving_before):
        np.testing.assert_allclose(mean, expected[layer.name][0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(variance, expected[layer.name][1], rtol=1e-4, atol=1e-5)
        assert not np.allclose(mean, old[0])
        assert layer.momentum == MOMENTUM
    assert_all_equal(other_variables(model), before)


def test_momentum_is_put_back_when_a_batch_fails():
    model = two_layer_model(batchnorm.BatchNormalization)
    with pytest.raises(ValueError):
        recompute_batchnorm_statistics(model, iter([np.zeros((2, 4, 4, 7), np.float32)]))
    assert [layer.momentum for layer in batchnorm_layers(model)] == [MOMENTUM, MOMENTUM]


def test_the_fcn_statistics_depend_on_the_weights_and_images_only():
    _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n=1, head_filters=8)
    fcn.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    batches = [rng.random((2, HEIGHT, WIDTH, 3), dtype=np.float32) for _ in range(2)]
    before = other_variables(fcn)
    recompute_batchnorm_statistics(fcn, iter(batches))
    first = statistics(fcn)
    # Other starting statistics, the same result.
    for layer in batchnorm_layers(fcn):
        layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape).astype("float32"))
        layer.moving_variance.assign(rng.uniform(1, 3, layer.moving_variance.shape).astype("float32"))
    recompute_batchnorm_statistics(fcn, iter(batches))
    for (mean, variance), (mean_again, variance_again) in zip(first, statistics(fcn)):
        np.testing.assert_allclose(mean_again, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(variance_again, variance, rtol=1e-5, atol=1e-6)
    assert len(first) > 10 and all(np.any(variance != 1.0) for _, variance in first)
    assert_all_equal(other_variables(fcn), before)


def test_a_recomputed_backbone_gives_the_same_statistics():
    # --remat (on by default at the book's size) changes how the backbone's training call runs.
    backbone, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n=1, head_filters=8)
    batches = [np.random.default_rng(3).random((2, HEIGHT, WIDTH, 3), dtype=np.float32)]
    recompute_batchnorm_statistics(fcn, batches)
    plain = statistics(fcn)
    recompute_in_backward(backbone, "all")
    for layer in batchnorm_layers(fcn):
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, "float32"))
    recompute_batchnorm_statistics(fcn, batches)
    for (mean, variance), (mean_again, variance_again) in zip(plain, statistics(fcn)):
        np.testing.assert_allclose(mean_again, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(variance_again, variance, rtol=1e-5, atol=1e-6)


def test_the_batches_are_the_first_training_images_unaugmented(book_dataset):
    data_path, _ = book_dataset
    labels = load_labels(os.path.join(data_path, "segmentation_train.npy"), data_path, HEIGHT, WIDTH)
    data = DataGenerator(labels, data_path, batch_size=3, seed=0, augmentation=build_augmentation(FULL_AUGMENTATION))
    batches = list(statistics_batches(data, max_images=7))
    # Whole batches holding at most 7 of the 8 images, in the epoch's order, as read from disk.
    assert [batch.shape for batch in batches] == [(3, HEIGHT, WIDTH, 3)] * 2
    for index, batch in enumerate(batches):
        for image, key in zip(batch, data.batch_keys(index)):
            np.testing.assert_array_equal(image, read_image(os.path.join(data_path, key), HEIGHT, WIDTH))
    assert len(list(statistics_batches(data))) == 8 // 3
    assert len(list(statistics_batches(data, max_images=1))) == 1


def test_a_distribution_strategy_is_refused():
    if not backend.is_tensorflow():
        pytest.skip("tf.distribute is TensorFlow's")
    tf = backend.import_tensorflow()
    precise_bn.check_one_device()
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope(), pytest.raises(UsageError, match="--distribute"):
        precise_bn.check_one_device()


@pytest.fixture
def recorded_passes(monkeypatch):
    """Records the batches of every precise-BN pass of a run, then makes the pass as usual."""
    passes = []
    recompute = precise_bn.recompute_batchnorm_statistics

    def recording(model, batches, *args):
        batches = [np.array(images) for images in batches]
        passes.append(batches)
        return recompute(model, batches, *args)

    monkeypatch.setattr(precise_bn, "recompute_batchnorm_statistics", recording)
    return passes


def test_the_saved_best_weights_hold_the_statistics_of_their_own_weights(book_dataset, tmp_path, run_cli,
                                                                         recorded_passes):
    data_path, splits = book_dataset
    save_dir = tmp_path / "weights"
    # --ema: the statistics must be those of the averaged weights, the ones saved; --augment: read unaugmented.
    status, _, err = run_cli(["--train", "--epochs", "1", "--precise-bn", "--ema", "0.5", "--augment", *FLAGS,
                              "--data-path", data_path, "--save-dir", str(save_dir)])
    assert status == 0, err
    assert len(recorded_passes) == 1
    batches = recorded_passes[0]
    # All 8 training images (fewer than 200), 4 batches of --batch-size 2, each once, unaugmented.
    assert [batch.shape[0] for batch in batches] == [2] * 4
    originals = {key: read_image(os.path.join(data_path, key), HEIGHT, WIDTH) for key in splits["train"]}
    seen = [next(key for key, original in originals.items() if np.array_equal(image, original))
            for batch in batches for image in batch]
    assert sorted(seen) == sorted(originals)

    _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n=1, head_filters=8)
    restore_weights(fcn, str(save_dir / WEIGHTS))
    saved = statistics(fcn)
    recompute_batchnorm_statistics(fcn, iter(batches))
    for (mean, variance), (expected_mean, expected_variance) in zip(saved, statistics(fcn)):
        np.testing.assert_allclose(mean, expected_mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(variance, expected_variance, rtol=1e-4, atol=1e-5)


def test_without_the_flag_no_pass_runs(book_dataset, tmp_path, run_cli, recorded_passes):
    data_path, _ = book_dataset
    status, _, err = run_cli(["--train", "--epochs", "1", *FLAGS, "--data-path", data_path,
                              "--save-dir", str(tmp_path / "weights")])
    assert status == 0, err
    assert recorded_passes == []
