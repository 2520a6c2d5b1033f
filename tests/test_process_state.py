"""The program's entry points leave the process as they found it: dtype policy, seeds, logging, environment."""

import json
import logging
import os
import random
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import RECORD, TINY

from segmentation import cli, precision
from segmentation.process_state import KERAS_SEED, KERAS_SEED_GENERATOR, kept_process_state, keras_global_state

FLAGS = [*TINY, "--head-filters", "8"]
SEED_BEFORE = 7


@pytest.fixture
def native_bf16_cpu(monkeypatch):
    """A CPU whose flags list AVX-512 BF16, whatever this one's: `--precision auto` trains in mixed bfloat16."""
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda *args, **kwargs: (precision.AVX512_BF16,))


@pytest.fixture
def policies_set(monkeypatch):
    """The dtype policies the run sets (`keras.mixed_precision.set_global_policy`), in order."""
    calls = []
    set_global_policy = keras.mixed_precision.set_global_policy

    def recorded(policy):
        calls.append(policy)
        set_global_policy(policy)

    monkeypatch.setattr(keras.mixed_precision, "set_global_policy", recorded)
    return calls


@pytest.fixture
def seeded():
    """Seeds everything with SEED_BEFORE; returns TensorFlow's first draw after that seed. Put back afterwards."""
    with kept_process_state():
        keras.utils.set_random_seed(SEED_BEFORE)
        first_draw = tf.random.uniform([4]).numpy()
        keras.utils.set_random_seed(SEED_BEFORE)
        keras.random.uniform((1,))  # Keras' global seed generator, created here
        yield first_draw


def snapshot():
    """What the tests compare before and after a run: policy, random states, Keras' seed state, logging."""
    global_state = keras_global_state()
    generator = global_state.get_global_attribute(KERAS_SEED_GENERATOR)
    root = logging.getLogger()
    return {
        "policy": keras.config.dtype_policy().name,
        "python": random.getstate(),
        "numpy": [np.asarray(part).tolist() for part in np.random.get_state()],
        "keras_seed": global_state.get_global_attribute(KERAS_SEED),
        "keras_generator": id(generator),
        "keras_generator_state": None if generator is None else np.array(generator.state.value).tolist(),
        "root_handlers": list(root.handlers),
        "root_level": root.level,
        "tensorflow_level": logging.getLogger("tensorflow").level,
    }


def assert_left_as_found(before, first_draw):
    after = snapshot()
    assert [key for key in after if after[key] != before[key]] == []  # what the run left changed
    # TensorFlow's seed is the one before the run again (its random sequence starting afresh from it).
    np.testing.assert_array_equal(tf.random.uniform([4]).numpy(), first_draw)


def test_a_training_run_in_bfloat16_leaves_the_policy_the_seeds_and_logging_as_it_found_them(
        book_dataset, tmp_path, run_cli, native_bf16_cpu, policies_set, seeded):
    data_path, _ = book_dataset
    save_dir = tmp_path / "weights"
    before = snapshot()
    assert before["policy"] == "float32"
    status, out, err = run_cli(["--train", "--epochs", "1", "--seed", "0", "--verbose", "1", *FLAGS,
                                "--data-path", data_path, "--save-dir", str(save_dir)])
    assert status == 0, err
    assert policies_set == ["mixed_bfloat16"]
    assert "Training in mixed_bfloat16 (--precision auto: this CPU computes bfloat16 natively" in out
    assert json.loads((save_dir / RECORD).read_text())["settings"]["precision"] == "mixed_bfloat16"
    assert_left_as_found(before, seeded)


def test_a_run_that_fails_on_bad_input_after_choosing_bfloat16_leaves_the_process_as_it_found_it(
        book_dataset, tmp_path, run_cli, native_bf16_cpu, policies_set, seeded):
    data_path, _ = book_dataset
    damaged = tmp_path / "damaged.weights.h5"
    damaged.write_bytes(b"not an HDF5 file")
    before = snapshot()
    status, _, err = run_cli(["--train", "--epochs", "1", "--seed", "0", *FLAGS, "--data-path", data_path,
                              "--save-dir", str(tmp_path / "weights"), "--restore-weights", str(damaged)])
    assert status == 2 and "damaged.weights.h5" in err
    assert policies_set == ["mixed_bfloat16"]
    assert_left_as_found(before, seeded)


@pytest.mark.parametrize("raised, status", [(KeyboardInterrupt, 130), (RuntimeError, None)])
def test_an_interrupted_or_crashed_run_leaves_the_process_as_it_found_it(
        book_dataset, tmp_path, run_cli, native_bf16_cpu, policies_set, seeded, monkeypatch, raised, status):
    def stopped(*args, **kwargs):
        raise raised("stopped in the middle of the run")

    monkeypatch.setattr(cli, "run_steps", stopped)
    data_path, _ = book_dataset
    argv = ["--train", "--epochs", "1", "--seed", "0", *FLAGS, "--data-path", data_path,
            "--save-dir", str(tmp_path / "weights")]
    before = snapshot()
    if status is None:
        with pytest.raises(raised, match="stopped in the middle"):
            cli.main(argv)
    else:
        assert run_cli(argv)[0] == status
    assert policies_set == ["mixed_bfloat16"]
    assert_left_as_found(before, seeded)


def test_the_environment_warning_filters_and_logging_are_put_back_when_the_body_raises(monkeypatch):
    monkeypatch.delenv("FCN_PROCESS_STATE_TEST", raising=False)
    monkeypatch.setenv("FCN_PROCESS_STATE_KEPT", "before")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    filters = list(warnings.filters)
    with pytest.raises(KeyboardInterrupt), kept_process_state():
        os.environ["FCN_PROCESS_STATE_TEST"] = "1"
        del os.environ["FCN_PROCESS_STATE_KEPT"]
        warnings.simplefilter("ignore")
        logging.basicConfig(level=logging.DEBUG, force=True)
        keras.config.set_dtype_policy("mixed_float16")
        raise KeyboardInterrupt
    assert "FCN_PROCESS_STATE_TEST" not in os.environ and os.environ["FCN_PROCESS_STATE_KEPT"] == "before"
    assert warnings.filters == filters
    assert root.handlers == handlers and root.level == level
    assert keras.config.dtype_policy().name == "float32"


def test_a_blocked_tensorflow_is_left_alone_when_the_seed_is_put_back(monkeypatch):
    # The other Keras backends' runs block TensorFlow's import with `sys.modules["tensorflow"] = None`.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with kept_process_state():
        keras.utils.set_random_seed(11)
    assert sys.modules["tensorflow"] is None
