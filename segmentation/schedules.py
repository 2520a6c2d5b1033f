"""Learning-rate schedules (Listing 12.3.3's `lr_scheduler`, and one made for short runs).

- `text`: the chapter's rule, 1e-3 halved every 20 epochs after epoch 40 (the default);
- `code`: the book's published `lr_scheduler`, x0.5 / x0.1 / x0.05 after epochs 40 / 60 / 80;
- `cosine`: a linear warm-up over the first tenth of the run's steps, then a cosine decay to 0 at
  the run's last step, updated every step (Loshchilov & Hutter, https://arxiv.org/abs/1608.03983;
  the warm-up of Goyal et al., https://arxiv.org/abs/1706.02677). A short run spends its few
  steps near the peak rate and still ends at a small one, which the epoch-wise schedules, made for
  100 epochs, cannot do.

The first two are functions of the epoch for `keras.callbacks.LearningRateScheduler`; `cosine` is a
`keras.optimizers.schedules.LearningRateSchedule` given to the optimizer, whose length is a
variable so that a time-budgeted run can fix it once it has timed its first steps.

Resizing `cosine` (a time budget's new plan, a run resumed with another `--epochs`) changes only
what is left of it, so the rate never rises after the warm-up: from step `s`, where the rate is `r`,
it falls along a half cosine to 0 at the new last step `T`, `r * (1 + cos(pi * (step - s) / (T - s))) / 2`.
A finished schedule (rate 0) stays at 0. During the warm-up the rate goes on rising from `r`, to the
peak at the end of the new length's warm-up; if that end has passed, the warm-up ends at once and the
decay starts from the peak.
"""

import functools
import math
from collections.abc import Callable

import keras
from keras import ops

BASE_LEARNING_RATE = 1e-3
# The chapter's text: after epoch 40 the learning rate halves every 20 epochs.
TEXT_DECAY_START = 40
TEXT_DECAY_EVERY = 20
# The book's published lr_scheduler (model_utils.py): factors after 0-based epochs.
CODE_DECAY_STEPS = ((80, 5e-2), (60, 1e-1), (40, 5e-1))
# Share of the run's steps spent warming up to the peak rate under `cosine`.
WARMUP_FRACTION = 0.1

EPOCH_SCHEDULES = ("text", "code")
STEP_SCHEDULES = ("cosine",)
LR_SCHEDULES = EPOCH_SCHEDULES + STEP_SCHEDULES


def lr_schedule_text(epoch: int, lr: float | None = None, base_rate: float = BASE_LEARNING_RATE) -> float:
    """The chapter's schedule: 1e-3, halved every 20 epochs after epoch 40.

    Epochs are 0-based as Keras counts them; the boundaries match the book's
    code (`epoch > 40`, `> 60`, `> 80`).

    Args:
        epoch: int. 0-based epoch.
        lr: float. The current rate (unused; Keras passes it).
        base_rate: float. The rate before any decay. Defaults to 1e-3.

    Returns:
        The learning rate of `epoch`.
    """
    if epoch <= TEXT_DECAY_START:
        return base_rate
    halvings = (epoch - TEXT_DECAY_START - 1) // TEXT_DECAY_EVERY + 1
    return base_rate * 0.5**halvings


def lr_schedule_code(epoch: int, lr: float | None = None, base_rate: float = BASE_LEARNING_RATE) -> float:
    """The book's published `lr_scheduler`: x0.5 after 40, x0.1 after 60, x0.05 after 80.

    Args:
        epoch: int. 0-based epoch.
        lr: float. The current rate (unused; Keras passes it).
        base_rate: float. The rate before any decay. Defaults to 1e-3.

    Returns:
        The learning rate of `epoch`.
    """
    for boundary, factor in CODE_DECAY_STEPS:
        if epoch > boundary:
            return base_rate * factor
    return base_rate


def get_lr_schedule(name: str, base_rate: float = BASE_LEARNING_RATE) -> Callable[[int, float], float]:
    """The epoch-wise schedule called `name` (`"text"` or `"code"`) starting from `base_rate`."""
    schedule = {"text": lr_schedule_text, "code": lr_schedule_code}[name]
    return functools.partial(schedule, base_rate=base_rate)


