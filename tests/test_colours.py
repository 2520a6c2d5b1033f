"""Class colours have one home (segmentation/classes.py): predicted masks and ground-truth previews agree."""

import json

import matplotlib.image
import numpy as np
from skimage import io

from segmentation import classes
from segmentation.classes import colorize
from segmentation.figures import save_input_and_mask
from segmentation.tools import ground_truth, synthetic_check

BOOK_COLOURS = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
NUM_CLASSES = 12
STRIPE = 4


def write_striped_project(folder, num_classes):
    """A black image with one 4-pixel-wide rect per class 1 .. num_classes - 1, and its VIA project.

    Returns:
        int array (H, W): the label map the regions rasterise to (column stripes, class 0 first).
    """
    height, width = 8, STRIPE * num_classes
    matplotlib.image.imsave(folder / "a.png", np.zeros((height, width, 3), dtype=np.uint8))
    regions = [
        {
            "shape_attributes": {"name": "rect", "x": STRIPE * class_id, "y": 0, "width": STRIPE, "height": height},
            "region_attributes": {"Name": str(class_id)},
        }
        for class_id in range(1, num_classes)
    ]
    images = {"a.png100": {"filename": "a.png", "size": 100, "regions": regions, "file_attributes": {}}}
    (folder / "segmentation_train.json").write_text(json.dumps({"_via_img_metadata": images}))
    return np.repeat(np.arange(num_classes), STRIPE)[np.newaxis, :].repeat(height, axis=0)


def test_predicted_mask_and_show_ground_truth_paint_every_class_alike(tmp_path):
    labels = write_striped_project(tmp_path, NUM_CLASSES)
    argv = ["-p", str(tmp_path), "--save-filename", str(tmp_path / "gt.npy"), "--num-classes", str(NUM_CLASSES),
            "--show", "--show-dir", str(tmp_path / "show")]
    assert ground_truth.main(argv) == 0
    truth = np.load(tmp_path / "gt.npy", allow_pickle=True).flat[0]["a.png"].argmax(axis=-1)
    np.testing.assert_array_equal(truth, labels)
    preview = io.imread(tmp_path / "show" / "a-gt.png")[..., :3]
    # The network's prediction of the same scene, saved as --plot / --predict-dir save it.
    _, mask_path = save_input_and_mask(np.zeros((*labels.shape, 3)), labels, str(tmp_path / "pred"), "a")
    predicted = io.imread(mask_path)
    np.testing.assert_array_equal(predicted, preview)
    per_class = predicted[0, ::STRIPE]
    np.testing.assert_array_equal(per_class, colorize(np.arange(NUM_CLASSES)))
    np.testing.assert_array_equal(per_class, classes.class_colors(NUM_CLASSES))
    np.testing.assert_array_equal(per_class[:4], BOOK_COLOURS)
    assert not (per_class[1:] == 0).all(axis=1).any(), "only background may be black"
    assert len({tuple(colour) for colour in per_class}) == NUM_CLASSES


def test_synthetic_contact_sheet_uses_the_same_colours():
    # The renderer's outlines take their colours from the one table, not a copy of it.
    assert synthetic_check.class_colors is classes.class_colors


def test_64_classes_get_64_distinct_colours_none_black_but_background():
    for count in (64, 256):
        colours = classes.class_colors(count)
        assert colours.shape == (count, 3) and colours.dtype == np.uint8
        assert len({tuple(colour) for colour in colours}) == count
        assert not (colours[1:] == 0).all(axis=1).any()
        np.testing.assert_array_equal(colours[:4], BOOK_COLOURS)
    # A class keeps its colour whatever the number of classes, and the fixed table comes first.
    np.testing.assert_array_equal(classes.class_colors(256)[:64], classes.class_colors(64))
    np.testing.assert_array_equal(classes.class_colors(len(classes.CLASS_COLORS)), classes.CLASS_COLORS)


def test_colorize_sizes_the_palette_from_the_labels():
    labels = np.array([[0, 10], [11, 3]])
    np.testing.assert_array_equal(colorize(labels), classes.colorize(labels, NUM_CLASSES))
    assert colorize(np.zeros((0, 0), dtype=int)).shape == (0, 0, 3)
