"""Tests for utils/via.py: parsing VIA 1.x/2.x, validation errors, rasterising every shape."""

import json
import logging
import math

import numpy as np
import pytest

from segmentation import classes
from segmentation.tools import via

HEIGHT, WIDTH = 64, 96


def via2(regions, filename="a.png"):
    """A VIA 2.x project with one image."""
    return {
        "_via_settings": {},
        "_via_img_metadata": {
            f"{filename}100": {"filename": filename, "size": 100, "regions": regions, "file_attributes": {}}
        },
        "_via_attributes": {"region": {}, "file": {}},
        "_via_image_id_list": [f"{filename}100"],
    }


def via1(regions, filename="a.png"):
    """A VIA 1.x project with one image: entries at the top level, regions a dict."""
    return {
        f"{filename}100": {
            "fileref": "",
            "size": 100,
            "filename": filename,
            "base64_img_data": "",
            "file_attributes": {},
            "regions": {str(index): region for index, region in enumerate(regions)},
        }
    }


def region(shape, name="1"):
    return {"shape_attributes": shape, "region_attributes": {"Name": name}}


def polygon(xs, ys, name="polygon"):
    return {"name": name, "all_points_x": xs, "all_points_y": ys}


def label_of(project_dict, **kwargs):
    project = via.parse_project(project_dict, source="test.json", **kwargs)
    return via.rasterize(project.images[0].regions, HEIGHT, WIDTH)


