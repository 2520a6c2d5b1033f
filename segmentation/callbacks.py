"""What a training run does at the end of every epoch, in order (Listing 12.3.3's `AccuracyCallback`, and more).

`EpochEnd` is the one callback that runs an epoch's end, step by step: the
weights checked for NaN, the BatchNormalization statistics recomputed
(`--precise-bn`), the selection set scored and the best weights saved
(`BestWeights`, the book's `AccuracyCallback`, built from explicit data and
paths and writing everything under the save dir), the epochs without
improvement counted (`--patience`), the time budget re-planned
(`--time-budget`), the learning rate recorded, the logs written for
TensorBoard (`--tensorboard`) and the state saved for `--resume`. The
per-batch work stays in its own callbacks: `NonFiniteLossCallback` stops a
run whose loss stops being finite, and `budget.TimeBudget` times the steps.
"""

import csv
import logging
import math
import os

import keras
import numpy as np

from data_generator import DataGenerator
from segmentation import backend
from segmentation.atomic import write_atomically
from segmentation.averaging import averaged_weights
from segmentation.budget import TimeBudget
from segmentation.checkpoints import TrainingState, epochs_since_best, save_best_model, save_training_state
from segmentation.errors import NonFiniteLossError
from segmentation.evaluation import CollapseMonitor, collapse_hint, evaluate_dataset
from segmentation.paths import MIOU_HISTORY, MPLA_HISTORY, RunFiles
from segmentation.precise_bn import PreciseStatistics

logger = logging.getLogger(__name__)


def check_finite_weights(model: keras.Model, epoch: int) -> None:
    """Raises `NonFiniteLossError` if a weight of `model` is NaN or infinite after 0-based `epoch`.

    A last update can break the weights while the epoch's mean loss is still finite.
    """
    if not all(np.isfinite(value).all() for value in model.get_weights()):
        raise NonFiniteLossError(
            f"the weights became NaN or infinite in epoch {epoch + 1}; lower --learning-rate. "
            "The saved best weights and last state are those of earlier epochs."
        )


