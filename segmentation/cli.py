"""The command line of chapter 12: train and evaluate the FCN for semantic segmentation.

`fcn-12.3.1.py` hands its arguments to `main`:

    python3 fcn-12.3.1.py --train
    python3 fcn-12.3.1.py --evaluate --restore-weights=ResNet56v2-3layer-drinks-best-iou.h5
    python3 fcn-12.3.1.py --evaluate --restore-weights=... --image-file=dataset/drinks/0010018.jpg

`run` takes the book's order of steps: summary, restore, evaluate, train; then
export (`--export`) and batch inference (`--predict-dir`). Every check that
needs only the flags runs first (`config.check_config`), then those that read
the data and the output folders, all before the first file is written.
"""

import argparse
import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import NoReturn

import keras

from data_generator import DataGenerator
from model import build_model, configure_batchnorm
from segmentation import backend
from segmentation.augment import Augmentation
from segmentation.checkpoints import (
    TrainingState,
    read_best_metrics,
    read_training_state,
    resolve_weights_path,
    restore_for_fine_tuning,
    restore_weights,
)
from segmentation.classes import class_names
from segmentation.config import BOOK, EXPORT_FORMATS, FIT_SIZES, RunConfig, check_config, recorded_setting
from segmentation.distribution import DISTRIBUTE_CHOICES, is_chief, make_strategy, read_tf_config, worker_folder
from segmentation.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_NON_FINITE,
    EXIT_TERMINATED,
    CheckpointError,
    DatasetError,
    InferenceError,
    NonFiniteLossError,
    SaveError,
    Terminated,
    TrainingInterrupted,
    UsageError,
)
from segmentation.evaluation import evaluate_test_set, segment_image_file
from segmentation.images import check_image, image_header
from segmentation.inference import (
    PlannedImage,
    describe_exports,
    export_model,
    plan_export,
    plan_predict_dir,
    segment_folder,
)
from segmentation.labels import LabelSet, check_validation_labels, split_labels
from segmentation.lock import training_lock
from segmentation.losses import CLASS_WEIGHTS, LOSSES, build_loss, median_frequency_weights
from segmentation.masks import agree_on_classes, check_images_have_masks, load_split
from segmentation.paths import PREDICTION_DIR, RunFiles, check_output_dir
from segmentation.precision import AUTO as PRECISION_AUTO
from segmentation.precision import POLICIES, auto_precision
from segmentation.remat import AUTO as REMAT_AUTO
from segmentation.remat import LEVELS as REMAT_LEVELS
from segmentation.remat import recompute_in_backward, remat_level
from segmentation.schedules import LR_SCHEDULES
from segmentation.training import JIT_CHOICES, plan_training, report_training, score_existing_best, train

logger = logging.getLogger("fcn")

# The draw of --val-split when no --seed is given, so that every run (and --resume) holds out the same images.
VAL_SPLIT_SEED = 0


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line, without the usage block above them."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; --help lists the options.\n")


def build_parser() -> argparse.ArgumentParser:
    """The book's command line and the added flags; every default is `config.BOOK`'s."""
    parser = OneLineParser(
        prog="fcn-12.3.1.py",
        description="FCN with a ResNet v2 backbone for semantic segmentation (chapter 12).",
    )
    add_book_flags(parser)
    add_recipe_flags(parser)
    add_speed_flags(parser)
    add_data_flags(parser)
    add_run_flags(parser)
    add_inference_flags(parser)
    return parser


