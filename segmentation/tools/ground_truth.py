"""Ground-truth segmentation masks from VIA annotations (section 12.4 of the book).

The book's tool: reads a VGG Image Annotator project (`-j`, relative to `-p/--data-path`), paints
each image's regions into a one-hot mask, and saves `{image filename: uint8 mask (H, W, n_classes)}`
with `np.save` (`--save-filename`, relative to the current directory as in the book). Channel 0 is
background: the pixels outside every region. A later region paints over an earlier one. `--show`
saves each input and its coloured ground truth (Figures 12.1.1 / 12.4.2).

Additions to the book's tool: VIA 1.x files and VIA's other shapes, class names (`--classes`, stored
beside the output: `segmentation_train.classes.json`, or `classes.json` in a mask folder), the class
attribute (`--class-attribute`), a default class, `--resize` for photos that are not the network's
size, `--save-format png` (a folder of `<image stem>.png` palette masks whose pixel values are class
ids, the training program's other ground-truth format), a summary, and one-line errors (exit status
2) that leave nothing written.

    python3 utils/generate_gt_segmentation.py -j segmentation_train.json -p dataset/drinks \\
        --save-filename segmentation_train.npy
"""

import argparse
import logging
import os
import shutil
import tempfile

import keras
import matplotlib.image
import numpy as np
from skimage import io, transform

from segmentation.classes import DRINKS_VIA_NAMES, IGNORE_LABEL, colorize
from segmentation.errors import ProgramError, report_error
from segmentation.ground_truth.class_names import write_class_names
from segmentation.ground_truth.mask_folders import write_mask_png
from segmentation.paths import (
    LABELS_SUFFIX,
    MASK_FOLDER_CLASSES,
    MASK_SUFFIX,
    TRAIN_LABELS,
    TRAIN_VIA_JSON,
    class_names_path,
)
from segmentation.process_state import kept_process_state
from segmentation.tools import via

SAVE_FORMATS = ("npy", "png")

JPEG_QUALITY = 95


def build_parser() -> argparse.ArgumentParser:
    """The book's flags (`-j`, `-p`, `--save-filename`, `--show`) and ours."""
    parser = argparse.ArgumentParser(
        description="Convert a VIA project (polygon and other regions) into the book's "
        "ground-truth file: np.save of {image filename: uint8 one-hot mask (H, W, n_classes)}."
    )
    parser.add_argument(
        "-j", "--json", default=TRAIN_VIA_JSON, metavar="FILE",
        help="VIA 1.x or 2.x project file, relative to --data-path (default: %(default)s)",
    )
    parser.add_argument(
        "-p", "--data-path", default="dataset/drinks", metavar="DIR",
        help="folder of the images named in the project (default: %(default)s)",
    )
    parser.add_argument(
        "--save-filename", default=TRAIN_LABELS, metavar="FILE",
        help="output .npy file, relative to the current directory as in the book; the training "
        "program looks for it in its --data-path; with --save-format png the mask folder, '.npy' "
        "left out (default: %(default)s)",
    )
    parser.add_argument(
        "--save-format", choices=SAVE_FORMATS, default="npy",
        help="'npy': the book's np.save of one-hot masks; 'png': a folder of <image stem>.png palette "
        "masks whose pixel values are class ids, for --train-labels/--test-labels FOLDER "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--show", action="store_true",
        help="also save each input and its coloured ground truth as PNGs (default: %(default)s)",
    )
    parser.add_argument(
        "--show-dir", default=None, metavar="DIR",
        help="folder for the --show PNGs (default: <data-path>/ground_truth)",
    )
    parser.add_argument(
        "--num-classes", type=int, default=4, metavar="N",
        help="classes including background; ignored when --classes is given (default: %(default)s)",
    )
    parser.add_argument(
        "--classes", type=_class_list, default=None, metavar="NAME,NAME,...",
        help="names of classes 1, 2, ...: regions may name their class, and the number of "
        "classes is their count + 1, e.g. water_bottle,soda_can,juice_can (default: %(default)s)",
    )
    parser.add_argument(
        "--class-attribute", default=via.DEFAULT_CLASS_ATTRIBUTE, metavar="NAME",
        help="region attribute that holds the class (default: %(default)s)",
    )
    parser.add_argument(
        "--default-class", default=None, metavar="CLASS",
        help="class (number or name) for regions without the class attribute; without it such "
        "regions are an error (default: %(default)s)",
    )
    parser.add_argument(
        "--resize", type=_image_size, default=None, metavar="HxW",
        help="resize images and regions together to H rows by W columns, e.g. 480x640, writing "
        "the resized images to --resized-path (default: %(default)s)",
    )
    parser.add_argument(
        "--resized-path", default=None, metavar="DIR",
        help="folder for the --resize images, under their original names; train with it as "
        "--data-path (default: <data-path>/resized_<H>x<W>)",
    )
    return parser


