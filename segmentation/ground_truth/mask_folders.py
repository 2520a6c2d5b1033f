"""Ground truth as folders of PNG class-index masks: the masks read and written, a folder read and checked.

The book's ground truth is a `.npy` dict of one-hot masks (`book_labels`). A mask folder is the other
format the program reads: `--train-labels train_masks` names a folder in `--data-path` holding
`<image stem>.png` for each image of the split, the image itself in `--data-path`. Each mask is an 8-bit
grey or palette PNG (VOC-style palette PNGs are read by index, not colour) whose pixel values are class
ids: 0 background, 1, 2, ... the classes, and `IGNORE_LABEL` (255) pixels left out of the loss and every
score. RGB masks are refused: a colour is not a class id.

A folder's class count is that of its class names when they are known (`splits.load_split`), or else the
largest class id found + 1.
"""

import os

import numpy as np
import PIL.Image

from segmentation.classes import IGNORE_COLOR, IGNORE_LABEL, class_colors
from segmentation.errors import DatasetError
from segmentation.ground_truth.fit_to_size import resize_labels
from segmentation.ground_truth.label_set import ClassMaps, LabelSet, PackedClassMap
from segmentation.images import IMAGE_EXTENSIONS, check_image, image_header
from segmentation.paths import MASK_SUFFIX, list_folder

# Pillow modes of class-index masks: 8-bit grey, palette (read by index), 1-bit, the same with an
# alpha band (ignored), and 16/32-bit grey whose values fit 0..255.
INDEX_MODES = ("L", "P", "1", "LA", "PA", "I;16", "I;16B", "I;16L", "I")
COLOUR_MODES = ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
LOSSY_EXTENSIONS = (".jpg", ".jpeg")


def read_mask_png(path: str) -> np.ndarray:
    """Reads a PNG class-index mask: pixel value = class id (a palette PNG by index).

    Args:
        path: str. The mask file.

    Returns:
        uint8 array `(H, W)`.

    Raises:
        DatasetError: if the file is not a readable image, is an RGB (or other colour) image,
            or holds values above 255.
    """
    try:
        with PIL.Image.open(path) as image:
            mode = image.mode
            if mode in COLOUR_MODES:
                raise DatasetError(
                    f"{path}: an {mode} image, not a class-index mask. Save each mask as an 8-bit grey or "
                    "palette PNG whose pixel values are class ids (0 background, 255 ignored), e.g. with "
                    "utils/generate_gt_segmentation.py --save-format png."
                )
            if mode not in INDEX_MODES:
                raise DatasetError(f"{path}: image mode {mode} is not a class-index mask. Save it as an 8-bit grey "
                                   "or palette PNG whose pixel values are class ids.")
            values = np.asarray(image)
    except DatasetError:
        raise
    except Exception as error:  # Pillow raises many types for a bad file
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DatasetError(f"{path}: not a readable mask ({reason}). Replace the file, or remove it.") from None
    if values.ndim == 3:
        # Grey or palette with alpha: the index is the first band.
        values = values[..., 0]
    if values.dtype == bool:
        return values.astype(np.uint8)
    if values.size and (values.max() > IGNORE_LABEL or values.min() < 0):
        outside = values.max() if values.max() > IGNORE_LABEL else values.min()
        raise DatasetError(
            f"{path}: holds the value {outside}; class ids are 0..{IGNORE_LABEL - 1} and "
            f"{IGNORE_LABEL} marks ignored pixels. Save the mask as 8-bit class ids."
        )
    return values.astype(np.uint8)


def write_mask_png(path: str, class_map: np.ndarray, n_classes: int) -> None:
    """Writes a class-index map as a palette PNG: values are class ids, colours the book's.

    Any viewer shows the mask in the classes' colours (`class_colors`, ignored pixels
    `IGNORE_COLOR`), and `read_mask_png` reads the ids back.

    Args:
        path: str. The `.png` file.
        class_map: int array `(H, W)`. Class ids below `n_classes`, or `IGNORE_LABEL`.
        n_classes: int. Number of classes, at most `IGNORE_LABEL`.
    """
    palette = np.zeros((IGNORE_LABEL + 1, 3), dtype=np.uint8)
    palette[:n_classes] = class_colors(n_classes)
    palette[IGNORE_LABEL] = IGNORE_COLOR
    image = PIL.Image.fromarray(np.asarray(class_map, dtype=np.uint8), mode="L")
    image = image.convert("P")
    image.putpalette(palette.ravel().tolist())
    image.save(path, format="PNG")



