"""Batch inference on a folder of photos, and export for serving (project additions).

The book segments one image at a time (`--image-file`). `predict_directory`
segments every JPEG or PNG image of a folder, whatever its size: each image is
resized to the network's input, the images go through the network a batch at
a time, and each predicted class map is resized back to its image's size
with nearest-neighbour sampling (so no new class appears on a border); with
`--fit-size crop` each image is segmented whole instead, in tiles of the
network's input size (`segmentation.ground_truth.fit_to_size`). With `--tta` each prediction
is averaged with its mirror image's (`segmentation.tta`). For each image it
writes the coloured mask (the book's colours) and the image with the mask
blended over its objects.

`export_model` writes the network in each `--export-format`: a Keras 3
`.keras` file, a TensorFlow SavedModel (its `serve` endpoint), an ONNX file
(tf2onnx, `requirements-export.txt`) and a LiteRT `.tflite` file of built-in
operators only, for devices. Each maps float32 images in [0, 1] to per-pixel
class probabilities.

Nothing the user already has is overwritten unless they ask for it.
"""

import ctypes
import dataclasses
import errno
import importlib
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from segmentation import backend
from segmentation.atomic import write_atomically
from segmentation.classes import colorize
from segmentation.config import BOOK
from segmentation.errors import DatasetError, InferenceError, SaveError, UsageError, describe_os_error
from segmentation.figures import save_png
from segmentation.ground_truth.fit_to_size import predict_tiled, resize_image, resize_labels
from segmentation.images import IMAGE_EXTENSIONS, decode_image, image_to_float
from segmentation.paths import (
    EXPORT_SUFFIXES,
    KERAS_SUFFIX,
    LITERT_SUFFIX,
    ONNX_SUFFIX,
    PREDICTION_DIR,
    SAVED_MODEL_FILE,
    check_output_dir,
    list_folder,
)
from segmentation.tta import flip_averaged

# Weight of the coloured mask over an object's pixels in the overlay; background is left as it is.
OVERLAY_OPACITY = 0.5
# Rows of an image blended at a time in the overlay.
OVERLAY_ROWS = 256
# The optional converters (beyond requirements.txt) each --export-format needs; LiteRT's is TensorFlow's own.
EXPORT_MODULES = {"onnx": ("tf2onnx", "onnx")}
EXPORT_REQUIREMENTS = "requirements-export.txt"
# tf2onnx 1.17's default opset, fixed so that the file does not change with a later tf2onnx's default.
ONNX_OPSET = 15
# How each export is loaded, for the log line.
EXPORT_LOADERS = {
    "keras": "keras.saving.load_model",
    "savedmodel": "tf.saved_model.load(...).serve",
    "onnx": "onnxruntime.InferenceSession",
    "litert": "ai_edge_litert.interpreter.Interpreter",
}

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PlannedImage:
    """One image to segment and the two files it becomes.

    Attributes:
        image_path: str. The input image.
        mask_path: str. The coloured mask to write, `<stem>-mask.png`.
        overlay_path: str. The image with the mask blended over it, `<stem>-overlay.png`.
    """

    image_path: str
    mask_path: str
    overlay_path: str


@dataclasses.dataclass
class PredictionSummary:
    """What `predict_directory` did.

    Attributes:
        written: list of PlannedImage. Images segmented, with their outputs.
        skipped: list of (str, str). Images that could not be read: the path, and the
            reason as one line that begins with the path.
    """

    written: list[PlannedImage]
    skipped: list[tuple[str, str]]


