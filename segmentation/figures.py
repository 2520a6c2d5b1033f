"""Pictures of segmentations: coloured masks and Figure 12.5.3's triptych.

Colours follow the book: background black, class 1 (water bottle) red, 2
(soda can) green, 3 (juice can) blue, then more: `segmentation.classes`, the one
home of the class colours, so a predicted mask paints each class as the
ground-truth previews of `utils/` do.
"""

import os

import numpy as np
import skimage.io
from matplotlib.figure import Figure

from segmentation.classes import colorize


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as uint8."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


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
    skimage.io.imsave(input_path, to_uint8(image), check_contrast=False)
    skimage.io.imsave(mask_path, colorize(predicted), check_contrast=False)
    return input_path, mask_path


def save_triptych(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray, path: str, title: str = "") -> None:
    """Input, ground truth and prediction side by side (Figure 12.5.3).

    Args:
        image: float array `(H, W, 3)` in [0, 1].
        truth: int array `(H, W)`. Ground-truth classes.
        predicted: int array `(H, W)`. Predicted classes.
        path: str. PNG to write.
        title: str. Figure title, e.g. the image name and its scores.
    """
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    panels = (("Input", image), ("Ground truth", colorize(truth)), ("Prediction", colorize(predicted)))
    for axis, (label, picture) in zip(axes, panels):
        axis.imshow(picture)
        axis.set_title(label)
        axis.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
