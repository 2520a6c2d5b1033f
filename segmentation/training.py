"""A training run (Listing 12.3.3): where it starts, the fit with its callbacks, and its report.

The book's `train()` compiled Adam and called `fit` with one callback; here the
run also decides, before anything is written, whether it starts afresh, resumes
a saved state or must refuse (`plan_training`), and after the fit draws
`report.png` of its best weights (`report_training`). Options off by default
change what is fitted and saved: a moving average of the weights (`--ema`), a
training-only auxiliary head (`--aux-loss`), early stopping (`--patience`),
flip-averaged evaluation (`--tta`) and BatchNormalization statistics recomputed
over the training images before each evaluation (`--precise-bn`).
"""

import logging
import math
import os
import secrets

import keras

from data_generator import DataGenerator
from model import build_training_model
from segmentation.budget import Plan, StepLimit, TimeBudget
from segmentation.callbacks import (
    BestWeights,
    EpochEnd,
    NonFiniteLossCallback,
    Patience,
    TensorBoardLogger,
    save_histories,
    write_history_csv,
)
from segmentation.checkpoints import (
    TrainingState,
    add_test_scores,
    check_same_settings,
    epochs_since_best,
    read_best_metrics,
    read_training_state,
    restore_training_state,
    restore_weights,
    selection_miou,
)
from segmentation.config import JIT_CHOICES, RunConfig, TrainingSettings, recorded_setting
from segmentation.distribution import prepare_for_fit
from segmentation.errors import Terminated, TrainingInterrupted, UsageError
from segmentation.evaluation import evaluate_dataset
from segmentation.paths import RunFiles, best_metrics_path, check_histories_are_this_runs
from segmentation.precise_bn import PreciseStatistics, check_one_device, count_statistics_batches
from segmentation.report import write_training_report
from segmentation.schedules import STEP_SCHEDULES, LearningRateLogger, WarmupCosine, get_lr_schedule

logger = logging.getLogger(__name__)


class RepeatedTargets(keras.utils.PyDataset):
    """A data set's batches with their masks given once per output of a model with several (`--aux-loss`).

    Args:
        data: DataGenerator. The training batches; its epoch ends are passed on.
        outputs: int. Outputs of the model.
    """

    def __init__(self, data: DataGenerator, outputs: int):
        super().__init__(workers=data.workers, use_multiprocessing=data.use_multiprocessing,
                         max_queue_size=data.max_queue_size)
        self.data = data
        self.outputs = outputs

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple:
        images, masks = self.data[index]
        return images, (masks,) * self.outputs

    def on_epoch_end(self) -> None:
        self.data.on_epoch_end()


