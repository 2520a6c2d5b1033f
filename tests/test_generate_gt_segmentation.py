"""Tests for utils/generate_gt_segmentation.py: the book's VIA JSON -> one-hot .npy converter."""

import json
import os

import matplotlib.image
import numpy as np
import pytest
from skimage import io

from segmentation.tools import ground_truth

HEIGHT, WIDTH = 64, 96


def write_image(path, height=HEIGHT, width=WIDTH, rect=None):
    """A black RGB PNG, with a white rectangle (rows r0..r1-1, cols c0..c1-1) when given."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    if rect is not None:
        r0, r1, c0, c1 = rect
        image[r0:r1, c0:c1] = 255
    matplotlib.image.imsave(path, image)


def write_project(folder, entries, name="segmentation_train.json", version=2):
    """entries: {filename: [region dicts]}; writes a VIA project of that version."""
    images = {
        f"{filename}100": {
            "filename": filename,
            "size": 100,
            "regions": regions if version == 2 else {str(i): r for i, r in enumerate(regions)},
            "file_attributes": {},
        }
        for filename, regions in entries.items()
    }
    data = {"_via_settings": {}, "_via_img_metadata": images, "_via_attributes": {}} if version == 2 else images
    (folder / name).write_text(json.dumps(data))


def rect(x, y, width, height, name="1"):
    return {
        "shape_attributes": {"name": "rect", "x": x, "y": y, "width": width, "height": height},
        "region_attributes": {"Name": name},
    }


def run(tmp_path, *flags):
    output = tmp_path / "out.npy"
    status = ground_truth.main(["-p", str(tmp_path), "--save-filename", str(output), *flags])
    return status, output


def load(output):
    return np.load(output, allow_pickle=True).flat[0]


@pytest.mark.parametrize("version", [1, 2])
def test_round_trip_every_shape(tmp_path, version):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    shapes = [
        {"name": "polygon", "all_points_x": [2, 10, 10, 2], "all_points_y": [2, 2, 6, 6]},
        {"name": "polyline", "all_points_x": [20, 25, 25, 20], "all_points_y": [2, 2, 6, 6]},
        {"name": "rect", "x": 40, "y": 10, "width": 5, "height": 3},
        {"name": "circle", "cx": 70, "cy": 40, "r": 2},
        {"name": "ellipse", "cx": 30, "cy": 40, "rx": 3, "ry": 1, "theta": 0},
        {"name": "point", "cx": 1, "cy": 60},
    ]
    regions = [{"shape_attributes": s, "region_attributes": {"Name": str(1 + i % 3)}} for i, s in enumerate(shapes)]
    write_project(tmp_path, {"a.png": regions, "b.png": []}, version=version)
    status, output = run(tmp_path)
    assert status == 0
    masks = load(output)
    assert sorted(masks) == ["a.png", "b.png"]
    mask = masks["a.png"]
    assert mask.dtype == np.uint8 and mask.shape == (HEIGHT, WIDTH, 4)
    np.testing.assert_array_equal(mask.sum(axis=-1), 1)
    expected = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    expected[2:7, 2:11] = 1
    expected[2:7, 20:26] = 2
    expected[10:13, 40:45] = 3
    expected[39:42, 69:72] = 1  # the r = 2 disk: corners of the 3x3 block lie at sqrt(2) < 2
    expected[40, 28:33] = 2  # rx = 3, ry = 1: |dx| < 3 on the centre row only
    np.testing.assert_array_equal(mask.argmax(axis=-1), expected)
    assert masks["b.png"][..., 0].all()


def test_summary_and_class_options(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    regions = [
        rect(0, 0, 10, 10, "soda_can"),
        {"shape_attributes": {"name": "rect", "x": 5, "y": 5, "width": 10, "height": 10}, "region_attributes": {}},
    ]
    write_project(tmp_path, {"a.png": regions})
    status, output = run(tmp_path, "--classes", "water_bottle,soda_can,juice_can", "--default-class", "juice_can")
    assert status == 0
    label = load(output)["a.png"].argmax(axis=-1)
    assert (label == 2).sum() == 100 - 25 and (label == 3).sum() == 100
    text = capsys.readouterr().out
    assert "2 soda_can" in text and "Images with no objects: 0" in text
    row = next(line for line in text.splitlines() if line.startswith("3 juice_can"))
    assert row.split()[2:4] == ["1", "100"]


def test_num_classes_sets_the_channels(tmp_path):
    write_image(tmp_path / "a.png")
    write_project(tmp_path, {"a.png": [rect(0, 0, 4, 4, "5")]})
    status, output = run(tmp_path, "--num-classes", "6")
    assert status == 0 and load(output)["a.png"].shape == (HEIGHT, WIDTH, 6)


def test_resize_keeps_masks_aligned(tmp_path):
    write_image(tmp_path / "a.png", rect=(8, 40, 16, 48))
    write_project(tmp_path, {"a.png": [rect(16, 8, 32, 32, "3")]})
    resized = tmp_path / "small"
    status, output = run(tmp_path, "--resize", "32x48", "--resized-path", str(resized))
    assert status == 0
    label = load(output)["a.png"].argmax(axis=-1)
    assert label.shape == (32, 48)
    expected = np.zeros((32, 48), dtype=np.int64)
    expected[4:20, 8:24] = 3
    np.testing.assert_array_equal(label, expected)
    image = io.imread(resized / "a.png")[..., :3]
    assert image.shape == (32, 48, 3)
    bright = image.mean(axis=-1) > 127
    np.testing.assert_array_equal(bright, expected == 3)


def test_show_writes_input_and_coloured_ground_truth(tmp_path):
    write_image(tmp_path / "a.png")
    write_project(tmp_path, {"a.png": [rect(0, 0, 4, 4, "1"), rect(10, 10, 4, 4, "3")]})
    status, _ = run(tmp_path, "--show", "--show-dir", str(tmp_path / "figs"))
    assert status == 0
    truth = io.imread(tmp_path / "figs" / "a-gt.png")[..., :3]
    np.testing.assert_array_equal(truth[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(truth[12, 12], [0, 0, 255])
    np.testing.assert_array_equal(truth[30, 30], [0, 0, 0])
    assert (tmp_path / "figs" / "a-input.png").is_file()


BAD_INPUTS = [
    ("{not json", None, "segmentation_train.json: not valid JSON"),
    ('{"x": 1}', None, "not a VIA project"),
    ({"a.png": [rect(0, 0, 4, 4, "9")]}, None, "image 'a.png' region 0: Name '9': class id 9 is out of range"),
    ({"a.png": [rect(0, 0, 4, 4, "cola")]}, None, "unknown class name"),
    ({"a.png": [{"shape_attributes": {"name": "rect", "x": 0, "y": 0, "width": 1, "height": 1}}]}, None, "no class"),
    ({"missing.png": []}, None, "image 'missing.png': no file"),
    ({"a.png": [rect(0, 0, 4, 4)], "c.png": []}, None, "c.png: cannot read the image"),
]


@pytest.mark.parametrize("content, flags, message", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, content, flags, message):
    write_image(tmp_path / "a.png")
    (tmp_path / "c.png").write_text("not an image")
    if isinstance(content, str):
        (tmp_path / "segmentation_train.json").write_text(content)
    else:
        write_project(tmp_path, content)
    before = sorted(os.listdir(tmp_path))
    status, output = run(tmp_path, "--show", "--show-dir", str(tmp_path / "figs"), *(flags or []))
    assert status == 2
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not output.exists()
    written = [name for name in os.listdir(tmp_path) if name not in before]
    assert all(not files for _, _, files in os.walk(tmp_path / "figs")) and written in ([], ["figs"])
