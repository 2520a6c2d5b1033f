"""The learning-rate schedules: the book's two, and warm-up plus cosine decay."""

import csv
import math
import os

import keras
import numpy as np
import pytest
from conftest import TINY
from hypothesis import given, settings
from hypothesis import strategies as st

from segmentation.schedules import LearningRateLogger, WarmupCosine, lr_schedule_code, lr_schedule_text, warmup_cosine

FLAGS = [*TINY, "--head-filters", "8", "--jit-compile", "off"]


@pytest.mark.parametrize(
    "epoch, expected",
    [(0, 1e-3), (40, 1e-3), (41, 5e-4), (60, 5e-4), (61, 2.5e-4), (80, 2.5e-4), (81, 1.25e-4), (99, 1.25e-4),
     (101, 6.25e-5)],
)
def test_text_schedule_halves_every_20_epochs_after_40(epoch, expected):
    assert lr_schedule_text(epoch, 0.0) == pytest.approx(expected)


@pytest.mark.parametrize("epoch, expected", [(0, 1e-3), (40, 1e-3), (41, 5e-4), (61, 1e-4), (81, 5e-5), (99, 5e-5)])
def test_code_schedule_is_the_books_lr_scheduler(epoch, expected):
    assert lr_schedule_code(epoch, 0.0) == pytest.approx(expected)


def test_cosine_warms_up_linearly_then_decays_to_zero_at_the_last_step():
    total, peak = 100, 3e-3
    rates = [warmup_cosine(step, total, peak) for step in range(total + 5)]
    # Warm-up: the first tenth, linear to the peak.
    assert rates[0] == pytest.approx(peak / 10)
    assert rates[4] == pytest.approx(peak / 2)
    assert rates[9] == pytest.approx(peak)
    assert rates[10] == pytest.approx(peak)
    # Half-way through the decay: half the peak; then decreasing to 0 at step `total`, and 0 after.
    assert rates[55] == pytest.approx(peak / 2)
    assert all(later <= earlier for earlier, later in zip(rates[10:], rates[11:]))
    assert rates[total - 1] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert 0 < rates[total - 1] < 1e-3 * peak
    assert rates[total] == 0 and rates[total + 4] == 0


def test_keras_schedule_matches_the_formula_and_can_be_resized():
    schedule = WarmupCosine(2e-3, total_steps=50)
    steps = [0, 3, 4, 5, 20, 49, 50, 60]
    assert [float(schedule(step)) for step in steps] == pytest.approx([warmup_cosine(s, 50, 2e-3) for s in steps],
                                                                      rel=1e-5, abs=1e-9)
    # Resized in its warm-up, before any step: the warm-up and the decay are those of the new length.
    schedule.resize(200, at_step=0)
    assert [float(schedule(step)) for step in steps] == pytest.approx([warmup_cosine(s, 200, 2e-3) for s in steps],
                                                                      rel=1e-5, abs=1e-9)
    # Resized after it: the rest of it, from the rate at step 30 to 0 at step 100.
    schedule.resize(100, at_step=30)
    later = [30, 31, 65, 99, 100, 120]
    assert [float(schedule(step)) for step in later] == pytest.approx(
        [schedule.rate(step) for step in later], rel=1e-5, abs=1e-9)
    assert schedule.rate(30) == pytest.approx(warmup_cosine(30, 200, 2e-3))
    assert schedule.rate(65) == pytest.approx(warmup_cosine(30, 200, 2e-3) / 2)
    config = schedule.get_config()
    assert config["peak_rate"] == 2e-3 and config["total_steps"] == 100
    restored = WarmupCosine.from_config(config)
    assert [restored.rate(step) for step in later] == pytest.approx([schedule.rate(step) for step in later])


# Rates of the examples, as shares of the peak, before the fix: resumed with twice the --epochs (a
# rate of 0.587 at step 20 moved to 0.933); a finished run resumed (0 to 0.587); the time budget's re-plan
# from 1,000 to 1,250 steps at step 750 (the rate 2.31 times higher).
@pytest.mark.parametrize("total, resized, step", [(40, 80, 20), (20, 40, 20), (1000, 1250, 750), (1000, 800, 750)],
                         ids=["more-epochs", "finished", "budget-extended", "budget-cut"])
def test_a_resized_schedule_goes_on_from_the_rate_it_had_to_0_at_its_new_end(total, resized, step):
    schedule = WarmupCosine(1.0, total_steps=total)
    before = warmup_cosine(step, total, 1.0)
    schedule.resize(resized, at_step=step)
    assert float(schedule(step)) == pytest.approx(before, abs=1e-6)
    rates = np.array([schedule.rate(later) for later in range(step, resized + 3)])
    assert rates[0] == pytest.approx(before) and (np.diff(rates) <= 0).all()
    assert rates[resized - step] == 0 and rates[resized - step - 1] > 0 or before == 0
    # Half-way through what is left, half the rate it had.
    assert schedule.rate(step + (resized - step) / 2) == pytest.approx(before / 2)


def test_a_finished_schedule_stays_at_0_when_resized():
    schedule = WarmupCosine(1.0, total_steps=20)
    schedule.resize(40, at_step=20)
    assert [float(schedule(step)) for step in (20, 30, 40)] == [0.0, 0.0, 0.0]


