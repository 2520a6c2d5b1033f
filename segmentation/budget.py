"""Time-budgeted training (`--time-budget MINUTES`): as many steps as fit, the schedule ending on the last.

The run's clock starts when the program starts. Training times its first steps (the very first,
which builds the compiled step, left out), estimates the per-epoch evaluation from them, and plans
the number of optimizer steps that fit before the deadline, each epoch's evaluation counted and the
time of the report written after training kept back. The plan is made in steps, so the last epoch
may be shorter than the others (it ends, as every epoch does, with its evaluation). It is made
again at the first epoch's end, with its evaluation timed, and after that changed only when the
run has truly left it (a noisy pace moves no plan, so a steady run's plan changes at most twice):

- cut, inside an epoch as soon as it happens, when the steps left would end past the deadline even
  at a pace faster than the latest by the noise (`PACE_TOLERANCE`, more if the steps vary more);
- extended when the pace is faster than the one the plan was made at by more than the noise, and a
  whole epoch more fits;
- topped up when the plan's last epoch comes next, to spend the time that the planning margin kept
  free: once, perhaps adding epochs, and if so once more, within the last epoch.

Each time, what is left of a step schedule (`--lr-schedule cosine`) is resized to end on the new last
step: the learning rate goes on from where it is and reaches 0 there, never rising after the warm-up.
"""

import collections
import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable

import keras

from segmentation.schedules import WarmupCosine

logger = logging.getLogger(__name__)