def box(rows, cols, value=1):
    """Hand-made expected map: `value` on rows[0]..rows[1] x cols[0]..cols[1] inclusive."""
    expected = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    expected[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = value
    return expected


def ellipse_formula(cx, cy, rx, ry, theta):
    """Pixels strictly inside an ellipse whose x semi-axis is turned clockwise on screen by theta."""
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    dx, dy = cols - cx, rows - cy
    along = dx * math.cos(theta) + dy * math.sin(theta)
    across = -dx * math.sin(theta) + dy * math.cos(theta)
    return ((along / rx) ** 2 + (across / ry) ** 2 < 1).astype(np.uint8)


@pytest.mark.parametrize("layout", [via2, via1])
class TestShapes:
    def test_polygon(self, layout):
        label = label_of(layout([region(polygon([10, 40, 40, 10], [5, 5, 20, 20]))]))
        np.testing.assert_array_equal(label, box((5, 20), (10, 40)))

    def test_polyline_is_closed(self, layout):
        label = label_of(layout([region(polygon([10, 40, 40, 10], [5, 5, 20, 20], "polyline"))]))
        np.testing.assert_array_equal(label, box((5, 20), (10, 40)))

    def test_rect(self, layout):
        shape = {"name": "rect", "x": 10, "y": 5, "width": 30, "height": 15}
        label = label_of(layout([region(shape, "2")]))
        np.testing.assert_array_equal(label, box((5, 19), (10, 39), 2))

    def test_circle(self, layout):
        label = label_of(layout([region({"name": "circle", "cx": 50, "cy": 30, "r": 2}, "3")]))
        assert label.sum() == 9 * 3
        np.testing.assert_array_equal(label[29:32, 49:52], 3)

    def test_ellipse_axis_aligned_and_quarter_turn(self, layout):
        shape = {"name": "ellipse", "cx": 48, "cy": 32, "rx": 10, "ry": 4}
        label = label_of(layout([region(shape)]))
        np.testing.assert_array_equal(label, ellipse_formula(48, 32, 10, 4, 0))
        rows, cols = np.nonzero(label_of(layout([region({**shape, "theta": math.pi / 2})])))
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (23, 41, 45, 51)

    def test_ellipse_rotation_is_clockwise_on_screen(self, layout):
        shape = {"name": "ellipse", "cx": 48, "cy": 32, "rx": 20, "ry": 5, "theta": 0.5}
        label = label_of(layout([region(shape)]))
        assert (label == ellipse_formula(48, 32, 20, 5, 0.5)).mean() > 0.995
        assert (label == ellipse_formula(48, 32, 20, 5, -0.5)).mean() < 0.97

    def test_point_is_skipped_with_a_warning(self, layout, caplog):
        regions = [region({"name": "point", "cx": 3, "cy": 4}), region(polygon([0, 5, 5], [0, 0, 5]))]
        with caplog.at_level(logging.WARNING):
            project = via.parse_project(layout(regions), source="test.json")
        assert [r.shape_name for r in project.images[0].regions] == ["polygon"]
        assert "region 0: 'point' regions have no area" in caplog.text


def test_versions_are_detected():
    assert via.parse_project(via2([]), source="x").version == 2
    assert via.parse_project(via1([]), source="x").version == 1


def test_later_regions_paint_over_earlier():
    regions = [
        region({"name": "rect", "x": 0, "y": 0, "width": 50, "height": 40}, "1"),
        region({"name": "rect", "x": 20, "y": 10, "width": 10, "height": 10}, "3"),
    ]
    label = label_of(via2(regions))
    expected = box((0, 39), (0, 49), 1)
    expected[10:20, 20:30] = 3
    np.testing.assert_array_equal(label, expected)


def test_points_outside_the_image_are_clipped():
    label = label_of(via2([region(polygon([-50, 500, 500, -50], [-50, -50, 10, 10]))]))
    np.testing.assert_array_equal(label, box((0, 10), (0, WIDTH - 1)))
    label = label_of(via2([region({"name": "rect", "x": 90, "y": 60, "width": 100, "height": 100})]))
    np.testing.assert_array_equal(label, box((60, HEIGHT - 1), (90, WIDTH - 1)))


def test_class_names_default_class_and_attribute():
    names = ["water_bottle", "soda_can", "juice_can"]
    regions = [
        region(polygon([0, 5, 5, 0], [0, 0, 5, 5]), "Soda_Can"),
        {"shape_attributes": {"name": "rect", "x": 10, "y": 10, "width": 2, "height": 2}},
        region({"name": "rect", "x": 20, "y": 20, "width": 2, "height": 2}, "3"),
    ]
    project = via.parse_project(via2(regions), class_names=names, default_class="juice_can")
    assert [r.class_id for r in project.images[0].regions] == [2, 3, 3]
    other = {"shape_attributes": polygon([0, 5, 5], [0, 0, 5]), "region_attributes": {"type": "2", "Name": "x"}}
    project = via.parse_project(via2([other]), class_attribute="type")
    assert project.images[0].regions[0].class_id == 2
    checkbox = {"shape_attributes": polygon([0, 5, 5], [0, 0, 5]), "region_attributes": {"Name": {"1": True}}}
    assert via.parse_project(via2([checkbox])).images[0].regions[0].class_id == 1


def test_one_hot_has_exactly_one_channel_per_pixel():
    label = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    one_hot = via.to_one_hot(label, 5)
    assert one_hot.dtype == np.uint8 and one_hot.shape == (2, 2, 5)
    np.testing.assert_array_equal(one_hot.sum(axis=-1), 1)
    np.testing.assert_array_equal(one_hot.argmax(axis=-1), label)


def test_class_colors_are_the_books_then_more():
    colors = classes.class_colors(20)
    np.testing.assert_array_equal(colors[:4], [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]])
    assert colors.shape == (20, 3) and not (colors[1:] == 0).all(axis=1).any()


def test_scale_shape_maps_rects_and_circles():
    assert via.scale_shape(via.Rect(16, 8, 32, 20), 0.5, 0.5) == via.Rect(8, 4, 16, 10)
    assert via.scale_shape(via.Circle(9.5, 9.5, 4), 0.5, 0.5) == via.Circle(4.5, 4.5, 2)
    scaled = via.scale_shape(via.Circle(9.5, 19.5, 4), 0.5, 2.0)
    assert scaled == via.Ellipse(19.5, 9.5, 8.0, 2.0, 0.0)
    rotated = via.scale_shape(via.Ellipse(40, 30, 10, 4, 0.3), 0.5, 2.0)
    assert isinstance(rotated, via.Polygon) and len(rotated.points_x) == via.ELLIPSE_POLYGON_VERTICES


