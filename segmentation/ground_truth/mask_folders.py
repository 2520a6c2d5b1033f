"""Ground truth as folders of PNG class-index masks, and the class names stored beside the labels.

The book's ground truth is a `.npy` dict of one-hot masks (`segmentation.ground_truth.book_labels`). A mask folder is
the other format the program reads: `--train-labels train_masks` names a folder in `--data-path`
holding `<image stem>.png` for each image of the split, the image itself in `--data-path`. Each
mask is an 8-bit grey or palette PNG (VOC-style palette PNGs are read by index, not colour) whose
pixel values are class ids: 0 background, 1, 2, ... the classes, and `IGNORE_LABEL` (255) pixels
left out of the loss and every score. RGB masks are refused: a colour is not a class id.

The class count is that of `--classes NAMES` (1 + the names), of the names stored with the labels
(`classes.json` in the mask folder, `<stem>.classes.json` beside a `.npy` file:
`paths.class_names_path`), or else the largest class id found + 1. `--classes` overrides stored
names. `load_split` reads either format; `agree_on_classes` and `check_images_have_masks` check the
splits against each other.
"""

import json
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import PIL.Image

from segmentation.classes import IGNORE_COLOR, IGNORE_LABEL, class_colors, split_class_names
from segmentation.errors import DatasetError
from segmentation.ground_truth.book_labels import ClassMaps, LabelSet, PackedClassMap, load_labels
from segmentation.ground_truth.fit_to_size import resize_labels
from segmentation.images import IMAGE_EXTENSIONS, check_image, image_header
from segmentation.paths import MASK_SUFFIX, class_names_path, list_folder

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


def read_class_names(labels_path: str) -> tuple[str, ...] | None:
    """The class names stored with a ground truth (`paths.class_names_path`), or None if there are none.

    Args:
        labels_path: str. A mask folder or a `.npy` file.

    Returns:
        The names of classes 0 .. n - 1, background first.

    Raises:
        DatasetError: if the file is not a JSON object whose `class_names` lists two or more distinct names.
    """
    path = class_names_path(labels_path)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            names = json.load(file)["class_names"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        # json's C decoder raises RecursionError for arrays nested past Python's recursion limit.
        reason = "JSON nested too deeply" if isinstance(error, RecursionError) else f"{type(error).__name__}: {error}"
        raise DatasetError(f"{path}: cannot read the class names ({reason}). Expected "
                           '{"class_names": ["background", "name 1", ...]}; fix or delete the file.') from None
    valid = isinstance(names, list) and len(names) >= 2 and all(isinstance(name, str) and name for name in names)
    if not valid or len(set(names)) != len(names):
        raise DatasetError(f"{path}: 'class_names' must list two or more distinct names, background first; "
                           "fix or delete the file.")
    if len(names) > IGNORE_LABEL:
        raise DatasetError(f"{path}: 'class_names' lists {len(names)} names; at most {IGNORE_LABEL} classes fit a "
                           f"class-index mask (ids 0..{IGNORE_LABEL - 1}; {IGNORE_LABEL} marks ignored pixels). "
                           "Merge classes, or fix the file.")
    return tuple(names)


def write_class_names(labels_path: str, names: Sequence[str]) -> str:
    """Stores class names with a ground truth (atomically); returns the file written.

    Args:
        labels_path: str. The mask folder or `.npy` file they name the classes of.
        names: sequence of str. Names of classes 0 .. n - 1, background first.
    """
    path = class_names_path(labels_path)
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".json.tmp", delete=False, encoding="utf-8") as file:
        json.dump({"class_names": list(names)}, file, indent=1)
        file.write("\n")
    os.replace(file.name, path)
    return path


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