class NonFiniteLossCallback(keras.callbacks.Callback):
    """Stops training, raising `NonFiniteLossError`, as soon as a batch's loss is not finite.

    Like `keras.callbacks.TerminateOnNaN`, but it raises instead of letting the
    epoch end, so nothing is saved from the broken model; the weights are
    checked at the epoch's end, first of all (`EpochEnd`).
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"the training loss became {float(loss)} at batch {batch + 1} of epoch "
                f"{self._epoch + 1}; lower --learning-rate or check the data. The saved best "
                "weights and last state are those of earlier epochs."
            )


class BestWeights:
    """Scores the selection set (the test set, or validation images) after an epoch and keeps the best weights by mIoU.

    The book's `AccuracyCallback`. `evaluate` writes `test_miou`,
    `test_pixel_accuracy` and `test_dataset_miou` (`val_...` for a validation
    set) into the epoch logs (so `History` and the state record them), appends
    to the book's `miou_history.npy` and `mpla_history.npy` (pixel accuracy in
    percent, as the book saved it) in `save_dir`, and saves the network's
    weights to `weights_path` when the mIoU improves, with their metrics and
    `settings` in the JSON file beside them (`<name>-best-iou.json`).

    Args:
        network: keras.Model. The network scored and saved (without the training-only head of `--aux-loss`).
        test_generator: DataGenerator. The selection split.
        weights_path: str. Where the best weights go (`.weights.h5`).
        save_dir: str. Folder of the history files.
        best_miou: float. mIoU to beat before saving. Defaults to 0.
        settings: dict or None. Run settings recorded beside the best weights.
            Defaults to None.
        histories: pair of lists of float, or None. Earlier epochs' mIoU and
            mean pixel accuracy in percent, when a run is resumed. Defaults
            to None.
        split: str. `"test"`, the book's selection on the test set, or `"val"`
            when `test_generator` holds validation images; it names the logs
            and the record's metrics. Defaults to "test".
        tta: bool. `--tta`: evaluate with flip-averaged predictions. Defaults
            to False.
    """

    def __init__(
        self,
        network: keras.Model,
        test_generator: DataGenerator,
        weights_path: str,
        save_dir: str,
        best_miou: float = 0.0,
        settings: dict | None = None,
        histories: tuple[list[float], list[float]] | None = None,
        split: str = "test",
        tta: bool = False,
    ):
        self.network = network
        self.test_generator = test_generator
        self.weights_path = weights_path
        self.save_dir = save_dir
        self.best_miou = best_miou
        self.settings = settings or {}
        miou_history, mpla_history = histories or ([], [])
        self.miou_history: list[float] = list(miou_history)
        self.mpla_history: list[float] = list(mpla_history)
        self.split = split
        self.tta = tta
        self.collapse = CollapseMonitor(test_generator.n_classes, hint=collapse_hint(self.settings))

    def evaluate(self, epoch: int, logs: dict) -> float:
        """Scores the network after 0-based `epoch`, logging and recording its scores; saves it if the best.

        Returns:
            The selection set's mIoU.
        """
        scores = evaluate_dataset(self.network, self.test_generator, tta=self.tta)
        miou, pixel_accuracy = scores.mean_iou, scores.mean_pixel_accuracy
        logs[f"{self.split}_miou"] = miou
        logs[f"{self.split}_pixel_accuracy"] = pixel_accuracy
        logs[f"{self.split}_dataset_miou"] = scores.dataset_miou
        self.miou_history.append(miou)
        self.mpla_history.append(100.0 * pixel_accuracy)
        save_histories(self.save_dir, self.miou_history, self.mpla_history)
        for warning in self.collapse.check(scores):
            logger.warning("Epoch %d: %s", epoch + 1, warning)
        if miou > self.best_miou:
            logger.info(
                "Epoch %d: mIoU improved %.4f -> %.4f (pixel accuracy %.2f%%), saving %s",
                epoch + 1, self.best_miou, miou, 100 * pixel_accuracy, self.weights_path,
            )
            self.best_miou = miou
            record = {
                "weights": os.path.basename(self.weights_path),
                "epoch": epoch + 1,
                "selected_on": self.split,
                f"{self.split}_miou": miou,
                f"{self.split}_pixel_accuracy": pixel_accuracy,
                f"{self.split}_dataset_miou": _nan_as_none(scores.dataset_miou),
                "settings": self.settings,
            }
            save_best_model(self.network, self.weights_path, record)
        else:
            logger.info(
                "Epoch %d: mIoU %.4f (best %.4f), pixel accuracy %.2f%%",
                epoch + 1, miou, self.best_miou, 100 * pixel_accuracy,
            )
        return miou


def _nan_as_none(value: float) -> float | None:
    """A float for JSON, None where it is NaN (strict JSON has no NaN)."""
    return None if math.isnan(value) else float(value)


def save_histories(save_dir: str, miou_history: list[float], mpla_history: list[float]) -> None:
    """Writes the book's `miou_history.npy` and `mpla_history.npy` to `save_dir`.

    Args:
        save_dir: str. The folder.
        miou_history: list of float. mIoU per epoch.
        mpla_history: list of float. Mean pixel accuracy per epoch, in percent.
    """
    for name, values in ((MIOU_HISTORY, miou_history), (MPLA_HISTORY, mpla_history)):
        array = np.array(values, dtype=np.float64)
        write_atomically(os.path.join(save_dir, name), lambda temporary, array=array: np.save(temporary, array),
                         suffix=".npy")


def write_history_csv(path: str, history: dict[str, list[float]], epochs_done: int) -> None:
    """Writes the per-epoch history as CSV (`epoch` then the logged values), atomically.

    Rewritten whole from the saved history every epoch, so the file never
    has a gap or a repeated epoch, whatever moment a run was killed at.

    Args:
        path: str. The `history.csv` file.
        history: dict. Per-epoch values by name, `epochs_done` each.
        epochs_done: int. Number of rows.
    """
    names = sorted(history)

    def write(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["epoch", *names])
            for epoch in range(epochs_done):
                writer.writerow([epoch, *(repr(history[name][epoch]) for name in names)])

    write_atomically(path, write)


def save_epoch_state(model: keras.Model, state: TrainingState, files: RunFiles, epoch: int, logs: dict,
                     best_miou: float) -> None:
    """Adds an epoch's logs to the state's history, marks the epoch done, and saves `history.csv` and the state.

    Args:
        model: keras.Model. The fitted model, whose weights and optimizer the state holds.
        state: TrainingState. The run's state, changed in place.
        files: RunFiles. Where the state and `history.csv` go.
        epoch: int. The 0-based epoch just ended.
        logs: dict. Its logs, the selection scores and the learning rate among them.
        best_miou: float. The mIoU of the best weights on disk.
    """
    for key, value in logs.items():
        state.history.setdefault(key, []).append(float(value))
    state.epochs_done = epoch + 1
    state.best_miou = float(best_miou)
    write_history_csv(files.history_csv, state.history, state.epochs_done)
    save_training_state(model, state, files.state)


class Patience:
    """Counts the epochs since the best selection mIoU, and says when they reach `patience` (`--patience`).

    The count is the epochs since the best one in the run's history (`epochs_since_best`), so it
    goes on across a `--resume` and counts epochs run without `--patience` too; it is kept in
    `state.epochs_without_improvement` for the state saved after each epoch.

    Args:
        patience: int. Epochs without improvement that end the run (`--patience`).
        state: TrainingState. The run's state; its history holds the earlier epochs' mIoU.
        split: str. `"test"` or `"val"`: the selection mIoU counted, `<split>_miou`. Defaults to "test".
    """

    def __init__(self, patience: int, state: TrainingState, split: str = "test"):
        self.patience = patience
        self.state = state
        self.split = split

    def count(self, epoch: int, miou: float) -> bool:
        """Counts 0-based `epoch`, whose selection mIoU is `miou`; returns whether training should stop.

        The state's history gets this epoch's mIoU after the count (`save_epoch_state`).
        """
        mious = [*self.state.history.get(f"{self.split}_miou", []), miou]
        self.state.epochs_without_improvement = epochs_since_best(mious)
        if self.state.epochs_without_improvement < self.patience:
            return False
        logger.info("Stopping early after epoch %d: the %s mIoU has not improved on %.4f for %d epoch(s) "
                    "(--patience %d)", epoch + 1, "validation" if self.split == "val" else "test", max(mious),
                    self.state.epochs_without_improvement, self.patience)
        return True


class TensorBoardLogger:
    """Writes every epoch's logs as TensorBoard scalars, `epoch_<name>` under `<log_dir>/train`.

    The tags and folder are those of `keras.callbacks.TensorBoard`, but that
    callback needs the `tensorboard` package, which TensorFlow 2.21 no longer
    installs, and fails at the end of the first epoch without it; this one
    writes the event files with TensorFlow alone, which it imports when
    training begins (`open`), so under JAX or PyTorch too where TensorFlow is
    installed. View them with `pip install tensorboard; tensorboard --logdir DIR`.

    Args:
        log_dir: str. The `--tensorboard` folder.
    """

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self._writer = None
        self._tf = None
        self._scalar_metadata = None

    def open(self) -> None:
        """Creates the event file, as training begins."""
        tf = self._tf = backend.import_tensorflow()
        # What TensorBoard's scalars plugin looks for in a summary.
        self._scalar_metadata = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))

    def write(self, epoch: int, logs: dict) -> None:
        """Writes 0-based `epoch`'s logs, and flushes them to disk."""
        tf = self._tf
        with self._writer.as_default():
            for name, value in logs.items():
                tf.summary.write(f"epoch_{name}", tf.constant(float(value)), step=epoch,
                                 metadata=self._scalar_metadata)
        # Each epoch on disk at once, so a killed run keeps its curves.
        self._writer.flush()

    def close(self) -> None:
        """Closes the event file, as training ends."""
        self._writer.close()


