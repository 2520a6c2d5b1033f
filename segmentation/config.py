"""One run's configuration: built once from the command line, frozen, and checked by pure functions.

`RunConfig()` with no arguments is the book's run (`python3 fcn-12.3.1.py` with no added flag): its
defaults are the parser's defaults. `TrainingSettings` is what a training run records with its best
weights and its resume state; its defaults are what a state written before a setting existed ran with.
"""

import dataclasses
import math

from model import BOOK_DECODER, HEAD_FILTERS
from resnet import check_input_shape
from segmentation import backend
from segmentation.augment import FULL_AUGMENTATION, NO_AUGMENTATION
from segmentation.classes import split_class_names
from segmentation.errors import UsageError
from segmentation.paths import TEST_LABELS, TRAIN_LABELS
from segmentation.precision import AUTO as PRECISION_AUTO
from segmentation.remat import AUTO as REMAT_AUTO
from segmentation.schedules import BASE_LEARNING_RATE


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every flag of one run, as parsed; `parser.build_parser` says what each one is."""

    # What to do.
    train: bool = False
    evaluate: bool = False
    summary: bool = False
    resume: bool = False
    overwrite: bool = False
    # The network.
    height: int = 480
    width: int = 640
    channels: int = 3
    layers: int = 3
    depth: int = 56
    head_filters: int = HEAD_FILTERS
    decoder: str = BOOK_DECODER
    # The data.
    data_path: str = "dataset/drinks"
    train_labels: str = TRAIN_LABELS
    test_labels: str = TEST_LABELS
    dataset: str = "drinks"
    # Training.
    batch_size: int = 4
    epochs: int = 100
    workers: int = 4
    learning_rate: float = BASE_LEARNING_RATE
    lr_schedule: str = "text"
    time_budget: float | None = None
    seed: int | None = None
    jit_compile: str = "auto"
    precision: str = PRECISION_AUTO
    remat: str = REMAT_AUTO
    bn_momentum: float = 0.99
    passes: int = 1
    augment: str = NO_AUGMENTATION
    class_weights: str = "none"
    loss: str = "ce"
    distribute: str = "none"
    tensorboard: str | None = None
    ema: float | None = None
    aux_loss: float | None = None
    patience: int | None = None
    tta: bool = False
    precise_bn: bool = False
    # Inputs and outputs.
    save_dir: str = "weights"
    restore_weights: str | None = None
    image_file: str | None = None
    plot: bool = False
    verbose: int = 1
    predict_dir: str | None = None
    predict_output: str | None = None
    export: str | None = None
    export_format: tuple[str, ...] = ("keras", "savedmodel")
    # A reader's own data.
    classes: str | None = None
    fit_size: str = "refuse"
    val_split: float | None = None
    val_labels: str | None = None
    fine_tune: bool = False

    @classmethod
    def from_namespace(cls, args: object) -> "RunConfig":
        """The configuration of an `argparse.Namespace` holding every flag (a repeated flag as a tuple)."""
        values = {field.name: getattr(args, field.name) for field in dataclasses.fields(cls)}
        values["export_format"] = tuple(dict.fromkeys(values["export_format"] or BOOK_EXPORT_FORMATS))
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

    def training_settings(self, n_classes: int, precision: str,
                          class_names: tuple[str, ...] | None = None) -> "TrainingSettings":
        """The settings a training run records, with the class count, dtype policy and class names it resolved."""
        resolved = {"n_classes": n_classes, "precision": precision, "class_names": class_names}
        recorded = {field.name for field in dataclasses.fields(TrainingSettings)} - set(resolved)
        return TrainingSettings(**resolved, **{name: getattr(self, name) for name in recorded})


BOOK = RunConfig()
BOOK_EXPORT_FORMATS = BOOK.export_format
EXPORT_FORMATS = ("keras", "savedmodel", "onnx", "litert")
FIT_SIZES = ("refuse", "resize", "crop")


def _setting(default: object = dataclasses.MISSING, *, must_match: bool = True) -> dataclasses.Field:
    """A recorded setting; `must_match`: a run resumes only with the value it was saved with."""
    return dataclasses.field(default=default, metadata={"must_match": must_match})


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """What a training run records beside its best weights and in its resume state (`settings`)."""

    height: int = _setting()
    width: int = _setting()
    layers: int = _setting()
    depth: int = _setting()
    n_classes: int = _setting()
    dataset: str = _setting()
    batch_size: int = _setting()
    lr_schedule: str = _setting()
    learning_rate: float = _setting()
    seed: int | None = _setting(must_match=False)
    data_path: str = _setting(must_match=False)
    train_labels: str = _setting(must_match=False)
    test_labels: str = _setting(must_match=False)
    # The book's head: what runs saved before `--head-filters` existed trained.
    head_filters: int = _setting(BOOK.head_filters)
    decoder: str = _setting(BOOK.decoder)
    augment: str = _setting(BOOK.augment)
    class_weights: str = _setting(BOOK.class_weights)
    loss: str = _setting(BOOK.loss)
    # The book's arithmetic: what runs saved before `--precision auto` trained in.
    precision: str = _setting("float32")
    bn_momentum: float = _setting(BOOK.bn_momentum)
    passes: int = _setting(BOOK.passes)
    time_budget: float | None = _setting(None, must_match=False)
    fit_size: str = _setting(BOOK.fit_size)
    val_split: float | None = _setting(BOOK.val_split)
    val_labels: str | None = _setting(BOOK.val_labels)
    # The weights a run saves: averaged (--ema), trained with an auxiliary head (--aux-loss).
    ema: float | None = _setting(BOOK.ema)
    aux_loss: float | None = _setting(BOOK.aux_loss)
    # Moving statistics recomputed over the training images before each evaluation (--precise-bn).
    precise_bn: bool = _setting(BOOK.precise_bn)
    # When the run stops and how it scores: --resume may change them.
    patience: int | None = _setting(BOOK.patience, must_match=False)
    tta: bool = _setting(BOOK.tta, must_match=False)
    # Names of classes 0 .. n_classes - 1 when known (`--classes`, or stored beside the labels); for display.
    class_names: tuple[str, ...] | None = _setting(None, must_match=False)

    def as_record(self) -> dict:
        """The settings as the JSON object stored in the files."""
        return dataclasses.asdict(self)


# Values of runs saved before a setting took its present form: `--augment` was a switch.
LEGACY_VALUES = {"augment": {True: FULL_AUGMENTATION, False: NO_AUGMENTATION}}


def recorded_setting(settings: dict, name: str) -> object:
    """A setting of a stored record, or what a run saved before that setting existed ran with (None if none)."""
    field = {field.name: field for field in dataclasses.fields(TrainingSettings)}[name]
    default = None if field.default is dataclasses.MISSING else field.default
    value = settings.get(name, default)
    legacy = LEGACY_VALUES.get(name, {})
    return legacy.get(value, value) if isinstance(value, bool) else value


def setting_differences(saved: dict, current: TrainingSettings) -> list[str]:
    """Each setting that must match for a resume and differs, as `name saved (now current)`."""
    now = current.as_record()
    return [
        f"{field.name} {recorded_setting(saved, field.name)!r} (now {now[field.name]!r})"
        for field in dataclasses.fields(TrainingSettings)
        if field.metadata["must_match"] and recorded_setting(saved, field.name) != now[field.name]
    ]


def check_actions(config: RunConfig) -> None:
    """Refuses flags given without the action they belong to, or with one they exclude."""
    if (config.image_file or config.plot) and not config.evaluate:
        raise UsageError("--image-file and --plot are used with --evaluate.")
    if not (config.train or config.evaluate or config.summary or config.infers):
        raise UsageError("nothing to do: give --train, --evaluate, --summary, --predict-dir or --export (see --help).")
    if config.resume and not config.train:
        raise UsageError("--resume is used with --train.")
    if config.overwrite and not (config.train or config.infers):
        raise UsageError("--overwrite is used with --train, --predict-dir or --export.")
    if config.tensorboard and not config.train:
        raise UsageError("--tensorboard is used with --train.")
    if config.time_budget is not None and not config.train:
        raise UsageError("--time-budget is used with --train.")
    for flag, value in (("--ema", config.ema), ("--aux-loss", config.aux_loss), ("--patience", config.patience),
                        ("--precise-bn", config.precise_bn or None)):
        if value is not None and not config.train:
            raise UsageError(f"{flag} is used with --train.")
    if config.tta and not (config.train or config.evaluate or config.predict_dir):
        raise UsageError("--tta is used with --evaluate, --train or --predict-dir.")
    if config.predict_output and not config.predict_dir:
        raise UsageError("--predict-output is used with --predict-dir.")
    if config.export_format != BOOK.export_format and not config.export:
        raise UsageError("--export-format is used with --export.")
    if (config.val_split is not None or config.val_labels) and not config.train:
        raise UsageError("--val-split and --val-labels are used with --train.")
    if config.val_split is not None and config.val_labels:
        raise UsageError("--val-split and --val-labels both name the validation images: give one of them.")
    if config.fine_tune and not (config.train and config.restore_weights):
        raise UsageError("--fine-tune is used with --train and --restore-weights.")
    if config.infers and config.train:
        raise UsageError("--predict-dir and --export are not used with --train: train first, then give them "
                         "with --restore-weights.")
    if config.infers and not config.restore_weights:
        raise UsageError("--predict-dir and --export need trained weights: give --restore-weights.")
    if config.resume and (config.overwrite or config.restore_weights):
        raise UsageError("--resume continues the saved run as it was: leave out --overwrite and --restore-weights.")
    if config.distributed and not config.train:
        raise UsageError(f"--distribute {config.distribute} is used with --train.")
    recomputing = config.remat not in (REMAT_AUTO, "off")
    if recomputing and not config.train:
        raise UsageError(f"--remat {config.remat} is used with --train.")
    if recomputing and config.distributed:
        # Synchronized BatchNormalization would count each batch twice in its statistics.
        raise UsageError(f"--remat {config.remat} cannot be combined with --distribute {config.distribute}: "
                         "leave one out.")
    if config.distribute == "multi-worker" and config.seed is None:
        # Every worker reads the whole training set and keeps its share of each batch.
        raise UsageError("--distribute multi-worker: give every worker the same --seed S, so that they "
                         "shuffle the training set in the same order.")


def check_values(config: RunConfig) -> None:
    """Refuses numbers out of range and settings that cannot work together."""
    if config.time_budget is not None and not (math.isfinite(config.time_budget) and config.time_budget > 0):
        raise UsageError(f"--time-budget {config.time_budget}: must be a positive number of minutes, e.g. 10.")
    if config.channels != 3:
        raise UsageError(f"--channels {config.channels}: the images are RGB, so --channels must be 3.")
    if config.classes is not None:
        try:
            split_class_names(config.classes)
        except ValueError as error:
            raise UsageError(str(error)) from None
    if config.depth < 11 or (config.depth - 2) % 9:
        raise UsageError(f"--depth {config.depth}: ResNet v2 depth must be 9n+2 (11, 20, ..., 56, 110).")
    if config.batch_size < 1 or config.epochs < 1 or config.workers < 1 or config.passes < 1:
        raise UsageError("--batch-size, --epochs, --workers and --passes must be at least 1.")
    if config.head_filters < 1:
        raise UsageError(f"--head-filters {config.head_filters}: must be at least 1: the book's 256, or e.g. 64.")
    if config.val_split is not None and not 0 < config.val_split < 1:
        raise UsageError(f"--val-split {config.val_split}: must be a share of the training images in (0, 1), "
                         "e.g. 0.1.")
    if not 0 <= config.bn_momentum < 1:
        raise UsageError(f"--bn-momentum {config.bn_momentum}: must be in [0, 1), e.g. 0.9.")
    if config.ema is not None and not 0 <= config.ema < 1:
        raise UsageError(f"--ema {config.ema}: give a momentum in [0, 1), e.g. 0.99.")
    if config.aux_loss is not None and not (math.isfinite(config.aux_loss) and config.aux_loss > 0):
        raise UsageError(f"--aux-loss {config.aux_loss}: give a positive weight, e.g. 0.4.")
    if config.seed is not None and not 0 <= config.seed < 2**32:
        # NumPy's and Keras' seeds are unsigned 32-bit integers.
        raise UsageError(f"--seed {config.seed}: must be a whole number from 0 to {2**32 - 1}, e.g. 0.")
    if config.patience is not None and config.patience < 1:
        raise UsageError(f"--patience {config.patience}: give a number of epochs of at least 1, e.g. 5.")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise UsageError(f"--learning-rate {config.learning_rate}: must be a positive number, e.g. 1e-3.")
    try:
        check_input_shape(config.input_shape, config.layers)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if config.precision == "mixed_bfloat16" and config.jit_compile == "on":
        # TensorFlow's XLA rejects the mixed bfloat16/float32 gradient of the bilinear upsampling.
        raise UsageError("--precision mixed_bfloat16 does not compile with --jit-compile on: use --jit-compile off.")


def check_backend(config: RunConfig, backend_name: str, tensorflow_installed: bool) -> None:
    """Refuses what the Keras backend cannot do (`segmentation.backend` says what needs TensorFlow).

    Args:
        config: RunConfig. The flags.
        backend_name: str. `KERAS_BACKEND`: "tensorflow", "jax", "torch", ...
        tensorflow_installed: bool. Whether TensorFlow can be imported beside that backend.
    """
    here = f"KERAS_BACKEND={backend_name} here"
    if backend_name not in backend.SUPPORTED:
        raise UsageError(f"{here}: this program trains and evaluates on {', '.join(backend.SUPPORTED)}; set "
                         "KERAS_BACKEND to one of them.")
    if backend_name == backend.TENSORFLOW:
        return
    for export_format in config.export_format if config.export else ():
        if export_format != "keras":
            default = " (with keras, the default pair)" if config.export_format == BOOK_EXPORT_FORMATS else ""
            raise UsageError(f"--export-format {export_format}{default} is converted from TensorFlow graphs and "
                             f"needs KERAS_BACKEND=tensorflow ({here}): give --export-format keras for PATH.keras.")
    if config.tensorboard and not tensorflow_installed:
        raise UsageError(f"--tensorboard writes its event files with TensorFlow's tf.summary, not installed here "
                         f"({here}): pip install tensorflow, or leave out --tensorboard.")
    if config.distribute == "multi-worker" or (config.distributed and backend_name != backend.JAX):
        # Under JAX, mirrored is keras.distribution.DataParallel (segmentation.distribution).
        needs = "tf.distribute (KERAS_BACKEND=tensorflow)"
        if config.distribute == "mirrored":
            needs += " or keras.distribution (KERAS_BACKEND=jax)"
        raise UsageError(f"--distribute {config.distribute} needs {needs} ({here}): switch backend, or leave out "
                         "--distribute.")


def check_config(config: RunConfig) -> None:
    """All the checks that need nothing but the flags (and the Keras backend), in the order their errors are reported.

    Raises:
        UsageError: one line naming the flag, the value received and a valid one.
    """
    check_actions(config)
    check_values(config)
    check_backend(config, backend.name(), backend.tensorflow_installed())
