"""A run's splits (Listing 12.3.4's data), each a book label file or a PNG mask folder, read and checked.

`load_split` reads one split whatever its format: the book's `.npy` file (`book_labels`) or a folder of
PNG class-index masks (`mask_folders`), with its class names: those of `--classes NAMES` (background and
the names), else those stored with the labels (`class_names`). The class count is that of a book label
file's masks, or a mask folder's named classes, or else its largest class id found + 1.

`load_data` reads the splits the flags ask for (training, test, and validation from `--val-labels` or
`--val-split`), checks that they agree on the classes (`agree_on_classes`) and that their images exist
(`check_images_have_masks`), and returns them as one `Data`.
"""

import dataclasses
import logging
import os
from collections.abc import Sequence

import numpy as np

from segmentation.checkpoints import read_training_state
from segmentation.classes import split_class_names
from segmentation.config import RunConfig
from segmentation.errors import DatasetError
from segmentation.ground_truth.book_labels import load_labels
from segmentation.ground_truth.class_names import read_class_names
from segmentation.ground_truth.label_set import LabelSet, SubsetMaps
from segmentation.ground_truth.mask_folders import images_by_stem, load_mask_folder
from segmentation.images import check_image, image_header
from segmentation.paths import MASK_SUFFIX, RunFiles, class_names_path, list_folder

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
        dataclasses.replace(labels, masks=SubsetMaps(labels.masks, training)),
        dataclasses.replace(labels, path=f"{labels.path} (--val-split {share})",
                            masks=SubsetMaps(labels.masks, validation)),
    )


def check_validation_labels(train: LabelSet, validation: LabelSet) -> None:
    """Refuses a `--val-labels` set that cannot stand apart from the training set.

    Args:
        train: LabelSet. The training split.
        validation: LabelSet. The split read from `--val-labels` (after `agree_on_classes`).

    Raises:
        DatasetError: if it lists an image of the training set (its score would not be a held-out
            one), or its masks have another class count (it could not be scored with the network).
    """
    training_names = set(train.keys)
    shared = [key for key in validation.keys if key in training_names]
    if shared:
        raise DatasetError(
            f"{validation.path}: {len(shared)} of its image(s) are in the training set {train.path} too "
            f"(e.g. {', '.join(repr(key) for key in shared[:3])}); a validation image must not be trained on. "
            "Remove them from one of the two files, or give --val-split instead."
        )
    if validation.n_classes != train.n_classes:
        raise DatasetError(
            f"{validation.path}: masks have {validation.n_classes} classes but {train.path} has "
            f"{train.n_classes}. Regenerate both with the same classes."
        )