def images_to_predict(directory: str) -> list[str]:
    """The JPEG and PNG files of a folder (not its subfolders), sorted by name.

    A symbolic link that leads nowhere (a loop, or a missing target) is listed too, so that
    reading it fails and the run names it among the skipped images.

    Args:
        directory: str. The folder.

    Returns:
        Paths of the files (and broken links) whose names end in `.jpg`, `.jpeg` or `.png` (any case).

    Raises:
        InferenceError: if the folder does not exist or holds no such file.
        DatasetError: if it cannot be listed (no permission, a lost mount).
    """
    if not os.path.isdir(directory):
        raise InferenceError(f"--predict-dir {directory}: no such folder.")
    paths = [
        os.path.join(directory, name)
        for name in list_folder(directory, "make it readable, or give the right --predict-dir")
        if name.lower().endswith(IMAGE_EXTENSIONS) and _file_or_broken_link(os.path.join(directory, name))
    ]
    if not paths:
        raise InferenceError(
            f"--predict-dir {directory}: no .jpg, .jpeg or .png file in this folder. Give the folder of your images."
        )
    return paths


def _file_or_broken_link(path: str) -> bool:
    """Whether `path` is a file (through links), or a symbolic link that reaches nothing."""
    return os.path.isfile(path) or (os.path.islink(path) and not os.path.exists(path))


def output_stems(image_paths: Sequence[str]) -> list[str]:
    """Distinct names the outputs of images in one folder begin with, one per image, in order.

    Each image keeps its stem (`b.PNG` becomes `b`); images that share a stem (`a.jpg`, `a.png`)
    join their extension to it (`a_jpg`, `a_png`). A name another image already has, its own stem
    (`a_png.png`) or one told apart from it only by capitals (on file systems that ignore them),
    gets the first free number instead (`a_png_2`).

    Args:
        image_paths: sequence of str. The images.

    Returns:
        One stem per image, no two equal when compared without regard to case.
    """
    names = [os.path.basename(path) for path in image_paths]
    stems = [os.path.splitext(name)[0] for name in names]
    wanted = [stem if stems.count(stem) == 1 else name.replace(".", "_") for name, stem in zip(names, stems)]
    claimed = {stem.casefold() for stem in wanted}
    chosen: list[str] = [""] * len(wanted)
    taken: set[str] = set()
    # Images that keep their own stem first, so that a joined name never takes another image's stem.
    for index in sorted(range(len(wanted)), key=lambda index: wanted[index] != stems[index]):
        stem, number = wanted[index], 2
        while stem.casefold() in taken or (stem != wanted[index] and stem.casefold() in claimed):
            stem, number = f"{wanted[index]}_{number}", number + 1
        taken.add(stem.casefold())
        chosen[index] = stem
    return chosen


def plan_outputs(image_paths: Sequence[str], output_dir: str, overwrite: bool = False) -> list[PlannedImage]:
    """Names each image's mask and overlay, refusing to overwrite anything.

    The outputs are `<stem>-mask.png` and `<stem>-overlay.png`, each image's stem
    distinct (`output_stems`): when two images share a stem (`a.jpg`, `a.png`) their
    extension joins it (`a_jpg`, `a_png`), and a name taken already gets a number.

    Args:
        image_paths: sequence of str. The images, all in one folder.
        output_dir: str. Where the outputs go.
        overwrite: bool. Allow replacing outputs of an earlier run. Defaults to False.

    Returns:
        One `PlannedImage` per image, in order.

    Raises:
        InferenceError: if `output_dir` is the images' folder, or (without
            `overwrite`) an output file already exists.
    """
    if image_paths and os.path.realpath(output_dir) == os.path.realpath(os.path.dirname(image_paths[0])):
        raise InferenceError(
            f"--predict-output {output_dir}: this is the folder of the images; the masks would mix with "
            "them. Choose another --predict-output."
        )
    planned = [
        PlannedImage(path, os.path.join(output_dir, f"{stem}-mask.png"),
                     os.path.join(output_dir, f"{stem}-overlay.png"))
        for path, stem in zip(image_paths, output_stems(image_paths))
    ]
    existing = [
        target for item in planned for target in (item.mask_path, item.overlay_path) if os.path.lexists(target)
    ]
    if existing and not overwrite:
        raise InferenceError(
            f"--predict-output {output_dir}: {len(existing)} output file(s) exist already, e.g. {existing[0]}. "
            "Choose another --predict-output, or give --overwrite to replace them."
        )
    return planned


