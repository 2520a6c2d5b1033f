"""The command line of chapter 12: the book's flags (its `model_utils.parser`) and the added ones.

`build_parser` keeps the book's flag names and defaults (`config.BOOK`); the groups below it add the
training recipe, speed, a reader's own data, saved runs, and batch inference and export. The parser's
`prog` is the program's name in every line it prints: its own errors, one line each, have the format of
the program's (`errors.report_error`), `fcn-12.3.1.py: error: <message>`.
"""

import argparse
from typing import NoReturn

from model import DECODERS
from segmentation.augment import AUGMENTATIONS, FULL_AUGMENTATION
from segmentation.config import BOOK, EXPORT_FORMATS, FIT_SIZES
from segmentation.distribution import DISTRIBUTE_CHOICES
from segmentation.errors import EXIT_BAD_INPUT
from segmentation.losses import CLASS_WEIGHTS, LOSSES
from segmentation.paths import PREDICTION_DIR
from segmentation.precision import AUTO as PRECISION_AUTO
from segmentation.precision import POLICIES
from segmentation.remat import AUTO as REMAT_AUTO
from segmentation.remat import LEVELS as REMAT_LEVELS
from segmentation.schedules import LR_SCHEDULES
from segmentation.training import JIT_CHOICES


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line, without the usage block above them."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; --help lists the options.\n")


def build_parser() -> argparse.ArgumentParser:
    """The book's command line and the added flags; every default is `config.BOOK`'s.

    Its `prog`, the entry script's name, is what the error lines and the printed `--resume` command use.
    """
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
    group.add_argument("--decoder", choices=DECODERS, default=BOOK.decoder,
                       help="how the head brings the 1/4 map to full size: 'book', two stride-2 transposed "
                            "convolutions; 'skip', the same with the backbone's half- and full-resolution stages "
                            "joined after each (narrow 1x1 projections, then a 3x3 convolution), so edges are "
                            "drawn from the maps that saw them; 'bilinear', skip connections with bilinear "
                            "upsampling and a 3x3 convolution instead of the transposed convolutions; weights "
                            "load only into a network of their decoder (default: %(default)s)")
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
                            "which scores overlap whatever a class's size; 'ce+lovasz': plus the Lovász-softmax "
                            "loss per image over the classes it holds, a surrogate of the book's mIoU "
                            "(default: %(default)s)")
    group.add_argument("--class-weights", choices=CLASS_WEIGHTS, default=BOOK.class_weights,
                       help="'auto': weight each class's cross-entropy by median-frequency balancing, for rare "
                            "foreground (default: %(default)s, as in the book)")
    group.add_argument("--augment", nargs="?", choices=AUGMENTATIONS, default=BOOK.augment, const=FULL_AUGMENTATION,
                       help="random changes of the training images, masks moved with them: 'full' (or --augment "
                            "alone) flips, scale/crop and colour jitter; 'flip' only mirrors left to right, at no "
                            "cost per step, for short runs (default: %(default)s, as in the book)")
    group.add_argument("--bn-momentum", type=float, default=BOOK.bn_momentum, metavar="M",
                       help="BatchNormalization's moving-statistics momentum; 0.9 for a few dozen images "
                            "(default: %(default)s, Keras' and the book's)")
    group.add_argument("--passes", type=int, default=BOOK.passes, metavar="K",
                       help="go K times through the training images per epoch, each time reshuffled (and "
                            "re-augmented): more steps per evaluation on a few dozen images (default: 1, the book's)")
    group.add_argument("--ema", type=float, default=BOOK.ema, metavar="M",
                       help="with --train: keep an exponential moving average of the weights, momentum M (e.g. "
                            "0.99), and evaluate and save the average as the best weights; training goes on from "
                            "the raw weights (default: off, as in the book)")
    group.add_argument("--aux-loss", type=float, default=BOOK.aux_loss, metavar="W",
                       help="with --train: add a training-only classifier on the backbone's main feature map, "
                            "its loss weighted W (e.g. 0.4), as PSPNet does; the saved network has no such head "
                            "(default: off, as in the book)")
    group.add_argument("--patience", type=int, default=BOOK.patience, metavar="N",
                       help="with --train: stop when the selection mIoU has not improved for N epochs in a row "
                            "(default: off, train every epoch)")
    group.add_argument("--precise-bn", action="store_true",
                       help="with --train: recompute the BatchNormalization moving statistics over the training "
                            "images (a forward pass, no gradients) before each evaluation, so an epoch's score and "
                            "its saved weights do not hang on its last batches (default: off, as in the book)")
    group.add_argument("--tta", action="store_true",
                       help="test-time augmentation: average each prediction with that of the image flipped left "
                            "to right (twice the network's work) in --evaluate, --predict-dir and the per-epoch "
                            "evaluation of --train (default: off, as in the book)")


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