def plan_training(
    files: RunFiles, settings: TrainingSettings, *, resume: bool, overwrite: bool, epochs: int, seed: int | None,
    split: str = "test",
) -> TrainingState:
    """Decides where training starts and which mIoU the saved best weights hold, before anything is written.

    Args:
        files: RunFiles. The run's best weights and last state.
        settings: TrainingSettings. This run's settings.
        resume: bool. `--resume`.
        overwrite: bool. `--overwrite`.
        epochs: int. `--epochs`.
        seed: int or None. `--seed`.
        split: str. What the run selects its best weights on: `"test"` (the book's) or `"val"`.
            A record selected on the other split is no bar for this run: its weights are scored.

    Returns:
        The starting `TrainingState`; its `best_miou` is NaN when a best-weights file exists
        with no metrics record (the caller then scores it).

    Raises:
        CheckpointError, UsageError: for a state that cannot be resumed or would be lost.
    """
    record = read_best_metrics(files.weights) if os.path.isfile(files.weights) else None
    if record is not None and record.get("selected_on", "test") != split:
        record = None
    if resume:
        state = read_training_state(files.state)
        check_same_settings(state, settings, files.state)
        budgeted = recorded_setting(state.settings, "time_budget") is not None
        # A budgeted run (--time-budget) finishes the steps its budget planned, whatever --epochs says.
        planned = state.epochs if budgeted else epochs
        if not budgeted and state.epochs_done >= state.epochs and recorded_setting(state.settings,
                                                                                  "lr_schedule") == "cosine":
            # Its rate is 0 for good: going on with it would train nothing, and a restart is a new schedule.
            raise UsageError(
                f"--resume: {files.state} finished its {state.epochs} epoch(s) and its cosine schedule, whose "
                "learning rate is now 0; to train more, start a new run from its best weights with "
                "--restore-weights (without --resume)."
            )
        if state.epochs_done >= planned:
            raise UsageError(
                f"--resume: {files.state} has finished all {state.epochs_done} epoch(s) its --time-budget planned; "
                "nothing is left to train (--overwrite starts a new run)." if budgeted else
                f"--resume: {files.state} has finished {state.epochs_done} epoch(s) and --epochs is "
                f"{planned}; give a larger --epochs to train more."
            )
        patience = settings.config.patience
        # From the history, which grows every epoch: a count kept by --patience alone goes stale on epochs
        # run without it.
        state.epochs_without_improvement = epochs_since_best(state.history.get(f"{split}_miou", []))
        if patience is not None and state.epochs_without_improvement >= patience:
            raise UsageError(
                f"--resume: {files.state} stopped early, its mIoU not improved for {state.epochs_without_improvement} "
                f"epoch(s) (--patience {patience}); give a larger --patience to train on."
            )
        check_histories_are_this_runs(files, resume=True)
        state.epochs = planned
        if record is not None:
            state.best_miou = max(state.best_miou, float(selection_miou(record)))
        logger.info("Resuming %s after epoch %d of %d (best mIoU so far %.4f)",
                    files.state, state.epochs_done, planned, state.best_miou)
        return state
    if not overwrite:
        check_histories_are_this_runs(files, resume=False)
    recorded = record.get("settings", {}) if record else settings.as_record()
    trained = (recorded_setting(recorded, "head_filters"), recorded_setting(recorded, "decoder"))
    if trained != (settings.config.head_filters, settings.config.decoder) and not overwrite:
        raise UsageError(
            f"{files.weights}: best weights of a {trained[0]}-filter head with the {trained[1]} decoder are in the "
            f"way of this run's {settings.config.head_filters}-filter network with the {settings.config.decoder} "
            "decoder; move them away, choose another --save-dir, or give --overwrite to replace them."
        )
    if os.path.isfile(files.state) and not overwrite:
        earlier = read_training_state(files.state)
        if earlier.epochs_done < earlier.epochs:
            raise UsageError(
                f"{files.state}: an unfinished run (epoch {earlier.epochs_done} of {earlier.epochs}) is saved "
                "here; add --resume to continue it, or --overwrite to start afresh."
            )
    best_miou = 0.0
    if os.path.isfile(files.weights):
        if overwrite:
            logger.info("--overwrite: the existing best weights %s will be replaced by this run's best.",
                        files.weights)
        elif record is not None:
            best_miou = float(selection_miou(record))
            logger.info(
                "Best weights %s exist (mIoU %.4f, epoch %s): this run replaces them only with a better "
                "model; give --overwrite to replace them anyway.", files.weights, best_miou, record.get("epoch"),
            )
        else:
            best_miou = math.nan
    shuffle_seed = seed if seed is not None else secrets.randbelow(2**31)
    return TrainingState(epochs_done=0, epochs=epochs, history={}, best_miou=best_miou,
                         seed=seed, shuffle_seed=shuffle_seed, settings=settings.as_record())


def score_existing_best(fcn: keras.Model, weights_path: str, test_data: DataGenerator) -> float:
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
    miou = evaluate_dataset(fcn, test_data).mean_iou
    fcn.set_weights(initial)
    logger.info(
        "Best weights %s exist without a metrics file; they score mIoU %.4f on the test set, and this run "
        "replaces them only with a better model (--overwrite to replace them anyway).", weights_path, miou,
    )
    return miou


