"""--time-budget: the plan of epochs and steps, the callback that keeps it, and a whole run inside its budget."""

import csv
import os
import shlex
import time
import types

import keras
import numpy as np
import pytest
from conftest import TINY

from segmentation.budget import REPORT_SECONDS, Plan, TimeBudget, plan_steps
from segmentation.checkpoints import read_training_state
from segmentation.schedules import LearningRateLogger, WarmupCosine, warmup_cosine


def test_plan_takes_the_steps_that_fit_with_an_evaluation_after_each_epoch():
    # 10 steps of 1 s and a 5 s evaluation: 15 s an epoch, planned as 15.75 s.
    assert plan_steps(6 * 15.75, 1.0, 5.0, 10, steps_done=0, max_steps=1000) == 60
    # 10 s more hold 4 steps of a shorter 7th epoch and its evaluation (9 s, planned as 9.45 s).
    assert plan_steps(6 * 15.75 + 10, 1.0, 5.0, 10, steps_done=0, max_steps=1000) == 64
    # ... and 5 s more only an evaluation: no step of a 7th epoch.
    assert plan_steps(6 * 15.75 + 5, 1.0, 5.0, 10, steps_done=0, max_steps=1000) == 60
    # At most --epochs whole epochs.
    assert plan_steps(1e6, 1.0, 5.0, 10, steps_done=0, max_steps=40) == 40


def test_plan_counts_from_the_steps_done_and_the_epoch_under_way():
    # 3 steps into an epoch: its 7 steps and evaluation (12 s) come first.
    assert plan_steps(12 * 1.05, 1.0, 5.0, 10, steps_done=13, max_steps=1000) == 20
    assert plan_steps(12 * 1.05 + 15.75, 1.0, 5.0, 10, steps_done=13, max_steps=1000) == 30
    # No time left: the run ends where it is (an unfinished epoch still ends with its evaluation).
    assert plan_steps(0, 1.0, 5.0, 10, steps_done=13, max_steps=1000) == 13
    assert plan_steps(-50, 1.0, 5.0, 10, steps_done=20, max_steps=1000) == 20


def test_plan_epochs_count_a_short_last_epoch():
    assert Plan(total_steps=64, steps_per_epoch=10).epochs == 7
    assert Plan(total_steps=60, steps_per_epoch=10).epochs == 6
    assert Plan(total_steps=3, steps_per_epoch=10).epochs == 1


class FakeClock(keras.callbacks.Callback):
    """A clock that training moves: each step takes `step` seconds, each evaluation `evaluation`.

    From epoch `change_from_epoch` (0-based) on, every step takes `factor` times as long. Put it first in
    the callback list, so its epoch-end evaluation time is counted before the budget's.
    """

    def __init__(self, step=1.0, evaluation=5.0, change_from_epoch=None, factor=1.0):
        super().__init__()
        self.now = 0.0
        self.step, self.evaluation, self.change_from_epoch, self.factor = step, evaluation, change_from_epoch, factor

    def __call__(self):
        return self.now

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.change_from_epoch:
            self.step *= self.factor

    def on_train_batch_begin(self, batch, logs=None):
        self.now += self.step

    def on_epoch_end(self, epoch, logs=None):
        self.now += self.evaluation


class SlowSave(keras.callbacks.Callback):
    """After the budget's epoch end, moves `clock` by `seconds` (saving the state takes time too)."""

    def __init__(self, clock, seconds):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def on_epoch_end(self, epoch, logs=None):
        self.clock.now += self.seconds


def replanning(budget):
    """A callback that re-plans `budget` at each epoch's end, as `callbacks.EpochEnd` does after the evaluation."""
    return keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs=None: budget.replan())