def test_to_via2_round_trips():
    image = via.ImageEntry("b.jpg", 1234, (via.Region(via.Polygon((1.0, 9.0, 9.0), (2.0, 2.0, 7.5)), 3, "polygon"),))
    data = json.loads(json.dumps(via.to_via2([image])))
    assert set(data) == {"_via_settings", "_via_img_metadata", "_via_attributes", "_via_image_id_list"}
    entry = data["_via_img_metadata"]["b.jpg1234"]
    assert entry["regions"][0] == {
        "shape_attributes": {"name": "polygon", "all_points_x": [1, 9, 9], "all_points_y": [2, 2, 7.5]},
        "region_attributes": {"Name": "3"},
    }
    assert via.parse_project(data).images == (image,)


BAD_PROJECTS = [
    ([], "not a VIA project"),
    ({"foo": 1}, "not a VIA project"),
    ({"_via_img_metadata": []}, "is not a JSON object"),
    ({"_via_img_metadata": {"k": {"size": 3}}}, "entry 'k' has no valid 'filename'"),
    (via2([region({"name": "hexagon"})]), "region 0: unknown shape 'hexagon'"),
    (via2([region({"name": "polygon", "all_points_x": [1, 2, 3]})]), "has no 'all_points_y'"),
    (via2([region(polygon([1, 2, 3], [1, 2]))]), "all_points_x has 3 values but all_points_y has 2"),
    (via2([region(polygon([1, "a", 3], [1, 2, 3]))]), "expected only numbers"),
    (via2([region(polygon([1, float("nan"), 3], [1, 2, 3]))]), "expected finite coordinates"),
    (via2([region({"name": "rect", "x": 1, "y": 1, "width": -3, "height": 2})]), "'width' must be >= 0"),
    (via2([region({"name": "circle", "cx": 1, "cy": 1})]), "circle has no 'r'"),
    (via2([region(polygon([1, 2, 3], [1, 2, 3]), "4")]), "class id 4 is out of range; expected 1..3"),
    (via2([region(polygon([1, 2, 3], [1, 2, 3]), "cola")]), "unknown class name"),
    (via2([{"shape_attributes": polygon([1, 2, 3], [1, 2, 3])}]), "no class in region attribute 'Name'"),
    (via2([region(polygon([1, 2, 3], [1, 2, 3]), True)]), "a class must be a number or a name"),
    (via2([7]), "region 0: a region must be a JSON object"),
]


@pytest.mark.parametrize("data, message", BAD_PROJECTS)
def test_malformed_projects_raise_one_line_via_errors(data, message):
    with pytest.raises(via.ViaError, match=message) as caught:
        via.parse_project(data, source="bad.json")
    assert str(caught.value).startswith("bad.json: ") and "\n" not in str(caught.value)


def test_image_listed_twice():
    data = via2([])
    data["_via_img_metadata"]["a.png200"] = {"filename": "a.png", "size": 200, "regions": []}
    with pytest.raises(via.ViaError, match="image 'a.png' is listed twice"):
        via.parse_project(data, source="bad.json")


def test_load_project_file_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"_via_img_metadata": {')
    with pytest.raises(via.ViaError, match=r"broken.json: not valid JSON \(.* at line 1 column 24\)"):
        via.load_project(broken)
    with pytest.raises(via.ViaError, match="missing.json: cannot read the file"):
        via.load_project(tmp_path / "missing.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(via1([region(polygon([1, 2, 3], [1, 2, 3]), "2")])))
    assert via.load_project(good).images[0].regions[0].class_id == 2
