"""Reading and checking the book's ground truth, the `.npy` label files.

The book's ground truth is an `np.save` of a Python dict
`{image filename: uint8 one-hot mask (H, W, n_classes)}`, channel 0 being
background. It is read here once, validated, and kept as compact class-index
maps (one byte per pixel); `data_generator.DataGenerator` rebuilds the
one-hot masks batch by batch for the categorical cross-entropy. Each mask is
turned into its class-index map as soon as it is unpickled, so the whole
one-hot dict (n_classes bytes per pixel) is never in memory at once.
"""

import collections.abc
import dataclasses
import functools
import itertools
import logging
import os
import pickle
import zlib

import numpy as np

from segmentation.errors import DatasetError
from segmentation.fitting import resize_labels
from segmentation.images import RGB_MODES, check_image, image_header

logger = logging.getLogger(__name__)

# An array's raw data and state tuple are the last entries pickle memoizes before building it.
RECENT_MEMO_ENTRIES = 4


@dataclasses.dataclass
class LabelSet:
    """Ground truth of one split, as class-index maps.

    Attributes:
        path: str. The `.npy` file or the mask folder it was read from.
        masks: mapping. Image filename -> uint8 `(H, W)` class-index map
            (`load_labels` gives a `ClassMaps`, which keeps them compressed);
            `IGNORE_LABEL` (255) marks pixels left out of the loss and scores.
        n_classes: int. Number of classes (the one-hot masks' last axis, or
            that of a mask folder).
        class_names: tuple of str or None. Names of classes 0 .. n_classes - 1
            when known (`--classes`, or the names stored beside the labels).
            Defaults to None.
        has_ignore: bool. Whether a map holds `IGNORE_LABEL`. Defaults to False
            (the book's `.npy` masks never do).
        counted: bool. Whether `n_classes` was counted from the largest class
            id found (a mask folder without names), and may grow to another
            split's. Defaults to False.
    """

    path: str
    masks: collections.abc.Mapping[str, np.ndarray]
    n_classes: int
    class_names: tuple[str, ...] | None = None
    has_ignore: bool = False
    counted: bool = False

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


# The only globals the book's format names, in numpy 1.x (numpy.core) and 2.x (numpy._core) pickles of
# protocols 2 to 5: NumPy's array reconstruction, dtypes and scalars, and protocol 2's bytes. Dicts,
# lists, strings and numbers need no global.
SAFE_GLOBALS = frozenset({
    *((package, function) for package in ("numpy.core.multiarray", "numpy._core.multiarray")
      for function in ("_reconstruct", "scalar")),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
})


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle stream named a global that the book's label format never holds."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


def _check_global(module: str, name: str) -> None:
    """Refuses a global outside `SAFE_GLOBALS`, as an unpickler's `find_class` is asked for it.

    Pickle runs code by calling the globals a stream names (`os.system`, say, through `__reduce__`);
    `find_class` is asked for each one when the stream names it, before anything is called, so a
    refusal there stops a hostile file before any of its code runs.
    """
    if (module, name) not in SAFE_GLOBALS:
        raise RefusedGlobal(module, name)


class _SafeUnpickler(pickle.Unpickler):
    """The C unpickler, accepting only `SAFE_GLOBALS`."""

    def find_class(self, module: str, name: str):
        _check_global(module, name)
        return super().find_class(module, name)


