"""The learning-rate schedules: the book's two, and warm-up plus cosine decay."""

import math

import keras
import numpy as np
import pytest

from segmentation.schedules import LearningRateLogger, WarmupCosine, lr_schedule_code, lr_schedule_text, warmup_cosine


@pytest.mark.parametrize(
    "epoch, expected",
    [(0, 1e-3), (40, 1e-3), (41, 5e-4), (60, 5e-4), (61, 2.5e-4), (80, 2.5e-4), (81, 1.25e-4), (99, 1.25e-4),
     (101, 6.25e-5)],
)
def test_text_schedule_halves_every_20_epochs_after_40(epoch, expected):
    assert lr_schedule_text(epoch, 0.0) == pytest.approx(expected)


@pytest.mark.parametrize("epoch, expected", [(0, 1e-3), (40, 1e-3), (41, 5e-4), (61, 1e-4), (81, 5e-5), (99, 5e-5)])
def test_code_schedule_is_the_books_lr_scheduler(epoch, expected):
    assert lr_schedule_code(epoch, 0.0) == pytest.approx(expected)


def test_cosine_warms_up_linearly_then_decays_to_zero_at_the_last_step():
    total, peak = 100, 3e-3
    rates = [warmup_cosine(step, total, peak) for step in range(total + 5)]
    # Warm-up: the first tenth, linear to the peak.
    assert rates[0] == pytest.approx(peak / 10)
    assert rates[4] == pytest.approx(peak / 2)
    assert rates[9] == pytest.approx(peak)
    assert rates[10] == pytest.approx(peak)
    # Half-way through the decay: half the peak; then decreasing to 0 at step `total`, and 0 after.
    assert rates[55] == pytest.approx(peak / 2)
    assert all(later <= earlier for earlier, later in zip(rates[10:], rates[11:]))
    assert rates[total - 1] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert 0 < rates[total - 1] < 1e-3 * peak
    assert rates[total] == 0 and rates[total + 4] == 0


def test_keras_schedule_matches_the_formula_and_can_be_resized():
    schedule = WarmupCosine(2e-3, total_steps=50)
    steps = [0, 3, 4, 5, 20, 49, 50, 60]
    assert [float(schedule(step)) for step in steps] == pytest.approx([warmup_cosine(s, 50, 2e-3) for s in steps],
                                                                      rel=1e-5, abs=1e-9)
    schedule.set_total_steps(200)
    assert [float(schedule(step)) for step in steps] == pytest.approx([warmup_cosine(s, 200, 2e-3) for s in steps],
                                                                      rel=1e-5, abs=1e-9)
    assert schedule.get_config() == {"peak_rate": 2e-3, "total_steps": 200}


def test_compiled_training_step_follows_a_resized_schedule():
    """The length is a variable read by the compiled step: resizing needs no retracing."""
    schedule = WarmupCosine(1e-2, total_steps=1000)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    x, y = np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32)
    model.train_on_batch(x, y)
    schedule.set_total_steps(2)
    before = model.get_weights()[0].copy()
    model.train_on_batch(x, y)  # step 1 of 2: the peak rate
    assert not np.allclose(model.get_weights()[0], before)
    model.train_on_batch(x, y)  # step 2 of 2: rate 0, nothing moves
    after = model.get_weights()[0].copy()
    model.train_on_batch(x, y)
    np.testing.assert_array_equal(model.get_weights()[0], after)
    # The schedule's variable is not one of the optimizer's (the saved state keeps its layout).
    assert all(variable is not schedule.total_steps for variable in model.optimizer.variables)


def test_logger_records_the_rate_where_each_epoch_ended():
    schedule = WarmupCosine(1e-2, total_steps=6)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss="mse")
    history = model.fit(np.ones((6, 2)), np.zeros((6, 1)), batch_size=2, epochs=2, verbose=0,
                        callbacks=[LearningRateLogger(schedule)])
    assert history.history["learning_rate"] == pytest.approx([warmup_cosine(3, 6, 1e-2), 0.0])


def test_peak_rate_must_be_positive():
    with pytest.raises(ValueError, match="peak_rate"):
        WarmupCosine(0.0)