def warmup_length(total_steps: float) -> float:
    """Steps of the warm-up of a `cosine` schedule `total_steps` long: a tenth, at least 1."""
    return max(1.0, WARMUP_FRACTION * total_steps)


def warmup_cosine(
    step: float,
    total_steps: float,
    peak_rate: float,
    anchor_step: float = -1.0,
    anchor_rate: float = 0.0,
    warming_up: bool = True,
) -> float:
    """The `cosine` schedule's rate at a 0-based step, in plain Python (the reference formula).

    Args:
        step: float. 0-based optimizer step.
        total_steps: float. Steps in the whole run.
        peak_rate: float. The rate at the end of the warm-up.
        anchor_step: float. Where the last resize pinned the rate: the step it was made at, or the
            step before it if made during the warm-up; -1 if never resized. Defaults to -1.
        anchor_rate: float. The rate at `anchor_step`. Defaults to 0.
        warming_up: bool. Whether the last resize was made during the warm-up (or none was). Defaults to True.

    Returns:
        While warming up (`warming_up` and `step` before the end of the warm-up, a tenth of
        `total_steps`): the line from `anchor_rate` at `anchor_step` to `peak_rate` at the warm-up's
        last step, which is `peak_rate * (step + 1) / warmup` for a schedule never resized. Then a
        half cosine from its start (the warm-up's end at `peak_rate`, or `anchor_step` at `anchor_rate`
        for a schedule resized after its warm-up) to 0 at step `total_steps`, and 0 from there on.
    """
    if step >= total_steps:
        return 0.0
    warmup = warmup_length(total_steps)
    if warming_up:
        if step < warmup:
            return min(peak_rate, anchor_rate + (peak_rate - anchor_rate) * (step - anchor_step)
                       / (warmup - 1.0 - anchor_step))
        start, start_rate = warmup, peak_rate
    else:
        start, start_rate = anchor_step, anchor_rate
    progress = min(1.0, max(0.0, (step - start) / max(1.0, total_steps - start)))
    return start_rate * 0.5 * (1 + math.cos(math.pi * progress))