# The pure-Python unpickler: its memo is a plain dict that `forget` can prune while loading
# (the C unpickler's memo can only be copied or replaced whole).
class _SummarizingUnpickler(pickle._Unpickler):
    """An unpickler that accepts only `SAFE_GLOBALS` and reads every NumPy array as a `_PickledArray`."""

    def find_class(self, module: str, name: str):
        _check_global(module, name)
        found = super().find_class(module, name)
        if name == "_reconstruct":
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

    The only function that unpickles. The book's format is a pickled dict, and
    pickle can run code, so the unpickler accepts only the globals the format
    holds (`SAFE_GLOBALS`: NumPy arrays, dtypes and scalars) and refuses any
    other before it is called. Masks are freed one by one for the pickle
    protocols `np.save` writes (3 in numpy 1.x, the book's files; 4 in numpy
    2.x); protocols 2 and 5 load the same, holding the raw data until the end.
    A file that is not a pickled object array is read by `np.load` without
    pickle.

    Args:
        path: str. The `.npy` file.

    Returns:
        The dict `{key: MaskSummary}` for the book's format (a value that was
        not pickled as an array is left as it is); otherwise whatever the
        file holds.

    Raises:
        DatasetError: if the pickle names any other global, e.g. a function to call.
    """
    content = _unpickle_object_array(path, _SummarizingUnpickler)
    if content is _NOT_PICKLED:
        # Anything else (a plain array, a format version 3 header, not a .npy at all) is read without pickle.
        return np.load(path, allow_pickle=False)
    if isinstance(content, dict):
        return {key: _unwrap(value) for key, value in content.items()}
    return _unwrap(content)


# What `_unpickle_object_array` returns for a file that holds no pickled object array.
_NOT_PICKLED = object()


def _unpickle_object_array(path: str, unpickler: type) -> object:
    """The content of a `.npy` file holding a pickled object array (a 0-d one unwrapped), or `_NOT_PICKLED`.

    Raises:
        DatasetError: if the pickle names a global outside `SAFE_GLOBALS`.
    """
    header_readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    with open(path, "rb") as file:
        read_header = header_readers.get(np.lib.format.read_magic(file))
        if read_header is None or not read_header(file)[2].hasobject:
            return _NOT_PICKLED
        try:
            # np.load's own pickle settings (ASCII for Python 2 strings).
            loaded = _unwrap(unpickler(file, encoding="ASCII").load())
        except RefusedGlobal as refused:
            raise DatasetError(
                f"{path}: the pickle names the global {refused.qualified_name}; refused: label files may "
                "hold only arrays. Regenerate it with utils/generate_gt_segmentation.py, and read only "
                "label files you trust."
            ) from None
    return loaded.flat[0] if isinstance(loaded, np.ndarray) and loaded.size == 1 else loaded


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


class _SubsetMaps(collections.abc.Mapping):
    """The class maps of some keys of a mapping, read through to it (nothing is unpacked early)."""

    def __init__(self, masks: collections.abc.Mapping, keys: list[str]):
        self._masks = masks
        self._keys = keys
        self._key_set = set(keys)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._key_set:
            raise KeyError(key)
        return self._masks[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def split_labels(labels: LabelSet, share: float, seed: int) -> tuple[LabelSet, LabelSet]:
    """Holds out a share of a split's images (`--val-split`): returns (training, validation).

    Args:
        labels: LabelSet. The training split.
        share: float. Share of its images held out, in (0, 1); at least one image each way.
        seed: int. Seed of the draw, so that a resumed run holds out the same images.

    Raises:
        DatasetError: if the split has too few images to hold any out.
    """
    keys = labels.keys
    held_out = max(1, round(share * len(keys)))
    if held_out >= len(keys):
        raise DatasetError(
            f"{labels.path}: --val-split {share} would hold out all {len(keys)} training image(s); "
            "give a smaller share or more images."
        )
    chosen = set(np.random.default_rng(seed).choice(len(keys), size=held_out, replace=False).tolist())
    validation = [key for index, key in enumerate(keys) if index in chosen]
    training = [key for index, key in enumerate(keys) if index not in chosen]
    return (
        dataclasses.replace(labels, masks=_SubsetMaps(labels.masks, training)),
        dataclasses.replace(labels, path=f"{labels.path} (--val-split {share})",
                            masks=_SubsetMaps(labels.masks, validation)),
    )


def read_labels_whole(path: str) -> dict:
    """The book's `np.save`d dict as it is, one-hot masks whole (what the book's code held), unpickled safely.

    For measuring the book's way (`bench/`); the program itself reads labels with `load_labels`.

    Raises:
        DatasetError: if the file is not a pickled dict, or its pickle names any global but NumPy's.
    """
    content = _unpickle_object_array(path, _SafeUnpickler)
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: not the book's np.save of a dict. Regenerate it with "
                           "utils/generate_gt_segmentation.py.")
    return content
