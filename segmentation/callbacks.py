"""Training schedule, per-epoch evaluation and best-weights saving (Listing 12.3.3).

The book's `AccuracyCallback` held a reference to the whole application and
wrote its histories to the current directory; here it is a small callback
built from explicit data and paths, writing everything under the save dir.
`NonFiniteLossCallback` stops a run whose loss or weights stop being finite
before anything is saved from that state. `TensorBoardLogger` writes every
epoch's logs for TensorBoard (`--tensorboard`). `PatienceCallback` stops a run
whose selection mIoU has stopped improving (`--patience`).
"""

import csv
import logging
import math
import os
from collections.abc import Callable

import keras
import numpy as np

from data_generator import DataGenerator
from segmentation import backend
from segmentation.atomic import write_atomically
from segmentation.averaging import averaged_weights
from segmentation.checkpoints import TrainingState, epochs_since_best, save_best_model, save_training_state
from segmentation.errors import NonFiniteLossError
from segmentation.evaluation import CollapseMonitor, collapse_hint, evaluate_dataset
from segmentation.paths import MIOU_HISTORY, MPLA_HISTORY

logger = logging.getLogger(__name__)


class AccuracyCallback(keras.callbacks.Callback):
    """Evaluates the test set (or the validation set) every epoch and keeps the best weights by mIoU.

    Writes `test_miou`, `test_pixel_accuracy` and `test_dataset_miou` (`val_...`
    for a validation set) into the epoch logs (so `History` and `CSVLogger`
    record them), appends to the
    book's `miou_history.npy` and `mpla_history.npy` (pixel accuracy in percent,
    as the book saved it) in `save_dir`, and saves the weights to
    `weights_path` when the mIoU improves, with their metrics and `settings` in
    the JSON file beside them (`<name>-best-iou.json`).

    Args:
        test_generator: DataGenerator. The test split.
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
        network: keras.Model or None. The network evaluated and saved, when
            training fits another model sharing its layers (`--aux-loss`).
            Defaults to None, the fitted model.
        tta: bool. `--tta`: evaluate with flip-averaged predictions. Defaults
            to False.
        before_evaluation: callable or None. Called with the network just
            before each evaluation, on the weights evaluated and saved
            (`--precise-bn`'s `precise_bn.PreciseStatistics`). Defaults to None.

    When the optimizer keeps a moving average of the weights (`--ema`), the
    average is what is evaluated and saved (and what `before_evaluation`
    sees); training goes on from the raw weights.
    """

    def __init__(
        self,
        test_generator: DataGenerator,
        weights_path: str,
        save_dir: str,
        best_miou: float = 0.0,
        settings: dict | None = None,
        histories: tuple[list[float], list[float]] | None = None,
        split: str = "test",
        network: keras.Model | None = None,
        tta: bool = False,
        before_evaluation: Callable[[keras.Model], None] | None = None,
    ):
        super().__init__()
        self.split = split
        self.network = network
        self.tta = tta
        self.before_evaluation = before_evaluation
        self.test_generator = test_generator
        self.weights_path = weights_path
        self.save_dir = save_dir
        self.best_miou = best_miou
        self.settings = settings or {}
        miou_history, mpla_history = histories or ([], [])
        self.miou_history: list[float] = list(miou_history)
        self.mpla_history: list[float] = list(mpla_history)
        self.collapse = CollapseMonitor(test_generator.n_classes, hint=collapse_hint(self.settings))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with averaged_weights(getattr(self.model, "optimizer", None)):
            self._evaluate_and_save(epoch, logs)

    def _evaluate_and_save(self, epoch: int, logs: dict | None) -> None:
        network = self.network or self.model
        if self.before_evaluation is not None:
            self.before_evaluation(network)
        scores = evaluate_dataset(network, self.test_generator, tta=self.tta)
        miou, pixel_accuracy = scores.mean_iou, scores.mean_pixel_accuracy
        if logs is not None:
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
            save_best_model(network, self.weights_path, record)
        else:
            logger.info(
                "Epoch %d: mIoU %.4f (best %.4f), pixel accuracy %.2f%%",
                epoch + 1, miou, self.best_miou, 100 * pixel_accuracy,
            )


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