# Steps timed after the first one before the first plan.
CALIBRATION_STEPS = 4
# The latest pace is the median of this many latest steps (no evaluation inside): a few slow steps move no
# plan, and a lasting slowdown shows within ten steps. It is what a cut is judged by.
PACE_WINDOW = 16
# Plans are made, and extended, at the slower of the latest pace and the median of this many latest steps:
# a speed-up counts once it has lasted half as long, and a few fast steps extend nothing.
STEADY_PACE_WINDOW = 64
# A change of pace smaller than this share is taken for noise. A plan is cut only when its steps would overrun
# even this much faster than the latest pace, and extended only when the pace is this much faster than the
# one it was made at. With the planning margin, a latest pace up to 15 % slower than the plan's cuts nothing,
# and an overrun too small to cut today is cut later, as the steps left (and so the tolerance) shrink.
PACE_TOLERANCE = 0.10
# ... or this many standard errors of the latest pace, if that is more: steps that vary more move it more.
NOISE_STANDARD_ERRORS = 3.0
# Evaluating a batch costs about this share of a training step (a forward pass of three).
EVALUATION_SHARE = 0.4
# Kept back for the report after training, besides its evaluation of the best weights: the figure.
REPORT_SECONDS = 5.0
# Steps are planned this much longer than timed, so that a little noise does not overrun the deadline.
PLANNING_MARGIN = 1.05


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much of a run fits its budget.

    Attributes:
        total_steps: int. Optimizer steps of the whole run.
        steps_per_epoch: int. Steps of a whole epoch; the last epoch may hold fewer.
    """

    total_steps: int
    steps_per_epoch: int

    @property
    def epochs(self) -> int:
        """Epochs the run trains, the last one cut short if the steps end inside it."""
        return max(1, math.ceil(self.total_steps / self.steps_per_epoch))


def seconds_to_train(steps: int, step_seconds: float, evaluation_seconds: float, steps_per_epoch: int,
                     steps_done: int) -> float:
    """The time `steps` more steps take from `steps_done`, with the evaluation that ends each epoch they touch."""
    into_epoch = steps_done % steps_per_epoch
    return steps * step_seconds + math.ceil((into_epoch + steps) / steps_per_epoch) * evaluation_seconds


def plan_steps(
    seconds_left: float,
    step_seconds: float,
    evaluation_seconds: float,
    steps_per_epoch: int,
    steps_done: int,
    max_steps: int,
) -> int:
    """The optimizer steps of the whole run that fit in `seconds_left`.

    Every epoch, the last included however short, ends with an evaluation. Time is planned
    `PLANNING_MARGIN` times longer than `step_seconds` and `evaluation_seconds` make it.

    Args:
        seconds_left: float. Time to the deadline, less what the end of the run keeps back.
        step_seconds: float. Time of one training step.
        evaluation_seconds: float. Time of the per-epoch evaluation.
        steps_per_epoch: int. Steps in a whole epoch.
        steps_done: int. Steps trained so far; a multiple of `steps_per_epoch` means at an
            epoch's end, its evaluation done.
        max_steps: int. The most steps in all (`--epochs` whole epochs).

    Returns:
        `steps_done` plus the most steps whose training and evaluations fit (none, if none does:
        an unfinished epoch then ends at once, with its evaluation).

    Example:

    >>> # 10 steps an epoch of 1 s, a 5 s evaluation: 95 s hold 6 epochs and 3 steps of a 7th.
    >>> plan_steps(95 * PLANNING_MARGIN, 1.0, 5.0, 10, steps_done=0, max_steps=1000)
    63
    """
    # The time grows with the steps: the most that fit, by bisection.
    fewest, most = 0, max(0, max_steps - steps_done)
    while fewest < most:
        middle = (fewest + most + 1) // 2
        seconds = seconds_to_train(middle, step_seconds, evaluation_seconds, steps_per_epoch, steps_done)
        if PLANNING_MARGIN * seconds <= seconds_left:
            fewest = middle
        else:
            most = middle - 1
    return steps_done + fewest


class TimeBudget(keras.callbacks.Callback):
    """Plans the run's steps to end by `deadline`, sizes the step schedule to them, and stops training there.

    As a callback it times the steps, and cuts the plan inside an epoch that
    overruns it. `replan` is called at each epoch's end (`callbacks.EpochEnd`),
    after the evaluation, which it times with the epoch, and before the run's
    state is saved, which then holds the plan.

    Args:
        deadline: float. `clock()` by which the run must be done.
        steps_per_epoch: int. Training steps in an epoch.
        evaluation_batches: int. Batches of the per-epoch evaluation.
        max_epochs: int. The most epochs to plan (`--epochs`).
        schedule: WarmupCosine or None. A step schedule to end at the last
            planned step. Defaults to None.
        on_plan: callable or None. Called with the `Plan` each time it is made or
            changed (to record it in the run's state). Defaults to None.
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
        on_plan: Callable[[Plan], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self.deadline = deadline
        self.steps_per_epoch = steps_per_epoch
        self.evaluation_batches = evaluation_batches
        self.max_steps = max_epochs * steps_per_epoch
        self.schedule = schedule
        self.on_plan = on_plan
        self.clock = clock
        self.plan: Plan | None = None
        self._step_times: collections.deque[float] = collections.deque(maxlen=STEADY_PACE_WINDOW)
        self._steps_done = 0
        self._epoch_started = 0.0
        self._last_step_end = 0.0
        self._evaluation_seconds = 0.0
        self._boundary_seconds = 0.0
        self._evaluation_timed = False
        # The pace the plan was made at, and whether its last change was a top-up.
        self._plan_pace = 0.0
        self._topped_up = False

    def _seconds_left(self) -> float:
        """Time to the deadline, less the report's (an evaluation and the figure)."""
        return self.deadline - self.clock() - REPORT_SECONDS - self._evaluation_seconds

    def _latest_pace(self) -> float:
        """Time of a step: the median of the latest `PACE_WINDOW` steps."""
        return statistics.median(list(self._step_times)[-PACE_WINDOW:])

    def _steady_pace(self) -> float:
        """Time of a step to plan with: the slower of the latest pace and the median of `STEADY_PACE_WINDOW`."""
        return max(self._latest_pace(), statistics.median(self._step_times))

    def _pace_tolerance(self) -> float:
        """The share by which the pace may move as noise: `PACE_TOLERANCE`, or more if the steps vary more.

        `NOISE_STANDARD_ERRORS` standard errors of the latest pace (a median of `PACE_WINDOW` steps). The
        steps' spread is taken from their interquartile range, which a few very slow steps do not widen.
        """
        if len(self._step_times) < 4:
            return PACE_TOLERANCE
        first, _, third = statistics.quantiles(self._step_times, n=4)
        # A normal spread with that interquartile range; a median's standard error is sqrt(pi / 2) a mean's.
        deviation = (third - first) / 1.349
        standard_error = math.sqrt(math.pi / 2) * deviation / math.sqrt(PACE_WINDOW)
        return max(PACE_TOLERANCE, NOISE_STANDARD_ERRORS * standard_error / statistics.median(self._step_times))

    def _fitting_steps(self, step_seconds: float) -> int:
        """The run's steps that fit at `step_seconds` a step, with the planning margin."""
        return plan_steps(self._seconds_left(), step_seconds, self._evaluation_seconds,
                          self.steps_per_epoch, self._steps_done, self.max_steps)

    def _set_plan(self, total_steps: int, step_seconds: float, level: int, top_up: bool = False) -> None:
        """Makes `total_steps` the plan, made at `step_seconds` a step; says so at logging `level`."""
        earlier = self.plan
        self.plan = Plan(total_steps, self.steps_per_epoch)
        self._plan_pace = step_seconds
        self._topped_up = top_up
        if self.schedule is not None:
            # Only what is left: the rate goes on from where it is, down to 0 at the new last step.
            self.schedule.resize(total_steps, at_step=self._steps_done)
        if self.on_plan is not None:
            self.on_plan(self.plan)
        changed = "" if earlier is None else f" (was {earlier.total_steps})"
        logger.log(
            level,
            "Time budget: %.3f s a step, %.1f s an evaluation, %.0f s left: %d step(s) in all%s, %d epoch(s) of "
            "%d%s", step_seconds, self._evaluation_seconds, self._seconds_left(), total_steps, changed,
            self.plan.epochs, self.steps_per_epoch,
            f", the learning rate decaying to 0 at step {total_steps}" if self.schedule is not None else "",
        )

    def _plan_afresh(self, level: int) -> None:
        """Plans the steps that fit at the steady pace, whatever the plan was."""
        pace = self._steady_pace()
        self._set_plan(self._fitting_steps(pace), pace, level)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._steps_done = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = self.clock()
        # The run's first step builds the compiled step, and an epoch's first follows an evaluation.
        if batch > 0:
            self._step_times.append(now - self._last_step_end)
        elif self._evaluation_timed:
            # Between epochs: the evaluation, and what follows it (the state saved, the next epoch started).
            self._boundary_seconds = max(0.0, now - self._last_step_end - self._latest_pace())
            self._evaluation_seconds = max(self._evaluation_seconds, self._boundary_seconds)
        self._last_step_end = now
        self._steps_done += 1
        if self.plan is None:
            if len(self._step_times) < CALIBRATION_STEPS and batch + 1 < self.steps_per_epoch:
                return
            if not self._step_times:
                # A one-step epoch: the only time there is, which overestimates.
                self._step_times.append(now - self._epoch_started)
            self._evaluation_seconds = self.evaluation_batches * self._steady_pace() * EVALUATION_SHARE
            # Said again at the first epoch's end, with its evaluation timed: not inside the progress bar.
            self._plan_afresh(logging.DEBUG)
        elif self._overruns():
            # Slower than planned: cut now, not at the epoch's end, so the deadline holds.
            self._cut()
        if self._steps_done >= self.plan.total_steps:
            self.model.stop_training = True

    def _overruns(self) -> bool:
        """Whether the steps left of the plan truly end past the deadline.

        The next step is counted at the latest pace and the others at a pace faster by the noise: while many
        steps are left, a pace a little slower than planned is noise; a real overrun is cut once it outgrows
        the noise of the steps left, at the latest before the last step.
        """
        steps_left = self.plan.total_steps - self._steps_done
        pace = self._latest_pace()
        seconds = seconds_to_train(steps_left, pace, self._evaluation_seconds, self.steps_per_epoch,
                                   self._steps_done)
        return seconds - self._pace_tolerance() * pace * max(0, steps_left - 1) > self._seconds_left()

    def _cut(self) -> None:
        """Cuts the plan to the steps that fit at the pace of the latest steps.

        That pace is the slower of the latest pace and the median of the latest half of its window: half
        way into a slowdown, the window's median is the mean of the old and the new pace, and a cut made at
        it would be followed by another.
        """
        pace = max(self._latest_pace(), statistics.median(list(self._step_times)[-(PACE_WINDOW // 2):]))
        self._set_plan(min(self.plan.total_steps, self._fitting_steps(pace)), pace, logging.DEBUG)

    def _sped_up(self) -> bool:
        """Whether the steady pace is faster than the plan's by more than the noise, and a whole epoch more fits."""
        pace = self._steady_pace()
        return (pace <= (1.0 - self._pace_tolerance()) * self._plan_pace
                and self._fitting_steps(pace) >= self.plan.total_steps + self.steps_per_epoch)

    def _top_up(self) -> None:
        """Spends the time the planning margin kept free, once the plan's last epoch comes next.

        The first top-up may add epochs; one right after it stays within the next epoch, which ends the run,
        so a steady run's end changes its plan at most twice.
        """
        pace = self._steady_pace()
        fitting = self._fitting_steps(pace)
        if self._topped_up:
            fitting = min(fitting, self._steps_done + self.steps_per_epoch)
        if fitting > self.plan.total_steps:
            self._set_plan(fitting, pace, logging.DEBUG, top_up=True)

    def _revise_plan(self) -> None:
        """At an epoch's end: cuts, extends or tops up the plan if the run has left it, else keeps it."""
        if self._overruns():
            self._cut()
        elif self._sped_up():
            self._plan_afresh(logging.DEBUG)
        elif self.plan.total_steps - self._steps_done <= self.steps_per_epoch:
            self._top_up()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_started = self.clock()

    def replan(self) -> None:
        """At an epoch's end, its evaluation done: plans with the evaluation timed, and stops at the plan's last step.

        The plan made at the first epoch's end replaces the estimate of the first steps; later ones
        change only if the run has left the plan (`_revise_plan`).
        """
        # The evaluation just run, timed, replaces the estimate; the time the last epoch boundary took in
        # all, if longer, stands for the rest of this one.
        self._evaluation_seconds = max(self.clock() - self._last_step_end, self._boundary_seconds)
        if not self._evaluation_timed:
            self._evaluation_timed = True
            self._plan_afresh(logging.INFO)
        elif self._steps_done < self.plan.total_steps:
            epochs = self.plan.epochs
            self._revise_plan()
            if self.plan.epochs != epochs:
                logger.info("Time budget: %d epoch(s) planned (was %d), ending at step %d",
                            self.plan.epochs, epochs, self.plan.total_steps)
        if self._steps_done >= self.plan.total_steps:
            self.model.stop_training = True


class StepLimit(keras.callbacks.Callback):
    """Stops training at optimizer step `total_steps`, inside an epoch if it ends there.

    A resumed `--time-budget` run trains to the step its budget planned, with no clock of its own.
    """

    def __init__(self, total_steps: int):
        super().__init__()
        self.total_steps = total_steps

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) >= self.total_steps:
            self.model.stop_training = True
