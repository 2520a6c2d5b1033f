"""The batch generator (Listing 12.3.4): (images, one-hot masks) batches from class-index maps.

With `--fit-size` other than the book's `refuse`, images of any size are fitted to the network's
input (`segmentation.ground_truth.fit_to_size`): `resize` scales each image on reading (its map was scaled when the
labels were read); `crop` trains on random crops and evaluates whole images, which
`batch_class_maps` then returns as lists for tiled prediction.
"""


import logging
import os

import keras
import numpy as np

from segmentation.augment import Augmentation
from segmentation.classes import IGNORE_LABEL
from segmentation.errors import DatasetError
from segmentation.ground_truth.fit_to_size import random_crop, resize_image
from segmentation.ground_truth.label_set import LabelSet
from segmentation.images import decode_image, image_to_float, read_image

logger = logging.getLogger(__name__)


def one_hot_table(n_classes: int) -> np.ndarray:
    """Rows of a class-index lookup: the one-hot vector of each class id, zeros for `IGNORE_LABEL`.

    Args:
        n_classes: int. Number of classes.

    Returns:
        float32 array `(256, n_classes)`; `table[class_map]` is the one-hot mask of a uint8 map,
        all zeros where the map is `IGNORE_LABEL` (so the loss leaves those pixels out).
    """
    table = np.zeros((IGNORE_LABEL + 1, n_classes), dtype=np.float32)
    table[:n_classes] = np.eye(n_classes, dtype=np.float32)
    return table


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
        size: (int, int) or None. The network's input `(height, width)`.
            Defaults to the size of the first mask (the book's masks are all
            of that size).
        fit_size: str. `--fit-size`: "refuse" (the book's: every image is
            `size`), "resize" (images scaled to `size` on reading) or "crop"
            (training batches are random crops of `size`, seeded like the
            augmentation; `batch_class_maps` gives whole images). Defaults to
            "refuse".
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
        size: tuple[int, int] | None = None,
        fit_size: str = "refuse",
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
        self.height, self.width = size or next(iter(labels.masks.values())).shape
        self.fit_size = fit_size
        self._one_hot = one_hot_table(labels.n_classes)
        self.augmentation = augmentation
        self._rng = np.random.default_rng(seed)
        # Augmentation draws come from (seed, epoch, batch), so worker threads and a resumed
        # run see the same draws as one uninterrupted run.
        self._augmentation_seed = np.random.SeedSequence(seed).entropy
        self._epoch = -1
        # The bad image a batch met (`__getitem__`), kept for `training.train` to report in its one line:
        # TensorFlow's data pipeline raises its own error in its place.
        self.failure: DatasetError | None = None
        self.on_epoch_end()

    @property
    def n_classes(self) -> int:
        """Number of classes of the masks."""
        return self.labels.n_classes

    @property
    def class_names(self) -> list[str] | None:
        """Names of classes 0 .. n_classes - 1 when the labels carry them, else None."""
        return list(self.labels.class_names) if self.labels.class_names else None

    @property
    def tile(self) -> tuple[int, int] | None:
        """The tile `(height, width)` evaluation predicts whole images with (`--fit-size crop`), else None."""
        return (self.height, self.width) if self.fit_size == "crop" else None

    def read_image(self, key: str) -> np.ndarray:
        """The float32 image in [0, 1] of `key`: `size` (scaled to it with "resize"), whole with "crop"."""
        path = os.path.join(self.data_path, key)
        if self.fit_size == "refuse":
            return read_image(path, self.height, self.width)
        image = decode_image(path)
        if self.fit_size == "resize":
            return resize_image(image, self.height, self.width)
        return image_to_float(image)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return len(self.keys) // self.batch_size
        return -(-len(self.keys) // self.batch_size)

    def batch_keys(self, index: int) -> list[str]:
        """Image filenames of batch `index`."""
        return self.keys[index * self.batch_size : (index + 1) * self.batch_size]

    def batch_class_maps(self, index: int) -> tuple[np.ndarray, np.ndarray] | tuple[list, list]:
        """Batch `index`: float32 images in [0, 1] and uint8 `(N, H, W)` class-index maps.

        With `--fit-size crop`, lists of whole images and their maps instead, each
        of its own size (`tile` says how to predict them).
        """
        keys = self.batch_keys(index)
        if self.fit_size == "crop":
            return [self.read_image(key) for key in keys], [self.labels.masks[key] for key in keys]
        images = np.empty((len(keys), self.height, self.width, 3), dtype=np.float32)
        for i, key in enumerate(keys):
            images[i] = self.read_image(key)
        return images, np.stack([self.labels.masks[key] for key in keys])

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index`: float32 images in [0, 1] and float32 one-hot masks (all zeros where ignored).

        Raises:
            DatasetError: for an image that cannot be read; it is kept in `failure` too.
        """
        try:
            images, class_maps = self.batch_class_maps(index)
        except DatasetError as error:
            self.failure = error
            raise
        # One generator per batch, from (seed, epoch, batch): the same crops and draws in any worker thread.
        rng = np.random.default_rng([self._augmentation_seed, self._epoch, index])
        if self.fit_size == "crop":
            crops = [random_crop(image, class_map, self.height, self.width, rng)
                     for image, class_map in zip(images, class_maps)]
            images = np.stack([image for image, _ in crops])
            class_maps = np.stack([class_map for _, class_map in crops])
        if self.augmentation is not None:
            for i in range(len(images)):
                images[i], class_maps[i] = self.augmentation(images[i], class_maps[i], rng)
        return images, self._one_hot[class_maps]

    def on_epoch_end(self) -> None:
        """Reshuffles the order of the images, each pass on its own."""
        self._epoch += 1
        if self.shuffle:
            n_images = len(self.labels.keys)
            for start in range(0, len(self.keys), n_images):
                one_pass = self.keys[start : start + n_images]
                self._rng.shuffle(one_pass)
                self.keys[start : start + n_images] = one_pass