def add_book_flags(parser: argparse.ArgumentParser) -> None:
    """The book's flags (its `model_utils.parser`), with its defaults."""
    group = parser.add_argument_group("the book's model and training")
    group.add_argument("--layers", type=int, default=BOOK.layers, metavar="N",
                       help="number of features-pyramid maps after the main one (default: %(default)s)")
    group.add_argument("-b", "--batch-size", "--batch_size", dest="batch_size", type=int, default=BOOK.batch_size,
                       metavar="N",
                       help="batch size during training (default: %(default)s)")
    group.add_argument("--epochs", type=int, default=BOOK.epochs, metavar="N",
                       help="number of epochs to train (default: %(default)s)")
    group.add_argument("--workers", type=int, default=BOOK.workers, metavar="N",
                       help="data generator worker threads (default: %(default)s)")
    group.add_argument("-t", "--train", action="store_true", help="train the model")
    group.add_argument("--summary", action="store_true",
                       help="print the model summaries and save the network diagrams to --save-dir")
    group.add_argument("--save-dir", default=BOOK.save_dir, metavar="DIR",
                       help="folder of weights and histories (default: %(default)s)")
    group.add_argument("--dataset", default=BOOK.dataset, metavar="NAME",
                       help="data set name, part of the weights name (default: %(default)s)")

    group = parser.add_argument_group("the book's inputs")
    group.add_argument("--height", type=int, default=BOOK.height, help="input image height (default: %(default)s)")
    group.add_argument("--width", type=int, default=BOOK.width, help="input image width (default: %(default)s)")
    group.add_argument("--channels", type=int, default=BOOK.channels,
                       help="input image channels (default: %(default)s)")
    group.add_argument("--data-path", default=BOOK.data_path, metavar="DIR",
                       help="folder of the images and label files (default: %(default)s)")
    group.add_argument("--train-labels", default=BOOK.train_labels, metavar="FILE",
                       help="training ground truth in --data-path (default: %(default)s)")
    group.add_argument("--test-labels", default=BOOK.test_labels, metavar="FILE",
                       help="test ground truth in --data-path (default: %(default)s)")

    group = parser.add_argument_group("the book's evaluation")
    group.add_argument("--restore-weights", metavar="NAME",
                       help="weights to load: a name in --save-dir (the book's .h5 name is understood) "
                            "or a path (default: %(default)s)")
    group.add_argument("-e", "--evaluate", action="store_true", help="evaluate the model on the test set")
    group.add_argument("--image-file", metavar="FILE",
                       help="with --evaluate: segment this image into prediction/ (default: %(default)s)")
    group.add_argument("--plot", action="store_true",
                       help="with --evaluate: save each test image's input, mask and triptych to prediction/")
    group.add_argument("--verbose", type=int, default=BOOK.verbose, metavar="LEVEL",
                       help="0 quiet, 1 progress and results, 2 debug (default: %(default)s)")


def add_recipe_flags(parser: argparse.ArgumentParser) -> None:
    """The network's depth and the training recipe; the defaults are the book's."""
    group = parser.add_argument_group("training recipe")
    group.add_argument("--depth", type=int, default=BOOK.depth, metavar="D",
                       help="ResNet v2 depth, 9n+2; the book's backbone is ResNet56v2 (default: %(default)s)")
    group.add_argument("--head-filters", type=int, default=BOOK.head_filters, metavar="F",
                       help="filters of the head's pyramid convolutions and of its two transposed convolutions, "
                            "which cost most of the network's arithmetic: the book's 256, or 64 for a network "
                            "that trains about 3x faster per step (docs/small-data.md) (default: %(default)s)")
    group.add_argument("--seed", type=int, default=BOOK.seed, metavar="S",
                       help="seed Python, NumPy and TensorFlow for a reproducible run; deterministic ops "
                            "can be slower (default: %(default)s)")
    group.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=BOOK.lr_schedule,
                       help="'text': halve every 20 epochs after 40, as the chapter says; 'code': the book's "
                            "published lr_scheduler, x0.5/x0.1/x0.05 after 40/60/80; 'cosine': linear warm-up "
                            "over the first 10%% of the run's steps to --learning-rate, then cosine decay to 0 "
                            "at its last step, for short runs (default: %(default)s)")
    group.add_argument("--learning-rate", type=float, default=BOOK.learning_rate, metavar="LR",
                       help="Adam's learning rate before the schedule's decay, the peak of 'cosine' "
                            "(default: %(default)s)")
    group.add_argument("--time-budget", type=float, default=BOOK.time_budget, metavar="MINUTES",
                       help="with --train: finish the run, its evaluations and report within MINUTES from the "
                            "start: the first steps are timed, the epochs that fit are trained (at most "
                            "--epochs) and a 'cosine' schedule ends at the last of them (default: no budget)")
    group.add_argument("--loss", choices=LOSSES, default=BOOK.loss,
                       help="'ce': the book's categorical cross-entropy; 'ce+dice': plus the soft Dice loss, "
                            "which scores overlap whatever a class's size (default: %(default)s)")
    group.add_argument("--class-weights", choices=CLASS_WEIGHTS, default=BOOK.class_weights,
                       help="'auto': weight each class's cross-entropy by median-frequency balancing, for rare "
                            "foreground (default: %(default)s, as in the book)")
    group.add_argument("--augment", action="store_true",
                       help="random flips, scale/crop and colour jitter of the training images, masks moved "
                            "with them (default: off, as in the book)")
    group.add_argument("--bn-momentum", type=float, default=BOOK.bn_momentum, metavar="M",
                       help="BatchNormalization's moving-statistics momentum; 0.9 for a few dozen images "
                            "(default: %(default)s, Keras' and the book's)")
    group.add_argument("--passes", type=int, default=BOOK.passes, metavar="K",
                       help="go K times through the training images per epoch, each time reshuffled (and "
                            "re-augmented): more steps per evaluation on a few dozen images (default: 1, the book's)")


