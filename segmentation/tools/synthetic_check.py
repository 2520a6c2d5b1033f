"""How hard the synthetic drinks set is: a colour-only baseline (`--check`) and a contact sheet (`--show`).

`color_baseline` fits the best colour-only per-pixel rules on the training split and scores them on the
test split with the book's per-image mIoU; `utils/generate_synthetic_drinks.py --check` exits with
status 1 when one scores above `CHECK_THRESHOLD`, i.e. when colour alone would tell the classes apart.
"""

import math
import os

import numpy as np
from matplotlib.figure import Figure
from skimage import io

from segmentation.classes import DRINKS_CLASS_NAMES, class_colors
from segmentation.metrics import confusion_matrices, iou_from_confusion
from segmentation.paths import TEST_VIA_JSON, TRAIN_VIA_JSON
from segmentation.tools import via

# The highest colour-only test mIoU a usable set may have.
CHECK_THRESHOLD = 0.60
# RGB histogram cells per channel of the colour-only rules.
HISTOGRAM_LEVELS = 16
# Images on the contact sheet.
CONTACT_SHEET_IMAGES = 12


# === Colour-only baseline (--check) ===


def per_image_miou(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """The book's per-image mIoU: mean IoU over the classes present in the ground truth.

    Args:
        prediction: int array (H, W). Predicted classes.
        truth: int array (H, W). Ground-truth classes.
        num_classes: int. Number of classes.

    Returns:
        The image's mIoU.
    """
    confusion = confusion_matrices(truth[np.newaxis], prediction[np.newaxis], num_classes)[0]
    present = confusion.sum(axis=1) > 0
    return float(np.mean(iou_from_confusion(confusion)[present]))


def read_via_split(output: str, json_name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images and rasterised VIA ground truth of one split, as the converter would make them."""
    project = via.load_project(os.path.join(output, json_name))
    pairs = []
    for entry in project.images:
        image = io.imread(os.path.join(output, entry.filename))
        pairs.append((image, via.rasterize(entry.regions, image.shape[0], image.shape[1])))
    return pairs


def color_bins(image: np.ndarray) -> np.ndarray:
    """Index of each pixel's cell in a HISTOGRAM_LEVELS**3 RGB histogram."""
    levels = (image.astype(np.int64) * HISTOGRAM_LEVELS) // 256
    return (levels[..., 0] * HISTOGRAM_LEVELS + levels[..., 1]) * HISTOGRAM_LEVELS + levels[..., 2]


def color_baseline(output: str, num_classes: int = len(DRINKS_CLASS_NAMES)) -> dict[str, float]:
    """Scores colour-only per-pixel classifiers: fit on the training split, test with the book's mIoU.

    The classifiers are Bayes rules on a 16x16x16 RGB histogram per class (the best any
    colour-only per-pixel rule can do on these bins): with the class priors (maximum a posteriori)
    and with equal priors (maximum likelihood, which predicts the small drink classes more often).

    Args:
        output: str. Data set folder.
        num_classes: int. Number of classes. Defaults to 4.

    Returns:
        {classifier name: mean per-image mIoU on the test split}.
    """
    counts = np.zeros((HISTOGRAM_LEVELS**3, num_classes), dtype=np.int64)
    for image, truth in read_via_split(output, TRAIN_VIA_JSON):
        # Every other row and column is plenty for a 4,096-cell histogram, and twice as fast.
        bins = color_bins(image[::2, ::2])
        counts += np.bincount(
            bins.ravel() * num_classes + truth[::2, ::2].ravel(), minlength=counts.size
        ).reshape(counts.shape)
    likelihood = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)
    rules = {"histogram MAP (class priors)": counts.argmax(axis=1),
             "histogram ML (equal priors)": likelihood.argmax(axis=1)}
    test = read_via_split(output, TEST_VIA_JSON)
    return {
        name: float(np.mean([per_image_miou(rule[color_bins(image)], truth, num_classes) for image, truth in test]))
        for name, rule in rules.items()
    }


# === Contact sheet (--show) ===


def contact_sheet(output: str, entries: list[via.ImageEntry], path: str) -> None:
    """Saves a grid of images with their polygon outlines in the class colours.

    Args:
        output: str. Data set folder.
        entries: list of via.ImageEntry. The images to show (up to 12).
        path: str. PNG to write.
    """
    entries = entries[:CONTACT_SHEET_IMAGES]
    columns = 4
    rows = max(1, math.ceil(len(entries) / columns))
    colors = class_colors(len(DRINKS_CLASS_NAMES)) / 255
    fig = Figure(figsize=(4 * columns, 3.2 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, entry in zip(axes.ravel(), entries):
        axis.imshow(io.imread(os.path.join(output, entry.filename)))
        for region in entry.regions:
            xs = [*region.shape.points_x, region.shape.points_x[0]]
            ys = [*region.shape.points_y, region.shape.points_y[0]]
            axis.plot(xs, ys, color=colors[region.class_id], linewidth=1.5)
        classes = sorted({region.class_id for region in entry.regions})
        names = ", ".join(DRINKS_CLASS_NAMES[c] for c in classes) or "no drinks"
        axis.set_title(f"{entry.filename}: {names}", fontsize=8)
    fig.suptitle("Synthetic drinks: red water bottle, green soda can, blue juice can")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
