"""The one-page training report and the --tensorboard logs of --train."""

import glob
import os

import numpy as np
import pytest
import skimage.io
import tensorflow as tf
from conftest import TINY, write_book_dataset

from segmentation.metrics import SegmentationScores
from segmentation.report import Example, draw_report, pick_examples

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"




def scores_of(correct_shares):
    """Scores of 4x4 two-class images whose first `round(16 * share)` pixels are right."""
    scores = SegmentationScores(n_classes=2)
    for index, share in enumerate(correct_shares):
        truth = np.ones((1, 4, 4), dtype=int)
        predicted = truth.copy()
        predicted.reshape(-1)[round(16 * share):] = 0
        scores.update([f"image{index}.png"], truth, predicted)
    return scores


def test_pick_examples_takes_worst_median_and_best():
    picked = pick_examples(scores_of([0.5, 1.0, 0.25, 0.75, 0.875]))
    assert [name for _, name in picked] == ["image2.png", "image3.png", "image1.png"]
    assert [label.split(":")[0] for label, _ in picked] == ["worst", "median", "best"]
    # Only class 1 is in the ground truth, so the book's mIoU is its IoU, 4/16.
    assert "mIoU 0.250, pixel accuracy 25.0%" in picked[0][0]
    assert [label.split(":")[0] for label, _ in pick_examples(scores_of([0.5, 1.0]))] == ["worst", "best"]
    assert [label.split(":")[0] for label, _ in pick_examples(scores_of([0.5]))] == ["best"]


def test_pick_examples_passes_over_images_without_objects():
    scores = scores_of([0.5, 0.25, 0.75])
    empty = np.zeros((1, 4, 4), dtype=int)
    scores.update(["empty.png"], empty, empty)  # background only, all right: mIoU 1.0
    assert scores.images[-1].miou == 1.0 and not scores.images[-1].has_object
    assert [name for _, name in pick_examples(scores)] == ["image1.png", "image0.png", "image2.png"]
    # With no image holding an object, the empty ones are shown.
    only_empty = SegmentationScores(n_classes=2)
    only_empty.update(["a.png", "b.png"], np.zeros((2, 4, 4), dtype=int), np.zeros((2, 4, 4), dtype=int))
    assert [name for _, name in pick_examples(only_empty)] == ["a.png", "b.png"]


def test_draw_report_has_curves_bars_confusion_and_triptychs():
    scores = scores_of([0.5, 1.0, 0.25])
    history = {"loss": [1.2, 0.9, 0.7], "test_miou": [0.2, 0.5, 0.4], "test_pixel_accuracy": [0.5, 0.8, 0.7],
               "test_dataset_miou": [0.1, 0.4, 0.3], "learning_rate": [1e-3] * 3}
    image = np.zeros((4, 4, 3))
    examples = [Example(label, image, np.ones((4, 4), dtype=int), np.zeros((4, 4), dtype=int))
                for label, _ in pick_examples(scores)]
    fig = draw_report(history, scores, examples, "Training report")
    titles = [axis.get_title(loc="center") or axis.get_title(loc="left") for axis in fig.axes]
    assert titles[:4] == ["Training loss", "Test set per epoch",
                          f"IoU per class, best weights (mean {scores.dataset_miou:.3f})",
                          "Confusion matrix (share of each true class)"]
    assert len(fig.axes) == 4 + 3 * 3 and titles[4].startswith("worst: image2.png")
    loss_line, = fig.axes[0].get_lines()
    np.testing.assert_array_equal(loss_line.get_ydata(), history["loss"])
    legend = [text.get_text() for text in fig.axes[1].get_legend().get_texts()]
    assert legend[-1] == "best mIoU, epoch 2" and len(legend) == 4
    heights = [bar.get_height() for bar in fig.axes[2].patches]
    np.testing.assert_allclose(heights, np.nan_to_num(scores.class_iou))
    cells = [text.get_text() for text in fig.axes[3].texts]
    # Background is never true; of the 48 true class-1 pixels, 20 were predicted as background.
    assert cells == ["0.00", "0.00", f"{20 / 48:.2f}", f"{28 / 48:.2f}"]


def read_scalars(event_file):
    """{tag: {step: value}} of the scalars in a TensorBoard event file."""
    scalars = {}
    for record in tf.data.TFRecordDataset(event_file):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


def test_training_writes_tensorboard_events(trained_run):
    # The shared tiny run trained with --tensorboard logs/.
    events = glob.glob(str(trained_run.folder / "logs" / "train" / "events.out.tfevents.*"))
    assert len(events) == 1
    scalars = read_scalars(events[0])
    assert {"epoch_loss", "epoch_learning_rate", "epoch_test_miou", "epoch_test_pixel_accuracy"} <= set(scalars)
    # The same numbers as history.csv, epoch for epoch.
    header, *rows = (trained_run.save_dir / "history.csv").read_text().splitlines()
    miou_column = header.split(",").index("test_miou")
    expected = {int(row.split(",")[0]): float(row.split(",")[miou_column]) for row in rows}
    assert scalars["epoch_test_miou"] == pytest.approx(expected) and len(expected) == trained_run.epochs


def test_training_ends_with_a_one_page_report(trained_run):
    report = trained_run.save_dir / "report.png"
    assert report.read_bytes().startswith(PNG_SIGNATURE)
    page = skimage.io.imread(report)
    # 18 inches wide at 80 dpi; 4.5 inches for the top row and 3.6 for each of the three triptychs.
    assert page.shape[:2] == (round((4.5 + 3 * 3.6) * 80), 18 * 80)
    assert page.std() > 10
    assert not [name for name in os.listdir(trained_run.save_dir) if "partial" in name]


def test_tensorboard_is_used_with_train(tmp_path, run_cli):
    data_path = str(tmp_path / "drinks")
    write_book_dataset(data_path, num_train=2, num_test=2)
    status, _, err = run_cli(["--evaluate", "--tensorboard", str(tmp_path / "logs"), *TINY,
                                "--data-path", data_path])
    assert status == 2 and err.count("\n") == 1 and "--tensorboard is used with --train" in err
    assert not (tmp_path / "logs").exists()