def to_network_input(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An 8-bit RGB image of any size as the network's float32 input in [0, 1].

    Args:
        image: uint8 array `(H, W, 3)`.
        height: int. The network's input height.
        width: int. The network's input width.

    Returns:
        float32 array `(height, width, 3)`; an image of that size already is
        only rescaled to [0, 1] (exactly as `--evaluate` reads it).
    """
    # The same scaling as `--fit-size resize` gives the training and test images.
    return resize_image(image, height, width)


def overlay(image: np.ndarray, labels: np.ndarray, opacity: float = OVERLAY_OPACITY) -> np.ndarray:
    """Blends the coloured mask over the objects of an image; background pixels stay as they were.

    Args:
        image: uint8 array `(H, W, 3)`.
        labels: int array `(H, W)`. Class per pixel, 0 = background.
        opacity: float. Weight of the mask colour on object pixels. Defaults to 0.5.

    Returns:
        uint8 array `(H, W, 3)`.
    """
    blended = image.copy()
    # A band of rows at a time, so that the float copies of a large image's blend stay small.
    for top in range(0, image.shape[0], OVERLAY_ROWS):
        band_labels, band = labels[top : top + OVERLAY_ROWS], blended[top : top + OVERLAY_ROWS]
        objects = band_labels != 0
        if objects.any():
            mixed = (1.0 - opacity) * band[objects] + opacity * colorize(band_labels[objects])
            band[objects] = np.round(mixed)
    return blended


def predict_directory(
    model: keras.Model,
    planned: Sequence[PlannedImage],
    output_dir: str,
    batch_size: int = 4,
    verbose: int = 1,
    fit_size: str = "refuse",
    tta: bool = False,
) -> PredictionSummary:
    """Segments images a batch at a time and writes each one's mask and overlay.

    An image that cannot be read is skipped (the summary names it and why), so
    one bad file does not stop a run over a thousand.

    Args:
        model: keras.Model. The FCN; its input shape sets the size images are resized to.
        planned: sequence of PlannedImage. From `plan_outputs`.
        output_dir: str. The outputs' folder, created if missing.
        batch_size: int. Images per `predict_on_batch`. Defaults to 4.
        verbose: int. 0 silent, otherwise a progress bar. Defaults to 1.
        fit_size: str. `--fit-size`: "crop" segments each image whole, in tiles of the
            network's input size (`fit_to_size.predict_tiled`), instead of resizing it.
            Defaults to "refuse" (images resized, as with "resize").
        tta: bool. `--tta`: average each prediction with its mirror image's
            (`tta.flip_averaged`). Defaults to False.

    Returns:
        A `PredictionSummary`.
    """
    height, width = model.input_shape[1:3]
    predict = flip_averaged(model.predict_on_batch) if tta else model.predict_on_batch
    if fit_size == "crop":
        return _predict_directory_tiled(predict, (height, width), planned, output_dir, batch_size, verbose)
    os.makedirs(output_dir, exist_ok=True)
    progress = keras.utils.Progbar(len(planned), verbose=1 if verbose else 0, unit_name="image")
    summary = PredictionSummary(written=[], skipped=[])
    for start in range(0, len(planned), batch_size):
        chunk = planned[start : start + batch_size]
        readable, originals = [], []
        for item in chunk:
            try:
                originals.append(decode_image(item.image_path))
                readable.append(item)
            except DatasetError as error:
                summary.skipped.append((item.image_path, str(error)))
        if readable:
            batch = np.stack([to_network_input(image, height, width) for image in originals])
            predicted = np.argmax(predict(batch), axis=-1).astype(np.uint8)
            for item, image, labels in zip(readable, originals, predicted):
                labels = resize_labels(labels, image.shape[0], image.shape[1])
                save_png(item.mask_path, colorize(labels))
                save_png(item.overlay_path, overlay(image, labels))
                summary.written.append(item)
        progress.add(len(chunk))
    return summary


def _predict_directory_tiled(predict: Callable[[np.ndarray], np.ndarray], tile: tuple[int, int],
                             planned: Sequence[PlannedImage], output_dir: str, batch_size: int,
                             verbose: int) -> PredictionSummary:
    """`predict_directory` for `--fit-size crop`: each image whole, its `tile`s `batch_size` at a time."""
    height, width = tile
    os.makedirs(output_dir, exist_ok=True)
    progress = keras.utils.Progbar(len(planned), verbose=1 if verbose else 0, unit_name="image")
    summary = PredictionSummary(written=[], skipped=[])
    for item in planned:
        try:
            image = decode_image(item.image_path)
        except DatasetError as error:
            summary.skipped.append((item.image_path, str(error)))
        else:
            probabilities = predict_tiled(predict, image_to_float(image), height, width, batch_size)
            labels = np.argmax(probabilities, axis=-1).astype(np.uint8)
            save_png(item.mask_path, colorize(labels))
            save_png(item.overlay_path, overlay(image, labels))
            summary.written.append(item)
        progress.add(1)
    return summary


def export_paths(path: str, formats: Sequence[str] = BOOK.export_format) -> dict[str, str]:
    """The files an `--export PATH` means, one per `--export-format`.

    Args:
        path: str. `--export` value; a trailing `.keras`, `.onnx` or `.tflite` is dropped.
        formats: sequence of str. Names from `config.EXPORT_FORMATS`. Defaults to keras and savedmodel.

    Returns:
        `{format: target}` in the order of `formats`: `PATH.keras`, the SavedModel folder
        `PATH`, `PATH.onnx`, `PATH.tflite`.
    """
    path = path.rstrip(os.sep) or path
    stem = path
    for suffix in filter(None, EXPORT_SUFFIXES.values()):
        if path.endswith(suffix):
            stem = path[: -len(suffix)]
            break
    return {export_format: stem + EXPORT_SUFFIXES[export_format] for export_format in formats}


def check_export_tools(formats: Sequence[str]) -> None:
    """Refuses a format whose converter is not installed (`requirements-export.txt`), before anything is built.

    Raises:
        UsageError: naming the format, the missing packages and the install command.
    """
    for export_format in formats:
        missing = []
        for module in EXPORT_MODULES.get(export_format, ()):
            try:
                importlib.import_module(module)
            except ImportError:
                missing.append(module)
        if missing:
            raise UsageError(
                f"--export-format {export_format} needs {' and '.join(missing)}, not installed here: "
                f"pip install -r {EXPORT_REQUIREMENTS} (or leave out --export-format {export_format})."
            )


def check_export_paths(path: str, overwrite: bool = False,
                       formats: Sequence[str] = BOOK.export_format) -> dict[str, str]:
    """Refuses an export that would replace something, before anything is built.

    Args:
        path: str. `--export` value.
        overwrite: bool. Allow replacing an earlier export. Defaults to False.
        formats: sequence of str. The `--export-format` values. Defaults to keras and savedmodel.

    Returns:
        `{format: target}`, as `export_paths`.

    Raises:
        InferenceError: if a target exists and `overwrite` is not given, if a file
            target is a folder, or if the SavedModel folder exists and is not a
            SavedModel (never replaced).
    """
    targets = export_paths(path, formats)
    for export_format, target in targets.items():
        if export_format == "savedmodel":
            if os.path.lexists(target) and not os.path.isfile(os.path.join(target, SAVED_MODEL_FILE)):
                raise InferenceError(
                    f"--export {path}: {target} exists and is not a SavedModel folder; choose another --export."
                )
        elif os.path.lexists(target) and not os.path.isfile(target):
            raise InferenceError(f"--export {path}: {target} exists and is not a file; choose another --export.")
    existing = [target for target in targets.values() if os.path.lexists(target)]
    if existing and not overwrite:
        raise InferenceError(
            f"--export {path}: {' and '.join(existing)} exist(s) already. Choose another --export, or give "
            "--overwrite to replace the earlier export."
        )
    return targets


def plan_export(path: str, formats: Sequence[str], overwrite: bool) -> dict[str, str]:
    """Checks the converters and the targets of `--export`, creating nothing.

    Args:
        path: str. `--export` value.
        formats: sequence of str. The `--export-format` values.
        overwrite: bool. The `--overwrite` flag.

    Returns:
        `{format: target}`, as `export_paths`.

    Raises:
        UsageError, InferenceError: for a converter that is missing or targets in the way.
    """
    check_export_tools(formats)
    targets = check_export_paths(path, overwrite, formats)
    check_output_dir(_export_folder(targets), "--export")
    return targets


def _export_folder(targets: Mapping[str, str]) -> str:
    """The folder all the targets of one `--export PATH` share (PATH's own)."""
    return os.path.dirname(os.path.abspath(next(iter(targets.values()))))


def describe_exports(targets: Mapping[str, str]) -> str:
    """The written exports and how each is loaded, for the log line."""
    return ", ".join(
        f"{target}{os.sep if export_format == 'savedmodel' else ''} ({EXPORT_LOADERS[export_format]})"
        for export_format, target in targets.items()
    )


def _write_keras(model: keras.Model, path: str) -> None:
    write_atomically(path, model.save, suffix=KERAS_SUFFIX)


# Linux's renameat2 flag that swaps two paths in one step, and the "current directory" descriptor.
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: str, second: str) -> bool:
    """Swaps two existing paths in one step (Linux `renameat2` with `RENAME_EXCHANGE`).

    Returns:
        True if swapped; False where the system or file system cannot (then nothing changed).

    Raises:
        OSError: if the swap itself fails.
    """
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library before glibc 2.28
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), second)


