"""One run's configuration: every option of the command line, declared once.

Each field of `RunConfig` is one option (`option`, `switch`): its flags, type, default (the book's),
help, `--help` group, the actions it is used with, and whether a `--resume` must match it. From these
declarations come the parser (`parser.build_parser`), the settings a training run records beside its
weights and in its resume state (`TrainingSettings`), the resume check (`setting_differences`) and the
refusal of a flag given without its action (`checks.check_actions`). `RunConfig()` with no arguments
is the book's run (`python3 fcn-12.3.1.py` with no added flag).
"""

import dataclasses
from typing import Any

from model import BOOK_DECODER, DECODERS, HEAD_FILTERS
from segmentation.augment import AUGMENTATIONS, FULL_AUGMENTATION, NO_AUGMENTATION
from segmentation.distribution import DISTRIBUTE_CHOICES
from segmentation.losses import CLASS_WEIGHTS, LOSSES
from segmentation.paths import PREDICTION_DIR, TEST_LABELS, TRAIN_LABELS
from segmentation.precision import AUTO as PRECISION_AUTO
from segmentation.precision import POLICIES
from segmentation.remat import AUTO as REMAT_AUTO
from segmentation.remat import LEVELS as REMAT_LEVELS
from segmentation.schedules import BASE_LEARNING_RATE, LR_SCHEDULES

# `--help`'s groups, in their order.
BOOK_RUN = "the book's model and training"
BOOK_INPUTS = "the book's inputs"
BOOK_EVALUATION = "the book's evaluation"
RECIPE = "training recipe"
SPEED = "speed and memory"
OWN_DATA = "your own data"
SAVED_RUNS = "saved runs"
INFERENCE = "batch inference and export (with --restore-weights)"

# The actions: a run does at least one of them, and an option `used_with` some is refused without them.
ACTIONS = ("train", "evaluate", "summary", "predict_dir", "export")

# Whether a recorded setting must be the same for `--resume` (MATCH) or may change (FREE).
MATCH = "match"
FREE = "free"

# `--jit-compile` values and what `Model.compile(jit_compile=...)` is given for each.
JIT_CHOICES = {"auto": "auto", "on": True, "off": False}
EXPORT_FORMATS = ("keras", "savedmodel", "onnx", "litert")
FIT_SIZES = ("refuse", "resize", "crop")


def option(default: Any, *flags: str, help: str, group: str, used_with: tuple[str, ...] = (),
           resume: str | None = None, recorded_before: Any = dataclasses.MISSING,
           **argparse_options: Any) -> Any:
    """One option of the command line, declared as a `RunConfig` field.

    Args:
        default: The value with no flag given: the book's.
        *flags: str. Its flags, e.g. "-b", "--batch-size".
        help: str. What it does, for `--help` (argparse's `%(default)s` is understood).
        group: str. Its `--help` group.
        used_with: tuple of str. The `ACTIONS`, any one of which it needs; given without them it is
            refused in one line. Defaults to none (any run).
        resume: str or None. `MATCH` or `FREE`: a training run records its value, and `--resume`
            must give the same one (MATCH) or may change it (FREE). Defaults to None (not recorded).
        recorded_before: What a run recorded before the option existed ran with. Defaults to `default`.
        **argparse_options: `add_argument`'s type, choices, metavar, nargs, const, action.
    """
    metadata = {"flags": flags, "help": help, "group": group, "used_with": used_with, "resume": resume,
                "recorded_before": default if recorded_before is dataclasses.MISSING else recorded_before,
                "argparse": argparse_options}
    return dataclasses.field(default=default, metadata=metadata)


