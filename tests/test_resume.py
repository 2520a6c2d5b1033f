"""Never losing work: a killed run resumes, Ctrl-C saves, NaN stops, a better best model stays."""

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import HEIGHT, RECORD, SCRIPT, STATE, TINY, WEIGHTS, WIDTH, error_lines, snapshot, write_book_dataset

from model import build_model
from segmentation.checkpoints import read_training_state
from segmentation.paths import best_metrics_path, last_state_path

# The killed run's network: an 8-filter head, small weights and states to save every epoch.
FLAGS = [*TINY, "--head-filters", "8"]

# Runs the real CLI in a subprocess, with one added callback that, at batch PAUSE_BATCH of
# epoch PAUSE_EPOCH (0-based), creates PAUSE_MARKER and sleeps: the test then signals the
# process there, in the middle of an epoch, every time.
LAUNCHER = f"""
import os, runpy, signal, sys, time

import keras

# Ctrl-C as in a terminal, even where this test's runner was started with SIGINT ignored (a background job).
signal.signal(signal.SIGINT, signal.default_int_handler)

class Pause(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == int(os.environ["PAUSE_EPOCH"]) and batch == int(os.environ["PAUSE_BATCH"]):
            open(os.environ["PAUSE_MARKER"], "w").close()
            time.sleep(600)

fit = keras.Model.fit
keras.Model.fit = lambda self, *args, callbacks=(), **kwargs: fit(
    self, *args, callbacks=[*callbacks, Pause()], **kwargs
)
sys.argv = [{SCRIPT!r}, *sys.argv[1:]]
runpy.run_path({SCRIPT!r}, run_name="__main__")
"""


def environment(**extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **extra)


def run_until_paused(args, cwd, epoch, batch, send):
    """Starts a training run, waits until it pauses mid-epoch, sends it `send`; returns the result."""
    marker = cwd / "paused"
    marker.unlink(missing_ok=True)  # an earlier run's
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=environment(PAUSE_EPOCH=str(epoch), PAUSE_BATCH=str(batch), PAUSE_MARKER=str(marker)),
    )
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), process.communicate(timeout=60)
    process.send_signal(send)
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr


def csv_epochs(save_dir):
    with open(save_dir / "history.csv", newline="") as file:
        return [int(row["epoch"]) for row in csv.DictReader(file)]


def load_into_tiny_model(path):
    """Loads weights of the network of FLAGS."""
    _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=4, n=1, head_filters=8)
    fcn.load_weights(path)
    return fcn


def printed_command(line):
    """The arguments of the resume command an interrupted run printed in `line`, after `python3 fcn-12.3.1.py`."""
    printed = shlex.split(line.split("resume with: ", 1)[1])
    assert printed[:2] == ["python3", "fcn-12.3.1.py"] and printed[-1] == "--resume"
    assert printed.count("--resume") == 1
    return printed[2:]


