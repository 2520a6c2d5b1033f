"""Train and evaluate the chapter 12 FCN for semantic segmentation.

The command line of *Advanced Deep Learning with Keras*, chapter 12, on Keras 3:

    python3 fcn-12.3.1.py --train
    python3 fcn-12.3.1.py --evaluate --restore-weights=ResNet56v2-3layer-drinks-best-iou.h5
    python3 fcn-12.3.1.py --evaluate --restore-weights=... --image-file=dataset/drinks/0010018.jpg

The book's order of actions is kept: summary, restore, evaluate, train; then
the project's export (`--export`) and batch inference (`--predict-dir`).
"""

import os

# Quiet TensorFlow's start-up banner unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import secrets  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from typing import NoReturn  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from checkpoints import (  # noqa: E402
    SETTING_DEFAULTS,
    CheckpointError,
    TrainingState,
    check_same_settings,
    last_state_path,
    read_best_metrics,
    read_training_state,
    restore_training_state,
)
from distribution import (  # noqa: E402
    DISTRIBUTE_CHOICES,
    is_chief,
    make_strategy,
    prepare_for_fit,
    read_tf_config,
    worker_folder,
)
from data_generator import DataGenerator, DatasetError, LabelSet, check_image, load_labels, read_image  # noqa: E402
from figures import save_input_and_mask, save_triptych  # noqa: E402
from inference import (  # noqa: E402
    InferenceError,
    PlannedImage,
    check_export_paths,
    export_model,
    list_images,
    plan_outputs,
    predict_directory,
)
from augment import Augmentation  # noqa: E402
from budget import TimeBudget  # noqa: E402
from losses import CLASS_WEIGHTS, LOSSES, build_loss, median_frequency_weights  # noqa: E402
from metrics import SegmentationScores, class_names  # noqa: E402
from model import build_model, configure_batchnorm, weights_name  # noqa: E402
from precision import AUTO, POLICIES, default_precision  # noqa: E402
from remat import AUTO as REMAT_AUTO, LEVELS as REMAT_LEVELS, recompute_in_backward, remat_level  # noqa: E402
from report import REPORT_FILE, write_training_report  # noqa: E402
from resnet import check_input_shape  # noqa: E402
from schedules import (  # noqa: E402
    BASE_LEARNING_RATE,
    LR_SCHEDULES,
    STEP_SCHEDULES,
    LearningRateLogger,
    WarmupCosine,
    get_lr_schedule,
)
from training import (  # noqa: E402
    AccuracyCallback,
    CollapseMonitor,
    NonFiniteLossCallback,
    NonFiniteLossError,
    TensorBoardLogger,
    TrainingStateCallback,
    collapse_hint,
    evaluate_dataset,
    predict_batch,
    save_histories,
    write_history_csv,
)

logger = logging.getLogger("fcn")

