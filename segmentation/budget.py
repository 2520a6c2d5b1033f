"""Time-budgeted training (`--time-budget MINUTES`): as many epochs as fit, the schedule ending there.

The run's clock starts when the program starts. Training times its first steps (the very first,
which builds the compiled step, left out), estimates an epoch as its steps plus the per-epoch
evaluation, and fixes the number of epochs that fit before the deadline, keeping back the time of
the report written after training. A step schedule (`--lr-schedule cosine`) is then sized to end at
the last of those steps. At the end of the first epoch, with the evaluation timed too, the plan is
made again from the measured times; after every epoch, a run that the machine has slowed down
stops when the next epoch would overrun the deadline. If not even one epoch fits, the run trains
the steps that fit and evaluates once.
"""

import dataclasses
import logging
import time
from collections.abc import Callable

import keras

from segmentation.schedules import WarmupCosine

logger = logging.getLogger(__name__)

# Steps timed after the first one before the first plan.
CALIBRATION_STEPS = 4
# Evaluating a batch costs about this share of a training step (a forward pass of three).
EVALUATION_SHARE = 0.4
# Kept back for the report after training, besides its evaluation of the best weights: the figure.
REPORT_SECONDS = 5.0
# Epochs are planned this much longer than timed, so that a little noise does not cut the last one.
PLANNING_MARGIN = 1.05


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much of a run fits its budget.

    Attributes:
        epochs: int. Epochs to train (the last one cut short when not even one fits).
        total_steps: int. Optimizer steps of the whole run.
    """

    epochs: int
    total_steps: int


def plan_run(
    seconds_left: float,
    step_seconds: float,
    steps_per_epoch: int,
    evaluation_seconds: float,
    max_epochs: int,
    epochs_done: int = 0,
    steps_into_epoch: int = 0,
) -> Plan:
    """The epochs and steps that fit in `seconds_left`.

    Args:
        seconds_left: float. Time to the deadline, less what the end of the
            run keeps back. Epochs are planned `PLANNING_MARGIN` times longer
            than `step_seconds` and `evaluation_seconds` make them.
        step_seconds: float. Time of one training step.
        steps_per_epoch: int. Steps in an epoch.
        evaluation_seconds: float. Time of the per-epoch evaluation.
        max_epochs: int. The most epochs in all (`--epochs`).
        epochs_done: int. Epochs finished, evaluation included. Defaults to 0.
        steps_into_epoch: int. Steps already trained in the first epoch, when
            planning during it. Defaults to 0.

    Returns:
        The `Plan`. After an epoch: the finished epochs and the whole epochs
        that fit. During the first: the whole epochs that fit, or if none does,
        one epoch of the steps that fit (at least one more than trained).
    """
    epoch_seconds = (step_seconds * steps_per_epoch + evaluation_seconds) * PLANNING_MARGIN
    if epochs_done:
        more = max(0, min(max_epochs - epochs_done, int(seconds_left // epoch_seconds)))
        return Plan(epochs=epochs_done + more, total_steps=(epochs_done + more) * steps_per_epoch)
    # The first epoch's steps already trained are paid for.
    epochs = int((seconds_left + step_seconds * steps_into_epoch) // epoch_seconds)
    if epochs >= 1:
        epochs = min(epochs, max_epochs)
        return Plan(epochs=epochs, total_steps=epochs * steps_per_epoch)
    steps = steps_into_epoch + int((seconds_left - evaluation_seconds) // step_seconds)
    return Plan(epochs=1, total_steps=max(steps_into_epoch + 1, min(steps_per_epoch, steps)))


class TimeBudget(keras.callbacks.Callback):
    """Plans the run to end by `deadline`, sizes the step schedule to it, and stops training there.

    Put it after the callback that evaluates each epoch (so an epoch's time
    includes its evaluation) and before the one that saves the run's state
    (so the saved state holds the planned epoch count).

    Args:
        deadline: float. `time.monotonic()` by which the run must be done.
        steps_per_epoch: int. Training steps in an epoch.
        evaluation_batches: int. Batches of the per-epoch evaluation.
        max_epochs: int. The most epochs to plan (`--epochs`).
        schedule: WarmupCosine or None. A step schedule to end at the last
            planned step. Defaults to None.
        on_plan: callable or None. Called with the epoch count each time the
            plan is made or cut (to record it in the run's state). Defaults to None.
        clock: callable. Seconds, on the clock of `deadline`. Defaults to
            `time.monotonic`.
    """

    def __init__(
        self,
        deadline: float,
        steps_per_epoch: int,
        evaluation_batches: int,
        max_epochs: int,
        schedule: WarmupCosine | None = None,
        on_plan: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self.deadline = deadline
        self.steps_per_epoch = steps_per_epoch
        self.evaluation_batches = evaluation_batches
        self.max_epochs = max_epochs
        self.schedule = schedule
        self.on_plan = on_plan
        self.clock = clock
        self.plan: Plan | None = None
        self._step_times: list[float] = []
        self._steps_done = 0
        self._epoch_started = 0.0
        self._last_step_end = 0.0
        self._evaluation_seconds = 0.0

    def _seconds_left(self) -> float:
        """Time to the deadline, less the report's (an evaluation and the figure)."""
        return self.deadline - self.clock() - REPORT_SECONDS - self._evaluation_seconds

    def _step_seconds(self) -> float:
        if self._step_times:
            return sum(self._step_times) / len(self._step_times)
        # One step timed, the first: it includes building the step, so it overestimates.
        return self._last_step_end - self._epoch_started

    def _set_plan(self, plan: Plan, evaluation_seconds: float, level: int = logging.INFO) -> None:
        self.plan = plan
        if self.schedule is not None:
            self.schedule.set_total_steps(plan.total_steps)
        if self.on_plan is not None:
            self.on_plan(plan.epochs)
        logger.log(
            level,
            "Time budget: %.2f s a step, %.1f s an evaluation, %.0f s left: %d epoch(s) of %d step(s)%s",
            self._step_seconds(), evaluation_seconds, self._seconds_left(), plan.epochs, self.steps_per_epoch,
            f", the learning rate decaying to 0 at step {plan.total_steps}" if self.schedule is not None else "",
        )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_started = self.clock()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = self.clock()
        if batch > 0 and len(self._step_times) < CALIBRATION_STEPS:
            self._step_times.append(now - self._last_step_end)
        self._last_step_end = now
        self._steps_done += 1
        if self.plan is None and (len(self._step_times) == CALIBRATION_STEPS or batch + 1 == self.steps_per_epoch):
            step_seconds = self._step_seconds()
            self._evaluation_seconds = self.evaluation_batches * step_seconds * EVALUATION_SHARE
            plan = plan_run(self._seconds_left(), step_seconds, self.steps_per_epoch, self._evaluation_seconds,
                            self.max_epochs, steps_into_epoch=batch + 1)
            # Said once the first epoch ends, with its evaluation timed: not inside the progress bar.
            self._set_plan(plan, self._evaluation_seconds, logging.DEBUG)
        if self.plan is not None and self._steps_done >= self.plan.total_steps:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = self.clock()
        # The evaluation just run, timed, replaces the estimate.
        self._evaluation_seconds = now - self._last_step_end
        if epoch == 0:
            plan = self.plan
            if self._steps_done < plan.total_steps:
                plan = plan_run(self._seconds_left(), self._step_seconds(), self.steps_per_epoch,
                                self._evaluation_seconds, self.max_epochs, epochs_done=1)
            self._set_plan(plan, self._evaluation_seconds)
        elif self._steps_done < self.plan.total_steps:
            if self._seconds_left() < now - self._epoch_started:
                logger.info("Time budget: stopping after epoch %d of %d; the next would end past the deadline",
                            epoch + 1, self.plan.epochs)
                self.plan = Plan(epochs=epoch + 1, total_steps=self._steps_done)
                if self.on_plan is not None:
                    self.on_plan(self.plan.epochs)
        if self._steps_done >= self.plan.total_steps:
            self.model.stop_training = True