def _class_list(text: str) -> list[str]:
    """Parses --classes: distinct, non-empty, comma-separated names."""
    names = [name.strip() for name in text.split(",")]
    if not all(names) or len({name.casefold() for name in names}) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated names, received {text!r}")
    return names


def _image_size(text: str) -> tuple[int, int]:
    """Parses --resize `HxW` into (height, width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected HxW with positive integers, e.g. 480x640; received {text!r}")
    return int(parts[0]), int(parts[1])


def read_rgb(path: str) -> np.ndarray:
    """Reads an image as uint8 RGB (grey is repeated, alpha dropped).

    Args:
        path: str. Image file.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        via.ViaError: the file cannot be decoded as an image.
    """
    try:
        image = io.imread(path)
    except (OSError, ValueError, SyntaxError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise via.ViaError(f"{path}: cannot read the image ({reason}); replace or remove the file") from None
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise via.ViaError(f"{path}: not an RGB image (array shape {image.shape}); give RGB images")
    if image.dtype != np.uint8:
        image = (255 * (image / np.iinfo(image.dtype).max)).round().astype(np.uint8)
    return image[..., :3]


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes a uint8 RGB image to (height, width) with anti-aliasing.

    Args:
        image: uint8 array (H, W, 3).
        size: (height, width).

    Returns:
        uint8 array (height, width, 3).
    """
    resized = transform.resize(image, size, order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(resized.round(), 0, 255).astype(np.uint8)


def _save_image(path: str, image: np.ndarray, written: list[str]) -> None:
    """Saves an RGB image (JPEG quality 95 for .jpg), remembering it and new folders for clean-up."""
    folder = os.path.abspath(os.path.dirname(path) or ".")
    missing = []
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # Outermost first, so that removing in reverse order empties each folder before its parent.
    written.extend(reversed(missing))
    written.append(path)
    is_jpeg = os.path.splitext(path)[1].lower() in (".jpg", ".jpeg")
    matplotlib.image.imsave(path, image, pil_kwargs={"quality": JPEG_QUALITY} if is_jpeg else None)


def convert(
    project: via.Project,
    data_path: str,
    num_classes: int,
    resize: tuple[int, int] | None = None,
    resized_path: str | None = None,
    show_dir: str | None = None,
    written: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Rasterises every image of a project into the book's one-hot masks.

    Args:
        project: via.Project. The parsed annotations.
        data_path: str. Folder the image file names are relative to.
        num_classes: int. Classes including background.
        resize: (height, width) or None. Resize images and regions to this size. Defaults to None.
        resized_path: str or None. Where resized images go (required with `resize`).
        show_dir: str or None. When given, save `<name>-input.png` and `<name>-gt.png` there.
        written: list of str or None. Receives the path of every file saved and folder made,
            for clean-up.

    Returns:
        {image filename: uint8 array (H, W, num_classes)}.

    Raises:
        via.ViaError: an image is missing or unreadable.
    """
    written = [] if written is None else written
    for image in project.images:
        path = os.path.join(data_path, image.filename)
        if not os.path.isfile(path):
            raise via.ViaError(
                f"{project.source}: image {image.filename!r}: no file {path}; check --data-path "
                "or remove the entry"
            )
    masks = {}
    progress = keras.utils.Progbar(len(project.images), unit_name="image")
    for image in project.images:
        pixels = read_rgb(os.path.join(data_path, image.filename))
        regions = image.regions
        if resize is not None:
            scale_y, scale_x = resize[0] / pixels.shape[0], resize[1] / pixels.shape[1]
            regions = [
                via.Region(via.scale_shape(region.shape, scale_y, scale_x), region.class_id, region.shape_name)
                for region in regions
            ]
            pixels = resize_rgb(pixels, resize)
            _save_image(os.path.join(resized_path, image.filename), pixels, written)
        label_map = via.rasterize(regions, pixels.shape[0], pixels.shape[1])
        masks[image.filename] = via.to_one_hot(label_map, num_classes)
        if show_dir is not None:
            stem = os.path.join(show_dir, os.path.splitext(image.filename)[0])
            _save_image(f"{stem}-input.png", pixels, written)
            _save_image(f"{stem}-gt.png", colorize(label_map, num_classes), written)
        progress.add(1)
    return masks


def save_masks(masks: dict[str, np.ndarray], save_filename: str) -> str:
    """Saves the masks dict with `np.save`, atomically (temporary file, then rename).

    Args:
        masks: dict. {image filename: one-hot mask}.
        save_filename: str. Target; `.npy` is appended when missing, as `np.save` does.

    Returns:
        The path written.
    """
    if not save_filename.endswith(".npy"):
        save_filename += ".npy"
    folder = os.path.dirname(os.path.abspath(save_filename))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".npy.tmp", delete=False) as file:
        temporary = file.name
        np.save(file, masks, allow_pickle=True)
    os.replace(temporary, save_filename)
    return save_filename


def mask_folder_path(save_filename: str) -> str:
    """The mask folder `--save-format png` writes: `--save-filename` without a `.npy` ending."""
    folder = save_filename[: -len(LABELS_SUFFIX)] if save_filename.endswith(LABELS_SUFFIX) else save_filename
    return folder.rstrip(os.sep) or folder


def check_mask_folder(project: via.Project, folder: str, num_classes: int) -> None:
    """Refuses, before anything is written, a mask folder that cannot hold this project's masks.

    Raises:
        via.ViaError: for more classes than an 8-bit mask holds, an image in a subfolder or two
            images of one stem (their masks would share a name), or a target that is a file or a
            folder holding anything but masks (it is replaced whole).
    """
    if num_classes > IGNORE_LABEL:
        raise via.ViaError(f"--save-format png: {num_classes} classes; an 8-bit mask holds class ids "
                           f"0..{IGNORE_LABEL - 1}. Use --save-format npy")
    stems = {}
    for image in project.images:
        if os.path.basename(image.filename) != image.filename:
            raise via.ViaError(f"{project.source}: image {image.filename!r} is in a subfolder; a mask folder pairs "
                               "<image stem>.png with the images at the top of --data-path. Use --save-format npy")
        stem = os.path.splitext(image.filename)[0]
        if stem in stems:
            raise via.ViaError(f"{project.source}: images {stems[stem]!r} and {image.filename!r} would share the "
                               f"mask {stem}{MASK_SUFFIX}; rename one of them")
        stems[stem] = image.filename
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise via.ViaError(f"{folder}: is a file, not a mask folder; choose another --save-filename")
    if os.path.isdir(folder):
        others = [name for name in os.listdir(folder)
                  if not (name.lower().endswith(MASK_SUFFIX) or name == MASK_FOLDER_CLASSES)]
        if others:
            raise via.ViaError(f"{folder}: holds {others[0]!r}, not a mask; the folder is replaced whole, so "
                               "choose another --save-filename")


def save_mask_folder(masks: dict[str, np.ndarray], folder: str, class_names: list[str] | None) -> str:
    """Saves one palette PNG class-index mask per image, `<image stem>.png`, replacing the folder whole.

    The masks are written to a temporary folder beside it, then renamed into place, so an
    interruption leaves the earlier folder as it was.

    Args:
        masks: dict. {image filename: one-hot mask (H, W, num_classes)}.
        folder: str. The mask folder (checked by `check_mask_folder`).
        class_names: list of str or None. Names of classes 0 .. n - 1, stored in its `classes.json`.

    Returns:
        The folder written.
    """
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(folder)}.", suffix=".partial")
    try:
        for filename, mask in masks.items():
            stem = os.path.splitext(filename)[0]
            write_mask_png(os.path.join(temporary, stem + MASK_SUFFIX), np.argmax(mask, axis=-1), mask.shape[-1])
        if class_names:
            write_class_names(temporary, class_names)
        if os.path.isdir(folder):
            # A folder cannot be renamed over a non-empty one: move the earlier masks aside first.
            previous = temporary[: -len(".partial")] + ".previous"
            os.replace(folder, previous)
            os.replace(temporary, folder)
            shutil.rmtree(previous)
        else:
            os.replace(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return folder


def format_summary(
    masks: dict[str, np.ndarray], project: via.Project, class_names: list[str], save_filename: str
) -> str:
    """The end-of-run summary: images, regions and pixels per class, images with no objects.

    Args:
        masks: dict. The converted masks.
        project: via.Project. The annotations they came from.
        class_names: list of str. Names of classes 0 .. n-1.
        save_filename: str. Where the masks were saved.

    Returns:
        Multi-line text.
    """
    num_classes = len(class_names)
    region_counts = np.zeros(num_classes, dtype=np.int64)
    for image in project.images:
        for region in image.regions:
            region_counts[region.class_id] += 1
    pixel_counts = np.zeros(num_classes, dtype=np.int64)
    empty = 0
    for mask in masks.values():
        counts = mask.reshape(-1, num_classes).sum(axis=0, dtype=np.int64)
        pixel_counts += counts
        empty += int(counts[1:].sum() == 0)
    total = max(int(pixel_counts.sum()), 1)
    sizes = sorted({f"{mask.shape[0]}x{mask.shape[1]}" for mask in masks.values()})
    lines = [
        f"Saved {save_filename}: {len(masks)} images ({', '.join(sizes) or 'none'}), "
        f"{num_classes} classes, from {project.source} (VIA {project.version}.x)",
        f"{'class':<20} {'regions':>8} {'pixels':>12} {'share':>7}",
    ]
    for class_id, name in enumerate(class_names):
        regions = "-" if class_id == 0 else str(region_counts[class_id])
        lines.append(
            f"{f'{class_id} {name}':<20} {regions:>8} {pixel_counts[class_id]:>12} "
            f"{100 * pixel_counts[class_id] / total:>6.2f}%"
        )
    lines.append(f"Images with no objects: {empty}")
    return "\n".join(lines)


@kept_process_state()
def main(argv: list[str] | None = None) -> int:
    """Runs the converter; returns the exit status (2 on bad input, with its one line `error: <message>`)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s")
    if args.classes:
        num_classes = len(args.classes) + 1
        class_names = ["background", *args.classes]
    else:
        num_classes = args.num_classes
        known = DRINKS_VIA_NAMES if num_classes == len(DRINKS_VIA_NAMES) + 1 else ()
        class_names = ["background", *known, *(f"class_{i}" for i in range(len(known) + 1, num_classes))]
    resized_path = None
    if args.resize is not None:
        height, width = args.resize
        resized_path = args.resized_path or os.path.join(args.data_path, f"resized_{height}x{width}")
    show_dir = (args.show_dir or os.path.join(args.data_path, "ground_truth")) if args.show else None
    written = []
    try:
        project = via.load_project(
            os.path.join(args.data_path, args.json),
            num_classes=num_classes,
            class_attribute=args.class_attribute,
            class_names=args.classes,
            default_class=args.default_class,
        )
        if args.save_format == "png":
            check_mask_folder(project, mask_folder_path(args.save_filename), num_classes)
        masks = convert(project, args.data_path, num_classes, args.resize, resized_path, show_dir, written)
    except ProgramError as error:
        for path in reversed(written):
            if os.path.isfile(path):
                os.remove(path)
            elif os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
        return report_error(error, None)
    stored_names = class_names if args.classes else None
    if args.save_format == "png":
        save_filename = save_mask_folder(masks, mask_folder_path(args.save_filename), stored_names)
    else:
        save_filename = save_masks(masks, args.save_filename)
        names_path = class_names_path(save_filename)
        if stored_names:
            write_class_names(save_filename, stored_names)
        elif os.path.isfile(names_path):
            # Names of an earlier conversion would be taken for these masks' names.
            os.remove(names_path)
    print(format_summary(masks, project, class_names, save_filename))
    if stored_names:
        print(f"Class names saved in {class_names_path(save_filename)}")
    if show_dir is not None:
        print(f"Inputs and ground truths saved in {show_dir}")
    if resized_path is not None:
        print(f"Resized images saved in {resized_path}; use it as the training --data-path")
    return 0