def never_rises_after_its_peak(rates):
    """Whether the rates rise (or stay) up to their first maximum, then only fall (or stay), float32 rounding aside."""
    rates = np.asarray(rates)
    peak = int(np.argmax(rates))
    tolerance = 1e-6 * rates[peak]
    return bool((np.diff(rates[: peak + 1]) >= -tolerance).all() and (np.diff(rates[peak:]) <= tolerance).all())


@given(
    total=st.integers(1, 400),
    # Each resize: the steps trained since the last one, and the new total (perhaps already reached).
    resizes=st.lists(st.tuples(st.integers(0, 150), st.integers(1, 600)), max_size=6),
)
@settings(max_examples=100, deadline=None)
def test_however_often_it_is_resized_the_rate_never_rises_after_the_warm_up(total, resizes):
    peak = 1.0
    schedule = WarmupCosine(peak, total_steps=total)
    rates, step = [], 0
    for steps_trained, new_total in resizes:
        # The formula with the schedule's numbers (its config), a thousand times faster than reading them each step.
        config = schedule.get_config()
        rates += [warmup_cosine(later, **config) for later in range(step, step + steps_trained)]
        step += steps_trained
        before = schedule.rate(step)
        schedule.resize(new_total, at_step=step)
        if rates and before <= max(rates) and new_total > step:
            # Past the warm-up, a resize to a later end goes on from the rate it had: no jump.
            assert schedule.rate(step) == pytest.approx(before, rel=1e-6)
    # The compiled step's rate is the formula's.
    assert float(schedule(step)) == pytest.approx(schedule.rate(step), rel=1e-5, abs=1e-7)
    config = schedule.get_config()
    end = config["total_steps"]
    rates += [warmup_cosine(later, **config) for later in range(step, max(step, end) + 3)]
    assert never_rises_after_its_peak(rates)
    assert max(rates) <= peak
    # The rate reaches 0 at the last step and stays there.
    assert rates[-1] == 0 and schedule.rate(max(step, end)) == 0


def test_compiled_training_step_follows_a_resized_schedule():
    """The length is a variable read by the compiled step: resizing needs no retracing."""
    schedule = WarmupCosine(1e-2, total_steps=1000)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    x, y = np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32)
    model.train_on_batch(x, y)
    schedule.resize(2, at_step=1)
    before = model.get_weights()[0].copy()
    model.train_on_batch(x, y)  # step 1 of 2: the peak rate
    assert not np.allclose(model.get_weights()[0], before)
    model.train_on_batch(x, y)  # step 2 of 2: rate 0, nothing moves
    after = model.get_weights()[0].copy()
    model.train_on_batch(x, y)
    np.testing.assert_array_equal(model.get_weights()[0], after)
    # The schedule's variables are not the optimizer's (the saved state keeps its layout).
    mine = {id(schedule.total_steps), id(schedule.anchor_step), id(schedule.anchor_rate), id(schedule.warming_up)}
    assert not mine & {id(variable) for variable in model.optimizer.variables}


def test_logger_records_the_rate_where_each_epoch_ended():
    schedule = WarmupCosine(1e-2, total_steps=6)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss="mse")
    history = model.fit(np.ones((6, 2)), np.zeros((6, 1)), batch_size=2, epochs=2, verbose=0,
                        callbacks=[LearningRateLogger(schedule)])
    assert history.history["learning_rate"] == pytest.approx([warmup_cosine(3, 6, 1e-2), 0.0])


def test_peak_rate_must_be_positive():
    with pytest.raises(ValueError, match="peak_rate"):
        WarmupCosine(0.0)


class CtrlCInSecondEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_a_run_resumed_with_more_epochs_goes_on_from_its_rate_and_a_finished_one_is_refused(
        book_dataset, tmp_path, run_cli, monkeypatch):
    data_path, _ = book_dataset
    save_dir = str(tmp_path / "weights")
    argv = ["--train", *FLAGS, "--data-path", data_path, "--save-dir", save_dir, "--seed", "0",
            "--lr-schedule", "cosine", "--learning-rate", "3e-3"]
    fit = keras.Model.fit
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "fit", lambda self, *args, callbacks=(), **kwargs: fit(
            self, *args, callbacks=[*callbacks, CtrlCInSecondEpoch()], **kwargs))
        status, _, err = run_cli([*argv, "--epochs", "2"])
    assert status == 130, err
    # Resumed at step 4 of 8 with twice the epochs: from the rate there down to 0 at step 16.
    status, _, err = run_cli([*argv, "--epochs", "4", "--resume"])
    assert status == 0, err
    with open(os.path.join(save_dir, "history.csv"), encoding="utf-8") as file:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(file)]
    at_resume = warmup_cosine(4, 8, 3e-3)
    assert rates == pytest.approx([at_resume, *(warmup_cosine(step, 16, 3e-3, anchor_step=4, anchor_rate=at_resume,
                                                              warming_up=False) for step in (8, 12, 16))], rel=1e-5)
    # Finished, its rate 0 for good: a resume with more epochs would train nothing.
    status, _, err = run_cli([*argv, "--epochs", "6", "--resume"])
    assert status == 2 and "--restore-weights" in err and "\n" not in err.strip()
