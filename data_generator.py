"""Ground-truth loading and the batch generator (Listing 12.3.4).

The book's ground truth is an `np.save` of a Python dict
`{image filename: uint8 one-hot mask (H, W, n_classes)}`, channel 0 being
background. It is read here once, validated, and kept as compact class-index
maps (one byte per pixel); the generator rebuilds the one-hot masks batch by
batch for the categorical cross-entropy. Each mask is turned into its
class-index map as soon as it is unpickled, so the whole one-hot dict (1.2 GB
for the book's 1,000 training images) is never in memory at once.
"""

import collections.abc
import dataclasses
import functools
import itertools
import logging
import os
import pickle
import zlib

import keras
import numpy as np
import PIL.Image
import skimage.io

from augment import Augmentation

logger = logging.getLogger(__name__)

# Pillow image modes read as they are, and those converted to RGB on reading (grey repeated,
# palette looked up, alpha dropped). Any other mode (16-bit or float grey, CMYK, ...) is refused.
RGB_MODES = ("RGB",)
CONVERTED_MODES = ("L", "LA", "1", "P", "PA", "RGBA", "RGBa", "La")
# An array's raw data and state tuple are the last entries pickle memoizes before building it.
RECENT_MEMO_ENTRIES = 4


class DatasetError(Exception):
    """A data set file is missing or malformed; the message says which and how to fix it."""


@dataclasses.dataclass
class LabelSet:
    """Ground truth of one split, as class-index maps.

    Attributes:
        path: str. The `.npy` file it was read from.
        masks: mapping. Image filename -> uint8 `(H, W)` class-index map
            (`load_labels` gives a `ClassMaps`, which keeps them compressed).
        n_classes: int. Number of classes (the one-hot masks' last axis).
    """

    path: str
    masks: collections.abc.Mapping[str, np.ndarray]
    n_classes: int

    @property
    def keys(self) -> list[str]:
        """Image filenames in the file's order."""
        return list(self.masks)


@dataclasses.dataclass(frozen=True)
class PackedClassMap:
    """A uint8 class-index map kept zlib-compressed.

    Segmentation masks are long runs of one class: a 640x480 drinks mask (307
    KB as a class map) packs into a few KB, so a data set's ground truth stays
    small in memory whatever its size, and a batch unpacks in microseconds.

    Attributes:
        shape: tuple. `(H, W)`.
        data: bytes. The compressed map.
    """

    shape: tuple[int, int]
    data: bytes

    @classmethod
    def pack(cls, class_map: np.ndarray) -> "PackedClassMap":
        """Compresses a uint8 `(H, W)` map (zlib level 1: fast, and enough for masks)."""
        return cls(shape=class_map.shape, data=zlib.compress(np.ascontiguousarray(class_map, np.uint8).tobytes(), 1))

    def unpack(self) -> np.ndarray:
        """The uint8 `(H, W)` map (read-only)."""
        return np.frombuffer(zlib.decompress(self.data), dtype=np.uint8).reshape(self.shape)


class ClassMaps(collections.abc.Mapping):
    """Image filename -> uint8 class-index map, each kept packed until it is asked for.

    Args:
        packed: dict. Image filename -> `PackedClassMap`, in the file's order.
    """

    def __init__(self, packed: dict[str, PackedClassMap]):
        self._packed = packed

    def __getitem__(self, key: str) -> np.ndarray:
        return self._packed[key].unpack()

    def __iter__(self):
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


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
    if problem is None and mask.ndim == 3:
        # A pixel with no class set (all zeros) is read as background.
        class_map = PackedClassMap.pack(np.argmax(mask, axis=-1).astype(np.uint8))
    return MaskSummary(shape=mask.shape, value_problem=problem, class_map=class_map)


class _PickledArray:
    """Stands in for one pickled NumPy array and keeps only its `MaskSummary`.

    Unpickling calls `_reconstruct` for an empty array, then `__setstate__`
    with its data; the summary is made right there and the data dropped, so
    each one-hot mask is freed before the next is read. Object arrays (the
    0-d array that wraps the dict) are kept as they are.

    Args:
        unpickler: _SummarizingUnpickler. The unpickler reading the stream.
        reconstruct: callable. NumPy's own `_reconstruct`.
        *args: its arguments, from the stream.
    """

    def __init__(self, unpickler: "_SummarizingUnpickler", reconstruct, *args):
        self._unpickler = unpickler
        self._array = reconstruct(*args)
        self.value: np.ndarray | MaskSummary | None = None

    def __setstate__(self, state: tuple) -> None:
        array, self._array = self._array, None
        array.__setstate__(state)
        if array.dtype == object:
            self.value = array
            return
        self.value = summarize_mask(array)
        self._unpickler.forget(state)