class EpochEnd(keras.callbacks.Callback):
    """Runs the end of every epoch, one step after another.

    1. Checks that the weights are finite (`check_finite_weights`): an epoch that broke them
       raises `NonFiniteLossError` before anything of it is saved.
    2. On the weights that are evaluated and saved (their moving average under `--ema`),
       recomputes the BatchNormalization statistics (`--precise-bn`), then scores the selection
       set and saves the best weights (`BestWeights`).
    3. Counts the epochs without a better mIoU (`--patience`), stopping training after too many.
    4. Re-plans the time budget (`--time-budget`), its epoch timed with the evaluation.
    5. Records the learning rate in the logs (the schedule's callback).
    6. Writes the logs to TensorBoard (`--tensorboard`).
    7. Saves the state for `--resume` and `history.csv`, so an epoch counts as done only once
       its best weights are on disk.

    The schedule's callback is also run as each epoch starts, where an epoch-wise schedule sets
    the rate. Put `EpochEnd` after the progress bar, so an epoch's line ends before its logs.

    Args:
        best_weights: BestWeights. Scores the selection set and keeps the best weights.
        schedule: keras Callback. The learning-rate schedule's (`LearningRateScheduler`, or
            `schedules.LearningRateLogger` for a step schedule): it writes `learning_rate` into
            the logs at an epoch's end.
        state: TrainingState. The run's state; its history and epoch count grow in place.
        files: RunFiles. Where the state and `history.csv` go.
        precise_statistics: PreciseStatistics or None. `--precise-bn`'s recomputation. Defaults to None.
        patience: Patience or None. `--patience`'s count. Defaults to None.
        budget: TimeBudget or None. `--time-budget`'s plan, whose per-batch hooks run as a callback
            of their own. Defaults to None.
        tensorboard: TensorBoardLogger or None. `--tensorboard`'s event files. Defaults to None.
    """

    def __init__(
        self,
        best_weights: BestWeights,
        schedule: keras.callbacks.Callback,
        state: TrainingState,
        files: RunFiles,
        precise_statistics: PreciseStatistics | None = None,
        patience: Patience | None = None,
        budget: TimeBudget | None = None,
        tensorboard: TensorBoardLogger | None = None,
    ):
        super().__init__()
        self.best_weights = best_weights
        self.schedule = schedule
        self.state = state
        self.files = files
        self.precise_statistics = precise_statistics
        self.patience = patience
        self.budget = budget
        self.tensorboard = tensorboard

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self.schedule.set_model(model)

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.tensorboard is not None:
            self.tensorboard.open()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.schedule.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {} if logs is None else logs
        check_finite_weights(self.model, epoch)
        with averaged_weights(self.model.optimizer):
            if self.precise_statistics is not None:
                self.precise_statistics.recompute()
            miou = self.best_weights.evaluate(epoch, logs)
        if self.patience is not None and self.patience.count(epoch, miou):
            self.model.stop_training = True
        if self.budget is not None:
            self.budget.replan()
        self.schedule.on_epoch_end(epoch, logs)
        if self.tensorboard is not None:
            self.tensorboard.write(epoch, logs)
        save_epoch_state(self.model, self.state, self.files, epoch, logs, self.best_weights.best_miou)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
