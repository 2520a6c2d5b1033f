"""Scoring a network on a data set in batches, and the evaluation the command line prints (Listing 12.3.3).

The book called `predict` once per test image; here the test set is scored a
batch at a time, with the book's per-image mIoU and pixel accuracy and the
data-set-level, per-class IoU of one confusion matrix beside them. A network
that has collapsed to a few classes, which pixel accuracy hides, gets a
warning naming what to try. With `--fit-size crop` each test image is
predicted whole, in tiles of the network's input (`fit_to_size.predict_tiled`). With `--tta` every
prediction is the mean of the image's and its mirror image's (`tta.flip_averaged`).
"""

import logging
import os
from collections.abc import Callable

import keras
import numpy as np

from data_generator import DataGenerator
from segmentation.classes import class_names
from segmentation.config import BOOK, RunConfig
from segmentation.distribution import replicas_in_scope
from segmentation.figures import save_input_and_mask, save_triptych
from segmentation.ground_truth.fit_to_size import predict_tiled, resize_image
from segmentation.ground_truth.label_set import LabelSet
from segmentation.images import decode_image, image_to_float, read_image
from segmentation.metrics import SegmentationScores
from segmentation.paths import PREDICTION_DIR
from segmentation.tta import flip_averaged

logger = logging.getLogger(__name__)


def evaluation_data(labels: LabelSet, config: RunConfig) -> DataGenerator:
    """The batches of a split for scoring: in order, the last partial batch kept."""
    return DataGenerator(labels, config.data_path, batch_size=config.batch_size, shuffle=False, drop_last=False,
                         size=(config.height, config.width), fit_size=config.fit_size)


