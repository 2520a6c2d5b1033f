"""--time-budget: the plan of epochs and steps, the callback that keeps it, and a whole run inside its budget."""

import csv
import os
import re
import time

import keras
import numpy as np
import pytest
from conftest import HEIGHT, WIDTH

from segmentation.budget import Plan, TimeBudget, plan_run
from segmentation.checkpoints import read_training_state
from segmentation.schedules import WarmupCosine, warmup_cosine

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fcn-12.3.1.py")
TINY = ["--height", str(HEIGHT), "--width", str(WIDTH), "--layers", "1", "--depth", "11", "--batch-size", "2"]


def test_plan_takes_the_whole_epochs_that_fit():
    # 10 steps of 1 s and a 5 s evaluation: 15 s an epoch, planned as 15.75 s; 100 s hold 6 of them.
    assert plan_run(100, 1.0, 10, 5.0, max_epochs=100) == Plan(epochs=6, total_steps=60)
    assert plan_run(94, 1.0, 10, 5.0, max_epochs=100) == Plan(epochs=5, total_steps=50)
    assert plan_run(100, 1.0, 10, 5.0, max_epochs=4) == Plan(epochs=4, total_steps=40)
    # During the first epoch, its steps already trained are paid for: 3 done, 92 s left, 6 epochs.
    assert plan_run(92, 1.0, 10, 5.0, max_epochs=100, steps_into_epoch=3) == Plan(epochs=6, total_steps=60)


def test_plan_after_the_first_epoch_keeps_it_and_adds_what_fits():
    assert plan_run(32, 1.0, 10, 5.0, max_epochs=100, epochs_done=1) == Plan(epochs=3, total_steps=30)
    assert plan_run(3, 1.0, 10, 5.0, max_epochs=100, epochs_done=1) == Plan(epochs=1, total_steps=10)
    assert plan_run(1000, 1.0, 10, 5.0, max_epochs=5, epochs_done=1) == Plan(epochs=5, total_steps=50)


def test_plan_cuts_the_only_epoch_when_not_even_one_fits():
    # 12 s: the evaluation's 5 s and 7 steps of 1 s.
    assert plan_run(12, 1.0, 10, 5.0, max_epochs=100) == Plan(epochs=1, total_steps=7)
    # No time at all: still one step more than trained, so the run ends with a model to evaluate.
    assert plan_run(0, 1.0, 10, 5.0, max_epochs=100, steps_into_epoch=5) == Plan(epochs=1, total_steps=6)


class FakeClock(keras.callbacks.Callback):
    """A clock that training moves: each step takes `step` seconds, each evaluation `evaluation`.

    Put it first in the callback list, so its epoch-end evaluation time is counted before the budget's.
    """

    def __init__(self, step=1.0, evaluation=5.0, slow_from_epoch=None):
        super().__init__()
        self.now = 0.0
        self.step, self.evaluation, self.slow_from_epoch = step, evaluation, slow_from_epoch

    def __call__(self):
        return self.now

    def on_train_batch_begin(self, batch, logs=None):
        self.now += self.step

    def on_epoch_end(self, epoch, logs=None):
        self.now += self.evaluation
        if self.slow_from_epoch is not None and epoch + 1 >= self.slow_from_epoch:
            self.step *= 2


def fit_with_budget(deadline, clock, steps_per_epoch=10, max_epochs=100, schedule=None):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule or 1e-3), loss="mse")
    planned = []
    budget = TimeBudget(deadline, steps_per_epoch=steps_per_epoch, evaluation_batches=2, max_epochs=max_epochs,
                        schedule=schedule, on_plan=planned.append, clock=clock)
    history = model.fit(np.ones((2 * steps_per_epoch, 2)), np.zeros((2 * steps_per_epoch, 1)), batch_size=2,
                        epochs=max_epochs, verbose=0, callbacks=[clock, budget])
    return model, budget, planned, len(history.history["loss"])


def test_callback_stops_at_the_planned_step_with_the_schedule_ending_there():
    schedule = WarmupCosine(1e-2, total_steps=10_000)
    clock = FakeClock(step=1.0, evaluation=5.0)
    # After the first epoch (15 s: 10 steps and the evaluation) 120 - 15 s are left; 10 of them are kept for
    # the report (5 s and an evaluation): 95 s hold 6 more epochs planned at 15.75 s.
    model, budget, planned, epochs = fit_with_budget(120.0, clock, schedule=schedule)
    assert epochs == budget.plan.epochs == planned[-1] == 7
    assert int(model.optimizer.iterations) == budget.plan.total_steps == int(schedule.total_steps) == 70
    assert clock.now <= 120.0 - 10.0


def test_callback_cuts_the_run_when_the_machine_slows_down():
    schedule = WarmupCosine(1e-2, total_steps=10_000)
    # Planned for 7 epochs, but from the third on the steps take twice as long each epoch.
    clock = FakeClock(step=1.0, evaluation=5.0, slow_from_epoch=2)
    model, budget, planned, epochs = fit_with_budget(120.0, clock, schedule=schedule)
    assert planned[1] == 7 and epochs == budget.plan.epochs == planned[-1] == 4
    assert int(model.optimizer.iterations) == budget.plan.total_steps == 10 * epochs
    assert clock.now <= 120.0


def test_callback_cuts_the_only_epoch_when_the_budget_is_tiny():
    # 30 s: 10 for the report, 2 for the evaluation estimated from the first steps, the rest for steps.
    model, budget, planned, epochs = fit_with_budget(30.0, FakeClock(step=1.0, evaluation=1.0), steps_per_epoch=50)
    assert epochs == budget.plan.epochs == 1
    assert int(model.optimizer.iterations) == budget.plan.total_steps < 50




def test_run_finishes_inside_its_budget_with_the_schedule_ending_at_its_last_step(book_dataset, tmp_path, run_cli):
    data_path, _ = book_dataset
    save_dir = str(tmp_path / "weights")
    budget_minutes = 0.5
    argv = ["--train", *TINY, "--data-path", data_path, "--save-dir", save_dir, "--seed", "0",
            "--lr-schedule", "cosine", "--learning-rate", "3e-3", "--time-budget", str(budget_minutes)]
    started = time.monotonic()
    status, out, err = run_cli(argv)
    elapsed = time.monotonic() - started
    assert status == 0, err
    assert elapsed <= 60 * budget_minutes
    with open(os.path.join(save_dir, "history.csv"), encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    # 8 training images, batch 2: 4 steps an epoch; the last plan names the run's last step.
    last_step = int(re.findall(r"decaying to 0 at step (\d+)", out)[-1])
    assert last_step >= 4 * len(rows) > 4
    assert float(rows[-1]["learning_rate"]) == pytest.approx(warmup_cosine(4 * len(rows) - 1, last_step, 3e-3),
                                                             rel=1e-4)
    assert os.path.isfile(os.path.join(save_dir, "report.png"))
    # The saved state holds the planned epochs, so the run counts as finished.
    state = read_training_state(os.path.join(save_dir, "ResNet11v2-1layer-drinks-last.state.npz"))
    assert state.epochs == state.epochs_done == len(rows)
    status, _, err = run_cli([*argv, "--resume"])
    assert status == 2 and "has finished" in err


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
