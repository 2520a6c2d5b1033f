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


def warmup_cosine(step: float, total_steps: float, peak_rate: float) -> float:
    """The `cosine` schedule's rate at a 0-based step, in plain Python (the reference formula).

    Args:
        step: float. 0-based optimizer step.
        total_steps: float. Steps in the whole run.
        peak_rate: float. The rate at the end of the warm-up.

    Returns:
        `peak_rate * (step + 1) / warmup` during the warm-up, then
        `peak_rate * (1 + cos(pi * progress)) / 2` with `progress` going from 0
        at the end of the warm-up to 1 at step `total_steps`, where the rate
        reaches 0 (and stays).
    """
    warmup = max(1.0, WARMUP_FRACTION * total_steps)
    if step < warmup:
        return peak_rate * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1.0, total_steps - warmup))
    return peak_rate * 0.5 * (1 + math.cos(math.pi * progress))


@keras.saving.register_keras_serializable(package="fcn")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak_rate`, then cosine decay to 0 at step `total_steps` (`--lr-schedule cosine`).

    Args:
        peak_rate: float. The rate at the end of the warm-up (`--learning-rate`).
        total_steps: int. Optimizer steps in the whole run. Defaults to 1;
            `set_total_steps` changes it later without retracing the training step.

    Example:

    >>> schedule = WarmupCosine(3e-3, total_steps=1000)
    >>> optimizer = keras.optimizers.Adam(learning_rate=schedule)
    """

    def __init__(self, peak_rate: float, total_steps: int = 1):
        if not (math.isfinite(peak_rate) and peak_rate > 0):
            raise ValueError(f"peak_rate must be a positive number. Received: peak_rate={peak_rate}")
        self.peak_rate = float(peak_rate)
        # A variable, read inside the compiled step: a time budget fixes it after the first steps.
        self.total_steps = keras.Variable(float(max(1, total_steps)), trainable=False, name="schedule_total_steps")

    def set_total_steps(self, total_steps: int) -> None:
        """Makes the decay end at step `total_steps` (at least 1)."""
        self.total_steps.assign(float(max(1, total_steps)))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        total = ops.convert_to_tensor(self.total_steps, dtype="float32")
        warmup = ops.maximum(1.0, WARMUP_FRACTION * total)
        warming = self.peak_rate * (step + 1.0) / warmup
        progress = ops.minimum(1.0, (step - warmup) / ops.maximum(1.0, total - warmup))
        decaying = self.peak_rate * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < warmup, warming, decaying)

    def get_config(self) -> dict:
        return {"peak_rate": self.peak_rate, "total_steps": int(keras.ops.convert_to_numpy(self.total_steps))}


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
