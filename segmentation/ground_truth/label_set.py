"""The ground truth in memory: what a split is read into, whatever its format.

A book label file (`book_labels`) and a PNG mask folder (`mask_folders`) both become a `LabelSet`: each
image's uint8 class-index map (one byte per pixel, `IGNORE_LABEL` marking pixels left out of the loss and
scores), kept zlib-compressed (`PackedClassMap`) in a `ClassMaps` mapping until a batch asks for it.
`SubsetMaps` is some of a set's images (`--val-split`), read through to the whole set.
"""

import collections.abc
import dataclasses
import zlib

import numpy as np


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


class SubsetMaps(collections.abc.Mapping):
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
