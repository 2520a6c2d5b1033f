"""Training schedule, per-epoch evaluation and best-weights saving (Listing 12.3.3).

The book's `AccuracyCallback` held a reference to the whole application and
wrote its histories to the current directory; here it is a small callback
built from explicit data and paths, writing everything under the save dir.
"""

import logging
import os
from collections.abc import Callable

import keras
import numpy as np

from data_generator import DataGenerator
from metrics import SegmentationScores

logger = logging.getLogger(__name__)

BASE_LEARNING_RATE = 1e-3
# The chapter's text: after epoch 40 the learning rate halves every 20 epochs.
TEXT_DECAY_START = 40
TEXT_DECAY_EVERY = 20
# The book's published lr_scheduler (model_utils.py): factors after 0-based epochs.
CODE_DECAY_STEPS = ((80, 5e-2), (60, 1e-1), (40, 5e-1))

LR_SCHEDULES = ("text", "code")


def lr_schedule_text(epoch: int, lr: float | None = None) -> float:
    """The chapter's schedule: 1e-3, halved every 20 epochs after epoch 40.

    Epochs are 0-based as Keras counts them; the boundaries match the book's
    code (`epoch > 40`, `> 60`, `> 80`).

    Args:
        epoch: int. 0-based epoch.
        lr: float. The current rate (unused; Keras passes it).

    Returns:
        The learning rate of `epoch`.
    """
    if epoch <= TEXT_DECAY_START:
        return BASE_LEARNING_RATE
    halvings = (epoch - TEXT_DECAY_START - 1) // TEXT_DECAY_EVERY + 1
    return BASE_LEARNING_RATE * 0.5**halvings


def lr_schedule_code(epoch: int, lr: float | None = None) -> float:
    """The book's published `lr_scheduler`: x0.5 after 40, x0.1 after 60, x0.05 after 80.

    Args:
        epoch: int. 0-based epoch.
        lr: float. The current rate (unused; Keras passes it).

    Returns:
        The learning rate of `epoch`.
    """
    for boundary, factor in CODE_DECAY_STEPS:
        if epoch > boundary:
            return BASE_LEARNING_RATE * factor
    return BASE_LEARNING_RATE


def get_lr_schedule(name: str):
    """The schedule function called `name` (`"text"` or `"code"`)."""
    return {"text": lr_schedule_text, "code": lr_schedule_code}[name]


def evaluate_dataset(
    model: keras.Model,
    generator: DataGenerator,
    on_batch: Callable[[list[str], np.ndarray, np.ndarray, np.ndarray], None] | None = None,
) -> SegmentationScores:
    """Scores a model on a data set, one `predict_on_batch` per batch.

    Args:
        model: keras.Model. Maps images to per-pixel class probabilities.
        generator: DataGenerator. The test split, unshuffled, last batch kept.
        on_batch: callable or None. Called with each batch's image names,
            images, true and predicted class maps (e.g. to save figures).
            Defaults to None.

    Returns:
        The filled `SegmentationScores`.
    """
    scores = SegmentationScores(generator.n_classes)
    for index in range(len(generator)):
        images, masks = generator[index]
        keys = generator.batch_keys(index)
        true_labels = np.argmax(masks, axis=-1)
        predicted_labels = np.argmax(model.predict_on_batch(images), axis=-1)
        scores.update(keys, true_labels, predicted_labels)
        if on_batch is not None:
            on_batch(keys, images, true_labels, predicted_labels)
    return scores


def save_weights_atomically(model: keras.Model, path: str) -> None:
    """Saves weights to a temporary file and renames it over `path`.

    A crash while writing leaves the previous file intact.

    Args:
        model: keras.Model. The model to save.
        path: str. Target, ending in `.weights.h5`.
    """
    directory, filename = os.path.split(path)
    partial = os.path.join(directory, f".{filename[: -len('.weights.h5')]}.partial.weights.h5")
    model.save_weights(partial)
    os.replace(partial, path)


class AccuracyCallback(keras.callbacks.Callback):
    """Evaluates the test set every epoch and keeps the best weights by mIoU.

    Writes `test_miou`, `test_pixel_accuracy` and `test_dataset_miou` into the
    epoch logs (so `History` and `CSVLogger` record them), appends to the
    book's `miou_history.npy` and `mpla_history.npy` (pixel accuracy in percent,
    as the book saved it) in `save_dir`, and saves the weights to
    `weights_path` when the mIoU improves.

    Args:
        test_generator: DataGenerator. The test split.
        weights_path: str. Where the best weights go (`.weights.h5`).
        save_dir: str. Folder of the history files.
        best_miou: float. mIoU to beat before saving. Defaults to 0.
    """

    def __init__(self, test_generator: DataGenerator, weights_path: str, save_dir: str, best_miou: float = 0.0):
        super().__init__()
        self.test_generator = test_generator
        self.weights_path = weights_path
        self.save_dir = save_dir
        self.best_miou = best_miou
        self.miou_history: list[float] = []
        self.mpla_history: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        scores = evaluate_dataset(self.model, self.test_generator)
        miou, pixel_accuracy = scores.mean_iou, scores.mean_pixel_accuracy
        if logs is not None:
            logs["test_miou"] = miou
            logs["test_pixel_accuracy"] = pixel_accuracy
            logs["test_dataset_miou"] = scores.dataset_miou
        self.miou_history.append(miou)
        self.mpla_history.append(100.0 * pixel_accuracy)
        np.save(os.path.join(self.save_dir, "miou_history.npy"), np.array(self.miou_history))
        np.save(os.path.join(self.save_dir, "mpla_history.npy"), np.array(self.mpla_history))
        if miou > self.best_miou:
            logger.info(
                "Epoch %d: mIoU improved %.4f -> %.4f (pixel accuracy %.2f%%), saving %s",
                epoch + 1, self.best_miou, miou, 100 * pixel_accuracy, self.weights_path,
            )
            self.best_miou = miou
            save_weights_atomically(self.model, self.weights_path)
        else:
            logger.info(
                "Epoch %d: mIoU %.4f (best %.4f), pixel accuracy %.2f%%",
                epoch + 1, miou, self.best_miou, 100 * pixel_accuracy,
            )
