"""Batched evaluation, the best weights kept after every epoch, and the steps of an epoch's end in their order."""

import errno
import os

import keras
import numpy as np
import pytest
from conftest import HEIGHT, WIDTH

from data_generator import DataGenerator
from model import build_model
from segmentation.atomic import write_atomically
from segmentation.budget import Plan, TimeBudget
from segmentation.callbacks import BestWeights, EpochEnd, Patience
from segmentation.checkpoints import TrainingState, read_training_state
from segmentation.errors import NonFiniteLossError, SaveError
from segmentation.evaluation import CollapseMonitor, collapse_hint, evaluate_dataset
from segmentation.ground_truth.book_labels import load_labels
from segmentation.metrics import SegmentationScores
from segmentation.paths import RunFiles
from segmentation.schedules import get_lr_schedule


def tiny_setup(data_path):
    labels = load_labels(os.path.join(data_path, "segmentation_test.npy"), data_path, HEIGHT, WIDTH)
    generator = DataGenerator(labels, data_path, batch_size=3, shuffle=False, drop_last=False)
    _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=labels.n_classes, n=1)
    return labels, generator, fcn


class CountingModel:
    """Wraps a model to count predict calls (one per batch, never per image)."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def predict_on_batch(self, images):
        self.calls += 1
        return self.model.predict_on_batch(images)


def test_evaluation_predicts_once_per_batch(book_dataset):
    data_path, splits = book_dataset
    labels, generator, fcn = tiny_setup(data_path)
    counting = CountingModel(fcn)
    seen = []
    scores = evaluate_dataset(counting, generator, on_batch=lambda keys, *arrays: seen.extend(keys))
    assert counting.calls == 2  # 4 images in batches of 3
    assert seen == list(splits["test"])
    assert [image.name for image in scores.images] == list(splits["test"])
    assert 0.0 <= scores.mean_iou <= 1.0


def test_evaluation_of_a_perfect_model_scores_one(book_dataset):
    data_path, splits = book_dataset
    labels, generator, _ = tiny_setup(data_path)

    class Oracle:
        index = 0

        def predict_on_batch(self, images):
            keys = generator.batch_keys(self.index)
            self.index += 1
            return np.stack([splits["test"][key].astype(np.float32) for key in keys])

    scores = evaluate_dataset(Oracle(), generator)
    assert scores.mean_iou == 1.0 and scores.mean_pixel_accuracy == 1.0


def test_best_weights_log_save_the_best_and_write_histories(book_dataset, tmp_path):
    data_path, _ = book_dataset
    _, generator, fcn = tiny_setup(data_path)
    weights_path = str(tmp_path / "best.weights.h5")
    best_weights = BestWeights(fcn, generator, weights_path, str(tmp_path))
    logs = {}
    assert best_weights.evaluate(0, logs) == logs["test_miou"]
    assert set(logs) == {"test_miou", "test_pixel_accuracy", "test_dataset_miou"}
    assert os.path.exists(weights_path)
    assert best_weights.best_miou == logs["test_miou"]
    saved_at = os.path.getmtime(weights_path)
    # Not better (the same weights score the same): the file is left alone.
    best_weights.evaluate(1, {})
    assert os.path.getmtime(weights_path) == saved_at
    np.testing.assert_allclose(np.load(tmp_path / "miou_history.npy"), [logs["test_miou"]] * 2)
    np.testing.assert_allclose(np.load(tmp_path / "mpla_history.npy"), [100 * logs["test_pixel_accuracy"]] * 2)
    assert not [name for name in os.listdir(tmp_path) if "partial" in name]


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def epoch_end_setup(data_path, save_dir, state, **parts):
    """A compiled tiny network and an `EpochEnd` saving into a new folder `save_dir` (the text schedule's callback)."""
    save_dir.mkdir()
    _, generator, fcn = tiny_setup(data_path)
    fcn.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy")
    files = RunFiles.of(str(save_dir), 11, 1, "drinks")
    best_weights = BestWeights(fcn, generator, files.weights, files.save_dir)
    schedule = keras.callbacks.LearningRateScheduler(get_lr_schedule("text"))
    epoch_end = EpochEnd(best_weights, schedule, state, files, **parts)
    epoch_end.set_model(fcn)
    return fcn, files, epoch_end


def new_state():
    return TrainingState(epochs_done=0, epochs=3, history={}, best_miou=0.0, seed=0, shuffle_seed=0, settings={})


def test_the_state_saved_at_an_epoch_end_holds_its_scores_the_budgets_plan_the_rate_and_the_count(
        book_dataset, tmp_path):
    data_path, _ = book_dataset
    state = new_state()
    clock = FakeClock()

    def record_plan(plan: Plan) -> None:
        state.epochs, state.total_steps = plan.epochs, plan.total_steps

    # Steps of 1 s and 5 s left after the first epoch and the report: 4 steps more, 2 epochs in all.
    budget = TimeBudget(14.0, steps_per_epoch=4, evaluation_batches=2, max_epochs=3, on_plan=record_plan,
                        clock=clock)
    fcn, files, epoch_end = epoch_end_setup(data_path, tmp_path / "weights", state, budget=budget,
                                            patience=Patience(1, state))
    budget.set_model(fcn)
    budget.on_train_begin()
    epoch_end.on_epoch_begin(0)
    for batch in range(4):
        clock.now += 1.0
        budget.on_train_batch_end(batch)
    logs = {}
    epoch_end.on_epoch_end(0, logs)
    saved = read_training_state(files.state)
    # The budget's plan, made at this epoch's end with its evaluation timed.
    assert (saved.epochs_done, saved.epochs, saved.total_steps) == (1, budget.plan.epochs, budget.plan.total_steps)
    assert budget.plan == Plan(total_steps=8, steps_per_epoch=4)
    # The evaluation's scores, then the rate, in the logs and the state's history.
    assert list(saved.history) == ["test_miou", "test_pixel_accuracy", "test_dataset_miou", "learning_rate"]
    assert saved.history["test_miou"] == [logs["test_miou"]] and saved.best_miou == max(0.0, logs["test_miou"])
    assert saved.history["learning_rate"] == [pytest.approx(1e-3)]
    assert saved.epochs_without_improvement == 0 and not fcn.stop_training
    with open(files.history_csv, encoding="utf-8") as file:
        assert len(file.read().splitlines()) == 2
    # The same weights score the same: with --patience 1 the second epoch asks to stop, and its state keeps the count.
    epoch_end.on_epoch_end(1, {})
    saved = read_training_state(files.state)
    assert fcn.stop_training and (saved.epochs_done, saved.epochs_without_improvement) == (2, 1)
    assert saved.history["test_miou"] == [logs["test_miou"]] * 2


def test_an_epoch_that_broke_the_weights_saves_nothing(book_dataset, tmp_path):
    data_path, _ = book_dataset
    save_dir = tmp_path / "weights"
    state = new_state()
    fcn, files, epoch_end = epoch_end_setup(data_path, save_dir, state, patience=Patience(1, state))
    weights = fcn.get_weights()
    weights[0] = np.full_like(weights[0], np.nan)
    fcn.set_weights(weights)
    logs = {}
    with pytest.raises(NonFiniteLossError, match="weights became NaN or infinite in epoch 3"):
        epoch_end.on_epoch_end(2, logs)
    # No best weights, histories, history.csv or state; nothing counted or logged.
    assert os.listdir(save_dir) == []
    assert logs == {} and state.epochs_done == 0 and state.history == {}


def test_atomic_save_replaces_the_file(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    path = str(tmp_path / "m.weights.h5")
    write_atomically(path, model.save_weights, suffix=".weights.h5")
    write_atomically(path, model.save_weights, suffix=".weights.h5")
    assert os.listdir(tmp_path) == ["m.weights.h5"]


def scores_of(truth, predicted, n_classes=3):
    scores = SegmentationScores(n_classes)
    scores.update([f"{i}.jpg" for i in range(len(truth))], truth, predicted)
    return scores


def test_collapse_warning_fires_on_an_all_background_prediction():
    truth = np.zeros((2, 8, 8), dtype=np.uint8)
    truth[:, 2:4, 2:4] = 1
    truth[1, 5:7, 5:7] = 2
    scores = scores_of(truth, np.zeros_like(truth))
    # High pixel accuracy, and still a collapse.
    assert scores.mean_pixel_accuracy > 0.9
    warnings = CollapseMonitor(3).check(scores)
    assert len(warnings) == 1
    assert "predicts 'background' for every test pixel" in warnings[0] and "--lr-schedule cosine" in warnings[0]


def test_collapse_hint_names_only_what_the_run_lacks():
    book = {"depth": 56, "augment": False, "loss": "ce", "bn_momentum": 0.99, "lr_schedule": "text"}
    assert collapse_hint(book) == ("for a small data set try --depth 20 --loss ce+dice --bn-momentum 0.9 "
                                   "--lr-schedule cosine (docs/small-data.md)")
    partial = {**book, "depth": 20, "lr_schedule": "cosine"}
    assert collapse_hint(partial) == "for a small data set try --loss ce+dice --bn-momentum 0.9 (docs/small-data.md)"
    recipe = {**partial, "loss": "ce+dice", "bn_momentum": 0.9}
    assert "--" not in collapse_hint(recipe).split(":")[0] and "train longer" in collapse_hint(recipe)
    assert collapse_hint(None) == collapse_hint({}) == collapse_hint("not a dict")
    truth = np.zeros((1, 8, 8), dtype=np.uint8)
    truth[0, 2:4, 2:4] = 1
    warning, = CollapseMonitor(3, hint=collapse_hint(recipe)).check(scores_of(truth, np.zeros_like(truth)))
    assert "--loss" not in warning and "train longer" in warning


def test_no_warning_on_a_good_prediction():
    truth = np.zeros((2, 8, 8), dtype=np.uint8)
    truth[:, 2:4, 2:4] = 1
    truth[1, 5:7, 5:7] = 2
    predicted = truth.copy()
    predicted[0, 2, 2] = 0
    monitor = CollapseMonitor(3)
    for _ in range(5):
        assert monitor.check(scores_of(truth, predicted)) == []


def test_a_class_stuck_at_iou_zero_warns_after_patience_epochs():
    truth = np.zeros((1, 8, 8), dtype=np.uint8)
    truth[0, :2] = 1
    truth[0, 6:] = 2
    predicted = truth.copy()
    predicted[0, 6:] = 1  # class 2 never found, class 1 found
    monitor = CollapseMonitor(3, patience=2)
    assert monitor.check(scores_of(truth, predicted)) == []
    warnings = monitor.check(scores_of(truth, predicted))
    assert len(warnings) == 1 and "'class 2' present in the test set but IoU 0" in warnings[0]
    # Found again: the count restarts.
    assert monitor.check(scores_of(truth, truth)) == []
    assert monitor.check(scores_of(truth, predicted)) == []


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))])
def test_an_interrupted_atomic_save_leaves_the_old_bytes(tmp_path, interruption):
    """A write stopped halfway (Ctrl-C, a full disk) never reaches the file: the old bytes survive, no partial."""
    path = tmp_path / "m.weights.h5"
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    write_atomically(str(path), model.save_weights, suffix=".weights.h5")
    old = path.read_bytes()

    def half_written(temporary):
        with open(temporary, "wb") as file:
            file.write(old[: len(old) // 2])
        raise interruption

    with pytest.raises(KeyboardInterrupt if interruption is KeyboardInterrupt else SaveError):
        write_atomically(str(path), half_written, suffix=".weights.h5")
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.weights.h5"]