# The pure-Python unpickler: its memo is a plain dict that `forget` can prune while loading
# (the C unpickler's memo can only be copied or replaced whole).
class _SummarizingUnpickler(pickle._Unpickler):
    """An unpickler that reads every NumPy array of the stream as a `_PickledArray`."""

    def find_class(self, module: str, name: str):
        found = super().find_class(module, name)
        # numpy 1.x pickles name numpy.core.multiarray, numpy 2.x numpy._core.multiarray.
        if name == "_reconstruct" and module.split(".")[0] == "numpy":
            return functools.partial(_PickledArray, self, found)
        return found

    def forget(self, state: tuple) -> None:
        """Drops the memo's references to an array's state and raw data.

        Pickle memoizes every bytes object and tuple it reads, so without this
        the raw data of all masks would stay alive until the end of the load.
        Each array's state is pickled once, just before its BUILD, and never
        referenced again, so only the newest memo entries are looked at. They
        are emptied, not deleted: the MEMOIZE opcode numbers entries by the
        memo's length.
        """
        recent = list(itertools.islice(reversed(self.memo.items()), RECENT_MEMO_ENTRIES))
        for index, value in recent:
            if value is state or value is state[-1]:
                self.memo[index] = None


def _unwrap(value: object) -> object:
    """The array or `MaskSummary` a `_PickledArray` stands for; anything else as it is."""
    return value.value if isinstance(value, _PickledArray) else value


def read_labels_dict(path: str) -> object:
    """Reads the book's `np.save`d dict with each mask reduced to a `MaskSummary` on the way.

    The only function that unpickles: the book's format is a pickled dict,
    and pickle can run code, so only files the user names are read this way.
    Masks are freed one by one for the pickle protocols `np.save` writes (3
    in numpy 1.x, the book's files; 4 in numpy 2.x); other protocols load
    the same, holding the raw data until the end. A file that is not a
    pickled object array is read by `np.load` as it is.

    Args:
        path: str. The `.npy` file.

    Returns:
        The dict `{key: MaskSummary}` for the book's format (a value that was
        not pickled as an array is left as it is); otherwise whatever the
        file holds.
    """
    header_readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        read_header = header_readers.get(version)
        if read_header is not None and read_header(file)[2] == object:
            # np.load's own pickle settings (ASCII for Python 2 strings).
            loaded = _unwrap(_SummarizingUnpickler(file, encoding="ASCII").load())
            content = loaded.flat[0] if isinstance(loaded, np.ndarray) and loaded.size == 1 else loaded
            if isinstance(content, dict):
                return {key: _unwrap(value) for key, value in content.items()}
            return content
    loaded = np.load(path, allow_pickle=True)
    return loaded.flat[0] if isinstance(loaded, np.ndarray) and loaded.dtype == object else loaded


def load_labels(path: str, data_path: str, height: int, width: int) -> LabelSet:
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
    except Exception as error:  # np.load and pickle raise many types for a bad file
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
        if len(shape) != 3 or shape[:2] != (height, width):
            raise DatasetError(
                f"{path}: mask of {key!r} has shape {shape}, expected ({height}, {width}, "
                "n_classes). Give the matching --height/--width or regenerate the labels."
            )
        if n_classes is None:
            n_classes = shape[-1]
            if n_classes < 2:
                raise DatasetError(
                    f"{path}: masks have {n_classes} channel(s); a one-hot mask needs background "
                    "plus at least one class."
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
        mode = check_image(image_path, height, width)
        if mode not in RGB_MODES:
            converted.append(f"{key} ({mode})")
        masks[str(key)] = summary.class_map
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


def check_image(path: str, height: int, width: int) -> str:
    """Checks an image file's header without decoding its pixels.

    Args:
        path: str. Image file.
        height: int. Required height.
        width: int. Required width.

    Returns:
        The Pillow mode, `"RGB"` or one of `CONVERTED_MODES` that `read_image` converts.

    Raises:
        DatasetError: if the file is not a readable image, its data is cut short (PNG, whose
            chunk checksums are verified), it is 16-bit, float or CMYK, or it is not
            `height` x `width`.
    """
    try:
        with PIL.Image.open(path) as image:
            mode, size = image.mode, image.size
            image.verify()
    except Exception as error:  # Pillow raises many types for a bad file
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DatasetError(
            f"{path}: not a readable image ({reason}). Replace the file, or remove it and its entry "
            "in the labels."
        ) from None
    if mode not in RGB_MODES + CONVERTED_MODES:
        raise DatasetError(
            f"{path}: image mode {mode} is not supported (16-bit, float and CMYK images are refused). "
            "Convert it to 8-bit RGB, e.g. with Pillow's Image.convert('RGB')."
        )
    if size != (width, height):
        raise DatasetError(
            f"{path}: image is {size[0]}x{size[1]}, expected {width}x{height} "
            "(--width x --height). Resize it or give the matching --height/--width."
        )
    return mode


def decode_image(path: str) -> np.ndarray:
    """Decodes an image of any size as 8-bit RGB.

    Grey images are repeated into three channels and an alpha channel is
    dropped; 16-bit, float and CMYK images are refused.

    Args:
        path: str. Image file.

    Returns:
        uint8 array `(H, W, 3)`.

    Raises:
        DatasetError: if the file cannot be decoded or is not 8-bit.
    """
    try:
        image = skimage.io.imread(path)
    except Exception as error:  # decoders raise many types for a bad file
        raise DatasetError(f"{path}: cannot read the image ({type(error).__name__}: {error}).") from None
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 3 and image.shape[-1] in (2, 4):
        image = image[..., :-1]
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 1):
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise DatasetError(
            f"{path}: expected an 8-bit RGB image, found shape {image.shape} dtype {image.dtype}. "
            "Convert it to 8-bit RGB."
        )
    return image


