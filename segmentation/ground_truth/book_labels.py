"""The book's `.npy` label files: read, checked, and reduced to class-index maps.

The book's ground truth is an `np.save` of a Python dict
`{image filename: uint8 one-hot mask (H, W, n_classes)}`, channel 0 being
background. It is read here once, validated, and kept as compact class-index
maps (one byte per pixel); `data_generator.DataGenerator` rebuilds the
one-hot masks batch by batch for the categorical cross-entropy. Each mask is
turned into its class-index map as soon as it is read, so the whole
one-hot dict (n_classes bytes per pixel) is never in memory at once. The
files are never unpickled (see `pickled_npy`).
"""

import dataclasses
import logging
import os

import numpy as np

from segmentation.classes import IGNORE_LABEL
from segmentation.errors import DatasetError
from segmentation.ground_truth.fit_to_size import resize_labels
from segmentation.ground_truth.label_set import ClassMaps, LabelSet, PackedClassMap
from segmentation.ground_truth.pickled_npy import read_pickled_dict
from segmentation.images import RGB_MODES, check_image, image_header

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MaskSummary:
    """What validation and training need of one one-hot mask, without its planes.

    Attributes:
        shape: tuple. The one-hot mask's shape.
        value_problem: str or None. Why its values are not 0/1 one-hot (see
            `mask_value_problem`), or None.
        class_map: PackedClassMap or None. The uint8 `(H, W)` argmax of a
            3-D mask with valid values, packed; else None.
    """

    shape: tuple[int, ...]
    value_problem: str | None
    class_map: PackedClassMap | None


def summarize_mask(mask: object) -> MaskSummary:
    """Checks one mask's values and reduces it to its class-index map.

    Args:
        mask: array-like. One image's one-hot mask, as read from the file.

    Returns:
        Its `MaskSummary`.
    """
    mask = np.asarray(mask)
    problem = mask_value_problem(mask)
    class_map = None
    if problem is None and mask.ndim == 3 and mask.shape[-1]:
        # A pixel with no class set (all zeros) is read as background.
        class_map = PackedClassMap.pack(np.argmax(mask, axis=-1).astype(np.uint8))
    return MaskSummary(shape=mask.shape, value_problem=problem, class_map=class_map)


def read_labels_dict(path: str) -> object:
    """Reads the book's `np.save`d dict with each mask reduced to a `MaskSummary` on the way.

    The file is never unpickled: `read_pickled_dict` walks its pickle's opcodes and builds only plain
    arrays, so a hostile file cannot run code or make NumPy read memory it chose. Each mask is
    summarized and freed as soon as it is read, so the whole one-hot dict is never in memory at once.

    Args:
        path: str. The `.npy` file.

    Returns:
        The dict `{key: MaskSummary}` for the book's format (a value that is not an array is left as
        it is, for the checks to name); otherwise the plain value the file's object array holds.

    Raises:
        DatasetError: if the file is not NumPy's pickle of a 0-d object array holding plain arrays.
    """
    return read_pickled_dict(path, summarize_mask)