@keras.saving.register_keras_serializable(package="fcn")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak_rate`, then cosine decay to 0 at step `total_steps` (`--lr-schedule cosine`).

    Its length is variables read by the compiled training step, so `resize` changes it without
    retracing; a resize keeps the rate of the step where it is made (see the module's docstring).
    `get_config` holds what a resumed run needs to go on with the same rates.

    Args:
        peak_rate: float. The rate at the end of the warm-up (`--learning-rate`).
        total_steps: int. Optimizer steps in the whole run. Defaults to 1.
        anchor_step: int. Where the last resize pinned the rate (`warmup_cosine`); -1 if never. Defaults to -1.
        anchor_rate: float. The rate at `anchor_step`. Defaults to 0.
        warming_up: bool. Whether the last resize was made during the warm-up (or none was).
            Defaults to True.

    Example:

    >>> schedule = WarmupCosine(3e-3, total_steps=1000)
    >>> optimizer = keras.optimizers.Adam(learning_rate=schedule)
    >>> schedule.resize(1250, at_step=750)  # from its rate at step 750 down to 0 at step 1250
    """

    def __init__(self, peak_rate: float, total_steps: int = 1, anchor_step: int = -1, anchor_rate: float = 0.0,
                 warming_up: bool = True):
        if not (math.isfinite(peak_rate) and peak_rate > 0):
            raise ValueError(f"peak_rate must be a positive number. Received: peak_rate={peak_rate}")
        self.peak_rate = float(peak_rate)
        # Variables, read inside the compiled step: a time budget resizes the schedule after the first steps.
        self.total_steps = keras.Variable(float(max(1, total_steps)), trainable=False, name="schedule_total_steps")
        self.anchor_step = keras.Variable(float(anchor_step), trainable=False, name="schedule_anchor_step")
        self.anchor_rate = keras.Variable(float(anchor_rate), trainable=False, name="schedule_anchor_rate")
        self.warming_up = keras.Variable(float(warming_up), trainable=False, name="schedule_warming_up")

    def _state(self) -> dict:
        """The variables' values, as `warmup_cosine` takes them."""
        values = {name: float(keras.ops.convert_to_numpy(getattr(self, name)))
                  for name in ("total_steps", "anchor_step", "anchor_rate", "warming_up")}
        values["warming_up"] = values["warming_up"] > 0.5
        return values

    def rate(self, step: float) -> float:
        """The rate at `step`, in plain Python (what the optimizer gets there, float32 aside)."""
        return warmup_cosine(step, peak_rate=self.peak_rate, **self._state())

    def resize(self, total_steps: int, at_step: int) -> None:
        """Makes the schedule end at step `total_steps` (at least 1), changing only its rates from `at_step` on.

        Args:
            total_steps: int. The new last step, where the rate reaches 0.
            at_step: int. The next step to train (the optimizer's `iterations`).
        """
        state = self._state()
        total_steps = max(1, int(total_steps))
        if total_steps == state["total_steps"]:
            return
        rising = state["warming_up"] and at_step < warmup_length(state["total_steps"])
        if rising and at_step < warmup_length(total_steps):
            # The warm-up's line goes on from the last step trained (step -1 at rate 0 before any: the
            # schedule of the new length) to the peak at the new warm-up's end.
            anchor = (at_step - 1, self.rate(at_step - 1), True)
        elif rising:
            # The new length's warm-up is over: it ends here, the decay starting from the peak.
            anchor = (at_step, self.peak_rate, False)
        else:
            anchor = (at_step, self.rate(at_step), False)
        self.total_steps.assign(float(total_steps))
        self.anchor_step.assign(float(anchor[0]))
        self.anchor_rate.assign(float(anchor[1]))
        self.warming_up.assign(float(anchor[2]))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        total = ops.convert_to_tensor(self.total_steps, dtype="float32")
        anchor_step = ops.convert_to_tensor(self.anchor_step, dtype="float32")
        anchor_rate = ops.convert_to_tensor(self.anchor_rate, dtype="float32")
        warming_up = ops.convert_to_tensor(self.warming_up, dtype="float32") > 0.5
        warmup = ops.maximum(1.0, WARMUP_FRACTION * total)
        # A resize during the warm-up leaves the anchor before its last step (`resize`): the divisor is positive.
        warming = ops.minimum(self.peak_rate, anchor_rate + (self.peak_rate - anchor_rate) * (step - anchor_step)
                              / ops.maximum(1e-6, warmup - 1.0 - anchor_step))
        start = ops.where(warming_up, warmup, anchor_step)
        start_rate = ops.where(warming_up, self.peak_rate, anchor_rate)
        progress = ops.clip((step - start) / ops.maximum(1.0, total - start), 0.0, 1.0)
        decaying = start_rate * 0.5 * (1.0 + ops.cos(math.pi * progress))
        rate = ops.where(ops.logical_and(warming_up, step < warmup), warming, decaying)
        return ops.where(step >= total, 0.0, rate)

    def get_config(self) -> dict:
        state = self._state()
        return {"peak_rate": self.peak_rate, "total_steps": int(state["total_steps"]),
                "anchor_step": int(state["anchor_step"]), "anchor_rate": state["anchor_rate"],
                "warming_up": state["warming_up"]}


class LearningRateLogger(keras.callbacks.Callback):
    """Writes the rate where each epoch ended into the epoch logs as `learning_rate`.

    `keras.callbacks.LearningRateScheduler` does this for the epoch-wise
    schedules; a schedule given to the optimizer changes every step, so the
    history records the rate at the step after each epoch's last (0 at the
    end of a `cosine` run).

    Args:
        schedule: LearningRateSchedule. The optimizer's schedule.
    """

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule):
        super().__init__()
        self.schedule = schedule

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            steps_done = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.schedule(steps_done)))