def add_speed_flags(parser: argparse.ArgumentParser) -> None:
    """How training computes: dtype policy, XLA, recomputation, several devices."""
    group = parser.add_argument_group("speed and memory")
    group.add_argument("--precision", choices=(PRECISION_AUTO, *POLICIES), default=BOOK.precision,
                       help="Keras dtype policy of training: 'auto' trains in mixed_bfloat16 on a GPU of compute "
                            "capability 8.0 or more and on a CPU with AMX, and in float32 (the book's) elsewhere "
                            "(docs/precision.md); evaluation and prediction stay float32 unless named; "
                            "'mixed_float16' is for GPUs "
                            "(default: %(default)s)")
    group.add_argument("--jit-compile", choices=JIT_CHOICES, default=BOOK.jit_compile,
                       help="XLA-compile the training step: 'auto' is Keras' choice (off on machines without "
                            "a GPU); docs/speed.md has its measurements (default: %(default)s)")
    group.add_argument("--remat", nargs="?", choices=(REMAT_AUTO, *REMAT_LEVELS), default=BOOK.remat, const="all",
                       help="recompute backbone activations in the backward pass instead of keeping them, "
                            "for less memory at some speed (docs/speed.md): 'stage0' the full-resolution stem "
                            "and stage 0, 'all' (or --remat alone) each stage in turn; 'auto' is 'stage0' for "
                            "batches of a million pixels or more (the book's 640x480 batch 4) and 'off' below "
                            "(default: %(default)s)")
    group.add_argument("--distribute", choices=DISTRIBUTE_CHOICES, default=BOOK.distribute,
                       help="with --train: 'mirrored' trains on all this machine's GPUs, 'multi-worker' on "
                            "several machines set up by TF_CONFIG (docs/distributed.md); --batch-size "
                            "stays the global batch, split across the replicas (default: %(default)s)")


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """A reader's own data: mask folders, class names, image sizes, validation data, fine-tuning."""
    group = parser.add_argument_group("your own data")
    group.add_argument("--classes", metavar="NAMES",
                       help="comma-separated names of classes 1, 2, ... (background is class 0); by default the "
                            "names stored beside the labels, else the largest class id found sets the count "
                            "(default: %(default)s)")
    group.add_argument("--fit-size", choices=FIT_SIZES, default=BOOK.fit_size,
                       help="images that are not --height x --width: 'refuse' them (the book's check), 'resize' "
                            "image and mask, or 'crop': random crops for training, tiles for evaluation and "
                            "--predict-dir (default: %(default)s)")
    group.add_argument("--val-split", type=float, default=BOOK.val_split, metavar="F",
                       help="with --train: hold out this share of the training images (seeded) to select the best "
                            "weights on; the test set is then scored once, at the end (default: none, the book's "
                            "selection on the test set)")
    group.add_argument("--val-labels", metavar="FILE",
                       help="with --train: validation ground truth in --data-path (a .npy file or a mask folder), "
                            "instead of --val-split (default: %(default)s)")
    group.add_argument("--fine-tune", action="store_true",
                       help="with --train and --restore-weights of another class count: load every layer but the "
                            "classifier and train (default: %(default)s)")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Continuing, replacing and logging a training run."""
    group = parser.add_argument_group("saved runs")
    group.add_argument("--resume", action="store_true",
                       help="with --train: continue the run saved in --save-dir after its last completed "
                            "epoch (weights, optimizer, epoch, histories, seeds), with the same flags "
                            "(default: %(default)s)")
    group.add_argument("--overwrite", action="store_true",
                       help="with --train: let this run replace the best weights and the saved state in "
                            "--save-dir even if they are better or unfinished; with --predict-dir or "
                            "--export: replace earlier outputs (default: %(default)s)")
    group.add_argument("--tensorboard", metavar="DIR",
                       help="with --train: also log every epoch for TensorBoard to DIR (default: %(default)s)")


def add_inference_flags(parser: argparse.ArgumentParser) -> None:
    """Segmenting a folder and exporting the network."""
    group = parser.add_argument_group("batch inference and export (with --restore-weights)")
    group.add_argument("--predict-dir", metavar="DIR",
                       help="segment every .jpg/.jpeg/.png image in DIR, any size, into a coloured mask and an "
                            "overlay per image (default: %(default)s)")
    group.add_argument("--predict-output", metavar="DIR",
                       help=f"with --predict-dir: folder of the masks and overlays (default: "
                            f"{PREDICTION_DIR}/<name of the --predict-dir folder>)")
    group.add_argument("--export", metavar="PATH",
                       help="save the network to PATH in each --export-format (default: %(default)s)")
    group.add_argument("--export-format", action="append", choices=EXPORT_FORMATS, metavar="FORMAT",
                       help="with --export, once per format: 'keras' (PATH.keras), 'savedmodel' (the TensorFlow "
                            "SavedModel folder PATH), 'onnx' (PATH.onnx), 'litert' (PATH.tflite) "
                            f"(default: {' and '.join(BOOK.export_format)})")


def save_summary(backbone: keras.Model, fcn: keras.Model, save_dir: str) -> None:
    """Prints both summaries and saves the network diagrams when graph tools exist."""
    backbone.summary()
    fcn.summary()
    try:
        for model in (fcn, backbone):
            path = os.path.join(save_dir, f"{model.name}.png")
            keras.utils.plot_model(model, to_file=path, show_shapes=True)
            logger.info("Saved the network diagram %s", path)
    except ImportError:
        logger.info("No network diagram: it needs `pip install pydot` and Graphviz (`apt-get install graphviz`).")


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


@dataclasses.dataclass(frozen=True)
class Outputs:
    """Where a run's results go, decided before anything is written."""

    restore_path: str | None = None
    restore_explanation: str = ""
    planned: list[PlannedImage] = dataclasses.field(default_factory=list)
    predict_output: str | None = None
    export_paths: dict[str, str] | None = None