def compile_for_training(model: keras.Model, config: RunConfig, loss: keras.losses.Loss | str, total_steps: int,
                         schedule_config: dict | None = None) -> tuple[WarmupCosine | None, keras.callbacks.Callback]:
    """Compiles Adam with `loss` and the `--lr-schedule`; returns the per-step schedule (or None) and its callback.

    An epoch schedule (`text`, `code`) is applied by `LearningRateScheduler` at each epoch's start; a
    step schedule (`cosine`) is Adam's own learning rate, sized to `total_steps` (or as `schedule_config`,
    a resumed run's, says), and logged each epoch.
    With `--ema` Adam keeps the weights' moving average; a model with an auxiliary output has that
    output's loss weighted `--aux-loss`.
    """
    learning_rate = config.learning_rate
    step_schedule = None
    if config.lr_schedule in STEP_SCHEDULES:
        step_schedule = (WarmupCosine.from_config(schedule_config) if schedule_config
                         else WarmupCosine(learning_rate, total_steps=total_steps))
        schedule_callback = LearningRateLogger(step_schedule)
    else:
        schedule_callback = keras.callbacks.LearningRateScheduler(
            get_lr_schedule(config.lr_schedule, learning_rate)
        )
    averaging = {} if config.ema is None else {"use_ema": True, "ema_momentum": config.ema}
    losses = {"loss": loss}
    if len(model.outputs) > 1:
        losses = {"loss": [loss, loss], "loss_weights": [1.0, config.aux_loss]}
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=step_schedule or learning_rate, **averaging),
        jit_compile=JIT_CHOICES[config.jit_compile],
        **losses,
    )
    prepare_for_fit(model)
    return step_schedule, schedule_callback


def train(
    fcn: keras.Model,
    train_data: DataGenerator,
    selection_data: DataGenerator,
    state: TrainingState,
    files: RunFiles,
    config: RunConfig,
    *,
    loss: keras.losses.Loss | str,
    split: str = "test",
    deadline: float | None = None,
) -> keras.callbacks.History:
    """Trains with Adam, evaluating every epoch (Listing 12.3.3).

    After every epoch the full state goes to `files.state`; with `--resume`
    the run continues from it: weights, optimizer, epoch count, histories and the
    shuffling order (`train_data` is replayed to the saved epoch here). With
    `--aux-loss` the model fitted is `fcn` with an auxiliary head
    (`model.build_training_model`), whose weights and optimizer the state holds;
    the best weights are always `fcn`'s alone.

    Args:
        fcn: keras.Model. The network.
        train_data: DataGenerator. The training batches, shuffled with `state.shuffle_seed`.
        selection_data: DataGenerator. Scored after every epoch to select the best weights: the
            test set (the book's) or validation images, as `split` says.
        state: TrainingState. Where the run starts (`plan_training`).
        files: RunFiles. Where the best weights, the state and the histories go.
        config: RunConfig. The run's options: the learning rate and its schedule, XLA, `--resume`,
            the progress bar, TensorBoard and the training options (`--ema`, `--aux-loss`,
            `--patience`, `--tta`, `--precise-bn`).
        loss: keras loss. The book's categorical cross-entropy, or `--loss`/`--class-weights`'s.
        split: str. `"test"` (the book's) or `"val"`: what the selection data holds, naming the
            logs. Defaults to `"test"`.
        deadline: float or None. `--time-budget` as a `time.monotonic()` value: train the epochs
            that fit before it, and record them in the state's `epochs`. Defaults to None.

    Raises:
        UsageError: for `--precise-bn` within a distribution strategy (`--distribute`).
        TrainingInterrupted: on Ctrl-C (the state of the last completed epoch is kept).
        NonFiniteLossError: when the loss or weights become NaN or infinite.
    """
    if config.precise_bn:
        check_one_device()
    # Replay the completed epochs' reshuffles, so a resumed run sees the order it would have seen.
    for _ in range(state.epochs_done):
        train_data.on_epoch_end()
    total_steps = state.total_steps or state.epochs * len(train_data)
    model = fcn if config.aux_loss is None else build_training_model(fcn)
    step_schedule, schedule_callback = compile_for_training(model, config, loss, total_steps,
                                                            state.schedule if config.resume else None)
    miou_history = state.history.get(f"{split}_miou", [])
    mpla_history = [100.0 * value for value in state.history.get(f"{split}_pixel_accuracy", [])]
    if config.resume:
        restore_training_state(model, files.state)
        # A kill between an epoch's history files and its state can leave an epoch too many there.
        write_history_csv(files.history_csv, state.history, state.epochs_done)
        save_histories(files.save_dir, miou_history, mpla_history)
    if step_schedule is not None:
        # Resumed with another --epochs: only what is left of the schedule changes, from its rate now.
        step_schedule.resize(total_steps, at_step=int(keras.ops.convert_to_numpy(model.optimizer.iterations)))
        state.schedule = step_schedule.get_config()
    logger.info("Classes: %d  Batch size: %d  Training images: %d  %s images: %d", train_data.n_classes,
                train_data.batch_size, len(train_data.labels.masks), "Validation" if split == "val" else "Test",
                len(selection_data.labels.masks))
    logger.info("Best weights: %s  Last state (for --resume): %s", files.weights, files.state)
    precise_statistics = None
    evaluation_batches = len(selection_data)
    if config.precise_bn:
        precise_statistics = PreciseStatistics(fcn, train_data)
        num_statistics_batches = count_statistics_batches(train_data)
        # A forward pass per batch: the budget counts them in the epoch's evaluation.
        evaluation_batches += num_statistics_batches
        logger.info("--precise-bn: each evaluation first recomputes the BatchNormalization statistics over %d "
                    "training images (%d batches of %d, unaugmented)", num_statistics_batches * train_data.batch_size,
                    num_statistics_batches, train_data.batch_size)

    def record_plan(plan: Plan) -> None:
        state.epochs, state.total_steps = plan.epochs, plan.total_steps
        state.schedule = step_schedule.get_config() if step_schedule is not None else None

    budget = None
    per_batch = [NonFiniteLossCallback()]
    if deadline is not None:
        budget = TimeBudget(deadline, len(train_data), evaluation_batches, state.epochs, step_schedule,
                            on_plan=record_plan)
        per_batch.append(budget)
    elif state.total_steps is not None:
        # A resumed budgeted run: the planned steps, its last epoch as short as planned.
        per_batch.append(StepLimit(state.total_steps))
    best_weights = BestWeights(
        fcn, selection_data, files.weights, files.save_dir, best_miou=state.best_miou, settings=state.settings,
        histories=(miou_history, mpla_history), split=split, tta=config.tta,
    )
    epoch_end = EpochEnd(
        best_weights, schedule_callback, state, files, precise_statistics=precise_statistics,
        patience=None if config.patience is None else Patience(config.patience, state, split), budget=budget,
        tensorboard=TensorBoardLogger(config.tensorboard) if config.tensorboard else None,
    )
    # The progress bar first, so an epoch's line is finished before the epoch's end logs.
    callbacks = [keras.callbacks.ProgbarLogger(), *per_batch, epoch_end]
    fit_data = train_data if model is fcn else RepeatedTargets(train_data, len(model.outputs))
    try:
        return model.fit(fit_data, epochs=state.epochs, initial_epoch=state.epochs_done,
                         callbacks=callbacks, verbose=1 if config.verbose else 0)
    except KeyboardInterrupt as interrupt:
        raise TrainingInterrupted(state.epochs_done, files.state, isinstance(interrupt, Terminated)) from None
    except Exception:
        # A bad image the loader met: TensorFlow's data pipeline wraps its DatasetError in its own error.
        if train_data.failure is None:
            raise
        raise train_data.failure from None


