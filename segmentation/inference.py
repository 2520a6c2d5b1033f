"""Batch inference on a folder of photos, and export for serving (project additions).

The book segments one image at a time (`--image-file`). `predict_directory`
segments every JPEG or PNG image of a folder, whatever its size: each image is
resized to the network's input, the images go through the network a batch at
a time, and each predicted class map is resized back to its image's size
with nearest-neighbour sampling (so no new class appears on a border). For
each image it writes the coloured mask (the book's colours) and the image
with the mask blended over its objects.

`export_model` writes the network as a Keras 3 `.keras` file and as a
TensorFlow SavedModel whose `serve` endpoint maps float32 images in [0, 1]
to per-pixel class probabilities.

Nothing the user already has is overwritten unless they ask for it.
"""

import dataclasses
import logging
import os
import shutil
from collections.abc import Sequence

import keras
import numpy as np
import skimage.io
import skimage.transform

from segmentation.checkpoints import write_atomically
from segmentation.classes import colorize
from segmentation.errors import DatasetError, InferenceError
from segmentation.images import decode_image
from segmentation.paths import KERAS_SUFFIX, PREDICTION_DIR, SAVED_MODEL_FILE, check_output_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Weight of the coloured mask over an object's pixels in the overlay; background is left as it is.
OVERLAY_OPACITY = 0.5

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


def list_images(directory: str) -> list[str]:
    """The JPEG and PNG files of a folder (not its subfolders), sorted by name.

    Args:
        directory: str. The folder.

    Returns:
        Paths of the files whose names end in `.jpg`, `.jpeg` or `.png` (any case).

    Raises:
        InferenceError: if the folder does not exist or holds no such file.
    """
    if not os.path.isdir(directory):
        raise InferenceError(f"--predict-dir {directory}: no such folder.")
    paths = [
        os.path.join(directory, name)
        for name in sorted(os.listdir(directory))
        if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(directory, name))
    ]
    if not paths:
        raise InferenceError(
            f"--predict-dir {directory}: no .jpg, .jpeg or .png file in this folder. Give the folder of your images."
        )
    return paths


def plan_outputs(image_paths: Sequence[str], output_dir: str, overwrite: bool = False) -> list[PlannedImage]:
    """Names each image's mask and overlay, refusing to overwrite anything.

    The outputs are `<stem>-mask.png` and `<stem>-overlay.png`; when two images
    share a stem (`a.jpg`, `a.png`) their extension joins it (`a_jpg`, `a_png`).

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
    stems = [os.path.splitext(os.path.basename(path))[0] for path in image_paths]
    planned = []
    for path, stem in zip(image_paths, stems):
        if stems.count(stem) > 1:
            stem = os.path.basename(path).replace(".", "_")
        planned.append(PlannedImage(
            path, os.path.join(output_dir, f"{stem}-mask.png"), os.path.join(output_dir, f"{stem}-overlay.png")
        ))
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
    if image.shape[:2] == (height, width):
        return image.astype(np.float32) / 255.0
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


def overlay(image: np.ndarray, labels: np.ndarray, opacity: float = OVERLAY_OPACITY) -> np.ndarray:
    """Blends the coloured mask over the objects of an image; background pixels stay as they were.

    Args:
        image: uint8 array `(H, W, 3)`.
        labels: int array `(H, W)`. Class per pixel, 0 = background.
        opacity: float. Weight of the mask colour on object pixels. Defaults to 0.5.

    Returns:
        uint8 array `(H, W, 3)`.
    """
    blended = (1.0 - opacity) * image + opacity * colorize(labels)
    objects = (labels != 0)[..., np.newaxis]
    return np.where(objects, np.round(blended), image).astype(np.uint8)


def predict_directory(
    model: keras.Model,
    planned: Sequence[PlannedImage],
    output_dir: str,
    batch_size: int = 4,
    verbose: int = 1,
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

    Returns:
        A `PredictionSummary`.
    """
    height, width = model.input_shape[1:3]
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
            predicted = np.argmax(model.predict_on_batch(batch), axis=-1).astype(np.uint8)
            for item, image, labels in zip(readable, originals, predicted):
                labels = resize_labels(labels, image.shape[0], image.shape[1])
                skimage.io.imsave(item.mask_path, colorize(labels), check_contrast=False)
                skimage.io.imsave(item.overlay_path, overlay(image, labels), check_contrast=False)
                summary.written.append(item)
        progress.add(len(chunk))
    return summary


def export_paths(path: str) -> tuple[str, str]:
    """The `.keras` file and the SavedModel folder an `--export PATH` means.

    Args:
        path: str. `--export` value; a trailing `.keras` is dropped.

    Returns:
        `(PATH.keras, PATH)`.
    """
    path = path.rstrip(os.sep) or path
    stem = path[: -len(KERAS_SUFFIX)] if path.endswith(KERAS_SUFFIX) else path
    return stem + KERAS_SUFFIX, stem


