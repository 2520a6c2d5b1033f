"""`--patience N`: training stops after N epochs without a better selection mIoU, and a resume keeps counting."""

import dataclasses
import json
import os

import numpy as np
import pytest
from conftest import HEIGHT, TINY, WIDTH

from segmentation import callbacks
from segmentation.callbacks import Patience
from segmentation.checkpoints import TrainingState, read_training_state
from segmentation.config import RunConfig, TrainingSettings
from segmentation.errors import UsageError
from segmentation.paths import RunFiles
from segmentation.training import plan_training

FLAGS = [*TINY, "--head-filters", "8", "--jit-compile", "off"]


def new_state(history=None, waited=0):
    return TrainingState(epochs_done=len((history or {}).get("test_miou", [])), epochs=10, history=history or {},
                         best_miou=0.0, seed=0, shuffle_seed=0, settings={}, epochs_without_improvement=waited)


def run_epochs(patience, first_epoch, mious):
    """Counts one epoch per mIoU; returns the epochs (1-based) it stopped after, if any."""
    for epoch, miou in enumerate(mious, start=first_epoch):
        stop = patience.count(epoch, miou)
        patience.state.history.setdefault("test_miou", []).append(miou)  # as save_epoch_state does
        if stop:
            return epoch + 1
    return None


def test_it_stops_after_patience_epochs_without_a_better_miou(caplog):
    state = new_state()
    caplog.set_level("INFO")
    # A tie is no improvement; a better epoch resets the count.
    assert run_epochs(Patience(2, state), 0, [0.3, 0.3, 0.4, 0.35, 0.39, 0.5]) == 5
    assert state.epochs_without_improvement == 2
    assert "Stopping early after epoch 5: the test mIoU has not improved on 0.4000 for 2 epoch(s) (--patience 2)" \
        in caplog.text


def test_a_resumed_run_goes_on_counting_from_its_state():
    # Saved after epoch 3 of 0.5, 0.4, 0.45: one epoch without improvement on 0.5.
    state = new_state({"test_miou": [0.5, 0.4, 0.45]}, waited=1)
    assert run_epochs(Patience(2, state), 3, [0.49, 0.6]) == 4
    state = new_state({"val_miou": [0.5, 0.4, 0.45]}, waited=1)
    assert not Patience(3, state, split="val").count(3, 0.55)
    assert state.epochs_without_improvement == 0
    # The validation history is counted: a fourth epoch short of 0.5 is the third without improvement.
    state = new_state({"val_miou": [0.5, 0.4, 0.45]}, waited=1)
    assert Patience(3, state, split="val").count(3, 0.49) and state.epochs_without_improvement == 3


def test_a_run_that_stopped_early_resumes_only_with_more_patience(tmp_path):
    files = RunFiles.of(str(tmp_path), 11, 1, "drinks")
    config = RunConfig(height=HEIGHT, width=WIDTH, layers=1, depth=11, batch_size=2, seed=0, data_path="d",
                       train_labels="a", test_labels="b", patience=2)
    settings = TrainingSettings(config, n_classes=4, precision="float32")
    state = new_state({"test_miou": [0.5, 0.4, 0.3]}, waited=2)
    state.settings = settings.as_record()
    record = json.dumps({"format": 1, **vars(state)}).encode()
    with open(files.state, "wb") as file:
        np.savez(file, state_json=np.frombuffer(record, dtype=np.uint8))
    with pytest.raises(UsageError, match="stopped early.*--patience 2.*larger --patience"):
        plan_training(files, settings, resume=True, overwrite=False, epochs=10, seed=0)
    more_patient = dataclasses.replace(settings, config=dataclasses.replace(config, patience=3))
    assert plan_training(files, more_patient, resume=True, overwrite=False, epochs=10, seed=0).epochs_done == 3


def scripted_miou(monkeypatch, values):
    """Makes the per-epoch evaluation report these mIoU values in turn (the rest of its scores real)."""
    real = callbacks.evaluate_dataset
    remaining = iter(values)

    def evaluate(model, generator, on_batch=None, tta=False):
        scores = real(model, generator, on_batch, tta)
        scripted = type("Scripted", (type(scores),), {"mean_iou": next(remaining)})
        scores.__class__ = scripted
        return scores

    monkeypatch.setattr(callbacks, "evaluate_dataset", evaluate)


def test_training_stops_and_its_state_records_the_count(book_dataset, tmp_path, run_cli, monkeypatch):
    data_path, _ = book_dataset
    save_dir = str(tmp_path / "weights")
    scripted_miou(monkeypatch, [0.3, 0.2, 0.25, 0.9])
    status, out, err = run_cli([*FLAGS, "--data-path", data_path, "--save-dir", save_dir, "--train", "--seed", "0",
                                "--epochs", "4", "--patience", "1"])
    assert status == 0, err
    assert "Stopping early after epoch 2" in out and "Epoch 3/4" not in out
    state = read_training_state(os.path.join(save_dir, "ResNet11v2-1layer-drinks-last.state.npz"))
    assert (state.epochs_done, state.epochs_without_improvement) == (2, 1)
    assert state.history["test_miou"] == [0.3, 0.2]