def load_split(path: str, data_path: str, height: int, width: int, fit_size: str = "refuse",
               classes: str | None = None) -> LabelSet:
    """Reads one split's ground truth: the book's `.npy` file or a folder of PNG masks, with its class names.

    Args:
        path: str. The `.npy` file or mask folder (`--train-labels`/`--test-labels` in `--data-path`).
        data_path: str. The folder of the images.
        height: int. `--height`.
        width: int. `--width`.
        fit_size: str. `--fit-size`. Defaults to "refuse".
        classes: str or None. `--classes NAMES`, which overrides the names stored with the labels.

    Returns:
        The `LabelSet`, its `class_names` set when known.

    Raises:
        DatasetError: for bad labels, or names that do not match the masks' class count.
    """
    flag_names = ("background", *split_class_names(classes)) if classes else None
    stored = None if flag_names else read_class_names(path)
    names = flag_names or stored
    if os.path.isdir(path):
        labels = load_mask_folder(path, data_path, height, width, fit_size, len(names) if names else None)
    else:
        labels = load_labels(path, data_path, height, width, fit_size)
    if names is not None and len(names) != labels.n_classes:
        source = "--classes" if flag_names else class_names_path(path)
        raise DatasetError(
            f"{path}: the masks have {labels.n_classes} classes but {source} names {len(names)} (background "
            f"included). Name the {labels.n_classes - 1} classes after background, in class-id order."
        )
    labels.class_names = names
    return labels


def agree_on_classes(*splits: LabelSet | None) -> None:
    """Makes the splits of a run agree on the class count and names, in place.

    A mask folder's count found from its largest class id (`counted`) grows to the largest of
    the run (a test set may lack the last class); names known for one split name the others of
    its count. Splits that still differ in count are left for the caller to refuse.

    Args:
        *splits: LabelSet or None. The run's splits, the training set first.

    Raises:
        DatasetError: if two splits name their classes differently.
    """
    present = [split for split in splits if split is not None]
    if not present:
        return
    largest = max(split.n_classes for split in present)
    for split in present:
        if split.counted:
            split.n_classes = largest
    named = [split for split in present if split.class_names is not None]
    for split in named[1:]:
        if split.n_classes == named[0].n_classes and split.class_names != named[0].class_names:
            raise DatasetError(
                f"{class_names_path(split.path)}: names the classes {', '.join(split.class_names)} but "
                f"{class_names_path(named[0].path)} names them {', '.join(named[0].class_names)}. Make them agree, "
                "or give --classes."
            )
    for split in present:
        if split.class_names is None and named and split.n_classes == named[0].n_classes:
            split.class_names = named[0].class_names


def check_images_have_masks(data_path: str, label_paths: Sequence[str | None]) -> None:
    """Refuses an image of `data_path` that none of the run's mask folders has a mask for.

    Only when the run's ground truth is all mask folders (those of `label_paths` that exist): a
    `.npy` split's images are known only from its keys.

    Args:
        data_path: str. The folder of the images.
        label_paths: sequence of str or None. Every split's labels path the run names.

    Raises:
        DatasetError: naming the first such image, the folders and the fix.
    """
    existing = [path for path in label_paths if path and os.path.exists(path)]
    if not existing or not all(os.path.isdir(path) for path in existing):
        return
    stems = set()
    for folder in existing:
        names = list_folder(folder, "make it readable, or give the right --train-labels/--test-labels/--val-labels")
        stems.update(os.path.splitext(name)[0] for name in names if name.lower().endswith(MASK_SUFFIX))
    unmasked = [name for stem, names in images_by_stem(data_path).items() if stem not in stems for name in names]
    if unmasked:
        more = f" (and {len(unmasked) - 1} more)" if len(unmasked) > 1 else ""
        folders = " or ".join(f"{os.path.basename(os.path.normpath(folder))}/" for folder in existing)
        stem = os.path.splitext(unmasked[0])[0]
        raise DatasetError(
            f"{os.path.join(data_path, unmasked[0])}: an image without a mask{more} in {folders}. Add its mask "
            f"{stem}{MASK_SUFFIX} to the folder of its split, or move the image out of --data-path."
        )