def read_image(path: str, height: int, width: int) -> np.ndarray:
    """Reads an RGB image as float32 in [0, 1] (the book's `img_as_float`).

    Grey images are repeated into three channels and an alpha channel is
    dropped (`load_labels` warns about them once); 16-bit images are refused.

    Args:
        path: str. Image file.
        height: int. Required height.
        width: int. Required width.

    Returns:
        float32 array `(height, width, 3)`.

    Raises:
        DatasetError: if the file cannot be decoded, is not 8-bit RGB, or is
            not `height` x `width`.
    """
    image = decode_image(path)
    if image.shape[:2] != (height, width):
        raise DatasetError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]}, expected {width}x{height} "
            "(--width x --height). Resize it or give the matching --height/--width."
        )
    return image.astype(np.float32) / 255.0


class DataGenerator(keras.utils.PyDataset):
    """Batches of (images, one-hot masks) for training and evaluation.

    Args:
        labels: LabelSet. The split's ground truth.
        data_path: str. Folder holding the images.
        batch_size: int. Images per batch. Defaults to 4.
        shuffle: bool. Shuffle the order every epoch. Defaults to True.
        drop_last: bool. Drop the last partial batch, as the book's training
            does. Defaults to True.
        seed: int or None. Seed of the shuffling and of the augmentation.
            Defaults to None.
        augmentation: Augmentation or None. Random changes applied to each
            training image and its mask together (`--augment`); evaluation
            batches (`batch_class_maps`) are never augmented. Defaults to None.
        passes: int. Times an epoch goes through the images (`--passes`),
            each time in a new order (and, with `augmentation`, with new
            draws). Defaults to 1, the book's epoch.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size`, passed
            to `keras.utils.PyDataset`.

    Example:

    >>> generator = DataGenerator(labels, "dataset/drinks", batch_size=4, workers=4)
    >>> images, masks = generator[0]   # (4, H, W, 3), (4, H, W, n_classes)
    """

    def __init__(
        self,
        labels: LabelSet,
        data_path: str,
        batch_size: int = 4,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int | None = None,
        augmentation: Augmentation | None = None,
        passes: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1. Received: batch_size={batch_size}")
        if passes < 1:
            raise ValueError(f"passes must be at least 1. Received: passes={passes}")
        if drop_last and batch_size > len(labels.masks):
            raise DatasetError(
                f"{labels.path}: --batch-size {batch_size} is larger than the {len(labels.masks)} "
                "images it lists, so an epoch would have no batch. Lower --batch-size."
            )
        self.labels = labels
        self.data_path = data_path
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.keys = list(labels.keys) * passes
        self.height, self.width = next(iter(labels.masks.values())).shape
        self.augmentation = augmentation
        self._rng = np.random.default_rng(seed)
        # Augmentation draws come from (seed, epoch, batch), so worker threads and a resumed
        # run see the same draws as one uninterrupted run.
        self._augmentation_seed = np.random.SeedSequence(seed).entropy
        self._epoch = -1
        self.on_epoch_end()

    @property
    def n_classes(self) -> int:
        """Number of classes of the masks."""
        return self.labels.n_classes

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return len(self.keys) // self.batch_size
        return -(-len(self.keys) // self.batch_size)

    def batch_keys(self, index: int) -> list[str]:
        """Image filenames of batch `index`."""
        return self.keys[index * self.batch_size : (index + 1) * self.batch_size]

    def batch_class_maps(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index`: float32 images in [0, 1] and uint8 `(N, H, W)` class-index maps."""
        keys = self.batch_keys(index)
        images = np.empty((len(keys), self.height, self.width, 3), dtype=np.float32)
        for i, key in enumerate(keys):
            images[i] = read_image(os.path.join(self.data_path, key), self.height, self.width)
        return images, np.stack([self.labels.masks[key] for key in keys])

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index`: float32 images in [0, 1] and float32 one-hot masks."""
        images, class_maps = self.batch_class_maps(index)
        if self.augmentation is not None:
            rng = np.random.default_rng([self._augmentation_seed, self._epoch, index])
            for i in range(len(images)):
                images[i], class_maps[i] = self.augmentation(images[i], class_maps[i], rng)
        return images, np.eye(self.n_classes, dtype=np.float32)[class_maps]

    def on_epoch_end(self) -> None:
        """Reshuffles the order of the images, each pass on its own."""
        self._epoch += 1
        if self.shuffle:
            n_images = len(self.labels.keys)
            for start in range(0, len(self.keys), n_images):
                one_pass = self.keys[start : start + n_images]
                self._rng.shuffle(one_pass)
                self.keys[start : start + n_images] = one_pass