def fit_with_budget(deadline, clock, steps_per_epoch=10, max_epochs=100, after=()):
    schedule = WarmupCosine(1e-2, total_steps=10_000)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss="mse")
    planned = []
    budget = TimeBudget(deadline, steps_per_epoch=steps_per_epoch, evaluation_batches=2, max_epochs=max_epochs,
                        schedule=schedule, on_plan=planned.append, clock=clock)
    history = model.fit(np.ones((2 * steps_per_epoch, 2)), np.zeros((2 * steps_per_epoch, 1)), batch_size=2,
                        epochs=max_epochs, verbose=0,
                        callbacks=[clock, budget, replanning(budget), LearningRateLogger(schedule), *after])
    steps = int(model.optimizer.iterations)
    # The run ends on its plan's last step, where the schedule ends: the rate after it is 0.
    assert steps == budget.plan.total_steps == planned[-1].total_steps == int(schedule.total_steps)
    assert history.history["learning_rate"][-1] == 0.0
    assert len(history.history["loss"]) == budget.plan.epochs
    return steps, planned, clock.now


def test_a_steady_run_spends_its_budget_and_ends_on_a_short_epoch():
    # Kept back at the end: the report's 5 s and an evaluation (5 s); the 115 s left hold 7 epochs of 15 s
    # and, once the planning margin of the first plans has been freed, 4 steps of an 8th and its evaluation.
    steps, planned, now = fit_with_budget(125.0, FakeClock(step=1.0, evaluation=5.0))
    assert planned[1].total_steps == 70 and steps == 74
    assert now == 114.0


def test_a_run_the_machine_slows_down_is_cut_and_its_schedule_shortened():
    # Planned at 1 s a step; from the third epoch on every step takes twice as long.
    steps, planned, now = fit_with_budget(120.0, FakeClock(step=1.0, evaluation=5.0, change_from_epoch=2,
                                                           factor=2.0))
    assert planned[1].total_steps == 70
    assert steps == 50
    assert now <= 120.0 - REPORT_SECONDS - 5.0


def test_a_run_that_speeds_up_trains_longer_and_uses_its_time():
    # Planned at 2 s a step; from the second epoch on every step takes 1 s.
    steps, planned, now = fit_with_budget(120.0, FakeClock(step=2.0, evaluation=5.0, change_from_epoch=1,
                                                           factor=0.5))
    # After the first epoch (25 s) 85 s hold 3 epochs of 25 s; at 1 s a step, 6 epochs and 4 steps fit.
    assert planned[1].total_steps == 40
    assert steps == 64
    # What is left unused is less than a step and an evaluation with the planning margin.
    assert 120.0 - REPORT_SECONDS - 5.0 - (1.0 + 5.0) * 1.05 <= now <= 120.0 - REPORT_SECONDS - 5.0


def test_time_spent_after_the_evaluation_is_planned_for_without_moving_the_plan_back_and_forth():
    # Each epoch boundary also saves the state (3 s) after the budget has seen the evaluation (5 s).
    clock = FakeClock(step=1.0, evaluation=5.0)
    steps, planned, now = fit_with_budget(125.0, clock, after=[SlowSave(clock, 3.0)])
    totals = [plan.total_steps for plan in planned[1:]]
    # Once the boundary has been timed whole, the plan only grows, as the planning margin is freed.
    assert totals[1:] == sorted(totals[1:])
    assert now <= 125.0 - REPORT_SECONDS - 8.0


def test_a_tiny_budget_cuts_the_only_epoch():
    # 30 s: 10 for the report, 2 for the evaluation estimated from the first steps, the rest for steps.
    steps, planned, _ = fit_with_budget(30.0, FakeClock(step=1.0, evaluation=1.0), steps_per_epoch=50)
    assert planned[-1].epochs == 1
    assert steps < 50


class JitterClock(FakeClock):
    """A `FakeClock` whose steps take up to `jitter` of their time more or less, evaluations up to 10 % (seeded)."""

    def __init__(self, jitter=0.1, seed=0, step=1.0, evaluation=5.0, **kwargs):
        super().__init__(step=step, evaluation=evaluation, **kwargs)
        self.step_jitter = jitter
        self.evaluation_jitter = min(jitter, 0.1)
        self.random = np.random.default_rng(seed)

    def on_train_batch_begin(self, batch, logs=None):
        self.now += self.step * self.random.uniform(1.0 - self.step_jitter, 1.0 + self.step_jitter)

    def on_epoch_end(self, epoch, logs=None):
        self.now += self.evaluation * self.random.uniform(1.0 - self.evaluation_jitter, 1.0 + self.evaluation_jitter)