def evaluation_data(labels: LabelSet, config: RunConfig) -> DataGenerator:
    """The batches of a split for scoring: in order, the last partial batch kept."""
    return DataGenerator(labels, config.data_path, batch_size=config.batch_size, shuffle=False, drop_last=False,
                         size=(config.height, config.width), fit_size=config.fit_size)


def check_environment(config: RunConfig) -> None:
    """Refuses a missing `--image-file` and a bad `TF_CONFIG` for `--distribute multi-worker`."""
    if config.image_file and not os.path.isfile(config.image_file):
        raise UsageError(f"--image-file {config.image_file}: no such file.")
    if config.distribute == "multi-worker":
        try:
            read_tf_config()
        except ValueError as error:
            raise UsageError(str(error)) from None


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
    if not os.listdir(config.data_path):
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
        seed = VAL_SPLIT_SEED if config.seed is None else config.seed
        train, validation = split_labels(train, config.val_split, seed)
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


def check_outputs(config: RunConfig) -> Outputs:
    """Checks the output folders and finds the weights to restore, creating nothing.

    Raises:
        UsageError, InferenceError: for a folder that cannot be written, outputs in the way,
            or weights that do not exist.
    """
    if config.train or config.summary:
        check_output_dir(config.save_dir)
    if config.tensorboard:
        check_output_dir(config.tensorboard, "--tensorboard")
    outputs = Outputs()
    if config.predict_dir:
        planned, predict_output = plan_predict_dir(config.predict_dir, config.predict_output, config.overwrite)
        outputs = dataclasses.replace(outputs, planned=planned, predict_output=predict_output)
    if config.export:
        targets = plan_export(config.export, config.export_format, config.overwrite)
        outputs = dataclasses.replace(outputs, export_paths=targets)
    if config.restore_weights:
        path, explanation = resolve_weights_path(config.restore_weights, config.save_dir)
        outputs = dataclasses.replace(outputs, restore_path=path, restore_explanation=explanation)
    return outputs


