"""Test-time augmentation (`--tta`, project addition): each prediction averaged with its mirror image's.

The network sees every image twice, as it is and flipped left to right; the second prediction is
flipped back and the two softmax outputs are averaged, pixel by pixel, before the argmax. Both views
go through the network in one batch. A scene
and its mirror image hold the same objects, so the average is a cheap ensemble of two views: it
costs a second forward pass. The book predicts each image once (the default).
"""

from collections.abc import Callable

import numpy as np

# Axis of the width in a batch `(N, H, W, C)`.
WIDTH_AXIS = 2


def flip_averaged(predict: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Wraps a batch prediction into the mean of it and of its horizontally flipped twin.

    Args:
        predict: callable. A batch `(N, H, W, 3)` to probabilities `(N, H, W, C)`.

    Returns:
        A callable of the same shape: `(predict(x) + flip(predict(flip(x)))) / 2`, float32.

    Example:

    >>> averaged = flip_averaged(lambda batch: batch)
    >>> averaged(np.arange(4.0).reshape(1, 1, 4, 1)).ravel()
    array([1.5, 1.5, 1.5, 1.5], dtype=float32)
    """

    def predict_both(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        # One call on both views: a batch twice as large, not two calls.
        both = np.asarray(predict(np.concatenate([images, np.flip(images, axis=WIDTH_AXIS)])), dtype=np.float32)
        plain, mirrored = both[: len(images)], both[len(images) :]
        return 0.5 * (plain + np.flip(mirrored, axis=WIDTH_AXIS))

    return predict_both
