"""The command line of chapter 12: train and evaluate the FCN for semantic segmentation.

`fcn-12.3.1.py` hands its arguments to `main`:

    python3 fcn-12.3.1.py --train
    python3 fcn-12.3.1.py --evaluate --restore-weights=ResNet56v2-3layer-drinks-best-iou.h5
    python3 fcn-12.3.1.py --evaluate --restore-weights=... --image-file=dataset/drinks/0010018.jpg

`main` parses the flags (`segmentation.parser`) into one `RunConfig`; `run` checks it, reads the
ground truth (`segmentation.ground_truth.splits`) and the output folders, all before the first file is written,
then takes the book's order of steps (`run_steps`): summary, restore, evaluate, train; then export
(`--export`) and batch inference (`--predict-dir`). The steps below come in the order they run.
"""

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

import keras

from data_generator import DataGenerator
from model import build_model, configure_batchnorm
from segmentation import backend
from segmentation.augment import build_augmentation
from segmentation.checkpoints import (
    TrainingState,
    read_best_metrics,
    read_training_state,
    resolve_weights_path,
    restore_for_fine_tuning,
    restore_weights,
)
from segmentation.checks import check_config
from segmentation.classes import class_names
from segmentation.config import RunConfig, TrainingSettings, recorded_setting
from segmentation.distribution import is_chief, make_strategy, read_tf_config, worker_folder
from segmentation.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    ProgramError,
    Terminated,
    TrainingInterrupted,
    UsageError,
    report_error,
)
from segmentation.evaluation import evaluate_test_set, evaluation_data, segment_image_file
from segmentation.ground_truth.splits import Data, load_data
from segmentation.inference import (
    PlannedImage,
    describe_exports,
    export_model,
    plan_export,
    plan_predict_dir,
    segment_folder,
)
from segmentation.lock import training_lock
from segmentation.losses import build_loss, median_frequency_weights
from segmentation.parser import build_parser
from segmentation.paths import RunFiles, check_output_dir
from segmentation.precision import AUTO as PRECISION_AUTO
from segmentation.precision import auto_precision
from segmentation.process_state import kept_process_state
from segmentation.remat import AUTO as REMAT_AUTO
from segmentation.remat import recompute_in_backward, remat_level
from segmentation.training import plan_training, report_training, score_existing_best, train

logger = logging.getLogger("fcn")


@dataclasses.dataclass(frozen=True)
class Outputs:
    """Where a run's results go, decided before anything is written."""

    restore_path: str | None = None
    restore_explanation: str = ""
    planned: list[PlannedImage] = dataclasses.field(default_factory=list)
    predict_output: str | None = None
    export_paths: dict[str, str] | None = None


def check_environment(config: RunConfig) -> None:
    """Refuses a missing `--image-file` and a bad `TF_CONFIG` for `--distribute multi-worker`."""
    if config.image_file and not os.path.isfile(config.image_file):
        raise UsageError(f"--image-file {config.image_file}: no such file.")
    if config.distribute == "multi-worker":
        try:
            read_tf_config()
        except ValueError as error:
            raise UsageError(str(error)) from None


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
                                head_filters=config.head_filters, decoder=config.decoder)
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
    settings = TrainingSettings(config, data.n_classes, precision, data.class_names)
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


def evaluate(config: RunConfig, fcn: keras.Model, data: Data, restore_path: str | None) -> None:
    """`--evaluate`: one image (`--image-file`) or the whole test set, with `--plot`'s figures."""
    if config.image_file:
        names = list(data.class_names) if data.class_names else None
        segment_image_file(fcn, config.image_file, config.height, config.width, config.fit_size, names, config.tta)
        return
    record = read_best_metrics(restore_path) if restore_path else None
    evaluate_test_set(fcn, evaluation_data(data.test, config), config.plot, record.get("settings") if record else None,
                      config.tta)


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
        augmentation=build_augmentation(config.augment), passes=config.passes, workers=config.workers,
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
    loss = build_loss(config.loss, class_weights, data.n_classes, ignore_pixels)
    train(fcn, train_data, selection_data, state, files, config, loss=loss, split=data.selection_split,
          deadline=deadline)
    report_training(fcn, files, state.history, test_data, config.tta)


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
    if config.tta:
        logger.info("--tta: each prediction is the mean of the image's and of its mirror image's (two views per "
                    "image)")
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
                       config.fit_size, config.tta)


def run(config: RunConfig, started: float) -> None:
    """Carries out one run; raises a `ProgramError` (its one line and exit status) for bad input.

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


def resume_command(prog: str, argv: list[str]) -> str:
    """The command line that resumes the run `argv` of the program `prog` started."""
    kept = []
    skip_value = False
    for token in argv:
        if skip_value:
            skip_value = False
        elif token == "--restore-weights":
            skip_value = True
        elif token not in ("--overwrite", "--resume") and not token.startswith("--restore-weights="):
            kept.append(token)
    return shlex.join(["python3", prog, *kept, "--resume"])


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


def report_interruption(interrupted: TrainingInterrupted | KeyboardInterrupt, prog: str, argv: list[str]) -> int:
    """Prints the one line of an interrupted run of `prog` (and how to resume it); returns its exit status."""
    terminated = isinstance(interrupted, Terminated) or getattr(interrupted, "terminated", False)
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    if not isinstance(interrupted, TrainingInterrupted):
        print(f"{prog}: {what}; the best weights saved so far are kept.", file=sys.stderr)
    elif interrupted.epochs_done == 0:
        print(f"{prog}: {what} before the first epoch ended; nothing to resume, "
              "and the best weights are unchanged.", file=sys.stderr)
    else:
        print(f"{prog}: {what}; the state after the last completed epoch is in "
              f"{interrupted.state_path}; resume with: {resume_command(prog, argv)}", file=sys.stderr)
    return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status, with one line on stderr for each failure.

    Statuses (`segmentation.errors`): 0 done; a `ProgramError`'s `exit_status`, its line
    `<prog>: error: <message>`: 2 bad input (or usage, or a file that cannot be written), 3 the
    loss or weights became NaN or infinite; 130 interrupted with Ctrl-C, 143 terminated by SIGTERM
    (both keep the state of the last completed epoch).
    """
    started = time.monotonic()
    argv = sys.argv[1:] if argv is None else list(argv)
    # The dtype policy, seeds and logging a run sets are its own: an in-process call leaves them as it found them.
    with kept_process_state():
        parser = build_parser()
        config = RunConfig.from_namespace(parser.parse_args(argv))
        level = logging.WARNING if config.verbose <= 0 else logging.INFO if config.verbose == 1 else logging.DEBUG
        logging.basicConfig(level=level, format="%(message)s", stream=sys.stdout, force=True)
        # tf.distribute logs every reduction at INFO level.
        logging.getLogger("tensorflow").setLevel(logging.DEBUG if config.verbose >= 2 else logging.WARNING)
        try:
            with sigterm_as_interrupt():
                run(config, started)
        except ProgramError as error:
            return report_error(error, parser.prog)
        except (TrainingInterrupted, KeyboardInterrupt) as interrupted:
            return report_interruption(interrupted, parser.prog, argv)
        return 0