def set_up_replicas(config: RunConfig, strategy: object) -> str:
    """Checks the batch against the replicas and returns the folder this process saves to."""
    replicas = strategy.num_replicas_in_sync
    if config.batch_size < replicas:
        raise UsageError(f"--batch-size {config.batch_size} is the global batch, split across {replicas} replicas: "
                         f"give at least {replicas}.")
    if config.batch_size % replicas and not backend.is_tensorflow():
        # keras.distribution.DataParallel splits each batch in equal shares.
        raise UsageError(f"--batch-size {config.batch_size} is the global batch, split across {replicas} devices "
                         f"(KERAS_BACKEND={backend.name()}): give a multiple of {replicas}.")
    save_dir = config.save_dir
    if not is_chief(strategy):
        # Only the chief writes the run's files; this worker keeps its own copies for its --resume.
        save_dir = os.path.join(config.save_dir, worker_folder(strategy))
        logger.info("Not the chief: this worker's copies of the weights, state and histories go to %s", save_dir)
    if replicas > 1:
        logger.info("Distributed training (%s): %d replicas, global batch %d (%s per replica)",
                    config.distribute, replicas, config.batch_size, format(config.batch_size / replicas, "g"))
    return save_dir


def choose_precision(config: RunConfig, state_path: str) -> str:
    """The dtype policy of the run: `--precision`, or what `auto` means for it."""
    if config.precision != PRECISION_AUTO:
        return config.precision
    if not config.train:
        return "float32"
    if config.resume:
        # The policy the run was started with, "auto" or not (a state from before "auto" ran float32).
        return recorded_setting(read_training_state(state_path).settings, "precision")
    precision, reason = auto_precision(config.jit_compile)
    if precision != "float32":
        logger.info("Training in %s (--precision auto: %s; --precision float32 for the book's arithmetic)",
                    precision, reason)
    return precision


def build_network(config: RunConfig, n_classes: int) -> tuple[keras.Model, keras.Model]:
    """The backbone and the FCN (Listing 12.3.1), with `--bn-momentum` and `--remat` applied."""
    backbone, fcn = build_model(config.input_shape, n_layers=config.layers, n_classes=n_classes, n=config.n,
                                head_filters=config.head_filters)
    # Under JAX one program computes each layer's statistics over the global batch: nothing to synchronize.
    synchronized = config.distributed and backend.is_tensorflow()
    configure_batchnorm(fcn, config.bn_momentum, synchronized=synchronized)
    if config.train:
        level = remat_level(config.remat, config.batch_size, config.height, config.width,
                            synchronized=synchronized)
        if level != "off":
            pixels = config.batch_size * config.height * config.width / 1e6
            why = (f"auto: {pixels:.1f} million pixels a batch; --remat off keeps them, in more memory"
                   if config.remat == REMAT_AUTO else config.remat)
            logger.info("Recomputing the backbone's %s in the backward pass (--remat %s)",
                        "stem and stage 0" if level == "stage0" else "stages one at a time", why)
        recompute_in_backward(backbone, level)
    return backbone, fcn


def fine_tune_from(fcn: keras.Model, path: str) -> None:
    """`--fine-tune`: every layer of `path` but a classifier of another class count, and says which it left out."""
    left_out = restore_for_fine_tuning(fcn, path)
    if left_out:
        logger.info("--fine-tune: loaded every layer of %s but %s (another class count), which starts afresh",
                    path, ", ".join(left_out))
    else:
        logger.info("--fine-tune: loaded every layer of %s (the class count is the same)", path)