def _is_write_error(error: BaseException) -> bool:
    """Whether an export failed writing its files (a full disk, a lost mount): TensorFlow's own file errors too."""
    return isinstance(error, OSError | backend.import_tensorflow().errors.OpError)


def _write_saved_model(model: keras.Model, saved_model_dir: str) -> None:
    parent, name = os.path.split(os.path.abspath(saved_model_dir))
    temporary = os.path.join(parent, f".{name}.{os.getpid()}.partial")
    try:
        try:
            model.export(temporary, format="tf_saved_model", verbose=False)
            if not os.path.isdir(saved_model_dir):
                os.replace(temporary, saved_model_dir)
            # A folder cannot be renamed over a non-empty one: swap the two in one step, so that a kill at any
            # moment leaves the earlier export or the new one in place; the temporary name then holds the earlier.
            elif not _exchange(temporary, saved_model_dir):
                # No atomic swap here (not Linux): the earlier export is moved aside for an instant.
                previous = os.path.join(parent, f".{name}.{os.getpid()}.previous")
                os.replace(saved_model_dir, previous)
                os.replace(temporary, saved_model_dir)
                shutil.rmtree(previous)
        except Exception as error:
            if not _is_write_error(error):
                raise
            reason = describe_os_error(error) if isinstance(error, OSError) else str(error).splitlines()[0]
            raise SaveError(
                f"{saved_model_dir}: cannot be written ({reason}); the files written before are unchanged. "
                "Free some space, or fix the folder, and run again."
            ) from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _input_signature(model: keras.Model) -> list:
    # Given, because Keras' ONNX export refuses a model that was never called (as after restoring weights);
    # the batch size stays free.
    tf = backend.import_tensorflow()
    return [tf.TensorSpec(model.input_shape, tf.float32, name=model.inputs[0].name)]


