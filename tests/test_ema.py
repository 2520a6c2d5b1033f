"""`--ema`: the weights' moving average follows its formula, is what the best weights hold, and resumes."""

import os

import keras
import numpy as np
import pytest
from conftest import HEIGHT, N_CLASSES, STATE, TINY, WEIGHTS, WIDTH

from model import build_model
from segmentation.averaging import averaged_weights, moving_averages
from segmentation.checkpoints import (
    TrainingState,
    restore_training_state,
    restore_weights,
    save_training_state,
)
from segmentation.config import RunConfig
from segmentation.training import compile_for_training

MOMENTUM = 0.5
FLAGS = [*TINY, "--head-filters", "8", "--jit-compile", "off"]


def small_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.1, use_ema=True, ema_momentum=MOMENTUM), loss="mse")
    return model


def trainable_values(model):
    return [keras.ops.convert_to_numpy(variable) for variable in model.trainable_variables]


def test_the_average_after_known_updates_is_the_ema_formula_and_is_lent_then_taken_back():
    model = small_model()
    rng = np.random.default_rng(0)
    expected = None
    for _ in range(4):
        model.train_on_batch(rng.random((8, 4)), rng.random((8, 2)))
        raw = trainable_values(model)
        # The first step's weights as they are; then average = M * average + (1 - M) * weights.
        expected = raw if expected is None else [MOMENTUM * a + (1 - MOMENTUM) * w for a, w in zip(expected, raw)]
    averages = [keras.ops.convert_to_numpy(average) for average in moving_averages(model.optimizer)]
    for average, value in zip(averages, expected):
        np.testing.assert_allclose(average, value, rtol=1e-5, atol=1e-6)
    with averaged_weights(model.optimizer) as averaged:
        assert averaged
        for weight, value in zip(trainable_values(model), expected):
            np.testing.assert_allclose(weight, value, rtol=1e-5, atol=1e-6)
    for weight, value in zip(trainable_values(model), raw):
        np.testing.assert_array_equal(weight, value)
    assert not any(np.allclose(a, w) for a, w in zip(expected, raw))


def test_without_ema_the_weights_stay_as_they_are():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    for _ in range(3):
        model.train_on_batch(rng.random((8, 4)), rng.random((8, 2)))
    trained = trainable_values(model)
    with averaged_weights(model.optimizer) as averaged:
        assert not averaged
        # What the evaluation inside the block sees: the trained weights themselves.
        for weight, value in zip(trainable_values(model), trained, strict=True):
            np.testing.assert_array_equal(weight, value)
    for weight, value in zip(trainable_values(model), trained, strict=True):
        np.testing.assert_array_equal(weight, value)


def test_the_state_file_keeps_the_average(tmp_path):
    model = small_model()
    rng = np.random.default_rng(1)
    for _ in range(3):
        model.train_on_batch(rng.random((8, 4)), rng.random((8, 2)))
    state = TrainingState(epochs_done=1, epochs=2, history={}, best_miou=0.0, seed=0, shuffle_seed=0, settings={})
    path = str(tmp_path / "run.state.npz")
    save_training_state(model, state, path)
    restored = small_model()
    restore_training_state(restored, path)
    for first, second in zip(moving_averages(model.optimizer), moving_averages(restored.optimizer)):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(first), keras.ops.convert_to_numpy(second))
    for first, second in zip(trainable_values(model), trainable_values(restored)):
        np.testing.assert_array_equal(first, second)


def fcn_with_state(save_dir):
    """The tiny FCN compiled with `--ema`, its weights and optimizer those of the saved state."""
    _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=N_CLASSES, n=1, head_filters=8)
    compile_for_training(fcn, RunConfig(jit_compile="off", ema=MOMENTUM), "categorical_crossentropy", total_steps=8)
    restore_training_state(fcn, os.path.join(save_dir, STATE))
    return fcn


def test_the_best_weights_are_the_average_and_the_state_keeps_both(book_dataset, tmp_path, run_cli):
    data_path, _ = book_dataset
    save_dir = str(tmp_path / "weights")
    status, out, err = run_cli([*FLAGS, "--data-path", data_path, "--save-dir", save_dir, "--train", "--seed", "0",
                                "--ema", str(MOMENTUM), "--learning-rate", "0.01", "--epochs", "1"])
    assert status == 0, err
    assert "mIoU improved" in out  # epoch 1 saved the best weights
    trained = fcn_with_state(save_dir)
    raw = trainable_values(trained)
    averages = [keras.ops.convert_to_numpy(average) for average in moving_averages(trained.optimizer)]
    _, best = build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=N_CLASSES, n=1, head_filters=8)
    restore_weights(best, os.path.join(save_dir, WEIGHTS))
    for saved, average in zip(trainable_values(best), averages):
        np.testing.assert_allclose(saved, average, atol=1e-7)
    assert not all(np.allclose(saved, weight) for saved, weight in zip(trainable_values(best), raw))
    # The state goes on from the raw weights (a --resume restores them and the average, as above).
    assert int(keras.ops.convert_to_numpy(trained.optimizer.iterations)) == 4


@pytest.mark.parametrize("flags, message", [
    (["--ema", "1.5"], "--ema 1.5: give a momentum in [0, 1)"),
    (["--ema", "-0.1"], "--ema -0.1: give a momentum in [0, 1)"),
    (["--aux-loss", "0"], "--aux-loss 0.0: give a positive weight"),
    (["--patience", "0"], "--patience 0: give a number of epochs of at least 1"),
])
def test_bad_values_are_refused_in_one_line(flags, message, run_cli):
    status, _, err = run_cli(["--train", *flags])
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
