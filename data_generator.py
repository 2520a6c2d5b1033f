"""The batch generator (Listing 12.3.4): (images, one-hot masks) batches from class-index maps."""


import logging
import os

import keras
import numpy as np

from segmentation.augment import Augmentation
from segmentation.errors import DatasetError
from segmentation.images import read_image
from segmentation.labels import LabelSet

logger = logging.getLogger(__name__)

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