def start_training(config: RunConfig, fcn: keras.Model, data: Data, files: RunFiles, precision: str,
                   started: float) -> tuple[TrainingState, float | None]:
    """Where training starts, and the `--time-budget` deadline (a `time.monotonic()` value) if any."""
    settings = config.training_settings(data.n_classes, precision, data.class_names)
    state = plan_training(files, settings, resume=config.resume, overwrite=config.overwrite,
                          epochs=config.epochs, seed=config.seed, split=data.selection_split)
    deadline = None
    if config.time_budget is not None and config.resume:
        logger.info("--time-budget: the resumed run trains the %d epoch(s) its budget planned.", state.epochs)
    elif config.time_budget is not None:
        deadline = started + 60 * config.time_budget
    if state.best_miou != state.best_miou:  # NaN: best weights without a metrics record
        state.best_miou = score_existing_best(fcn, files.weights, evaluation_data(data.selection, config))
    return state, deadline


def evaluate(config: RunConfig, fcn: keras.Model, data: Data, restore_path: str | None) -> None:
    """`--evaluate`: one image (`--image-file`) or the whole test set, with `--plot`'s figures."""
    if config.image_file:
        names = list(data.class_names) if data.class_names else None
        segment_image_file(fcn, config.image_file, config.height, config.width, config.fit_size, names)
        return
    record = read_best_metrics(restore_path) if restore_path else None
    evaluate_test_set(fcn, evaluation_data(data.test, config), config.plot, record.get("settings") if record else None)


def train_and_report(config: RunConfig, fcn: keras.Model, data: Data, state: TrainingState, files: RunFiles,
                     deadline: float | None) -> None:
    """`--train`: the fit with its per-epoch evaluation, then `report.png` of the best weights."""
    class_weights = None
    if config.class_weights == "auto":
        class_weights = median_frequency_weights(data.train.masks.values(), data.n_classes)
        logger.info("Class weights (median-frequency balancing): %s", ", ".join(
            f"{name} {weight:.3g}" for name, weight in zip(class_names(data.n_classes, data.class_names),
                                                           class_weights)))
    train_data = DataGenerator(
        data.train, config.data_path, batch_size=config.batch_size, shuffle=True, seed=state.shuffle_seed,
        augmentation=Augmentation() if config.augment else None, passes=config.passes, workers=config.workers,
        size=(config.height, config.width), fit_size=config.fit_size,
    )
    # Ignored pixels (255 in a mask, the padding of --fit-size crop) are left out of the loss's mean.
    ignore_pixels = data.train.has_ignore or config.fit_size == "crop"
    test_data = evaluation_data(data.test, config)
    if data.validation is None:
        logger.info("Selecting the best weights on the test set, as the book does: their test score is then "
                    "optimistic (--val-split 0.1 selects on held-out training images instead).")
    else:
        logger.info("Selecting the best weights on %d validation image(s) (%s); the test set is scored once, at "
                    "the end.", len(data.validation.masks), data.validation.path)
    selection_data = test_data if data.validation is None else evaluation_data(data.validation, config)
    train(fcn, train_data, selection_data, state, files, split=data.selection_split,
          learning_rate=config.learning_rate,
          lr_schedule=config.lr_schedule, jit_compile=config.jit_compile,
          loss=build_loss(config.loss, class_weights, data.n_classes, ignore_pixels), resume=config.resume,
          verbose=config.verbose, tensorboard_dir=config.tensorboard, deadline=deadline)
    report_training(fcn, files, state.history, test_data)


def run(config: RunConfig, started: float) -> None:
    """Carries out one run; raises UsageError, DatasetError, CheckpointError or InferenceError for bad input.

    Args:
        config: RunConfig. The parsed flags.
        started: float. `time.monotonic()` at the program's start, the origin of `--time-budget`.
    """
    check_config(config)
    check_environment(config)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    data = load_data(config)
    outputs = check_outputs(config)
    strategy = make_strategy(config.distribute)
    files = RunFiles.of(set_up_replicas(config, strategy), config.depth, config.layers, config.dataset)
    # One run trains into a save folder at a time; evaluation and prediction only read it.
    with training_lock(files.save_dir) if config.train else contextlib.nullcontext():
        precision = choose_precision(config, files.state)
        keras.mixed_precision.set_global_policy(precision)
        # The model's and the optimizer's variables are mirrored only if created in the strategy's scope.
        with strategy.scope():
            run_steps(config, data, outputs, files, precision, started)


