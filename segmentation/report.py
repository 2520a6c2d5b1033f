"""A one-page PNG report of a training run (a project addition).

The book plots its two histories one figure each (Figures 12.5.1 and
12.5.2). At the end of `--train` this module draws one page with what a
reader checks first: the loss, the test mIoU and pixel accuracy per epoch,
and, for the best weights on the test set, the data-set-level IoU of each
class, the confusion matrix, and the triptychs (Figure 12.5.3) of the worst,
median and best test images by the book's mIoU.
"""

import dataclasses

import keras
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

from data_generator import DataGenerator
from segmentation.atomic import write_atomically
from segmentation.classes import colorize
from segmentation.evaluation import evaluate_dataset, predict_class_maps
from segmentation.figures import legend_handles
from segmentation.metrics import SegmentationScores

# Panel grid: the top row has 4 plots, each example row 3 pictures; 12 columns fit both.
GRID_COLUMNS = 12
# Per-epoch values drawn on the metrics plot (after the split's prefix, `test_` or `val_`), with their legends.
METRIC_CURVES = (
    ("miou", "mIoU (book: mean of per-image mIoU)"),
    ("dataset_miou", "mIoU (data-set level)"),
    ("pixel_accuracy", "pixel accuracy"),
)


@dataclasses.dataclass
class Example:
    """One test image for the report's triptychs.

    Attributes:
        label: str. Why it was chosen and its scores, e.g. `"worst: a.jpg, mIoU 0.41"`.
        image: float array `(H, W, 3)` in [0, 1].
        truth: int array `(H, W)`. Ground-truth classes.
        predicted: int array `(H, W)`. Predicted classes.
    """

    label: str
    image: np.ndarray
    truth: np.ndarray
    predicted: np.ndarray