# About 30 epochs of 75 steps of about 1 s, each followed by an evaluation of about 5 s.
LONG_DEADLINE = 2450.0
LONG_EPOCH_STEPS = 75
# Where training must end: the report (its figure, and an evaluation of 5 s on average) is kept back.
LONG_LINE = LONG_DEADLINE - REPORT_SECONDS - 5.0
# Left unused at most: a step and an evaluation (10 % longer), and the planning margin of the last two epochs.
UNUSED_AT_MOST = 1.1 * (1.0 + 5.0) + 0.05 * 2 * 80.0


class StubModel:
    """What the budget reads and sets of a model: the optimizer's step count, and `stop_training`."""

    def __init__(self):
        self.optimizer = types.SimpleNamespace(iterations=0)
        self.stop_training = False


class RateRecorder(keras.callbacks.Callback):
    """Appends to `rates` the learning rate of every step as it is trained (the schedule's at the step about to run).

    Put it after the budget, so a step's rate is read after any re-plan made before it.
    """

    def __init__(self, schedule, rates):
        super().__init__()
        self.schedule, self.rates = schedule, rates

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(self.schedule.rate(int(self.model.optimizer.iterations)))


def rises_after_its_peak(rates):
    """Whether the rates ever rise after the first step they fall (float32 rounding aside)."""
    rates = np.asarray(rates, dtype=np.float64)
    falls = np.flatnonzero(np.diff(rates) < -1e-6 * rates.max())
    return falls.size > 0 and bool((np.diff(rates[falls[0]:]) > 1e-6 * rates.max()).any())


