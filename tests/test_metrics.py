"""The book's per-image metrics and the data-set-level mIoU on hand-made masks."""

import numpy as np
import pytest

from segmentation.metrics import SegmentationScores, confusion_matrices, iou_from_confusion

TRUTH = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [0, 0, 0, 0],
        [2, 2, 0, 0],
    ]
)


def test_perfect_prediction_scores_one():
    scores = SegmentationScores(n_classes=4)
    scores.update(["a"], TRUTH[None], TRUTH[None])
    image = scores.images[0]
    assert (image.num_classes_present, image.miou, image.pixel_accuracy) == (3, 1.0, 1.0)
    assert scores.dataset_miou == 1.0
    # Class 3 is seen nowhere: no IoU for it.
    assert np.isnan(scores.class_iou[3])


def test_known_iou_and_pixel_accuracy():
    predicted = TRUTH.copy()
    predicted[0, 1] = 1  # background pixel taken for class 1
    predicted[3, 0] = 0  # class-2 pixel missed
    scores = SegmentationScores(n_classes=4)
    scores.update(["a"], TRUTH[None], predicted[None])
    # background: intersection 9, union 11; class 1: 4 / 5; class 2: 1 / 2.
    expected_miou = (9 / 11 + 4 / 5 + 1 / 2) / 3
    assert scores.images[0].miou == pytest.approx(expected_miou)
    assert scores.images[0].pixel_accuracy == pytest.approx(14 / 16)
    np.testing.assert_allclose(scores.class_iou[:3], [9 / 11, 4 / 5, 1 / 2])


def test_all_background_image():
    truth = np.zeros((1, 4, 4), dtype=int)
    scores = SegmentationScores(n_classes=4)
    scores.update(["empty"], truth, truth)
    assert scores.images[0].num_classes_present == 1
    assert scores.images[0].miou == 1.0
    predicted = truth.copy()
    predicted[0, :2, :] = 3
    scores = SegmentationScores(n_classes=4)
    scores.update(["empty"], truth, predicted)
    # Only background is in the ground truth: IoU 8/16; class 3 does not count.
    assert scores.images[0].miou == pytest.approx(0.5)
    assert scores.images[0].pixel_accuracy == pytest.approx(0.5)


def test_prediction_of_a_class_absent_from_the_ground_truth():
    predicted = TRUTH.copy()
    predicted[2, :] = 3  # 4 background pixels called class 3, absent from the truth
    scores = SegmentationScores(n_classes=4)
    scores.update(["a"], TRUTH[None], predicted[None])
    # background 6/10, class 1 and 2 perfect; class 3 is not averaged in the book's mIoU.
    assert scores.images[0].num_classes_present == 3
    assert scores.images[0].miou == pytest.approx((6 / 10 + 1 + 1) / 3)
    # The data-set level counts it: IoU 0 for class 3.
    assert scores.class_iou[3] == 0.0
    assert scores.dataset_miou == pytest.approx((6 / 10 + 1 + 1 + 0) / 4)


def test_book_mean_differs_from_dataset_level_mean():
    truth = np.stack([TRUTH, np.zeros((4, 4), dtype=int)])
    predicted = np.stack([TRUTH, np.full((4, 4), 1)])
    scores = SegmentationScores(n_classes=4)
    scores.update(["good", "bad"], truth[:1], predicted[:1])
    scores.update(["bad"], truth[1:], predicted[1:])
    assert [image.name for image in scores.images] == ["good", "bad"]
    assert scores.mean_iou == pytest.approx(0.5)  # (1 + 0) / 2
    assert scores.mean_pixel_accuracy == pytest.approx(0.5)
    # One confusion matrix: background 10/26, class 1 4/20, class 2 1.
    assert scores.dataset_miou == pytest.approx((10 / 26 + 4 / 20 + 1) / 3)
    np.testing.assert_array_equal(scores.predicted_classes, [0, 1, 2])


def test_confusion_matrices_count_per_image():
    confusion = confusion_matrices(TRUTH[None], TRUTH[None], 4)
    np.testing.assert_array_equal(np.diag(confusion[0]), [10, 4, 2, 0])
    assert confusion.sum() == 16
    with pytest.raises(ValueError, match="\\[0, 4\\)"):
        confusion_matrices(TRUTH[None], TRUTH[None] + 2, 4)
    with pytest.raises(ValueError, match="must both be"):
        confusion_matrices(TRUTH[None], TRUTH, 4)


def test_iou_is_nan_only_for_empty_unions():
    iou = iou_from_confusion(np.array([[2, 0], [0, 0]]))
    assert iou[0] == 1.0 and np.isnan(iou[1])