def run_steps(config: RunConfig, data: Data, outputs: Outputs, files: RunFiles, precision: str,
              started: float) -> None:
    """The book's order of steps: summary, restore, evaluate, train; then export and predict."""
    backbone, fcn = build_network(config, data.n_classes)
    if outputs.restore_path:
        logger.info(outputs.restore_explanation)
        if config.fine_tune:
            fine_tune_from(fcn, outputs.restore_path)
        else:
            restore_weights(fcn, outputs.restore_path)
    elif config.evaluate:
        logger.warning("Evaluating an untrained network: give --restore-weights to load trained weights.")
    if config.train:
        state, deadline = start_training(config, fcn, data, files, precision, started)
    if config.train or config.summary:
        os.makedirs(files.save_dir, exist_ok=True)
    if config.summary:
        save_summary(backbone, fcn, files.save_dir)
    if config.evaluate:
        evaluate(config, fcn, data, outputs.restore_path)
    if config.train:
        train_and_report(config, fcn, data, state, files, deadline)
    if config.export:
        export_model(fcn, outputs.export_paths)
        logger.info("Exported the network to %s", describe_exports(outputs.export_paths))
    # Last: skipped images end the run with status 2 once every other image is done.
    if config.predict_dir:
        segment_folder(fcn, outputs.planned, outputs.predict_output, config.batch_size, config.verbose,
                       config.fit_size)


def resume_command(argv: list[str]) -> str:
    """The command line that resumes the run `argv` started."""
    kept = []
    skip_value = False
    for token in argv:
        if skip_value:
            skip_value = False
        elif token == "--restore-weights":
            skip_value = True
        elif token not in ("--overwrite", "--resume") and not token.startswith("--restore-weights="):
            kept.append(token)
    return shlex.join(["python3", "fcn-12.3.1.py", *kept, "--resume"])


def raise_terminated(signum: int, frame: object) -> None:
    """SIGTERM's handler: stop as Ctrl-C stops, keeping the last completed epoch's state."""
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Handles SIGTERM like Ctrl-C for the `with` block (in the main thread), then puts back the old handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def report_interruption(interrupted: TrainingInterrupted | KeyboardInterrupt, argv: list[str]) -> int:
    """Prints the one line of an interrupted run (and how to resume it); returns its exit status."""
    terminated = isinstance(interrupted, Terminated) or getattr(interrupted, "terminated", False)
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    if not isinstance(interrupted, TrainingInterrupted):
        print(f"fcn-12.3.1.py: {what}; the best weights saved so far are kept.", file=sys.stderr)
    elif interrupted.epochs_done == 0:
        print(f"fcn-12.3.1.py: {what} before the first epoch ended; nothing to resume, "
              "and the best weights are unchanged.", file=sys.stderr)
    else:
        print(f"fcn-12.3.1.py: {what}; the state after the last completed epoch is in "
              f"{interrupted.state_path}; resume with: {resume_command(argv)}", file=sys.stderr)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status, with one line on stderr for each failure.

    Statuses (`segmentation.errors`): 0 done, 2 bad input (or usage, or a file that cannot be
    written), 3 the loss or weights became NaN or infinite, 130 interrupted with Ctrl-C, 143
    terminated by SIGTERM (both keep the state of the last completed epoch).
    """
    started = time.monotonic()
    argv = sys.argv[1:] if argv is None else list(argv)
    config = RunConfig.from_namespace(build_parser().parse_args(argv))
    level = logging.WARNING if config.verbose <= 0 else logging.INFO if config.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stdout, force=True)
    # tf.distribute logs every reduction at INFO level.
    logging.getLogger("tensorflow").setLevel(logging.DEBUG if config.verbose >= 2 else logging.WARNING)
    try:
        with sigterm_as_interrupt():
            run(config, started)
    except (UsageError, DatasetError, CheckpointError, InferenceError, SaveError) as error:
        print(f"fcn-12.3.1.py: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as error:
        print(f"fcn-12.3.1.py: error: {error}", file=sys.stderr)
        return EXIT_NON_FINITE
    except (TrainingInterrupted, KeyboardInterrupt) as interrupted:
        return report_interruption(interrupted, argv)
    return 0
