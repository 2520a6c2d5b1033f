"""Pictures of segmentations: coloured masks and Figure 12.5.3's triptych.

Colours follow the book: background black, class 1 (water bottle) red, 2
(soda can) green, 3 (juice can) blue, then more: `segmentation.classes`, the one
home of the class colours, so a predicted mask paints each class as the
ground-truth previews of `utils/` do.
"""

import os
from collections.abc import Sequence

import numpy as np
import skimage.io
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from segmentation.atomic import write_atomically
from segmentation.classes import IGNORE_COLOR, IGNORE_LABEL, class_colors, class_names, colorize


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str, image: np.ndarray) -> None:
    """Writes a uint8 image as PNG through a temporary file, so a failed write leaves no partial file."""
    write_atomically(path, lambda temporary: skimage.io.imsave(temporary, image, check_contrast=False), suffix=".png")


def save_input_and_mask(image: np.ndarray, predicted: np.ndarray, directory: str, stem: str) -> tuple[str, str]:
    """Saves `<stem>-input.png` and the coloured `<stem>-mask.png` (the book's pair).

    Args:
        image: float array `(H, W, 3)` in [0, 1].
        predicted: int array `(H, W)`. Predicted classes.
        directory: str. Output folder, created if missing.
        stem: str. File name without extension.

    Returns:
        The two paths written.
    """
    os.makedirs(directory, exist_ok=True)
    input_path = os.path.join(directory, f"{stem}-input.png")
    mask_path = os.path.join(directory, f"{stem}-mask.png")
    save_png(input_path, to_uint8(image))
    save_png(mask_path, colorize(predicted))
    return input_path, mask_path


def legend_handles(label_maps: Sequence[np.ndarray], names: Sequence[str] | None = None) -> list[Patch]:
    """Legend entries for the classes found in some class maps: each class's colour and name.

    Args:
        label_maps: sequence of int arrays. Ground-truth and predicted class maps.
        names: sequence of str or None. Names of classes 0 .. n - 1; defaults to `class_names`.

    Returns:
        One patch per class present (and one for ignored pixels, if any), in class order.
    """
    present = np.unique(np.concatenate([np.asarray(label_map).ravel() for label_map in label_maps]))
    classes = present[present != IGNORE_LABEL]
    n_classes = len(names) if names is not None else int(classes.max(initial=0)) + 1
    names = class_names(n_classes, names)
    colours = class_colors(n_classes) / 255.0
    handles = [Patch(facecolor=colours[k], edgecolor="grey", label=names[k]) for k in classes if k < n_classes]
    if classes.size < present.size:
        handles.append(Patch(facecolor=np.array(IGNORE_COLOR) / 255.0, edgecolor="grey", label="ignored"))
    return handles


def save_triptych(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray, path: str, title: str = "",
                  class_names: Sequence[str] | None = None) -> None:
    """Input, ground truth and prediction side by side (Figure 12.5.3), with a legend of the classes shown.

    Args:
        image: float array `(H, W, 3)` in [0, 1].
        truth: int array `(H, W)`. Ground-truth classes.
        predicted: int array `(H, W)`. Predicted classes.
        path: str. PNG to write.
        title: str. Figure title, e.g. the image name and its scores.
        class_names: sequence of str or None. Names of classes 0 .. n - 1 for the legend;
            defaults to `classes.class_names`.
    """
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    panels = (("Input", image), ("Ground truth", colorize(truth)), ("Prediction", colorize(predicted)))
    for axis, (label, picture) in zip(axes, panels):
        axis.imshow(picture)
        axis.set_title(label)
        axis.axis("off")
    axes[-1].legend(handles=legend_handles([truth, predicted], class_names), loc="upper left",
                    bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    write_atomically(path, lambda temporary: fig.savefig(temporary, dpi=100, format="png"), suffix=".png")