def images_by_stem(data_path: str) -> dict[str, list[str]]:
    """The image files of a folder (not its subfolders) by stem: `{stem: [file name, ...]}`."""
    images: dict[str, list[str]] = {}
    for name in list_folder(data_path, "make it readable, or give the right --data-path"):
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(data_path, name)):
            images.setdefault(os.path.splitext(name)[0], []).append(name)
    return images


def list_masks(folder: str) -> list[str]:
    """The `.png` masks of a mask folder, sorted by name.

    Raises:
        DatasetError: for a JPEG in the folder (its compression changes class ids) or no mask at all.
    """
    names = list_folder(folder, "make it readable, or give the right --train-labels/--test-labels/--val-labels")
    lossy = [name for name in names if name.lower().endswith(LOSSY_EXTENSIONS)]
    if lossy:
        raise DatasetError(f"{os.path.join(folder, lossy[0])}: a JPEG mask; JPEG compression changes pixel values, so "
                           "class ids do not survive it. Save the masks as PNG.")
    masks = [name for name in names
             if name.lower().endswith(MASK_SUFFIX) and os.path.isfile(os.path.join(folder, name))]
    if not masks:
        raise DatasetError(f"{folder}: no .png mask in this folder. Put one <image stem>.png class-index mask per "
                           "image there, e.g. with utils/generate_gt_segmentation.py --save-format png.")
    return masks


def load_mask_folder(folder: str, data_path: str, height: int, width: int, fit_size: str = "refuse",
                     n_classes: int | None = None) -> LabelSet:
    """Reads and checks a folder of PNG class-index masks, one per image of `data_path`.

    Args:
        folder: str. The mask folder, `<image stem>.png` each.
        data_path: str. The folder of the images.
        height: int. `--height`.
        width: int. `--width`.
        fit_size: str. `--fit-size`: "refuse" requires `height` x `width` images (the book's check);
            "resize" scales each map to that size (nearest neighbour); "crop" keeps them as they are.
            Defaults to "refuse".
        n_classes: int or None. The class count when the names are known; None counts it from the
            largest class id found.

    Returns:
        A `LabelSet` keyed by image file name, in the masks' order.

    Raises:
        DatasetError: one line naming the file, the problem and the fix: a mask without an image,
            an image name shared by two files, a mask of another size than its image, a class id
            beyond `n_classes`, an RGB or unreadable mask, an image `check_image` refuses.
    """
    images = images_by_stem(data_path)
    packed: dict[str, PackedClassMap] = {}
    largest = 0
    has_ignore = False
    for mask_name in list_masks(folder):
        mask_path = os.path.join(folder, mask_name)
        stem = os.path.splitext(mask_name)[0]
        candidates = images.get(stem, [])
        if not candidates:
            raise DatasetError(f"{mask_path}: a mask without an image: no {stem}.jpg, .jpeg or .png in {data_path}. "
                               "Add the image, or remove the mask.")
        if len(candidates) > 1:
            raise DatasetError(f"{mask_path}: its stem names {len(candidates)} images ({', '.join(candidates)}) in "
                               f"{data_path}. Rename all but one.")
        image_name = candidates[0]
        class_map = read_mask_png(mask_path)
        _, size = image_header(os.path.join(data_path, image_name))
        if size != (class_map.shape[1], class_map.shape[0]):
            raise DatasetError(f"{mask_path}: mask is {class_map.shape[1]}x{class_map.shape[0]} but its image "
                               f"{image_name} is {size[0]}x{size[1]}. Save the mask at its image's size.")
        if fit_size == "refuse":
            check_image(os.path.join(data_path, image_name), height, width)
        counts = np.bincount(class_map.ravel(), minlength=IGNORE_LABEL + 1)
        ids = np.flatnonzero(counts[:IGNORE_LABEL])
        has_ignore = has_ignore or bool(counts[IGNORE_LABEL])
        if n_classes is not None and ids.size and ids[-1] >= n_classes:
            raise DatasetError(
                f"{mask_path}: holds class id {ids[-1]}, beyond the {n_classes} classes named (ids "
                f"0..{n_classes - 1}, {IGNORE_LABEL} ignored). Fix the mask, or name every class with --classes."
            )
        largest = max(largest, int(ids[-1]) if ids.size else 0)
        if fit_size == "resize":
            class_map = resize_labels(class_map, height, width)
        packed[image_name] = PackedClassMap.pack(class_map)
    counted = n_classes is None
    if counted:
        n_classes = largest + 1
        if n_classes < 2:
            raise DatasetError(f"{folder}: the masks hold only class 0 (background). Give --classes NAMES to "
                               "set the classes, or check the masks' values (class ids, not colours).")
    return LabelSet(path=folder, masks=ClassMaps(packed), n_classes=n_classes, has_ignore=has_ignore,
                    counted=counted)