def load_labels(path: str, data_path: str, height: int, width: int, fit_size: str = "refuse") -> LabelSet:
    """Reads and validates one of the book's ground-truth `.npy` dict files.

    Masks of any 0/1 dtype (the book's uint8, bool, float) are kept as uint8
    class-index maps, converted and compressed one by one while the file is
    read (see `read_labels_dict`, `PackedClassMap`), so memory grows by a few
    KB per image.

    Args:
        path: str. The `.npy` file, e.g. `dataset/drinks/segmentation_train.npy`.
        data_path: str. Folder holding the images the keys name.
        height: int. Expected mask and image height (`--height`).
        width: int. Expected mask and image width (`--width`).
        fit_size: str. `--fit-size`: with "resize" or "crop" a mask may have any
            size but its image's, and with "resize" its map is scaled to
            `height` x `width` (nearest neighbour). Defaults to "refuse", the
            book's check.

    Returns:
        A `LabelSet` of class-index maps.

    Raises:
        DatasetError: if the file is missing or unreadable, not a non-empty
            dict of `(height, width, n_classes)` 0/1 masks with one class
            count, or a key has no usable image file in `data_path` (see
            `check_image`).
    """
    if not os.path.isfile(path):
        raise DatasetError(
            f"{path}: labels file not found. Give the right --data-path/--train-labels/"
            "--test-labels, or make it with utils/generate_gt_segmentation.py."
        )
    try:
        dictionary = read_labels_dict(path)
    except DatasetError:
        raise
    except Exception as error:  # reading a damaged file can raise many types
        raise DatasetError(
            f"{path}: cannot read it as a .npy file ({type(error).__name__}: {error}). "
            "Regenerate it with utils/generate_gt_segmentation.py."
        ) from None
    if not isinstance(dictionary, dict):
        raise DatasetError(
            f"{path}: expected np.save of a dict {{image filename: one-hot mask}}, found "
            f"{type(dictionary).__name__}. Regenerate it with utils/generate_gt_segmentation.py."
        )
    if not dictionary:
        raise DatasetError(f"{path}: the labels dict is empty. Annotate some images and regenerate it.")
    masks: dict[str, PackedClassMap] = {}
    n_classes = None
    converted = []
    for key, mask in dictionary.items():
        summary = mask if isinstance(mask, MaskSummary) else summarize_mask(mask)
        if summary.value_problem is not None:
            raise DatasetError(f"{path}: mask of {key!r} {summary.value_problem}. Regenerate the labels.")
        shape = summary.shape
        if len(shape) != 3 or (fit_size == "refuse" and shape[:2] != (height, width)):
            raise DatasetError(
                f"{path}: mask of {key!r} has shape {shape}, expected ({height}, {width}, "
                "n_classes). Give the matching --height/--width or --fit-size resize or crop, or regenerate the labels."
            )
        if n_classes is None:
            n_classes = shape[-1]
            if n_classes < 2:
                raise DatasetError(
                    f"{path}: masks have {n_classes} channel(s); a one-hot mask needs background "
                    "plus at least one class."
                )
            if n_classes > IGNORE_LABEL:
                # Class maps are uint8, and id IGNORE_LABEL marks pixels left out of the loss and scores.
                raise DatasetError(
                    f"{path}: masks have {n_classes} classes; at most {IGNORE_LABEL} are supported (class ids "
                    f"0..{IGNORE_LABEL - 1}, {IGNORE_LABEL} marks ignored pixels). Merge classes and regenerate "
                    "the labels."
                )
        elif shape[-1] != n_classes:
            raise DatasetError(
                f"{path}: mask of {key!r} has {shape[-1]} classes, the first mask has "
                f"{n_classes}. Regenerate the labels with one class count."
            )
        image_path = os.path.join(data_path, str(key))
        if not os.path.isfile(image_path):
            raise DatasetError(
                f"{path}: key {key!r} has no image {image_path}. Give the right --data-path "
                "or remove the entry."
            )
        if fit_size == "refuse":
            mode = check_image(image_path, height, width)
        else:
            mode, size = image_header(image_path)
            if size != (shape[1], shape[0]):
                raise DatasetError(
                    f"{path}: mask of {key!r} is {shape[1]}x{shape[0]} but its image is {size[0]}x{size[1]}. "
                    "Regenerate the labels from these images."
                )
        if mode not in RGB_MODES:
            converted.append(f"{key} ({mode})")
        class_map = summary.class_map
        if fit_size == "resize" and shape[:2] != (height, width):
            class_map = PackedClassMap.pack(resize_labels(class_map.unpack(), height, width))
        masks[str(key)] = class_map
    if converted:
        logger.warning(
            "%s: %d image(s) are not plain RGB and are converted on reading (grey repeated, alpha "
            "ignored), e.g. %s", path, len(converted), ", ".join(converted[:3]),
        )
    return LabelSet(path=path, masks=ClassMaps(masks), n_classes=n_classes)


def mask_value_problem(mask: np.ndarray) -> str | None:
    """Why a mask is not 0/1 one-hot (bool, integer or float 0.0/1.0 are all fine), or None.

    Args:
        mask: array. One image's mask.

    Returns:
        The end of an error sentence that starts with the mask's name (a
        non-numeric dtype, or a value other than 0 and 1), or None.
    """
    if mask.dtype == bool:
        return None
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        return f"has dtype {mask.dtype}; expected a uint8 one-hot mask made by utils/generate_gt_segmentation.py"
    if np.issubdtype(mask.dtype, np.unsignedinteger):
        # The common case (the book's uint8 masks): one pass over the array.
        valid = mask.size == 0 or mask.max() <= 1
    else:
        valid = bool(np.isin(mask, (0, 1)).all())
    if valid:
        return None
    return (
        f"holds values other than 0 and 1 (range {mask.min()}..{mask.max()}); "
        "a one-hot mask marks each pixel's class with a single 1"
    )


def read_labels_whole(path: str) -> dict:
    """The book's `np.save`d dict as it is, one-hot masks whole (what the book's code held), read without unpickling.

    For measuring the book's way (`bench/`); the program itself reads labels with `load_labels`.

    Raises:
        DatasetError: if the file is not NumPy's pickle of a dict of plain arrays (see `read_pickled_dict`).
    """
    # A copy: the arrays read are read-only views of the file's bytes, and the book's code could write to its masks.
    content = read_pickled_dict(path, np.array)
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: not the book's np.save of a dict. Regenerate it with "
                           "utils/generate_gt_segmentation.py.")
    return content