class TrainingStateCallback(keras.callbacks.Callback):
    """Saves the full training state and `history.csv` at the end of every epoch (for `--resume`).

    Put it last in the callback list, so that the epoch's logs hold the test
    metrics and the epoch's best weights are on disk before the state says
    the epoch is done.

    Args:
        state_path: str. The last-state file.
        csv_path: str. The `history.csv` file.
        state: TrainingState. The state at the start of the run (after a
            resume, the saved one); its history and epoch count grow in place.
        best_miou: callable. Returns the current best mIoU (the AccuracyCallback's).
    """

    def __init__(self, state_path: str, csv_path: str, state: TrainingState, best_miou: Callable[[], float]):
        super().__init__()
        self.state_path = state_path
        self.csv_path = csv_path
        self.state = state
        self.best_miou = best_miou

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key, value in (logs or {}).items():
            self.state.history.setdefault(key, []).append(float(value))
        self.state.epochs_done = epoch + 1
        self.state.best_miou = float(self.best_miou())
        write_history_csv(self.csv_path, self.state.history, self.state.epochs_done)
        save_training_state(self.model, self.state, self.state_path)


class PatienceCallback(keras.callbacks.Callback):
    """Stops training when the selection mIoU has not beaten the run's best for `patience` epochs in a row.

    The count is the epochs since the best one in the run's history (`epochs_since_best`), so it
    goes on across a `--resume` and counts epochs run without `--patience` too; it is kept in
    `state.epochs_without_improvement` for the state saved after each epoch. Put it after the
    evaluation that logs the mIoU and before the callback that saves the state.

    Args:
        patience: int. Epochs without improvement that end the run (`--patience`).
        state: TrainingState. The run's state; its history holds the earlier epochs' mIoU.
        split: str. `"test"` or `"val"`: the logged `<split>_miou` to watch. Defaults to "test".
    """

    def __init__(self, patience: int, state: TrainingState, split: str = "test"):
        super().__init__()
        self.patience = patience
        self.state = state
        self.key = f"{split}_miou"

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        miou = (logs or {}).get(self.key)
        if miou is None:
            return
        # The state's history gets this epoch's value after this callback (TrainingStateCallback).
        mious = [*self.state.history.get(self.key, []), miou]
        self.best = max(mious)
        self.state.epochs_without_improvement = epochs_since_best(mious)
        if self.state.epochs_without_improvement >= self.patience:
            logger.info("Stopping early after epoch %d: the %s mIoU has not improved on %.4f for %d epoch(s) "
                        "(--patience %d)", epoch + 1, "validation" if self.key == "val_miou" else "test",
                        self.best, self.state.epochs_without_improvement, self.patience)
            self.model.stop_training = True


class NonFiniteLossCallback(keras.callbacks.Callback):
    """Stops training, raising `NonFiniteLossError`, when the loss or the weights stop being finite.

    Like `keras.callbacks.TerminateOnNaN`, but it raises instead of letting the
    epoch end, so no later callback can save weights or state from the broken
    model. Put it before the callbacks that save.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"the training loss became {float(loss)} at batch {batch + 1} of epoch "
                f"{self._epoch + 1}; lower --learning-rate or check the data. The saved best "
                "weights and last state are those of earlier epochs."
            )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # A last update can break the weights while the epoch's mean loss is still finite.
        if not all(np.isfinite(value).all() for value in self.model.get_weights()):
            raise NonFiniteLossError(
                f"the weights became NaN or infinite in epoch {epoch + 1}; lower --learning-rate. "
                "The saved best weights and last state are those of earlier epochs."
            )


class TensorBoardLogger(keras.callbacks.Callback):
    """Writes every epoch's logs as TensorBoard scalars, `epoch_<name>` under `<log_dir>/train`.

    The tags and folder are those of `keras.callbacks.TensorBoard`, but that
    callback needs the `tensorboard` package, which TensorFlow 2.21 no longer
    installs, and fails at the end of the first epoch without it; this one
    writes the event files with TensorFlow alone, which it imports when
    training begins, so under JAX or PyTorch too where TensorFlow is
    installed. Put it after the callbacks that add to the logs (the test
    metrics, the learning rate).
    View them with `pip install tensorboard; tensorboard --logdir DIR`.

    Args:
        log_dir: str. The `--tensorboard` folder.
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None
        self._tf = None
        self._scalar_metadata = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        tf = self._tf = backend.import_tensorflow()
        # What TensorBoard's scalars plugin looks for in a summary.
        self._scalar_metadata = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        tf = self._tf
        with self._writer.as_default():
            for name, value in (logs or {}).items():
                tf.summary.write(f"epoch_{name}", tf.constant(float(value)), step=epoch,
                                 metadata=self._scalar_metadata)
        # Each epoch on disk at once, so a killed run keeps its curves.
        self._writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._writer.close()
