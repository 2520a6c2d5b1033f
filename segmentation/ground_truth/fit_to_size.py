"""`--fit-size`: images of any size fitted to the network's `--height` x `--width` input (project addition).

The book's network takes one input size and the book refuses any other (`refuse`, the default).
`resize` scales each image (bilinear) and its class-index map (nearest neighbour, so no new class
appears on a border) to the input size. `crop` shrinks nothing: training takes random crops of the
input size, image and map cut together (an image smaller than the crop is padded, its map with
`IGNORE_LABEL`, which the loss leaves out), and evaluation and `--predict-dir` cover the whole image
with tiles of the input size whose class probabilities are stitched, overlaps averaged.
"""

import math
from collections.abc import Callable

import numpy as np
import skimage.transform

from segmentation.classes import IGNORE_LABEL
from segmentation.images import image_to_float


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scales an RGB image to `height` x `width` (bilinear; anti-aliased when shrinking).

    Args:
        image: uint8 array `(H, W, 3)`, or float in [0, 1].

    Returns:
        float32 array `(height, width, 3)` in [0, 1]; an image of that size only rescaled to [0, 1].
    """
    if image.dtype == np.uint8 and image.shape[:2] == (height, width):
        return image_to_float(image)
    # Anti-aliasing when shrinking, as a camera at that resolution would see the scene.
    resized = skimage.transform.resize(image, (height, width), order=1, anti_aliasing=True)
    return resized.astype(np.float32)


def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes a class-index map with nearest-neighbour sampling (never mixing classes).

    Args:
        labels: int array `(h, w)`.
        height: int. Target height.
        width: int. Target width.

    Returns:
        Array `(height, width)` of `labels`' dtype; each pixel takes the class
        of the source pixel whose centre is nearest.
    """
    rows = ((np.arange(height) + 0.5) * labels.shape[0] / height).astype(np.int64)
    columns = ((np.arange(width) + 0.5) * labels.shape[1] / width).astype(np.int64)
    return labels[np.ix_(rows, columns)]


def random_crop(image: np.ndarray, class_map: np.ndarray, height: int, width: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random `height` x `width` window of an image and its class map, cut together.

    A side shorter than the window is padded first, at a random offset: the image with 0, the map
    with `IGNORE_LABEL`, so the padding counts in neither the loss nor the scores.

    Args:
        image: float array `(H, W, 3)`.
        class_map: uint8 array `(H, W)`.
        height: int. The window's height.
        width: int. The window's width.
        rng: numpy Generator. Source of the offsets.

    Returns:
        `(image, class_map)` of shapes `(height, width, 3)` and `(height, width)`.
    """
    pad_y, pad_x = max(height - class_map.shape[0], 0), max(width - class_map.shape[1], 0)
    if pad_y or pad_x:
        top, left = int(rng.integers(0, pad_y + 1)), int(rng.integers(0, pad_x + 1))
        padding = ((top, pad_y - top), (left, pad_x - left))
        image = np.pad(image, padding + ((0, 0),))
        class_map = np.pad(class_map, padding, constant_values=IGNORE_LABEL)
    top = int(rng.integers(0, class_map.shape[0] - height + 1))
    left = int(rng.integers(0, class_map.shape[1] - width + 1))
    return image[top : top + height, left : left + width], class_map[top : top + height, left : left + width]


def tile_starts(length: int, tile: int) -> list[int]:
    """Where the tiles along one side begin: as few as cover it, spread evenly, the last at the end.

    Args:
        length: int. The image's side.
        tile: int. The tile's side.

    Returns:
        Offsets; `[0]` for a side no longer than a tile (padded by `predict_tiled`).

    Example:

    >>> tile_starts(96, 64), tile_starts(128, 64)
    ([0, 32], [0, 64])
    """
    if length <= tile:
        return [0]
    count = math.ceil(length / tile)
    return [round(start) for start in np.linspace(0, length - tile, count)]


def predict_tiled(predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray, height: int, width: int,
                  batch_size: int) -> np.ndarray:
    """Class probabilities of a whole image of any size, from tiles of the network's input size.

    The tiles cover the image (`tile_starts` on each side), go through `predict` up to
    `batch_size` at a time, and their probabilities are put back in place, averaged where tiles
    overlap. An image smaller than a tile is padded with 0 at the bottom and right, and the
    padding cut off again.

    Args:
        predict: callable. A batch `(N, height, width, 3)` to probabilities `(N, height, width, C)`.
        image: float32 array `(H, W, 3)` in [0, 1].
        height: int. The tile's height (`--height`).
        width: int. The tile's width (`--width`).
        batch_size: int. Tiles per call of `predict`.

    Returns:
        float32 array `(H, W, C)`.
    """
    image_height, image_width = image.shape[:2]
    padded = np.pad(image, ((0, max(height - image_height, 0)), (0, max(width - image_width, 0)), (0, 0)))
    corners = [(top, left) for top in tile_starts(image_height, height) for left in tile_starts(image_width, width)]
    total = None
    counts = np.zeros(padded.shape[:2] + (1,), dtype=np.float32)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        tiles = np.stack([padded[top : top + height, left : left + width] for top, left in chunk])
        probabilities = np.asarray(predict(tiles), dtype=np.float32)
        if total is None:
            total = np.zeros(padded.shape[:2] + probabilities.shape[-1:], dtype=np.float32)
        for (top, left), tile_probabilities in zip(chunk, probabilities):
            total[top : top + height, left : left + width] += tile_probabilities
            counts[top : top + height, left : left + width] += 1.0
    return (total / counts)[:image_height, :image_width]