def report_training(fcn: keras.Model, files: RunFiles, history: dict[str, list[float]],
                    test_data: DataGenerator, tta: bool = False) -> None:
    """Writes `report.png` in the save folder for the best weights of a finished training run.

    The test set is scored there (flip-averaged with `tta`); for weights selected on validation
    images that is the test set's one score, which goes into the best weights' record too.
    """
    record = None
    if os.path.isfile(files.weights):
        restore_weights(fcn, files.weights)
        subject = f"best weights {os.path.basename(files.weights)}"
        record = read_best_metrics(files.weights)
    else:
        # No epoch ever beat mIoU 0, so no best weights were saved: report on the last ones.
        subject = "last weights (no best weights were saved)"
    epochs = len(history.get("loss", []))
    scores = write_training_report(fcn, test_data, history, files.report,
                                   f"Training report: {subject}, {epochs} epoch(s)", tta)
    logger.info("Saved the training report %s", files.report)
    if record is not None and record.get("selected_on") == "val":
        add_test_scores(files.weights, record, {
            "test_miou": scores.mean_iou,
            "test_pixel_accuracy": scores.mean_pixel_accuracy,
            "test_dataset_miou": None if math.isnan(scores.dataset_miou) else scores.dataset_miou,
        })
        logger.info("Test set, scored once with the weights selected on validation images: mIoU %.4f, pixel "
                    "accuracy %.2f%% (recorded in %s)", scores.mean_iou, 100 * scores.mean_pixel_accuracy,
                    best_metrics_path(files.weights))
