"""`--aux-loss`: a training-only head on the backbone's main feature map, absent from the saved network."""

import csv
import os

import h5py
import keras
import numpy as np
from conftest import HEIGHT, N_CLASSES, STATE, TINY, WEIGHTS, WIDTH

from model import AUX_OUTPUT_NAME, build_model, build_training_model
from segmentation.checkpoints import TrainingState, restore_training_state, restore_weights, save_training_state
from segmentation.config import RunConfig
from segmentation.training import compile_for_training

FLAGS = [*TINY, "--head-filters", "8", "--jit-compile", "off"]


def tiny_fcn():
    return build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=N_CLASSES, n=1, head_filters=8)[1]


def test_the_training_model_shares_the_fcn_and_adds_only_the_head():
    fcn = tiny_fcn()
    names = [layer.name for layer in fcn.layers]
    training = build_training_model(fcn)
    assert [layer.name for layer in fcn.layers] == names  # the FCN is unchanged
    assert not any(name.startswith("aux_") for name in names)
    added = [layer.name for layer in training.layers if layer.name not in names]
    assert added == ["aux_classifier", "aux_up2d", AUX_OUTPUT_NAME]
    assert training.output_shape == [(None, HEIGHT, WIDTH, N_CLASSES)] * 2
    # The head is a 1x1 convolution to the classes: all the weights it adds.
    assert len(training.weights) == len(fcn.weights) + 2
    images = np.random.default_rng(0).random((2, HEIGHT, WIDTH, 3), dtype=np.float32)
    probabilities, aux_probabilities = training.predict_on_batch(images)
    np.testing.assert_allclose(probabilities, fcn.predict_on_batch(images), atol=1e-6)
    np.testing.assert_allclose(aux_probabilities.sum(axis=-1), 1.0, atol=1e-5)


def test_training_logs_the_aux_loss_and_saves_the_plain_fcn(book_dataset, tmp_path, run_cli):
    data_path, _ = book_dataset
    save_dir = str(tmp_path / "weights")
    common = [*FLAGS, "--data-path", data_path, "--save-dir", save_dir, "--train", "--seed", "0", "--aux-loss", "0.4"]
    status, out, err = run_cli([*common, "--epochs", "1"])
    assert status == 0, err
    with open(os.path.join(save_dir, "history.csv")) as file:
        columns = next(csv.reader(file))
    assert {"loss", "segmentation_loss", f"{AUX_OUTPUT_NAME}_loss"} <= set(columns)
    weights = os.path.join(save_dir, WEIGHTS)
    with h5py.File(weights) as file:
        stored = []
        file.visit(stored.append)
    assert not any("aux" in name for name in stored)
    restore_weights(tiny_fcn(), weights)  # the plain FCN takes them
    # The state holds the training model, head included, which --resume rebuilds; without the head it refuses.
    fitted = compiled_training_model()
    restore_training_state(fitted, os.path.join(save_dir, STATE))
    assert int(keras.ops.convert_to_numpy(fitted.optimizer.iterations)) == 4
    status, _, err = run_cli([*common[:-2], "--epochs", "2", "--resume"])
    assert status == 2 and "aux_loss 0.4 (now None)" in err


def compiled_training_model():
    fitted = build_training_model(tiny_fcn())
    compile_for_training(fitted, RunConfig(jit_compile="off", aux_loss=0.4), "categorical_crossentropy", total_steps=8)
    return fitted


def test_the_state_of_the_training_model_round_trips(tmp_path):
    fitted = compiled_training_model()
    fitted.optimizer.variables[-1].assign(np.ones(fitted.optimizer.variables[-1].shape))
    path = str(tmp_path / "run.state.npz")
    save_training_state(fitted, TrainingState(1, 2, {}, 0.0, 0, 0, {}), path)
    restored = compiled_training_model()
    restore_training_state(restored, path)
    assert len(restored.get_weights()) == len(tiny_fcn().get_weights()) + 2  # the head's kernel and bias
    for first, second in zip(fitted.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(first, second)
    for first, second in zip(fitted.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(first), keras.ops.convert_to_numpy(second))