def _write_onnx(model: keras.Model, path: str) -> None:
    write_atomically(
        path,
        lambda temporary: model.export(temporary, format="onnx", verbose=False, opset_version=ONNX_OPSET,
                                       input_signature=_input_signature(model)),
        suffix=ONNX_SUFFIX,
    )


def _write_litert(model: keras.Model, path: str) -> None:
    # Built-in operators only: the plain LiteRT interpreter on a device has no TensorFlow (Flex) kernels,
    # so an operator without a built-in fails the export here rather than on the device.
    builtins_only = {"supported_ops": [backend.import_tensorflow().lite.OpsSet.TFLITE_BUILTINS]}
    write_atomically(
        path,
        lambda temporary: model.export(temporary, format="litert", verbose=False, target_spec=builtins_only,
                                       input_signature=_input_signature(model)),
        suffix=LITERT_SUFFIX,
    )


EXPORT_WRITERS = {"keras": _write_keras, "savedmodel": _write_saved_model, "onnx": _write_onnx,
                  "litert": _write_litert}


def export_model(model: keras.Model, targets: Mapping[str, str]) -> None:
    """Writes the inference model in each chosen format.

    The model is saved as it is; an FCN that was never compiled carries no
    optimizer or loss, so loading the `.keras` file needs no custom objects.
    Every export is written under a temporary name and renamed into place, so
    an interrupted export leaves any earlier one whole. Each takes float32
    images in [0, 1] of the model's input shape (any batch size) and gives the
    per-pixel class probabilities.

    Args:
        model: keras.Model. The FCN with its trained weights.
        targets: mapping of str to str. `{format: target}` from `plan_export`; the
            targets' folder is created if missing.

    Example:

    >>> export_model(fcn, {"keras": "weights/fcn.keras", "savedmodel": "weights/fcn"})
    >>> served = tf.saved_model.load("weights/fcn")   # keep it: `serve` needs its variables
    >>> served.serve(images)   # (N, H, W, n_classes) probabilities
    """
    os.makedirs(_export_folder(targets), exist_ok=True)
    # The converters log every step at INFO level ("Assets written to" a temporary folder, tf2onnx's
    # optimizer passes): noise for the user.
    quieted = [logging.getLogger(name) for name in ("tensorflow", "tf2onnx")]
    levels = [quiet.level for quiet in quieted]
    for quiet in quieted:
        quiet.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Keras' tf2onnx patch probes `np.object`, which NumPy 2 answers with a FutureWarning.
            warnings.filterwarnings("ignore", message="In the future `np.object`", category=FutureWarning)
            for export_format, target in targets.items():
                EXPORT_WRITERS[export_format](model, target)
    finally:
        for quiet, level in zip(quieted, levels):
            quiet.setLevel(level)