def test_a_killed_run_resumes_and_sigterm_and_ctrl_c_keep_the_last_epoch_for_the_command_they_print(
        tmp_path, run_cli, monkeypatch):
    """SIGKILL, SIGTERM (timeout, Slurm, Kubernetes, a preempted machine) and Ctrl-C, each in the middle of an epoch.

    SIGTERM is handled like Ctrl-C, with status 143 instead of 130; each resumed run goes on where the last ended.
    """
    data_path = tmp_path / "drinks"
    write_book_dataset(str(data_path), num_train=4, num_test=2)
    save_dir = tmp_path / "weights"
    args = ["--train", "--epochs", "3", "--seed", "3", "--workers", "1", *FLAGS,
            "--data-path", str(data_path), "--save-dir", str(save_dir)]

    # SIGKILL in the middle of epoch 2: epoch 1's state and best weights survive whole.
    status, _, _ = run_until_paused(args, tmp_path, epoch=1, batch=0, send=signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert read_training_state(str(save_dir / STATE)).epochs_done == 1
    assert csv_epochs(save_dir) == [0]
    load_into_tiny_model(str(save_dir / WEIGHTS))
    assert not [name for name in os.listdir(save_dir) if ".partial" in name]

    # --resume continues with epoch 2; SIGTERM in its middle keeps epoch 1's state and frees the save folder.
    status, stdout, stderr = run_until_paused([*args, "--resume"], tmp_path, epoch=1, batch=0, send=signal.SIGTERM)
    assert status == 143, stderr
    assert "Resuming" in stdout and "after epoch 1 of 3" in stdout and "Epoch 2/3" in stdout
    assert "Epoch 1/3" not in stdout
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr
    assert lines[0].startswith("fcn-12.3.1.py: terminated (SIGTERM); the state after the last completed epoch")
    assert read_training_state(str(save_dir / STATE)).epochs_done == 1
    assert not (save_dir / ".training.lock").exists()

    # The command it printed goes on with epoch 2; Ctrl-C in the middle of epoch 3 keeps epoch 2's state.
    status, stdout, stderr = run_until_paused(printed_command(lines[0]), tmp_path, epoch=2, batch=0,
                                              send=signal.SIGINT)
    assert status == 130, stderr
    assert "Epoch 2/3" in stdout and "Epoch 1/3" not in stdout
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr
    assert "interrupted;" in lines[0] and "resume with: python3 fcn-12.3.1.py --train" in lines[0]
    assert lines[0].endswith("--resume") and lines[0].count("--resume") == 1
    assert read_training_state(str(save_dir / STATE)).epochs_done == 2

    # The very command it printed finishes the run (in-process: no signal is sent to it): no gap, no duplicate
    # epoch.
    monkeypatch.chdir(tmp_path)
    status, out, err = run_cli(printed_command(lines[0]))
    assert status == 0, err
    assert "Epoch 3/3" in out and "Epoch 2/3" not in out
    assert csv_epochs(save_dir) == [0, 1, 2]
    state = read_training_state(str(save_dir / STATE))
    assert state.epochs_done == 3 and state.seed == 3
    assert all(len(values) == 3 for values in state.history.values())
    miou_history = np.load(save_dir / "miou_history.npy")
    np.testing.assert_allclose(miou_history, state.history["test_miou"])
    assert len(np.load(save_dir / "mpla_history.npy")) == 3
    # The best weights load, and their record holds the best epoch of the whole history.
    record = json.loads((save_dir / RECORD).read_text())
    assert record["test_miou"] == pytest.approx(miou_history.max())
    assert record["epoch"] == int(np.argmax(miou_history)) + 1
    assert record["settings"]["layers"] == 1 and record["settings"]["n_classes"] == 4
    load_into_tiny_model(str(save_dir / WEIGHTS))
    assert not [name for name in os.listdir(save_dir) if ".partial" in name]


def save_tiny_best(save_dir, miou):
    """A best-weights file and its metrics record claiming `miou`."""
    os.makedirs(save_dir, exist_ok=True)
    _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=4, n=1)
    path = os.path.join(save_dir, WEIGHTS)
    fcn.save_weights(path)
    with open(best_metrics_path(path), "w") as file:
        json.dump({"test_miou": miou, "epoch": 7}, file)
    return path


def test_nan_loss_stops_with_status_3_and_saves_nothing(book_dataset, tmp_path, run_cli):
    data_path, _ = book_dataset
    save_dir = tmp_path / "weights"
    save_tiny_best(str(save_dir), 0.5)
    before = snapshot(save_dir)
    # --overwrite lowers the bar to 0, so only the NaN guard keeps the broken model out.
    status, out, err = run_cli(
        ["--train", "--epochs", "2", "--overwrite", "--learning-rate", "1e30", *TINY,
         "--data-path", data_path, "--save-dir", str(save_dir)])
    assert status == 3
    assert err.count("\n") == 1 and "error: the training loss became nan" in err and "--learning-rate" in err
    assert "--overwrite: the existing best weights" in out
    assert snapshot(save_dir) == before
    assert not os.path.exists(last_state_path(str(save_dir / WEIGHTS)))


def test_a_better_existing_best_model_is_kept(book_dataset, tmp_path, run_cli):
    data_path, _ = book_dataset
    save_dir = tmp_path / "weights"
    path = save_tiny_best(str(save_dir), 0.99)
    weights_before = (save_dir / WEIGHTS).read_bytes()
    status, out, err = run_cli(
        ["--train", "--epochs", "1", *TINY, "--data-path", data_path, "--save-dir", str(save_dir)])
    assert status == 0, err
    assert "(mIoU 0.9900, epoch 7): this run replaces them only with a better model" in out
    assert "Epoch 1: mIoU" in out and "(best 0.9900)" in out
    assert (save_dir / WEIGHTS).read_bytes() == weights_before
    assert json.loads(open(best_metrics_path(path)).read())["test_miou"] == 0.99
    # A finished run's state is there; a new run may start afresh over it.
    assert read_training_state(last_state_path(path)).epochs_done == 1