def predict_batch(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The model's output for one batch, computed by this process alone.

    Within the scope of a `tf.distribute` strategy with several replicas,
    `predict_on_batch` runs the whole batch on every replica and concatenates
    the copies (across workers a collective op); a plain call reads the
    mirrored weights once and waits for no other worker.

    Args:
        model: keras.Model. Maps images to per-pixel class probabilities.
        images: np.ndarray. A batch of images.

    Returns:
        The probabilities, one row per image.
    """
    if replicas_in_scope() == 1:
        return model.predict_on_batch(images)
    return keras.ops.convert_to_numpy(model(images, training=False))



def evaluate_dataset(
    model: keras.Model,
    generator: DataGenerator,
    on_batch: Callable[[list[str], np.ndarray, np.ndarray, np.ndarray], None] | None = None,
    tta: bool = False,
) -> SegmentationScores:
    """Scores a model on a data set, one `predict_on_batch` per batch.

    Args:
        model: keras.Model. Maps images to per-pixel class probabilities.
        generator: DataGenerator. The test split, unshuffled, last batch kept.
        on_batch: callable or None. Called with each batch's image names,
            images, true and predicted class maps (e.g. to save figures).
            Defaults to None.
        tta: bool. `--tta`: average each prediction with its mirror image's.
            Defaults to False.

    Returns:
        The filled `SegmentationScores`.
    """
    scores = SegmentationScores(generator.n_classes, generator.class_names)
    for index in range(len(generator)):
        # Class-index maps straight from the generator: no one-hot round trip.
        images, true_labels = generator.batch_class_maps(index)
        keys = generator.batch_keys(index)
        predicted_labels = predict_class_maps(model, images, generator.tile, generator.batch_size, tta)
        if generator.tile is None:
            scores.update(keys, true_labels, predicted_labels)
        else:
            # Whole images of their own sizes: one at a time.
            for key, truth, predicted in zip(keys, true_labels, predicted_labels):
                scores.update([key], truth[np.newaxis], predicted[np.newaxis])
        if on_batch is not None:
            on_batch(keys, images, true_labels, predicted_labels)
    return scores


def predict_class_maps(model: keras.Model, images: np.ndarray | list[np.ndarray], tile: tuple[int, int] | None,
                       batch_size: int, tta: bool = False) -> np.ndarray | list[np.ndarray]:
    """The predicted class of every pixel of a batch of images.

    Args:
        model: keras.Model. Maps images to per-pixel class probabilities.
        images: float32 array `(N, H, W, 3)` of the network's input size, or with `tile`
            a list of images of any size.
        tile: (int, int) or None. `(height, width)` of the tiles each image is predicted
            in (`--fit-size crop`); None predicts the batch as it is.
        batch_size: int. Tiles per call of the network.
        tta: bool. `--tta`: each batch (of images, or of tiles) averaged with its mirror
            image's prediction (`tta.flip_averaged`). Defaults to False.

    Returns:
        int array `(N, H, W)`, or with `tile` a list of `(H, W)` maps.
    """

    def predict(batch: np.ndarray) -> np.ndarray:
        return predict_batch(model, batch)

    if tta:
        predict = flip_averaged(predict)
    if tile is None:
        return np.argmax(predict(np.asarray(images)), axis=-1)
    return [np.argmax(predict_tiled(predict, image, *tile, batch_size), axis=-1) for image in images]


def report_scores(scores: SegmentationScores) -> None:
    """Logs a line per test image, the book's totals and the per-class table."""
    for image in scores.images:
        logger.info(
            "%s: %d classes, mIoU=%.4f, pixel accuracy=%.2f%%",
            image.name, image.num_classes_present, image.miou, 100 * image.pixel_accuracy,
        )
    logger.info(
        "Test images: %d  mIoU (book, mean of per-image mIoU): %.4f  mean pixel accuracy: %.2f%%",
        len(scores.images), scores.mean_iou, 100 * scores.mean_pixel_accuracy,
    )
    truth_pixels = scores.confusion.sum(axis=1)
    predicted_pixels = scores.confusion.sum(axis=0)
    # The class column is as wide as the longest name (14 characters at least, the drinks table's).
    width = max(14, *(len(name) for name in scores.class_names))
    logger.info("%-*s %8s %14s %14s", width, "class", "IoU", "true pixels", "predicted")
    for name, iou, truth, predicted in zip(scores.class_names, scores.class_iou, truth_pixels, predicted_pixels):
        iou_text = "   n/a" if np.isnan(iou) else f"{iou:.4f}"
        logger.info("%-*s %8s %14d %14d", width, name, iou_text, truth, predicted)
    logger.info("Data-set-level mIoU (one confusion matrix over all test pixels): %.4f", scores.dataset_miou)



def evaluate_test_set(model: keras.Model, test_data: DataGenerator, plot: bool,
                      training_settings: dict | None = None, tta: bool = False) -> SegmentationScores:
    """Scores the test set in batches, optionally saving the book's figures.

    `training_settings`, those recorded with the restored weights when known,
    let a collapse warning name only the flags their run lacked; `tta` is `--tta`.
    """

    names = class_names(test_data.n_classes, test_data.class_names)

    def save_figures(keys, images, truths, predictions):
        for key, image, truth, predicted in zip(keys, images, truths, predictions):
            stem = os.path.splitext(os.path.basename(key))[0]
            save_input_and_mask(image, predicted, PREDICTION_DIR, stem)
            save_triptych(image, truth, predicted, os.path.join(PREDICTION_DIR, f"{stem}-triptych.png"), key,
                          class_names=names)

    scores = evaluate_dataset(model, test_data, on_batch=save_figures if plot else None, tta=tta)
    report_scores(scores)
    for warning in CollapseMonitor(scores.n_classes, patience=1, hint=collapse_hint(training_settings)).check(scores):
        logger.warning(warning)
    if plot:
        logger.info("Saved input, mask and triptych of each test image to %s/", PREDICTION_DIR)
    return scores



def segment_image_file(model: keras.Model, image_file: str, height: int, width: int, fit_size: str = "refuse",
                       names: list[str] | None = None, tta: bool = False) -> None:
    """Segments one image and saves the book's `-input.png` / `-mask.png` pair.

    `fit_size` is `--fit-size`: "resize" scales the image to the network's input first, "crop"
    segments it whole in tiles; `names` are the class names when known; `tta` is `--tta`.
    """
    if fit_size == "refuse":
        image = read_image(image_file, height, width)
    elif fit_size == "resize":
        image = resize_image(decode_image(image_file), height, width)
    else:
        image = image_to_float(decode_image(image_file))
    tile = (height, width) if fit_size == "crop" else None
    predicted = predict_class_maps(model, [image] if tile else image[np.newaxis], tile, batch_size=4, tta=tta)[0]
    stem = os.path.splitext(os.path.basename(image_file))[0]
    input_path, mask_path = save_input_and_mask(image, predicted, PREDICTION_DIR, stem)
    present = ", ".join(class_names(model.output_shape[-1], names)[k] for k in np.unique(predicted))
    logger.info("Segmented %s (classes found: %s): %s, %s", image_file, present, input_path, mask_path)


# Epochs in a row a class present in the test set may score IoU 0 before a warning.
COLLAPSE_PATIENCE = 3



# The short-run recipe for small data sets (docs/small-data.md): each flag, and whether a run's
# settings already have it.
SHORT_RUN_RECIPE = (
    ("--depth 20", lambda settings: settings.get("depth", BOOK.depth) <= 20),
    # Any loss beside the cross-entropy that scores overlap per image (ce+dice, ce+lovasz) counts.
    ("--loss ce+dice", lambda settings: settings.get("loss", BOOK.loss) != BOOK.loss),
    ("--bn-momentum 0.9", lambda settings: settings.get("bn_momentum", BOOK.bn_momentum) <= 0.9),
    ("--lr-schedule cosine", lambda settings: settings.get("lr_schedule") == "cosine"),
)



def collapse_hint(settings: dict | None = None) -> str:
    """What to try when a network collapses: the short-run recipe's flags the run lacks, or what next.

    Args:
        settings: dict or None. The run's settings (as stored with its best
            weights); None (or anything but a dict) when unknown, which names
            the whole recipe.

    Returns:
        One clause for the collapse warnings.
    """
    known = settings if isinstance(settings, dict) else {}
    missing = [flag for flag, present in SHORT_RUN_RECIPE if not present(known)]
    if missing:
        return f"for a small data set try {' '.join(missing)} (docs/small-data.md)"
    return "the run already has the short-run recipe: train longer (--epochs, --time-budget) or on more images"



class CollapseMonitor:
    """Notices a network that has collapsed to a few classes, which pixel accuracy hides.

    One warning when every test pixel is predicted as one class; one when a
    class present in the test ground truth has scored IoU 0 for `patience`
    epochs in a row.

    Args:
        n_classes: int. Number of classes including background.
        patience: int. Epochs of IoU 0 before warning. Defaults to
            `COLLAPSE_PATIENCE`.
        hint: str. What the warnings suggest. Defaults to the whole short-run
            recipe (`collapse_hint()`).
    """

    def __init__(self, n_classes: int, patience: int = COLLAPSE_PATIENCE, hint: str | None = None):
        self.names = class_names(n_classes)
        self.patience = patience
        self.hint = hint or collapse_hint()
        self.zero_epochs = np.zeros(n_classes, dtype=int)

    def check(self, scores: SegmentationScores) -> list[str]:
        """Updates the counts with one epoch's scores; returns the warnings, one line each."""
        warnings = []
        # The scores carry the data set's class names when it has them.
        self.names = scores.class_names
        predicted = scores.predicted_classes
        if len(predicted) == 1:
            warnings.append(
                f"the network predicts '{self.names[predicted[0]]}' for every test pixel: it has collapsed "
                f"to one class, whatever the pixel accuracy says; {self.hint}."
            )
        present = scores.confusion.sum(axis=1) > 0
        zero = present & (np.nan_to_num(scores.class_iou, nan=1.0) == 0)
        self.zero_epochs = np.where(zero, self.zero_epochs + 1, 0)
        stuck = np.flatnonzero(self.zero_epochs >= self.patience)
        if len(stuck) and len(predicted) > 1:
            names = ", ".join(f"'{self.names[k]}'" for k in stuck)
            warnings.append(
                f"{names} present in the test set but IoU 0 for {self.patience} or more epochs in a row: "
                f"the network is not learning {'it' if len(stuck) == 1 else 'them'}; {self.hint}."
            )
        return warnings