def plan_predict_dir(input_dir: str, output_dir: str | None, overwrite: bool) -> tuple[list[PlannedImage], str]:
    """Lists the images of `--predict-dir` and names their outputs, refusing to overwrite.

    Args:
        input_dir: str. The `--predict-dir` folder.
        output_dir: str or None. The `--predict-output` folder; None means
            `prediction/<name of input_dir>`.
        overwrite: bool. The `--overwrite` flag.

    Returns:
        `(planned images, output folder)`.

    Raises:
        InferenceError, UsageError: for a folder without images or outputs in the way.
    """
    image_paths = images_to_predict(input_dir)
    if output_dir is None:
        output_dir = os.path.join(PREDICTION_DIR, os.path.basename(os.path.abspath(input_dir)))
    check_output_dir(output_dir, "--predict-output")
    return plan_outputs(image_paths, output_dir, overwrite), output_dir



def segment_folder(model: keras.Model, planned: list[PlannedImage], output_dir: str, batch_size: int,
                   verbose: int, fit_size: str = "refuse", tta: bool = False) -> None:
    """Segments the planned images with a progress bar, and logs where the outputs are.

    Unreadable images are skipped with a warning line each, so the rest are
    still segmented. `fit_size` is `--fit-size` and `tta` is `--tta` (see `predict_directory`).

    Raises:
        DatasetError: after the run, if any image was skipped (exit status 2).
    """
    logger.info("Segmenting %d image(s) into %s/, %d per batch", len(planned), output_dir, batch_size)
    summary = predict_directory(model, planned, output_dir, batch_size=batch_size, verbose=verbose,
                                fit_size=fit_size, tta=tta)
    for _, reason in summary.skipped:
        logger.warning("skipped %s", reason)
    logger.info("Wrote %d mask(s) and overlay(s) to %s/ (<image>-mask.png, <image>-overlay.png)",
                len(summary.written), output_dir)
    if summary.skipped:
        raise DatasetError(
            f"{len(summary.skipped)} of {len(planned)} image(s) could not be read and were skipped (named above); "
            f"the other {len(summary.written)} are segmented in {output_dir}/."
        )