def pick_examples(scores: SegmentationScores) -> list[tuple[str, str]]:
    """Chooses the test images with the worst, the median and the best of the book's mIoU.

    Only images whose ground truth holds an object compete (an empty image
    predicted empty scores 1.0 and shows nothing); all do when none holds one.

    Args:
        scores: SegmentationScores. The test set's scores.

    Returns:
        `(label, image name)` pairs from the lowest mIoU to the highest (fewer
        when fewer than three images compete).
    """
    candidates = [image for image in scores.images if image.has_object] or scores.images
    ranked = sorted(candidates, key=lambda image: image.miou)
    if not ranked:
        return []
    # Later keys win where positions coincide (fewer than three images).
    positions = {(len(ranked) - 1) // 2: "median", 0: "worst", len(ranked) - 1: "best"}
    return [
        (f"{rank}: {ranked[position].name}, mIoU {ranked[position].miou:.3f}, pixel accuracy "
         f"{100 * ranked[position].pixel_accuracy:.1f}%", ranked[position].name)
        for position, rank in sorted(positions.items())
    ]


def collect_examples(model: keras.Model, generator: DataGenerator, picked: list[tuple[str, str]],
                     tta: bool = False) -> list[Example]:
    """Reads and segments the chosen test images, in one batch.

    Args:
        model: keras.Model. The FCN.
        generator: DataGenerator. The test split (its labels and data path).
        picked: list of (label, image name). From `pick_examples`.
        tta: bool. `--tta`: flip-averaged predictions. Defaults to False.

    Returns:
        One `Example` per pair.
    """
    if not picked:
        return []
    images = [generator.read_image(name) for _, name in picked]
    predicted = predict_class_maps(model, images, generator.tile, generator.batch_size, tta)
    return [
        Example(label, image, generator.labels.masks[name], labels)
        for (label, name), image, labels in zip(picked, images, predicted)
    ]


def draw_report(history: dict[str, list[float]], scores: SegmentationScores, examples: list[Example],
                title: str) -> Figure:
    """Draws the report page.

    Args:
        history: dict. Per-epoch logs (`loss`, `test_miou`, `test_pixel_accuracy`,
            `test_dataset_miou`), one value per epoch; missing names are left out.
        scores: SegmentationScores. The best weights' scores on the test set.
        examples: list of Example. Test images to show as triptychs.
        title: str. The page's title.

    Returns:
        The figure (the caller saves and closes it).
    """
    names = scores.class_names
    fig = Figure(figsize=(18, 4.5 + 3.6 * len(examples)), layout="constrained")
    grid = fig.add_gridspec(1 + len(examples), GRID_COLUMNS, height_ratios=[1.25] + [1.0] * len(examples))
    quarter = GRID_COLUMNS // 4

    loss_axis = fig.add_subplot(grid[0, 0:quarter])
    if history.get("loss"):
        epochs = np.arange(1, len(history["loss"]) + 1)
        loss_axis.plot(epochs, history["loss"], marker="o", markersize=3)
    loss_axis.set(title="Training loss", xlabel="epoch", ylabel="loss")
    loss_axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    loss_axis.grid(alpha=0.3)

    metric_axis = fig.add_subplot(grid[0, quarter : 2 * quarter])
    # The split the run was scored on every epoch: validation images when it had them, else the test set.
    split, split_name = ("val", "Validation set") if history.get("val_miou") else ("test", "Test set")
    for key, legend in METRIC_CURVES:
        values = history.get(f"{split}_{key}")
        if values:
            metric_axis.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=legend)
    if history.get(f"{split}_miou"):
        best = int(np.argmax(history[f"{split}_miou"]))
        metric_axis.axvline(best + 1, color="grey", linestyle=":", label=f"best mIoU, epoch {best + 1}")
    metric_axis.set(title=f"{split_name} per epoch", xlabel="epoch", ylim=(0, 1.02))
    metric_axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    metric_axis.legend(fontsize=8, loc="best")
    metric_axis.grid(alpha=0.3)

    iou_axis = fig.add_subplot(grid[0, 2 * quarter : 3 * quarter])
    class_iou = scores.class_iou
    positions = np.arange(scores.n_classes)
    bars = iou_axis.bar(positions, np.nan_to_num(class_iou), color=colorize(positions) / 255.0, edgecolor="black")
    for bar, iou in zip(bars, class_iou):
        label = "n/a" if np.isnan(iou) else f"{iou:.2f}"
        iou_axis.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          ha="center", va="bottom", fontsize=8)
    iou_axis.set_xticks(positions, names, rotation=30, ha="right", fontsize=8)
    iou_axis.set(title=f"IoU per class, best weights (mean {scores.dataset_miou:.3f})", ylim=(0, 1.1))

    confusion_axis = fig.add_subplot(grid[0, 3 * quarter :])
    truth_pixels = scores.confusion.sum(axis=1, keepdims=True)
    shares = scores.confusion / np.maximum(truth_pixels, 1)
    confusion_axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (true_class, predicted_class), share in np.ndenumerate(shares):
        confusion_axis.text(predicted_class, true_class, f"{share:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if share > 0.5 else "black")
    confusion_axis.set_xticks(positions, names, rotation=30, ha="right", fontsize=8)
    confusion_axis.set_yticks(positions, names, fontsize=8)
    confusion_axis.set(title="Confusion matrix (share of each true class)", xlabel="predicted", ylabel="true")

    third = GRID_COLUMNS // 3
    for row, example in enumerate(examples, start=1):
        panels = (("Input", example.image), ("Ground truth", colorize(example.truth)),
                  ("Prediction", colorize(example.predicted)))
        for column, (panel_title, picture) in enumerate(panels):
            axis = fig.add_subplot(grid[row, column * third : (column + 1) * third])
            axis.imshow(picture)
            axis.set_title(example.label if column == 0 else panel_title, fontsize=9,
                           loc="left" if column == 0 else "center")
            axis.axis("off")
        axis.legend(handles=legend_handles([example.truth, example.predicted], names), loc="upper left",
                    bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)

    fig.suptitle(title)
    return fig


def write_training_report(model: keras.Model, generator: DataGenerator, history: dict[str, list[float]],
                          path: str, title: str, tta: bool = False) -> SegmentationScores:
    """Scores `model` on the test set and writes the report page to `path` (atomically).

    Args:
        model: keras.Model. The FCN with the weights to report on (the best ones).
        generator: DataGenerator. The test split, unshuffled, last batch kept.
        history: dict. The run's per-epoch logs.
        path: str. PNG to write.
        title: str. The page's title.
        tta: bool. `--tta`: score with flip-averaged predictions. Defaults to False.

    Returns:
        The test scores the page shows.
    """
    scores = evaluate_dataset(model, generator, tta=tta)
    examples = collect_examples(model, generator, pick_examples(scores), tta)
    fig = draw_report(history, scores, examples, f"{title}\nbest weights on the test set: mIoU {scores.mean_iou:.4f} "
                      f"(book), {scores.dataset_miou:.4f} (data-set level), pixel accuracy "
                      f"{100 * scores.mean_pixel_accuracy:.2f}%, {len(scores.images)} images")
    write_atomically(path, lambda temporary: fig.savefig(temporary, dpi=80, format="png"), suffix=".png")
    return scores