def switch(*flags: str, help: str, group: str, used_with: tuple[str, ...] = (), resume: str | None = None) -> Any:
    """An option without a value, off by default (`option` with argparse's `store_true`)."""
    return option(False, *flags, help=help, group=group, used_with=used_with, resume=resume, action="store_true")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every option of one run, in `--help`'s order; the defaults are the book's."""

    # The book's flags (its `model_utils.parser`).
    layers: int = option(
        3, "--layers", type=int, metavar="N", group=BOOK_RUN, resume=MATCH,
        help="number of features-pyramid maps after the main one (default: %(default)s)")
    batch_size: int = option(
        4, "-b", "--batch-size", "--batch_size", type=int, metavar="N", group=BOOK_RUN, resume=MATCH,
        help="batch size during training (default: %(default)s)")
    epochs: int = option(
        100, "--epochs", type=int, metavar="N", group=BOOK_RUN,
        help="number of epochs to train (default: %(default)s)")
    workers: int = option(
        4, "--workers", type=int, metavar="N", group=BOOK_RUN,
        help="data generator worker threads (default: %(default)s)")
    train: bool = switch("-t", "--train", group=BOOK_RUN, help="train the model")
    summary: bool = switch("--summary", group=BOOK_RUN,
                           help="print the model summaries and save the network diagrams to --save-dir")
    save_dir: str = option(
        "weights", "--save-dir", metavar="DIR", group=BOOK_RUN,
        help="folder of weights and histories (default: %(default)s)")
    dataset: str = option(
        "drinks", "--dataset", metavar="NAME", group=BOOK_RUN, resume=MATCH,
        help="data set name, part of the weights name (default: %(default)s)")
    height: int = option(480, "--height", type=int, group=BOOK_INPUTS, resume=MATCH,
                         help="input image height (default: %(default)s)")
    width: int = option(640, "--width", type=int, group=BOOK_INPUTS, resume=MATCH,
                        help="input image width (default: %(default)s)")
    channels: int = option(3, "--channels", type=int, group=BOOK_INPUTS,
                           help="input image channels (default: %(default)s)")
    data_path: str = option(
        "dataset/drinks", "--data-path", metavar="DIR", group=BOOK_INPUTS, resume=FREE,
        help="folder of the images and label files (default: %(default)s)")
    train_labels: str = option(
        TRAIN_LABELS, "--train-labels", metavar="FILE", group=BOOK_INPUTS, resume=FREE,
        help="training ground truth in --data-path (default: %(default)s)")
    test_labels: str = option(
        TEST_LABELS, "--test-labels", metavar="FILE", group=BOOK_INPUTS, resume=FREE,
        help="test ground truth in --data-path (default: %(default)s)")
    restore_weights: str | None = option(
        None, "--restore-weights", metavar="NAME", group=BOOK_EVALUATION,
        help="weights to load: a name in --save-dir (the book's .h5 name is understood) or a path "
             "(default: %(default)s)")
    evaluate: bool = switch("-e", "--evaluate", group=BOOK_EVALUATION, help="evaluate the model on the test set")
    image_file: str | None = option(
        None, "--image-file", metavar="FILE", group=BOOK_EVALUATION, used_with=("evaluate",),
        help="segment this image into prediction/ (default: %(default)s)")
    plot: bool = switch("--plot", group=BOOK_EVALUATION, used_with=("evaluate",),
                        help="save each test image's input, mask and triptych to prediction/")
    verbose: int = option(
        1, "--verbose", type=int, metavar="LEVEL", group=BOOK_EVALUATION,
        help="0 quiet, 1 progress and results, 2 debug (default: %(default)s)")

    # The network and the training recipe.
    depth: int = option(
        56, "--depth", type=int, metavar="D", group=RECIPE, resume=MATCH,
        help="ResNet v2 depth, 9n+2; the book's backbone is ResNet56v2 (default: %(default)s)")
    decoder: str = option(
        BOOK_DECODER, "--decoder", choices=DECODERS, group=RECIPE, resume=MATCH,
        help="how the head brings the 1/4 map to full size: 'book', two stride-2 transposed convolutions; "
             "'skip', the same with the backbone's half- and full-resolution stages joined after each (narrow "
             "1x1 projections, then a 3x3 convolution), so edges are drawn from the maps that saw them; "
             "'bilinear', skip connections with bilinear upsampling and a 3x3 convolution instead of the "
             "transposed convolutions; weights load only into a network of their decoder (default: %(default)s)")
    head_filters: int = option(
        HEAD_FILTERS, "--head-filters", type=int, metavar="F", group=RECIPE, resume=MATCH,
        help="filters of the head's pyramid convolutions and of its two transposed convolutions, which cost "
             "most of the network's arithmetic: the book's 256, or 64 for a network that trains about 3x faster "
             "per step (docs/small-data.md) (default: %(default)s)")
    seed: int | None = option(
        None, "--seed", type=int, metavar="S", group=RECIPE, resume=FREE,
        help="seed Python, NumPy and TensorFlow for a reproducible run; deterministic ops can be slower "
             "(default: %(default)s)")
    lr_schedule: str = option(
        "text", "--lr-schedule", choices=LR_SCHEDULES, group=RECIPE, resume=MATCH,
        help="'text': halve every 20 epochs after 40, as the chapter says; 'code': the book's published "
             "lr_scheduler, x0.5/x0.1/x0.05 after 40/60/80; 'cosine': linear warm-up over the first 10%% of the "
             "run's steps to --learning-rate, then cosine decay to 0 at its last step, for short runs "
             "(default: %(default)s)")
    learning_rate: float = option(
        BASE_LEARNING_RATE, "--learning-rate", type=float, metavar="LR", group=RECIPE, resume=MATCH,
        help="Adam's learning rate before the schedule's decay, the peak of 'cosine' (default: %(default)s)")
    time_budget: float | None = option(
        None, "--time-budget", type=float, metavar="MINUTES", group=RECIPE, used_with=("train",), resume=FREE,
        help="finish the run, its evaluations and report within MINUTES from the start: the first steps are "
             "timed, the epochs that fit are trained (at most --epochs) and a 'cosine' schedule ends at the "
             "last of them (default: no budget)")
    loss: str = option(
        "ce", "--loss", choices=LOSSES, group=RECIPE, resume=MATCH,
        help="'ce': the book's categorical cross-entropy; 'ce+dice': plus the soft Dice loss, which scores "
             "overlap whatever a class's size; 'ce+lovasz': plus the Lovász-softmax loss per image over the "
             "classes it holds, a surrogate of the book's mIoU (default: %(default)s)")
    class_weights: str = option(
        "none", "--class-weights", choices=CLASS_WEIGHTS, group=RECIPE, resume=MATCH,
        help="'auto': weight each class's cross-entropy by median-frequency balancing, for rare foreground "
             "(default: %(default)s, as in the book)")
    augment: str = option(
        NO_AUGMENTATION, "--augment", nargs="?", choices=AUGMENTATIONS, const=FULL_AUGMENTATION, group=RECIPE,
        resume=MATCH,
        help="random changes of the training images, masks moved with them: 'full' (or --augment alone) "
             "flips, scale/crop and colour jitter; 'flip' only mirrors left to right, at no cost per step, for "
             "short runs (default: %(default)s, as in the book)")
    bn_momentum: float = option(
        0.99, "--bn-momentum", type=float, metavar="M", group=RECIPE, resume=MATCH,
        help="BatchNormalization's moving-statistics momentum; 0.9 for a few dozen images (default: "
             "%(default)s, Keras' and the book's)")
    passes: int = option(
        1, "--passes", type=int, metavar="K", group=RECIPE, resume=MATCH,
        help="go K times through the training images per epoch, each time reshuffled (and re-augmented): more "
             "steps per evaluation on a few dozen images (default: 1, the book's)")
    ema: float | None = option(
        None, "--ema", type=float, metavar="M", group=RECIPE, used_with=("train",), resume=MATCH,
        help="keep an exponential moving average of the weights, momentum M (e.g. 0.99), and evaluate and save "
             "the average as the best weights; training goes on from the raw weights (default: off, as in the "
             "book)")
    aux_loss: float | None = option(
        None, "--aux-loss", type=float, metavar="W", group=RECIPE, used_with=("train",), resume=MATCH,
        help="add a training-only classifier on the backbone's main feature map, its loss weighted W (e.g. "
             "0.4), as PSPNet does; the saved network has no such head (default: off, as in the book)")
    patience: int | None = option(
        None, "--patience", type=int, metavar="N", group=RECIPE, used_with=("train",), resume=FREE,
        help="stop when the selection mIoU has not improved for N epochs in a row (default: off, train every "
             "epoch)")
    precise_bn: bool = switch(
        "--precise-bn", group=RECIPE, used_with=("train",), resume=MATCH,
        help="recompute the BatchNormalization moving statistics over the training images (a forward pass, no "
             "gradients) before each evaluation, so an epoch's score and its saved weights do not hang on its "
             "last batches (default: off, as in the book)")
    tta: bool = switch(
        "--tta", group=RECIPE, used_with=("evaluate", "train", "predict_dir"), resume=FREE,
        help="average each prediction with that of the image flipped left to right (test-time augmentation, "
             "twice the network's work); under --train, each epoch's evaluation (default: off, as in the book)")

    # How training computes.
    precision: str = option(
        PRECISION_AUTO, "--precision", choices=(PRECISION_AUTO, *POLICIES), group=SPEED, resume=MATCH,
        # Runs recorded before 'auto' existed trained in the book's arithmetic.
        recorded_before="float32",
        help="Keras dtype policy of training: 'auto' trains in mixed_bfloat16 on a GPU of compute capability "
             "8.0 or more and on a CPU with AMX, and in float32 (the book's) elsewhere (docs/precision.md); "
             "evaluation and prediction stay float32 unless named; 'mixed_float16' is for GPUs "
             "(default: %(default)s)")
    jit_compile: str = option(
        "auto", "--jit-compile", choices=tuple(JIT_CHOICES), group=SPEED,
        help="XLA-compile the training step: 'auto' is Keras' choice (off on machines without a GPU); "
             "docs/speed.md has its measurements (default: %(default)s)")
    remat: str = option(
        REMAT_AUTO, "--remat", nargs="?", choices=(REMAT_AUTO, *REMAT_LEVELS), const="all", group=SPEED,
        used_with=("train",),
        help="recompute backbone activations in the backward pass instead of keeping them, for less memory at "
             "some speed (docs/speed.md): 'stage0' the full-resolution stem and stage 0, 'all' (or --remat "
             "alone) each stage in turn; 'auto' is 'stage0' for batches of a million pixels or more (the book's "
             "640x480 batch 4) and 'off' below (default: %(default)s)")
    distribute: str = option(
        "none", "--distribute", choices=DISTRIBUTE_CHOICES, group=SPEED, used_with=("train",),
        help="'mirrored' trains on all this machine's GPUs, 'multi-worker' on several machines set up by "
             "TF_CONFIG (docs/distributed.md); --batch-size stays the global batch, split across the replicas "
             "(default: %(default)s)")

    # A reader's own data.
    classes: str | None = option(
        None, "--classes", metavar="NAMES", group=OWN_DATA,
        help="comma-separated names of classes 1, 2, ... (background is class 0); by default the names stored "
             "beside the labels, else the largest class id found sets the count (default: %(default)s)")
    fit_size: str = option(
        "refuse", "--fit-size", choices=FIT_SIZES, group=OWN_DATA, resume=MATCH,
        help="images that are not --height x --width: 'refuse' them (the book's check), 'resize' image and "
             "mask, or 'crop': random crops for training, tiles for evaluation and --predict-dir (default: "
             "%(default)s)")
    val_split: float | None = option(
        None, "--val-split", type=float, metavar="F", group=OWN_DATA, used_with=("train",), resume=MATCH,
        help="hold out this share of the training images (seeded) to select the best weights on; the test set "
             "is then scored once, at the end (default: none, the book's selection on the test set)")
    val_labels: str | None = option(
        None, "--val-labels", metavar="FILE", group=OWN_DATA, used_with=("train",), resume=MATCH,
        help="validation ground truth in --data-path (a .npy file or a mask folder), instead of --val-split "
             "(default: %(default)s)")
    fine_tune: bool = switch(
        "--fine-tune", group=OWN_DATA, used_with=("train",),
        help="load every layer of --restore-weights but a classifier of another class count, and train on")

    # Saved runs.
    resume: bool = switch(
        "--resume", group=SAVED_RUNS, used_with=("train",),
        help="continue the run saved in --save-dir after its last completed epoch (weights, optimizer, epoch, "
             "histories, seeds), with the same flags")
    overwrite: bool = switch(
        "--overwrite", group=SAVED_RUNS, used_with=("train", "predict_dir", "export"),
        help="let a training run replace the best weights and the saved state in --save-dir even if they are "
             "better or unfinished, and --predict-dir or --export replace earlier outputs")
    tensorboard: str | None = option(
        None, "--tensorboard", metavar="DIR", group=SAVED_RUNS, used_with=("train",),
        help="also log every epoch for TensorBoard to DIR (default: %(default)s)")

    # Batch inference and export.
    predict_dir: str | None = option(
        None, "--predict-dir", metavar="DIR", group=INFERENCE,
        help="segment every .jpg/.jpeg/.png image in DIR, any size, into a coloured mask and an overlay per "
             "image (default: %(default)s)")
    predict_output: str | None = option(
        None, "--predict-output", metavar="DIR", group=INFERENCE, used_with=("predict_dir",),
        help=f"folder of the masks and overlays (default: {PREDICTION_DIR}/<name of the --predict-dir folder>)")
    export: str | None = option(
        None, "--export", metavar="PATH", group=INFERENCE,
        help="save the network to PATH in each --export-format (default: %(default)s)")
    export_format: tuple[str, ...] = option(
        ("keras", "savedmodel"), "--export-format", action="append", choices=EXPORT_FORMATS, metavar="FORMAT",
        group=INFERENCE, used_with=("export",),
        help="'keras' (PATH.keras), 'savedmodel' (the TensorFlow SavedModel folder PATH), 'onnx' (PATH.onnx), "
             "'litert' (PATH.tflite), given once per format (default: keras and savedmodel)")

    @classmethod
    def from_namespace(cls, args: object) -> "RunConfig":
        """The configuration of an `argparse.Namespace` holding every option; a repeated one is a tuple of
        its distinct values, or the default where it was not given."""
        values = {}
        for field in dataclasses.fields(cls):
            value = getattr(args, field.name)
            if field.metadata["argparse"].get("action") == "append":
                value = tuple(dict.fromkeys(value or field.default))
            values[field.name] = value
        return cls(**values)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @property
    def n(self) -> int:
        """Residual blocks per stage: depth = 9n + 2."""
        return (self.depth - 2) // 9

    @property
    def distributed(self) -> bool:
        return self.distribute != "none"

    @property
    def infers(self) -> bool:
        """Whether the run segments a folder or exports the network (both need trained weights)."""
        return bool(self.predict_dir or self.export)


BOOK = RunConfig()


def flag(name: str) -> str:
    """The long flag of the option `name`, e.g. "--batch-size" for "batch_size"."""
    return next(each for each in options()[name].metadata["flags"] if each.startswith("--"))


def listed(names: tuple[str, ...]) -> str:
    """The flags of the options `names`, as "--a", "--a or --b", "--a, --b or --c"."""
    flags = [flag(name) for name in names]
    return flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} or {flags[-1]}"


def options() -> dict[str, dataclasses.Field]:
    """Every option's declaration, by name, in `--help`'s order."""
    return {field.name: field for field in dataclasses.fields(RunConfig)}


# What a training run records besides its options: resolved from the data, and whether --resume must match.
RESOLVED_SETTINGS = {"n_classes": MATCH, "class_names": FREE}

# Values of runs recorded before a setting took its present form: `--augment` was a switch.
LEGACY_VALUES = {"augment": {True: FULL_AUGMENTATION, False: NO_AUGMENTATION}}


def recorded_settings() -> dict[str, str]:
    """The settings a training run records, each with `MATCH` or `FREE`."""
    declared = {name: field.metadata["resume"] for name, field in options().items() if field.metadata["resume"]}
    return {**declared, **RESOLVED_SETTINGS}


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """What a training run records beside its best weights and in its resume state (`settings`).

    Attributes:
        config: RunConfig. The run's options; those declared with `resume` are recorded.
        n_classes: int. The class count the ground truth set.
        precision: str. The dtype policy trained in (what `--precision auto` resolved to).
        class_names: tuple of str or None. Names of classes 0 .. n_classes - 1 when known, for display.
    """

    config: RunConfig
    n_classes: int
    precision: str
    class_names: tuple[str, ...] | None = None

    def as_record(self) -> dict:
        """The settings as the JSON object stored in the files."""
        record = {name: getattr(self.config, name) for name in recorded_settings() if name in options()}
        return {**record, "n_classes": self.n_classes, "precision": self.precision, "class_names": self.class_names}


def recorded_setting(settings: dict, name: str) -> object:
    """A setting of a stored record, or what a run recorded before that setting existed ran with."""
    declaration = options().get(name)
    value = settings.get(name, declaration.metadata["recorded_before"] if declaration else None)
    legacy = LEGACY_VALUES.get(name, {})
    return legacy.get(value, value) if isinstance(value, bool) else value


def setting_differences(saved: dict, current: TrainingSettings) -> list[str]:
    """Each setting that must match for a resume and differs, as `name saved (now current)`."""
    now = current.as_record()
    return [
        f"{name} {recorded_setting(saved, name)!r} (now {now[name]!r})"
        for name, resume in recorded_settings().items()
        if resume == MATCH and recorded_setting(saved, name) != now[name]
    ]
