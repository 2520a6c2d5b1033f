"""Segmentation metrics of chapter 12, section 5, in vectorised NumPy.

The book scores each test image on its own: the pixel accuracy, and the mean
IoU over the classes present in that image's ground truth (background
included); the data-set figures are the means over images. That is not the
standard data-set-level mIoU (one confusion matrix over all test pixels, IoU
per class, then the mean), so both are computed here from per-image confusion
matrices. Pixels whose true class is `IGNORE_LABEL` (255) count in none of them.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from segmentation.classes import IGNORE_LABEL, class_names


def confusion_matrices(true_labels: np.ndarray, predicted_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-image confusion matrices of class-index maps.

    Args:
        true_labels: int array `(N, H, W)`. Ground-truth class per pixel;
            `IGNORE_LABEL` pixels are left out.
        predicted_labels: int array `(N, H, W)`. Predicted class per pixel.
        n_classes: int. Number of classes.

    Returns:
        int64 array `(N, n_classes, n_classes)`; entry `[i, t, p]` counts the
        pixels of image i with true class t predicted as p.

    Raises:
        ValueError: if the shapes differ or a label (other than a true
            `IGNORE_LABEL`) is outside `[0, n_classes)`.
    """
    true_labels = np.asarray(true_labels)
    predicted_labels = np.asarray(predicted_labels)
    if true_labels.shape != predicted_labels.shape or true_labels.ndim != 3:
        raise ValueError(
            "true and predicted labels must both be (N, H, W). Received: "
            f"{true_labels.shape} and {predicted_labels.shape}"
        )
    labelled = true_labels != IGNORE_LABEL
    for name, labels in (("true", true_labels[labelled]), ("predicted", predicted_labels)):
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {n_classes}). Received: "
                f"[{labels.min()}, {labels.max()}]"
            )
    num_images = true_labels.shape[0]
    image_index = np.arange(num_images).reshape(-1, 1, 1)
    flat = (image_index * n_classes + true_labels.astype(np.int64)) * n_classes + predicted_labels
    counts = np.bincount(flat[labelled], minlength=num_images * n_classes * n_classes)
    return counts.reshape(num_images, n_classes, n_classes)


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """IoU per class from confusion matrices; NaN where a class is absent.

    Args:
        confusion: array `(..., C, C)` of true-by-predicted counts.

    Returns:
        float64 array `(..., C)`: |pred = c and true = c| / |pred = c or true = c|,
        NaN where the union is empty.
    """
    intersection = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
    union = confusion.sum(axis=-1) + confusion.sum(axis=-2) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / np.maximum(union, 1), np.nan)


@dataclasses.dataclass
class ImageScore:
    """The book's scores of one test image.

    Attributes:
        name: str. Image file name.
        num_classes_present: int. Classes in the ground truth, background
            included (the book's "objs").
        miou: float. Mean IoU over those classes.
        pixel_accuracy: float. Share of correctly classified pixels, in [0, 1].
        has_object: bool. Whether the ground truth holds a class other than
            background (class 0). Defaults to True.
    """

    name: str
    num_classes_present: int
    miou: float
    pixel_accuracy: float
    has_object: bool = True


class SegmentationScores:
    """Accumulates the book's per-image scores and a data-set confusion matrix.

    Args:
        n_classes: int. Number of classes including background.
        class_names: sequence of str or None. Names of classes 0 .. n_classes - 1,
            for the tables and figures. Defaults to `classes.class_names(n_classes)`.

    Example:

    >>> scores = SegmentationScores(n_classes=2)
    >>> truth = np.array([[[0, 1], [1, 1]]])
    >>> scores.update(["a.jpg"], truth, truth)
    >>> scores.mean_iou, scores.mean_pixel_accuracy
    (1.0, 1.0)
    """

    def __init__(self, n_classes: int, class_names: Sequence[str] | None = None):
        self.n_classes = n_classes
        self.class_names = _display_names(n_classes, class_names)
        self.images: list[ImageScore] = []
        self.confusion = np.zeros((n_classes, n_classes), dtype=np.int64)

    def update(self, names: list[str], true_labels: np.ndarray, predicted_labels: np.ndarray) -> None:
        """Adds a batch of images; an image whose pixels are all `IGNORE_LABEL` adds nothing.

        Args:
            names: list of str. The images' file names.
            true_labels: int array `(N, H, W)`. Ground-truth class maps.
            predicted_labels: int array `(N, H, W)`. Predicted class maps.
        """
        confusion = confusion_matrices(true_labels, predicted_labels, self.n_classes)
        self.confusion += confusion.sum(axis=0)
        class_iou = iou_from_confusion(confusion)
        # Only classes present in the image's ground truth count; an image with
        # a labelled pixel has one present, so the mean is defined.
        present = confusion.sum(axis=-1) > 0
        counts = present.sum(axis=-1)
        labelled = counts > 0
        miou = np.where(present, class_iou, 0.0).sum(axis=-1) / np.maximum(counts, 1)
        correct = np.trace(confusion, axis1=-2, axis2=-1)
        pixel_accuracy = correct / np.maximum(confusion.sum(axis=(-2, -1)), 1)
        has_object = present[:, 1:].any(axis=-1)
        for name, count, image_miou, accuracy, holds, scored in zip(names, counts, miou, pixel_accuracy,
                                                                    has_object, labelled):
            if scored:
                self.images.append(ImageScore(name, int(count), float(image_miou), float(accuracy), bool(holds)))

    @property
    def mean_iou(self) -> float:
        """The book's mIoU: the mean of the per-image mIoUs."""
        return float(np.mean([image.miou for image in self.images]))

    @property
    def mean_pixel_accuracy(self) -> float:
        """The book's mean pixel accuracy, in [0, 1]."""
        return float(np.mean([image.pixel_accuracy for image in self.images]))

    @property
    def class_iou(self) -> np.ndarray:
        """Data-set-level IoU per class (NaN for a class seen nowhere)."""
        return iou_from_confusion(self.confusion)

    @property
    def dataset_miou(self) -> float:
        """Standard data-set-level mIoU: the mean of `class_iou` over seen classes."""
        return float(np.nanmean(self.class_iou))

    @property
    def predicted_classes(self) -> np.ndarray:
        """Indices of the classes predicted anywhere in the data set."""
        return np.flatnonzero(self.confusion.sum(axis=0))


def _display_names(n_classes: int, names: Sequence[str] | None) -> list[str]:
    """`class_names(n_classes, names)`, refusing a list of the wrong length."""
    if names is not None and len(names) != n_classes:
        raise ValueError(f"class_names must name all {n_classes} classes. Received: {list(names)}")
    return class_names(n_classes, names)