def check_export_paths(path: str, overwrite: bool = False) -> tuple[str, str]:
    """Refuses an export that would replace something, before anything is built.

    Args:
        path: str. `--export` value.
        overwrite: bool. Allow replacing an earlier export. Defaults to False.

    Returns:
        `(keras_path, saved_model_dir)`, as `export_paths`.

    Raises:
        InferenceError: if either exists and `overwrite` is not given, or if
            the SavedModel folder exists and is not a SavedModel (never replaced).
    """
    keras_path, saved_model_dir = export_paths(path)
    if os.path.lexists(saved_model_dir) and not os.path.isfile(os.path.join(saved_model_dir, SAVED_MODEL_FILE)):
        raise InferenceError(
            f"--export {path}: {saved_model_dir} exists and is not a SavedModel folder; choose another --export."
        )
    if os.path.lexists(keras_path) and not os.path.isfile(keras_path):
        raise InferenceError(f"--export {path}: {keras_path} exists and is not a file; choose another --export.")
    existing = [target for target in (keras_path, saved_model_dir) if os.path.lexists(target)]
    if existing and not overwrite:
        raise InferenceError(
            f"--export {path}: {' and '.join(existing)} exist(s) already. Choose another --export, or give "
            "--overwrite to replace the earlier export."
        )
    return keras_path, saved_model_dir


def export_model(model: keras.Model, keras_path: str, saved_model_dir: str) -> None:
    """Writes the inference model as a `.keras` file and a TensorFlow SavedModel.

    The model is saved as it is; an FCN that was never compiled carries no
    optimizer or loss, so loading it needs no custom objects. Both are written
    under temporary names and renamed into place, so an interrupted export
    leaves any earlier one whole.

    Args:
        model: keras.Model. The FCN with its trained weights.
        keras_path: str. Target `.keras` file.
        saved_model_dir: str. Target SavedModel folder (`tf.saved_model.load(path).serve(x)`);
            its parent folder is created if missing.

    Example:

    >>> export_model(fcn, "weights/fcn.keras", "weights/fcn")
    >>> served = tf.saved_model.load("weights/fcn")   # keep it: `serve` needs its variables
    >>> served.serve(images)   # (N, H, W, n_classes) probabilities
    """
    parent, name = os.path.split(os.path.abspath(saved_model_dir))
    os.makedirs(parent, exist_ok=True)
    write_atomically(keras_path, model.save, suffix=KERAS_SUFFIX)
    temporary = os.path.join(parent, f".{name}.{os.getpid()}.partial")
    # TensorFlow logs "Assets written to" the temporary folder at INFO level: noise for the user.
    tensorflow_logger = logging.getLogger("tensorflow")
    level = tensorflow_logger.level
    tensorflow_logger.setLevel(logging.WARNING)
    try:
        model.export(temporary, format="tf_saved_model", verbose=False)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        tensorflow_logger.setLevel(level)
    if os.path.isdir(saved_model_dir):
        # A folder cannot be renamed over a non-empty one: move the earlier export aside first.
        previous = os.path.join(parent, f".{name}.{os.getpid()}.previous")
        os.replace(saved_model_dir, previous)
        os.replace(temporary, saved_model_dir)
        shutil.rmtree(previous)
    else:
        os.replace(temporary, saved_model_dir)


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
    image_paths = list_images(input_dir)
    if output_dir is None:
        output_dir = os.path.join(PREDICTION_DIR, os.path.basename(os.path.abspath(input_dir)))
    check_output_dir(output_dir, "--predict-output")
    return plan_outputs(image_paths, output_dir, overwrite), output_dir



def segment_folder(model: keras.Model, planned: list[PlannedImage], output_dir: str, batch_size: int,
                   verbose: int) -> None:
    """Segments the planned images with a progress bar, and logs where the outputs are.

    Unreadable images are skipped with a warning line each, so the rest are
    still segmented.

    Raises:
        DatasetError: after the run, if any image was skipped (exit status 2).
    """
    logger.info("Segmenting %d image(s) into %s/, %d per batch", len(planned), output_dir, batch_size)
    summary = predict_directory(model, planned, output_dir, batch_size=batch_size, verbose=verbose)
    for _, reason in summary.skipped:
        logger.warning("skipped %s", reason)
    logger.info("Wrote %d mask(s) and overlay(s) to %s/ (<image>-mask.png, <image>-overlay.png)",
                len(summary.written), output_dir)
    if summary.skipped:
        raise DatasetError(
            f"{len(summary.skipped)} of {len(planned)} image(s) could not be read and were skipped (named above); "
            f"the other {len(summary.written)} are segmented in {output_dir}/."
        )