def run_with_budget(deadline, clock, steps_per_epoch, max_epochs=100, rates=None):
    """Calls the clock's and the budget's hooks as `Model.fit` does, with no model to train (thousands of steps fast).

    The same plans and times as `fit_with_budget`, whose checks it repeats. A list given as `rates` receives the
    learning rate of every step trained.

    Returns the steps trained, the plans made, and the clock's time at the end.
    """
    schedule = WarmupCosine(1e-2, total_steps=10_000)
    planned = []
    budget = TimeBudget(deadline, steps_per_epoch=steps_per_epoch, evaluation_batches=2, max_epochs=max_epochs,
                        schedule=schedule, on_plan=planned.append, clock=clock)
    model = StubModel()
    callbacks = [clock, budget, replanning(budget), *([RateRecorder(schedule, rates)] if rates is not None else [])]
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    for epoch in range(max_epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        for batch in range(steps_per_epoch):
            for callback in callbacks:
                callback.on_train_batch_begin(batch)
            model.optimizer.iterations += 1
            for callback in callbacks:
                callback.on_train_batch_end(batch)
            if model.stop_training:
                break
        for callback in callbacks:
            callback.on_epoch_end(epoch)
        if model.stop_training:
            break
    steps = model.optimizer.iterations
    assert steps == budget.plan.total_steps == planned[-1].total_steps == int(schedule.total_steps)
    assert epoch + 1 == budget.plan.epochs
    return steps, planned, clock.now


def test_the_budget_driven_without_fit_plans_as_in_fit():
    deadline, steps_per_epoch = 125.0, 10
    driven = run_with_budget(deadline, JitterClock(seed=0), steps_per_epoch)
    fitted = fit_with_budget(deadline, JitterClock(seed=0), steps_per_epoch=steps_per_epoch)
    assert driven == fitted


def changes_after_first_epoch(planned):
    """How often the plan changed after the one made at the first epoch's end (the second plan)."""
    return len(planned) - 2


@pytest.mark.parametrize("seed", range(5))
def test_a_steady_run_whose_pace_jitters_changes_its_plan_at_most_twice_and_uses_its_time(seed):
    # Steps of 1 s and evaluations of 5 s, each 10 % longer or shorter at random.
    steps, planned, now = run_with_budget(LONG_DEADLINE, JitterClock(seed=seed), LONG_EPOCH_STEPS)
    # The plan changes only at the end, to spend what the planning margin kept free.
    assert changes_after_first_epoch(planned) <= 2
    # The 2440 s hold 30 epochs of 80 s and part of a 31st.
    assert 30 * LONG_EPOCH_STEPS < steps <= 31 * LONG_EPOCH_STEPS
    assert LONG_LINE - UNUSED_AT_MOST <= now <= LONG_LINE


@pytest.mark.parametrize("seed", range(5))
def test_a_run_whose_steps_vary_more_takes_more_for_noise(seed):
    # Steps 30 % longer or shorter at random: the tolerance widens with their spread.
    steps, planned, now = run_with_budget(LONG_DEADLINE, JitterClock(jitter=0.3, seed=seed), LONG_EPOCH_STEPS)
    assert changes_after_first_epoch(planned) <= 4
    assert 30 * LONG_EPOCH_STEPS <= steps <= 31 * LONG_EPOCH_STEPS
    assert now <= LONG_LINE


@pytest.mark.parametrize("seed", range(5))
def test_a_jittery_run_the_machine_slows_down_halfway_is_cut_and_ends_before_its_deadline(seed):
    clock = JitterClock(seed=seed, change_from_epoch=15, factor=2.0)
    steps, planned, now = run_with_budget(LONG_DEADLINE, clock, LONG_EPOCH_STEPS)
    totals = [plan.total_steps for plan in planned[1:]]
    # Cut first, then at most a cut more and the end's top-ups (not back and forth).
    assert totals[1] < totals[0]
    assert changes_after_first_epoch(planned) <= 3
    # 15 epochs of 80 s leave 1240 s, which hold 8 epochs of 155 s: 23 in all, the last one perhaps short.
    assert 22 * LONG_EPOCH_STEPS < steps <= 23 * LONG_EPOCH_STEPS
    assert now <= LONG_LINE


@pytest.mark.parametrize("seed", range(5))
def test_a_jittery_run_that_speeds_up_halfway_trains_longer_and_uses_its_time(seed):
    clock = JitterClock(seed=seed, step=2.0, change_from_epoch=7, factor=0.5)
    rates = []
    steps, planned, now = run_with_budget(LONG_DEADLINE, clock, LONG_EPOCH_STEPS, rates=rates)
    totals = [plan.total_steps for plan in planned[1:]]
    # Extended first, by a whole epoch or more, then at most the end's top-ups: the rate goes on falling.
    assert totals[1] >= totals[0] + LONG_EPOCH_STEPS
    assert not rises_after_its_peak(rates)
    assert changes_after_first_epoch(planned) <= 3
    # 7 epochs of 155 s leave 1355 s, which hold 16 epochs of 80 s and part of a 17th: part of a 24th in all.
    assert 23 * LONG_EPOCH_STEPS < steps <= 24 * LONG_EPOCH_STEPS
    assert LONG_LINE - UNUSED_AT_MOST <= now <= LONG_LINE


@pytest.mark.parametrize("clock", [
    FakeClock(step=2.0, evaluation=5.0, change_from_epoch=1, factor=0.5),
    FakeClock(step=1.0, evaluation=5.0, change_from_epoch=2, factor=2.0),
], ids=["sped-up", "slowed-down"])
def test_a_replanned_schedule_goes_on_from_its_rate_and_never_raises_it(clock):
    # Every plan after the first, extended or cut, resizes what is left of the schedule: its rate, falling
    # since the warm-up, falls on to 0 at the new last step.
    rates = []
    steps, planned, _ = run_with_budget(120.0, clock, steps_per_epoch=10, rates=rates)
    assert len(planned) >= 3 and len(rates) == steps
    assert not rises_after_its_peak(rates), np.round(np.asarray(rates) / 1e-2, 3)
    assert max(rates) == pytest.approx(1e-2, rel=1e-6)


@pytest.mark.timing
def test_run_finishes_inside_its_budget_with_the_schedule_ending_at_its_last_step(book_dataset, tmp_path, run_cli):
    data_path, _ = book_dataset
    save_dir = str(tmp_path / "weights")
    budget_minutes = 0.35
    argv = ["--train", *TINY, "--data-path", data_path, "--save-dir", save_dir, "--seed", "0",
            "--lr-schedule", "cosine", "--learning-rate", "3e-3", "--time-budget", str(budget_minutes)]
    started = time.monotonic()
    status, out, err = run_cli(argv)
    elapsed = time.monotonic() - started
    assert status == 0, err
    assert elapsed <= 60 * budget_minutes
    with open(os.path.join(save_dir, "history.csv"), encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    # The run ended on its plan's last step (the last epoch 1 to 4 steps of 4), where the rate reached 0.
    state = read_training_state(os.path.join(save_dir, "ResNet11v2-1layer-drinks-last.state.npz"))
    assert 4 * (len(rows) - 1) < state.total_steps <= 4 * len(rows)
    assert "decaying to 0 at step" in out
    assert float(rows[-1]["learning_rate"]) == 0.0
    assert os.path.isfile(os.path.join(save_dir, "report.png"))
    # The saved state holds the planned epochs, so the run counts as finished.
    assert state.epochs == state.epochs_done == len(rows)
    status, _, err = run_cli([*argv, "--resume"])
    assert status == 2 and f"has finished all {len(rows)} epoch(s) its --time-budget planned" in err


def test_an_interrupted_budgeted_run_resumed_with_the_printed_command_trains_its_plan(
        book_dataset, tmp_path, run_cli, monkeypatch):
    data_path, _ = book_dataset
    save_dir = str(tmp_path / "weights")
    argv = ["--train", *TINY, "--head-filters", "8", "--data-path", data_path, "--save-dir", save_dir, "--seed", "0",
            "--epochs", "3", "--lr-schedule", "cosine", "--learning-rate", "3e-3", "--time-budget", "3"]

    class CtrlCInSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    fit = keras.Model.fit
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "fit", lambda self, *args, callbacks=(), **kwargs: fit(
            self, *args, callbacks=[*callbacks, CtrlCInSecondEpoch()], **kwargs))
        # A plan of 10 steps, as if 3 minutes held no more: 3 epochs, the last of 2 steps of 4.
        patch.setattr("segmentation.budget.plan_steps", lambda *args, **kwargs: min(10, plan_steps(*args, **kwargs)))
        status, _, err = run_cli(argv)
    assert status == 130
    state_path = os.path.join(save_dir, "ResNet11v2-1layer-drinks-last.state.npz")
    planned = read_training_state(state_path)
    # The plan is stored with the state.
    assert planned.epochs_done == 1 and planned.epochs == 3 and planned.total_steps == 10

    printed = shlex.split(err.split("resume with: ", 1)[1].splitlines()[0])
    assert printed[:2] == ["python3", "fcn-12.3.1.py"] and "--time-budget" in printed
    status, out, err = run_cli(printed[2:])
    assert status == 0, err
    assert f"after epoch 1 of {planned.epochs}" in out
    finished = read_training_state(state_path)
    # Exactly the plan: its epochs, its steps (the rate reaches 0 only on the planned last step), no more.
    assert finished.epochs_done == finished.epochs == planned.epochs
    assert steps_trained(state_path) == planned.total_steps
    with open(os.path.join(save_dir, "history.csv"), encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == planned.epochs and float(rows[-1]["learning_rate"]) == 0.0
    # The resumed epochs go on with the schedule as the budget resized it at step 4 (from 12 steps to 10).
    at_plan = warmup_cosine(4, 12, 3e-3)
    assert float(rows[1]["learning_rate"]) == pytest.approx(
        warmup_cosine(8, 10, 3e-3, anchor_step=4, anchor_rate=at_plan, warming_up=False), rel=1e-5)


def steps_trained(state_path):
    """The optimizer's step count (its first variable) in a last-state file."""
    with np.load(state_path) as arrays:
        return int(arrays["optimizer_0"])


@pytest.mark.parametrize("extra, message", [
    (["--time-budget", "0"], "--time-budget 0.0: must be a positive number"),
    (["--time-budget", "nan"], "--time-budget nan: must be a positive number"),
])
def test_bad_budget_is_refused(book_dataset, tmp_path, run_cli, extra, message):
    data_path, _ = book_dataset
    status, _, err = run_cli(["--train", *TINY, "--data-path", data_path, "--save-dir", str(tmp_path), *extra])
    assert status == 2 and message in err


def test_budget_without_training_is_refused(book_dataset, run_cli):
    data_path, _ = book_dataset
    status, _, err = run_cli(["--evaluate", *TINY, "--data-path", data_path, "--time-budget", "1"])
    assert status == 2 and "--time-budget is used with --train" in err
