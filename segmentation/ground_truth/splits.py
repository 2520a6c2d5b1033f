"""The ground truth a run reads (Listing 12.3.4's data): its label files or mask folders, checked.

`load_data` reads the splits the flags ask for (training, test, and validation from `--val-labels` or
`--val-split`), checks that they agree on the classes and that their images exist, and returns them as
one `Data`; `evaluation_data` gives a split's batches for scoring.
"""

import dataclasses
import logging
import os

from data_generator import DataGenerator
from segmentation.checkpoints import read_training_state
from segmentation.config import RunConfig
from segmentation.errors import DatasetError
from segmentation.ground_truth.book_labels import LabelSet, check_validation_labels, split_labels
from segmentation.ground_truth.mask_folders import agree_on_classes, check_images_have_masks, load_split
from segmentation.images import check_image, image_header
from segmentation.paths import RunFiles, list_folder

logger = logging.getLogger(__name__)

# The draw of --val-split when no --seed is given, so that every run (and --resume) holds out the same images.
VAL_SPLIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Data:
    """The ground truth a run reads; a split it does not need is None."""

    train: LabelSet | None
    test: LabelSet | None
    # The images the best weights are selected on, when not the test set's (--val-split, --val-labels).
    validation: LabelSet | None = None

    @property
    def n_classes(self) -> int:
        return (self.train or self.test).n_classes

    @property
    def selection(self) -> LabelSet | None:
        """The images the best weights are selected on: the validation images, or the test set's (the book's)."""
        return self.test if self.validation is None else self.validation

    @property
    def selection_split(self) -> str:
        """`"val"` or `"test"`: what `selection` holds, naming the logged metrics and the record's."""
        return "test" if self.validation is None else "val"

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """Names of classes 0 .. n_classes - 1 when known (`--classes`, or stored beside the labels)."""
        return (self.train or self.test).class_names


def val_split_seed(config: RunConfig) -> int:
    """The seed of `--val-split`'s draw: `--seed` (or `VAL_SPLIT_SEED`), or on `--resume` the run's own.

    A resumed run holds out the images it held out when it started, whatever `--seed` says now: the
    state records the run's `--seed`, from which its draw came. Without a state in `--save-dir` (a
    worker of `--distribute multi-worker` that saves elsewhere) the draw is `--seed`'s, which every worker
    is given alike.

    Args:
        config: RunConfig. The flags.
    """
    seed = VAL_SPLIT_SEED if config.seed is None else config.seed
    state_path = RunFiles.of(config.save_dir, config.depth, config.layers, config.dataset).state
    if not (config.resume and os.path.isfile(state_path)):
        return seed
    saved = read_training_state(state_path).seed
    drawn = VAL_SPLIT_SEED if saved is None else saved
    if drawn != seed:
        logger.info("--resume: --val-split holds out the images the run drew with seed %d when it started "
                    "(--seed %s now)", drawn, config.seed)
    return drawn


def evaluation_data(labels: LabelSet, config: RunConfig) -> DataGenerator:
    """The batches of a split for scoring: in order, the last partial batch kept."""
    return DataGenerator(labels, config.data_path, batch_size=config.batch_size, shuffle=False, drop_last=False,
                         size=(config.height, config.width), fit_size=config.fit_size)


def load_data(config: RunConfig) -> Data:
    """Reads and checks the label files the run needs (the class count comes from them).

    Raises:
        DatasetError: for a missing or empty data folder, a bad label file or image,
            splits of different class counts, or a batch larger than the training set.
    """
    train_path = os.path.join(config.data_path, config.train_labels)
    test_path = os.path.join(config.data_path, config.test_labels)
    if not os.path.isdir(config.data_path):
        raise DatasetError(f"{config.data_path}: data folder not found. Give the right --data-path.")
    if not list_folder(config.data_path, "make it readable, or give the right --data-path"):
        raise DatasetError(
            f"{config.data_path}: the data folder is empty. Put the images and label files there, or make a "
            "synthetic set with utils/generate_synthetic_drinks.py."
        )

    def read(path: str) -> LabelSet:
        # The book's .npy file or a folder of PNG masks, with the class names of --classes or stored beside it.
        return load_split(path, config.data_path, config.height, config.width, config.fit_size, config.classes)

    needs_test_set = config.train or (config.evaluate and not config.image_file)
    test = read(test_path) if needs_test_set else None
    train = read(train_path) if config.train or os.path.exists(train_path) else None
    if train is None and test is None:
        # --image-file without the training masks: the class count comes from the test masks.
        test = read(test_path)
    agree_on_classes(train, test)
    check_images_have_masks(config.data_path, [train_path, test_path] + (
        [os.path.join(config.data_path, config.val_labels)] if config.val_labels else []))
    validation = None
    if config.val_labels:
        validation = read(os.path.join(config.data_path, config.val_labels))
        agree_on_classes(train, validation)
        check_validation_labels(train, validation)
    elif config.val_split is not None:
        train, validation = split_labels(train, config.val_split, val_split_seed(config))
    data = Data(train, test, validation)
    if test is not None and test.n_classes != data.n_classes:
        raise DatasetError(
            f"{test_path}: masks have {test.n_classes} classes but {train_path} has {data.n_classes}. "
            "Regenerate both with the same classes."
        )
    if config.train and config.batch_size > len(train.masks):
        raise DatasetError(
            f"{train_path}: --batch-size {config.batch_size} is larger than the {len(train.masks)} "
            "images it lists, so an epoch would have no batch. Lower --batch-size."
        )
    if config.image_file and config.fit_size == "refuse":
        check_image(config.image_file, config.height, config.width)
    elif config.image_file:
        image_header(config.image_file)
    return data
