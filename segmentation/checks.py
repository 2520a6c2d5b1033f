"""The checks of one run's options that need nothing but the options (and the Keras backend).

Each raises `UsageError`, one line naming the flag, the value received and a valid one, in the order
`check_config` reports them. A flag given without an action it is used with is refused from its
declaration (`config.option`'s `used_with`); the checks written out here are those between values.
"""

import math

from resnet import check_input_shape
from segmentation import backend
from segmentation.classes import split_class_names
from segmentation.config import ACTIONS, BOOK, RunConfig, flag, listed, options
from segmentation.errors import UsageError
from segmentation.remat import AUTO as REMAT_AUTO


def check_actions(config: RunConfig) -> None:
    """Refuses options given without an action they are used with, or with one they exclude, and a run
    with nothing to do."""
    for name, declaration in options().items():
        used_with = declaration.metadata["used_with"]
        value = getattr(config, name)
        if used_with and value != declaration.default and not any(getattr(config, action) for action in used_with):
            named = declaration.metadata["argparse"].get("choices") and isinstance(value, str)
            raise UsageError(f"{flag(name)}{f' {value}' if named else ''} is used with {listed(used_with)}.")
    if not any(getattr(config, action) for action in ACTIONS):
        raise UsageError(f"nothing to do: give {listed(ACTIONS)} (see --help).")
    if config.val_split is not None and config.val_labels:
        raise UsageError("--val-split and --val-labels both name the validation images: give one of them.")
    if config.fine_tune and not config.restore_weights:
        raise UsageError("--fine-tune is used with --train and --restore-weights.")
    if config.infers and config.train:
        raise UsageError("--predict-dir and --export are not used with --train: train first, then give them "
                         "with --restore-weights.")
    if config.infers and not config.restore_weights:
        raise UsageError("--predict-dir and --export need trained weights: give --restore-weights.")
    if config.resume and (config.overwrite or config.restore_weights):
        raise UsageError("--resume continues the saved run as it was: leave out --overwrite and --restore-weights.")
    if config.remat not in (REMAT_AUTO, "off") and config.distributed:
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
            default = " (with keras, the default pair)" if config.export_format == BOOK.export_format else ""
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