PREDICTION_DIR = "prediction"
WEIGHTS_SUFFIX = ".weights.h5"
JIT_CHOICES = {"auto": "auto", "on": True, "off": False}
HISTORY_CSV = "history.csv"
# Exit statuses besides 0: bad input, a numerical fault in training, Ctrl-C (128 + SIGINT).
EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command-line value or named file cannot be used; the message says how to fix it."""


class TrainingInterrupted(Exception):
    """Ctrl-C during training; carries the epochs whose state is saved."""

    def __init__(self, epochs_done: int, state_path: str):
        super().__init__(f"interrupted after {epochs_done} epoch(s)")
        self.epochs_done = epochs_done
        self.state_path = state_path


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line, without the usage block above them."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; --help lists the options.\n")


def build_parser() -> argparse.ArgumentParser:
    """The book's command line (model_utils.parser) plus the project's additions."""
    parser = OneLineParser(
        prog="fcn-12.3.1.py",
        description="FCN with a ResNet v2 backbone for semantic segmentation (chapter 12).",
    )
    group = parser.add_argument_group("model and training")
    group.add_argument("--layers", type=int, default=3, metavar="N",
                       help="number of features-pyramid maps after the main one (default: %(default)s)")
    group.add_argument("-b", "--batch-size", "--batch_size", dest="batch_size", type=int, default=4, metavar="N",
                       help="batch size during training (default: %(default)s)")
    group.add_argument("--epochs", type=int, default=100, metavar="N",
                       help="number of epochs to train (default: %(default)s)")
    group.add_argument("--workers", type=int, default=4, metavar="N",
                       help="data generator worker threads (default: %(default)s)")
    group.add_argument("--depth", type=int, default=56, metavar="D",
                       help="ResNet v2 depth, 9n+2; the book's backbone is ResNet56v2 (default: %(default)s)")
    group.add_argument("-t", "--train", action="store_true", help="train the model")
    group.add_argument("--summary", action="store_true",
                       help="print the model summaries and save the network diagrams to --save-dir")
    group.add_argument("--save-dir", default="weights", metavar="DIR",
                       help="folder of weights and histories (default: %(default)s)")
    group.add_argument("--dataset", default="drinks", metavar="NAME",
                       help="data set name, part of the weights name (default: %(default)s)")
    group.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="text",
                       help="'text': halve every 20 epochs after 40, as the chapter says; 'code': the book's "
                            "published lr_scheduler, x0.5/x0.1/x0.05 after 40/60/80; 'cosine': linear warm-up "
                            "over the first 10%% of the run's steps to --learning-rate, then cosine decay to 0 "
                            "at its last step, for short runs (default: %(default)s)")
    group.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                       help="with --train: finish the run, its evaluations and report within MINUTES from the "
                            "start: the first steps are timed, the epochs that fit are trained (at most "
                            "--epochs) and a 'cosine' schedule ends at the last of them (default: no budget)")
    group.add_argument("--seed", type=int, default=None, metavar="S",
                       help="seed Python, NumPy and TensorFlow for a reproducible run; deterministic ops "
                            "can be slower (default: %(default)s)")
    group.add_argument("--learning-rate", type=float, default=BASE_LEARNING_RATE, metavar="LR",
                       help="Adam's learning rate before the schedule's decay, the peak of 'cosine' (default: %(default)s)")
    group.add_argument("--jit-compile", choices=JIT_CHOICES, default="auto",
                       help="XLA-compile the training step: 'auto' is Keras' choice (off on machines without "
                            "a GPU); 'on' was 1.6x faster at 128x96 on one 2-core CPU and slower on another "
                            "(README, Speed on a CPU) (default: %(default)s)")
    group.add_argument("--precision", choices=(AUTO, *POLICIES), default=AUTO,
                       help="Keras dtype policy of training: 'auto' trains in mixed_bfloat16 on a CPU with AMX "
                            "(2.4x faster at 640x480) and in float32 (the book's) elsewhere; evaluation "
                            "and prediction stay float32 unless named; 'mixed_float16' is for GPUs "
                            "(default: %(default)s)")
    group.add_argument("--remat", nargs="?", choices=(REMAT_AUTO, *REMAT_LEVELS), default=REMAT_AUTO, const="all",
                       help="recompute backbone activations in the backward pass instead of keeping them: "
                            "'stage0' the full-resolution stem and stage 0 (12.1 -> 8.8 GB, 3-9%% slower at "
                            "640x480 batch 4 in bf16), 'all' (or --remat alone) each stage in turn (5.7 GB, "
                            "14-20%% slower); 'auto' is 'stage0' for batches of a million pixels or more (the "
                            "book's 640x480 batch 4) and 'off' below (README, Speed on a CPU) "
                            "(default: %(default)s)")
    group.add_argument("--bn-momentum", type=float, default=0.99, metavar="M",
                       help="BatchNormalization's moving-statistics momentum; 0.9 for a few dozen images "
                            "(default: %(default)s, Keras' and the book's)")
    group.add_argument("--passes", type=int, default=1, metavar="K",
                       help="go K times through the training images per epoch, each time reshuffled (and "
                            "re-augmented): more steps per evaluation on a few dozen images (default: 1, the book's)")
    group.add_argument("--augment", action="store_true",
                       help="random flips, scale/crop and colour jitter of the training images, masks moved "
                            "with them (default: off, as in the book)")
    group.add_argument("--class-weights", choices=CLASS_WEIGHTS, default="none",
                       help="'auto': weight each class's cross-entropy by median-frequency balancing, for rare "
                            "foreground (default: %(default)s, as in the book)")
    group.add_argument("--loss", choices=LOSSES, default="ce",
                       help="'ce': the book's categorical cross-entropy; 'ce+dice': plus the soft Dice loss, "
                            "which scores overlap whatever a class's size (default: %(default)s)")
    group.add_argument("--resume", action="store_true",
                       help="with --train: continue the run saved in --save-dir after its last completed "
                            "epoch (weights, optimizer, epoch, histories, seeds), with the same flags "
                            "(default: %(default)s)")
    group.add_argument("--distribute", choices=DISTRIBUTE_CHOICES, default="none",
                       help="with --train: 'mirrored' trains on all this machine's GPUs, 'multi-worker' on "
                            "several machines set up by TF_CONFIG (README, 'Distributed training'); --batch-size "
                            "stays the global batch, split across the replicas (default: %(default)s)")
    group.add_argument("--overwrite", action="store_true",
                       help="with --train: let this run replace the best weights and the saved state in "
                            "--save-dir even if they are better or unfinished; with --predict-dir or "
                            "--export: replace earlier outputs (default: %(default)s)")
    group.add_argument("--tensorboard", metavar="DIR",
                       help="with --train: also log every epoch for TensorBoard to DIR (default: %(default)s)")

    group = parser.add_argument_group("inputs")
    group.add_argument("--height", type=int, default=480, help="input image height (default: %(default)s)")
    group.add_argument("--width", type=int, default=640, help="input image width (default: %(default)s)")
    group.add_argument("--channels", type=int, default=3, help="input image channels (default: %(default)s)")
    group.add_argument("--data-path", default="dataset/drinks", metavar="DIR",
                       help="folder of the images and label files (default: %(default)s)")
    group.add_argument("--train-labels", default="segmentation_train.npy", metavar="FILE",
                       help="training ground truth in --data-path (default: %(default)s)")
    group.add_argument("--test-labels", default="segmentation_test.npy", metavar="FILE",
                       help="test ground truth in --data-path (default: %(default)s)")

    group = parser.add_argument_group("evaluation")
    group.add_argument("--restore-weights", metavar="NAME",
                       help="weights to load: a name in --save-dir (the book's .h5 name is understood) "
                            "or a path (default: %(default)s)")
    group.add_argument("-e", "--evaluate", action="store_true", help="evaluate the model on the test set")
    group.add_argument("--image-file", metavar="FILE",
                       help="with --evaluate: segment this image into prediction/ (default: %(default)s)")
    group.add_argument("--plot", action="store_true",
                       help="with --evaluate: save each test image's input, mask and triptych to prediction/")
    group.add_argument("--verbose", type=int, default=1, metavar="LEVEL",
                       help="0 quiet, 1 progress and results, 2 debug (default: %(default)s)")

    group = parser.add_argument_group("batch inference and export (with --restore-weights)")
    group.add_argument("--predict-dir", metavar="DIR",
                       help="segment every .jpg/.jpeg/.png image in DIR, any size, into a coloured mask and an "
                            "overlay per image (default: %(default)s)")
    group.add_argument("--predict-output", metavar="DIR",
                       help=f"with --predict-dir: folder of the masks and overlays (default: "
                            f"{PREDICTION_DIR}/<name of the --predict-dir folder>)")
    group.add_argument("--export", metavar="PATH",
                       help="save the network as PATH.keras and as the TensorFlow SavedModel folder PATH "
                            "(default: %(default)s)")
    return parser


def resolve_weights_path(name: str, save_dir: str) -> tuple[str, str]:
    """Finds the weights file a `--restore-weights` value means.

    Tries `<save_dir>/NAME`, then NAME as a path. A book-style `.h5` name is
    taken as it is if that file exists (the book's own Keras 2 weights),
    otherwise it means the Keras 3 `.weights.h5` file of the same name.

    Args:
        name: str. The `--restore-weights` value.
        save_dir: str. The `--save-dir` value.

    Returns:
        `(path, explanation)`: the file to load and a sentence on how it was found.

    Raises:
        UsageError: if no candidate exists.
    """
    tried = []
    for base in dict.fromkeys([os.path.join(save_dir, name), name]):
        if base.endswith(WEIGHTS_SUFFIX):
            candidates = [base]
        elif base.endswith(".h5"):
            candidates = [base, base[: -len(".h5")] + WEIGHTS_SUFFIX]
        else:
            candidates = [base, base + WEIGHTS_SUFFIX]
        for candidate in candidates:
            tried.append(candidate)
            if os.path.isfile(candidate):
                if candidate == base:
                    return candidate, f"Loading weights {candidate}"
                return candidate, (
                    f"Loading weights {candidate} (--restore-weights {name} names no file; Keras 3 "
                    f"saves weights with the {WEIGHTS_SUFFIX} suffix)"
                )
    available = sorted(f for f in os.listdir(save_dir) if f.endswith(".h5")) if os.path.isdir(save_dir) else []
    hint = f" Weights in {save_dir}: {', '.join(available)}." if available else " Train first with --train."
    raise UsageError(f"--restore-weights {name}: no such file (tried {', '.join(tried)}).{hint}")


def restore_weights(model: keras.Model, path: str) -> None:
    """Loads weights, turning Keras' errors into one-line UsageErrors.

    Args:
        model: keras.Model. The FCN.
        path: str. A `.weights.h5` file, or the book's Keras 2 `.h5` file.

    Raises:
        UsageError: if the file is unreadable or does not fit the model.
    """
    try:
        with warnings.catch_warnings():
            # Keras warns per mismatched sublayer before raising; the error says it once.
            warnings.simplefilter("ignore")
            model.load_weights(path)
    except Exception as error:  # h5py and Keras raise many types for a bad or mismatched file
        detail = " ".join(str(error).split())[:300]
        raise UsageError(
            f"{path}: these weights do not fit the model (--layers, --depth, class count, "
            f"--height/--width) or the file is damaged: {detail}"
        ) from None


def report_scores(scores: SegmentationScores) -> None:
    """Logs a line per test image, the book's totals and the per-class table."""
    for image in scores.images:
        logger.info(
            "%s: %d classes, mIoU=%.4f, pixel accuracy=%.2f%%",
            image.name, image.num_classes_present, image.miou, 100 * image.pixel_accuracy,
        )
    logger.info(
        "Test images: %d  mIoU (book, mean of per-image mIoU): %.4f  mean pixel accuracy: %.2f%%",
        len(scores.images), scores.mean_iou, 100 * scores.mean_pixel_accuracy,
    )
    truth_pixels = scores.confusion.sum(axis=1)
    predicted_pixels = scores.confusion.sum(axis=0)
    logger.info("%-14s %8s %14s %14s", "class", "IoU", "true pixels", "predicted")
    for name, iou, truth, predicted in zip(
        class_names(scores.n_classes), scores.class_iou, truth_pixels, predicted_pixels
    ):
        iou_text = "   n/a" if np.isnan(iou) else f"{iou:.4f}"
        logger.info("%-14s %8s %14d %14d", name, iou_text, truth, predicted)
    logger.info("Data-set-level mIoU (one confusion matrix over all test pixels): %.4f", scores.dataset_miou)


def evaluate_test_set(model: keras.Model, test_labels: LabelSet, data_path: str, batch_size: int, plot: bool,
                      training_settings: dict | None = None) -> SegmentationScores:
    """Scores the test set in batches, optionally saving the book's figures.

    `training_settings`, those recorded with the restored weights when known,
    let a collapse warning name only the flags their run lacked.
    """

    def save_figures(keys, images, truths, predictions):
        for key, image, truth, predicted in zip(keys, images, truths, predictions):
            stem = os.path.splitext(os.path.basename(key))[0]
            save_input_and_mask(image, predicted, PREDICTION_DIR, stem)
            save_triptych(image, truth, predicted, os.path.join(PREDICTION_DIR, f"{stem}-triptych.png"), key)

    generator = DataGenerator(test_labels, data_path, batch_size=batch_size, shuffle=False, drop_last=False)
    scores = evaluate_dataset(model, generator, on_batch=save_figures if plot else None)
    report_scores(scores)
    for warning in CollapseMonitor(scores.n_classes, patience=1, hint=collapse_hint(training_settings)).check(scores):
        logger.warning(warning)
    if plot:
        logger.info("Saved input, mask and triptych of each test image to %s/", PREDICTION_DIR)
    return scores


def segment_image_file(model: keras.Model, image_file: str, height: int, width: int) -> None:
    """Segments one image and saves the book's `-input.png` / `-mask.png` pair."""
    image = read_image(image_file, height, width)
    predicted = np.argmax(predict_batch(model, image[np.newaxis]), axis=-1)[0]
    stem = os.path.splitext(os.path.basename(image_file))[0]
    input_path, mask_path = save_input_and_mask(image, predicted, PREDICTION_DIR, stem)
    present = ", ".join(class_names(model.output_shape[-1])[k] for k in np.unique(predicted))
    logger.info("Segmented %s (classes found: %s): %s, %s", image_file, present, input_path, mask_path)


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


def report_training(fcn: keras.Model, weights_path: str, history: dict[str, list[float]], test_labels: LabelSet,
                    data_path: str, batch_size: int, save_dir: str) -> None:
    """Writes `<save_dir>/report.png` for the best weights of a finished training run."""
    if os.path.isfile(weights_path):
        restore_weights(fcn, weights_path)
        subject = f"best weights {os.path.basename(weights_path)}"
    else:
        # No epoch ever beat mIoU 0, so no best weights were saved: report on the last ones.
        subject = "last weights (no best weights were saved)"
    generator = DataGenerator(test_labels, data_path, batch_size=batch_size, shuffle=False, drop_last=False)
    path = os.path.join(save_dir, REPORT_FILE)
    epochs = len(history.get("loss", []))
    write_training_report(fcn, generator, history, path, f"Training report: {subject}, {epochs} epoch(s)")
    logger.info("Saved the training report %s", path)


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


def check_output_dir(directory: str, flag: str = "--save-dir") -> None:
    """Refuses an output folder that is a file or cannot be written, without creating anything.

    Args:
        directory: str. The folder.
        flag: str. The flag that named it, for the message. Defaults to "--save-dir".

    Raises:
        UsageError: naming the folder and the reason.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"{flag} {directory}: is a file, not a folder. Choose another {flag}.")
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag} {directory}: cannot be created because {existing} is a file. "
                         f"Choose another {flag}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {directory}: {existing} is not writable. Choose another {flag}.")


def plan_training(args: argparse.Namespace, settings: dict, weights_path: str, state_path: str) -> TrainingState:
    """Decides where training starts and which mIoU the saved best weights hold, before anything is written.

    Args:
        args: argparse.Namespace. Uses `resume`, `overwrite`, `epochs`, `seed`.
        settings: dict. This run's settings (see `checkpoints.RESUME_SETTINGS`).
        weights_path: str. The best-weights file.
        state_path: str. The last-state file.

    Returns:
        The starting `TrainingState`; its `best_miou` is NaN when a best-weights file exists
        with no metrics record (the caller then scores it).

    Raises:
        CheckpointError, UsageError: for a state that cannot be resumed or would be lost.
    """
    record = read_best_metrics(weights_path) if os.path.isfile(weights_path) else None
    if args.resume:
        state = read_training_state(state_path)
        check_same_settings(state, settings, state_path)
        # A budgeted run (--time-budget) finishes the epochs its budget planned.
        epochs = state.epochs if state.settings.get("time_budget") is not None else args.epochs
        if state.epochs_done >= epochs:
            raise UsageError(
                f"--resume: {state_path} has finished {state.epochs_done} epoch(s) and --epochs is "
                f"{epochs}; give a larger --epochs to train more."
            )
        state.epochs = epochs
        if record is not None:
            state.best_miou = max(state.best_miou, float(record["test_miou"]))
        logger.info("Resuming %s after epoch %d of %d (best mIoU so far %.4f)",
                    state_path, state.epochs_done, args.epochs, state.best_miou)
        return state
    if os.path.isfile(state_path) and not args.overwrite:
        earlier = read_training_state(state_path)
        if earlier.epochs_done < earlier.epochs:
            raise UsageError(
                f"{state_path}: an unfinished run (epoch {earlier.epochs_done} of {earlier.epochs}) is saved "
                "here; add --resume to continue it, or --overwrite to start afresh."
            )
    best_miou = 0.0
    if os.path.isfile(weights_path):
        if args.overwrite:
            logger.info("--overwrite: the existing best weights %s will be replaced by this run's best.", weights_path)
        elif record is not None:
            best_miou = float(record["test_miou"])
            logger.info(
                "Best weights %s exist (mIoU %.4f, epoch %s): this run replaces them only with a better "
                "model; give --overwrite to replace them anyway.", weights_path, best_miou, record.get("epoch"),
            )
        else:
            best_miou = math.nan
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    return TrainingState(epochs_done=0, epochs=args.epochs, history={}, best_miou=best_miou,
                         seed=args.seed, shuffle_seed=seed, settings=settings)


def score_existing_best(fcn: keras.Model, weights_path: str, test_labels: LabelSet, data_path: str,
                        batch_size: int) -> float:
    """The test mIoU of a best-weights file that has no metrics record, leaving `fcn` as it was.

    Raises:
        UsageError: if the file does not fit the model.
    """
    initial = fcn.get_weights()
    try:
        restore_weights(fcn, weights_path)
    except UsageError:
        raise UsageError(
            f"{weights_path}: best weights of another model are in the way (no metrics file beside them); "
            "move them away, choose another --save-dir, or give --overwrite to replace them."
        ) from None
    generator = DataGenerator(test_labels, data_path, batch_size=batch_size, shuffle=False, drop_last=False)
    miou = evaluate_dataset(fcn, generator).mean_iou
    fcn.set_weights(initial)
    logger.info(
        "Best weights %s exist without a metrics file; they score mIoU %.4f on the test set, and this run "
        "replaces them only with a better model (--overwrite to replace them anyway).", weights_path, miou,
    )
    return miou


def train(
    fcn: keras.Model,
    train_labels: LabelSet,
    test_labels: LabelSet,
    data_path: str,
    batch_size: int,
    workers: int,
    learning_rate: float,
    lr_schedule: str,
    jit_compile: str,
    loss: keras.losses.Loss | str,
    augmentation: Augmentation | None,
    passes: int,
    state: TrainingState,
    resume: bool,
    weights_path: str,
    state_path: str,
    save_dir: str,
    verbose: int,
    tensorboard_dir: str | None = None,
    deadline: float | None = None,
) -> keras.callbacks.History:
    """Trains with Adam, evaluating every epoch (Listing 12.3.3).

    The book's loss is categorical cross-entropy and it does not augment;
    `loss` and `augmentation` come from `--loss`, `--class-weights` and `--augment`.
    With `tensorboard_dir` (`--tensorboard`) every epoch's logs, the test
    metrics included, are also written there for TensorBoard. With `deadline`
    (`--time-budget`, a `time.monotonic()` value) the run trains the epochs
    that fit before it, and records them in `state.epochs`.

    After every epoch the full state goes to `state_path`; with `resume` the
    run continues from it: weights, optimizer, epoch count, histories and the
    shuffling order.

    Raises:
        TrainingInterrupted: on Ctrl-C (the state of the last completed epoch is kept).
        NonFiniteLossError: when the loss or weights become NaN or infinite.
    """
    train_generator = DataGenerator(
        train_labels, data_path, batch_size=batch_size, shuffle=True, seed=state.shuffle_seed,
        augmentation=augmentation, passes=passes, workers=workers,
    )
    # Replay the completed epochs' reshuffles, so a resumed run sees the order it would have seen.
    for _ in range(state.epochs_done):
        train_generator.on_epoch_end()
    test_generator = DataGenerator(test_labels, data_path, batch_size=batch_size, shuffle=False, drop_last=False)
    step_schedule = None
    if lr_schedule in STEP_SCHEDULES:
        step_schedule = WarmupCosine(learning_rate, total_steps=state.epochs * len(train_generator))
        schedule_callback = LearningRateLogger(step_schedule)
    else:
        schedule_callback = keras.callbacks.LearningRateScheduler(get_lr_schedule(lr_schedule, learning_rate))
    fcn.compile(
        optimizer=keras.optimizers.Adam(learning_rate=step_schedule or learning_rate),
        loss=loss,
        jit_compile=JIT_CHOICES[jit_compile],
    )
    prepare_for_fit(fcn)
    history_csv = os.path.join(save_dir, HISTORY_CSV)
    miou_history = state.history.get("test_miou", [])
    mpla_history = [100.0 * value for value in state.history.get("test_pixel_accuracy", [])]
    if resume:
        restore_training_state(fcn, state_path)
        # A kill between an epoch's history files and its state can leave an epoch too many there.
        write_history_csv(history_csv, state.history, state.epochs_done)
        save_histories(save_dir, miou_history, mpla_history)
    logger.info("Classes: %d  Batch size: %d  Training images: %d  Test images: %d",
                train_labels.n_classes, batch_size, len(train_labels.masks), len(test_labels.masks))
    logger.info("Best weights: %s  Last state (for --resume): %s", weights_path, state_path)
    accuracy = AccuracyCallback(
        test_generator, weights_path, save_dir, best_miou=state.best_miou, settings=state.settings,
        miou_history=miou_history, mpla_history=mpla_history,
    )
    callbacks = [
        # First, so the epoch's progress line is finished before the evaluation logs.
        keras.callbacks.ProgbarLogger(),
        # Before every callback that saves, so nothing is saved from a NaN model.
        NonFiniteLossCallback(),
        accuracy,
        schedule_callback,
        # After the evaluation, so an epoch's time includes it; before the state is saved.
        *([TimeBudget(deadline, len(train_generator), len(test_generator), state.epochs, step_schedule,
                      on_plan=lambda epochs: setattr(state, "epochs", epochs))] if deadline is not None else []),
        # After the callbacks that add the test metrics and the learning rate to the logs.
        *([TensorBoardLogger(tensorboard_dir)] if tensorboard_dir else []),
        # Last, so the logs hold the test metrics and the state says an epoch is done only
        # once its best weights are written.
        TrainingStateCallback(state_path, history_csv, state, lambda: accuracy.best_miou),
    ]
    try:
        return fcn.fit(train_generator, epochs=state.epochs, initial_epoch=state.epochs_done,
                       callbacks=callbacks, verbose=1 if verbose else 0)
    except KeyboardInterrupt:
        raise TrainingInterrupted(state.epochs_done, state_path) from None


def run(args: argparse.Namespace, started: float) -> None:
    """Carries out the parsed command line; raises UsageError/DatasetError/CheckpointError for bad input.

    Args:
        args: argparse.Namespace. The parsed flags.
        started: float. `time.monotonic()` at the program's start, the origin of `--time-budget`.
    """
    if (args.image_file or args.plot) and not args.evaluate:
        raise UsageError("--image-file and --plot are used with --evaluate.")
    if not (args.train or args.evaluate or args.summary or args.predict_dir or args.export):
        raise UsageError("nothing to do: give --train, --evaluate, --summary, --predict-dir or --export (see --help).")
    inference_flags = args.predict_dir or args.export
    if args.resume and not args.train:
        raise UsageError("--resume is used with --train.")
    if args.overwrite and not (args.train or inference_flags):
        raise UsageError("--overwrite is used with --train, --predict-dir or --export.")
    if args.tensorboard and not args.train:
        raise UsageError("--tensorboard is used with --train.")
    if args.time_budget is not None and not args.train:
        raise UsageError("--time-budget is used with --train.")
    if args.time_budget is not None and not (math.isfinite(args.time_budget) and args.time_budget > 0):
        raise UsageError(f"--time-budget {args.time_budget}: must be a positive number of minutes, e.g. 10.")
    if args.predict_output and not args.predict_dir:
        raise UsageError("--predict-output is used with --predict-dir.")
    if inference_flags and args.train:
        raise UsageError("--predict-dir and --export are not used with --train: train first, then give them "
                         "with --restore-weights.")
    if inference_flags and not args.restore_weights:
        raise UsageError("--predict-dir and --export need trained weights: give --restore-weights.")
    if args.resume and (args.overwrite or args.restore_weights):
        raise UsageError("--resume continues the saved run as it was: leave out --overwrite and --restore-weights.")
    if args.image_file and not os.path.isfile(args.image_file):
        raise UsageError(f"--image-file {args.image_file}: no such file.")
    if args.channels != 3:
        raise UsageError(f"--channels {args.channels}: the images are RGB, so --channels must be 3.")
    if args.depth < 11 or (args.depth - 2) % 9:
        raise UsageError(f"--depth {args.depth}: ResNet v2 depth must be 9n+2 (11, 20, ..., 56, 110).")
    if args.batch_size < 1 or args.epochs < 1 or args.workers < 1 or args.passes < 1:
        raise UsageError("--batch-size, --epochs, --workers and --passes must be at least 1.")
    if not 0 <= args.bn_momentum < 1:
        raise UsageError(f"--bn-momentum {args.bn_momentum}: must be in [0, 1), e.g. 0.9.")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise UsageError(f"--learning-rate {args.learning_rate}: must be a positive number, e.g. 1e-3.")
    input_shape = (args.height, args.width, args.channels)
    try:
        check_input_shape(input_shape, args.layers)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.precision == "mixed_bfloat16" and args.jit_compile == "on":
        # TensorFlow's XLA rejects the mixed bfloat16/float32 gradient of the bilinear upsampling.
        raise UsageError("--precision mixed_bfloat16 does not compile with --jit-compile on: use --jit-compile off.")
    if args.distribute != "none" and not args.train:
        raise UsageError(f"--distribute {args.distribute} is used with --train.")
    recomputing = args.remat not in (REMAT_AUTO, "off")
    if recomputing and not args.train:
        raise UsageError(f"--remat {args.remat} is used with --train.")
    if recomputing and args.distribute != "none":
        # Synchronized BatchNormalization would count each batch twice in its statistics.
        raise UsageError(f"--remat {args.remat} cannot be combined with --distribute {args.distribute}: "
                         "leave one out.")
    if args.distribute == "multi-worker":
        try:
            read_tf_config()
        except ValueError as error:
            raise UsageError(str(error)) from None
        if args.seed is None:
            # Every worker reads the whole training set and keeps its share of each batch.
            raise UsageError("--distribute multi-worker: give every worker the same --seed S, so that they "
                             "shuffle the training set in the same order.")
    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)

    train_labels_path = os.path.join(args.data_path, args.train_labels)
    test_labels_path = os.path.join(args.data_path, args.test_labels)
    if not os.path.isdir(args.data_path):
        raise DatasetError(f"{args.data_path}: data folder not found. Give the right --data-path.")
    if not os.listdir(args.data_path):
        raise DatasetError(
            f"{args.data_path}: the data folder is empty. Put the images and label files there, or make a "
            "synthetic set with utils/generate_synthetic_drinks.py."
        )
    needs_test_set = args.train or (args.evaluate and not args.image_file)
    test_labels = load_labels(test_labels_path, args.data_path, args.height, args.width) if needs_test_set else None
    has_train_labels = args.train or os.path.isfile(train_labels_path)
    train_labels = load_labels(train_labels_path, args.data_path, args.height, args.width) if has_train_labels else None
    if train_labels is None and test_labels is None:
        # --image-file without the training masks: the class count comes from the test masks.
        test_labels = load_labels(test_labels_path, args.data_path, args.height, args.width)
    n_classes = (train_labels or test_labels).n_classes
    if test_labels is not None and test_labels.n_classes != n_classes:
        raise DatasetError(
            f"{test_labels_path}: masks have {test_labels.n_classes} classes but "
            f"{train_labels_path} has {n_classes}. Regenerate both with the same classes."
        )
    if args.train and args.batch_size > len(train_labels.masks):
        raise DatasetError(
            f"{train_labels_path}: --batch-size {args.batch_size} is larger than the {len(train_labels.masks)} "
            "images it lists, so an epoch would have no batch. Lower --batch-size."
        )
    if args.image_file:
        check_image(args.image_file, args.height, args.width)
    if args.train or args.summary:
        check_output_dir(args.save_dir)
    if args.tensorboard:
        check_output_dir(args.tensorboard, "--tensorboard")
    if args.predict_dir:
        planned, predict_output = plan_predict_dir(args.predict_dir, args.predict_output, args.overwrite)
    if args.export:
        keras_path, saved_model_dir = check_export_paths(args.export, args.overwrite)
        check_output_dir(os.path.dirname(os.path.abspath(saved_model_dir)), "--export")
    restore_path = None
    if args.restore_weights:
        restore_path, explanation = resolve_weights_path(args.restore_weights, args.save_dir)

    strategy = make_strategy(args.distribute)
    replicas = strategy.num_replicas_in_sync
    if args.batch_size < replicas:
        raise UsageError(f"--batch-size {args.batch_size} is the global batch, split across {replicas} replicas: "
                         f"give at least {replicas}.")
    save_dir = args.save_dir
    if not is_chief(strategy):
        # Only the chief writes the run's files; this worker keeps its own copies for its --resume.
        save_dir = os.path.join(args.save_dir, worker_folder(strategy))
        logger.info("Not the chief: this worker's copies of the weights, state and histories go to %s", save_dir)
    if replicas > 1:
        logger.info("Distributed training (%s): %d replicas, global batch %d (%s per replica)",
                    args.distribute, replicas, args.batch_size, format(args.batch_size / replicas, "g"))
    weights_path = os.path.join(save_dir, weights_name(args.depth, args.layers, args.dataset) + WEIGHTS_SUFFIX)
    state_path = last_state_path(weights_path)
    precision = args.precision
    if precision == AUTO and not args.train:
        precision = "float32"
    elif precision == AUTO and args.resume:
        # The policy the run was started with, "auto" or not (a state from before "auto" ran float32).
        precision = read_training_state(state_path).settings.get("precision", SETTING_DEFAULTS["precision"])
    elif precision == AUTO:
        precision = default_precision(args.jit_compile)
        if precision != "float32":
            logger.info("Training in %s (--precision auto: this CPU computes bfloat16 natively; "
                        "--precision float32 for the book's arithmetic)", precision)
    keras.mixed_precision.set_global_policy(precision)
    # The model's and the optimizer's variables are mirrored only if created in the strategy's scope.
    with strategy.scope():
        backbone, fcn = build_model(input_shape, n_layers=args.layers, n_classes=n_classes, n=(args.depth - 2) // 9)
        configure_batchnorm(fcn, args.bn_momentum, synchronized=args.distribute != "none")
        if args.train:
            level = remat_level(args.remat, args.batch_size, args.height, args.width,
                                synchronized=args.distribute != "none")
            if level != "off":
                why = (f"auto: {args.batch_size * args.height * args.width / 1e6:.1f} million pixels a batch; "
                       "--remat off keeps them, in more memory" if args.remat == REMAT_AUTO else args.remat)
                logger.info("Recomputing the backbone's %s in the backward pass (--remat %s)",
                            "stem and stage 0" if level == "stage0" else "stages one at a time", why)
            recompute_in_backward(backbone, level)
        if args.restore_weights:
            logger.info(explanation)
            restore_weights(fcn, restore_path)
        elif args.evaluate:
            logger.warning("Evaluating an untrained network: give --restore-weights to load trained weights.")
        if args.train:
            settings = {
                "height": args.height, "width": args.width, "layers": args.layers, "depth": args.depth,
                "n_classes": n_classes, "dataset": args.dataset, "batch_size": args.batch_size,
                "lr_schedule": args.lr_schedule, "learning_rate": args.learning_rate, "seed": args.seed,
                "data_path": args.data_path, "train_labels": args.train_labels, "test_labels": args.test_labels,
                "augment": args.augment, "class_weights": args.class_weights, "loss": args.loss,
                "precision": precision, "bn_momentum": args.bn_momentum,
                "passes": args.passes, "time_budget": args.time_budget,
            }
            state = plan_training(args, settings, weights_path, state_path)
            deadline = None
            if args.time_budget is not None and args.resume:
                logger.info("--time-budget: the resumed run trains the %d epoch(s) its budget planned.", state.epochs)
            elif args.time_budget is not None:
                deadline = started + 60 * args.time_budget
            if math.isnan(state.best_miou):
                state.best_miou = score_existing_best(fcn, weights_path, test_labels, args.data_path, args.batch_size)
        if args.train or args.summary:
            os.makedirs(save_dir, exist_ok=True)

        if args.summary:
            save_summary(backbone, fcn, save_dir)
        if args.evaluate:
            if args.image_file:
                segment_image_file(fcn, args.image_file, args.height, args.width)
            else:
                record = read_best_metrics(restore_path) if restore_path else None
                evaluate_test_set(fcn, test_labels, args.data_path, args.batch_size, args.plot,
                                  record.get("settings") if record else None)
        if args.train:
            class_weights = None
            if args.class_weights == "auto":
                class_weights = median_frequency_weights(train_labels.masks.values(), n_classes)
                logger.info("Class weights (median-frequency balancing): %s", ", ".join(
                    f"{name} {weight:.3g}" for name, weight in zip(class_names(n_classes), class_weights)))
            train(
                fcn, train_labels, test_labels, args.data_path,
                loss=build_loss(args.loss, class_weights, n_classes),
                augmentation=Augmentation() if args.augment else None, passes=args.passes,
                batch_size=args.batch_size, workers=args.workers, learning_rate=args.learning_rate,
                lr_schedule=args.lr_schedule, jit_compile=args.jit_compile, state=state, resume=args.resume, weights_path=weights_path,
                state_path=state_path, save_dir=save_dir, verbose=args.verbose, tensorboard_dir=args.tensorboard,
                deadline=deadline,
            )
            report_training(fcn, weights_path, state.history, test_labels, args.data_path, args.batch_size, save_dir)
        if args.export:
            export_model(fcn, keras_path, saved_model_dir)
            logger.info("Exported the network to %s (keras.saving.load_model) and %s/ (tf.saved_model.load(...).serve)",
                        keras_path, saved_model_dir)
        # Last: skipped images end the run with status 2 once every other image is done.
        if args.predict_dir:
            segment_folder(fcn, planned, predict_output, args.batch_size, args.verbose)


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


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status, with one line on stderr for each failure.

    Statuses: 0 done, 2 bad input (or usage), 3 the loss or weights became NaN
    or infinite, 130 interrupted with Ctrl-C.
    """
    started = time.monotonic()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose <= 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stdout, force=True)
    # tf.distribute logs every reduction at INFO level.
    logging.getLogger("tensorflow").setLevel(logging.DEBUG if args.verbose >= 2 else logging.WARNING)
    try:
        run(args, started)
    except (UsageError, DatasetError, CheckpointError, InferenceError) as error:
        print(f"fcn-12.3.1.py: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as error:
        print(f"fcn-12.3.1.py: error: {error}", file=sys.stderr)
        return EXIT_NON_FINITE
    except TrainingInterrupted as interrupted:
        if interrupted.epochs_done == 0:
            print("fcn-12.3.1.py: interrupted before the first epoch ended; nothing to resume, "
                  "and the best weights are unchanged.", file=sys.stderr)
        else:
            print(f"fcn-12.3.1.py: interrupted; the state after the last completed epoch is in "
                  f"{interrupted.state_path}; resume with: {resume_command(argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("fcn-12.3.1.py: interrupted; the best weights saved so far are kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
