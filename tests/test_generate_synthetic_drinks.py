"""Tests for utils/generate_synthetic_drinks.py: determinism, VIA validity, label agreement, the
product catalogue, --check."""

import collections
import json
import os

import numpy as np
import pytest
from skimage import io

from segmentation.paths import TEST_VIA_JSON, TRAIN_VIA_JSON
from segmentation.tools import synthetic, synthetic_check, via

HEIGHT, WIDTH = 64, 96


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    output = str(tmp_path_factory.mktemp("synthetic"))
    synthetic.generate(output, num_train=6, num_test=3, height=HEIGHT, width=WIDTH, seed=1)
    return output


def read_bytes(path):
    with open(path, "rb") as file:
        return file.read()


def test_same_seed_same_files_other_seed_different(dataset, tmp_path):
    again, other = str(tmp_path / "again"), str(tmp_path / "other")
    synthetic.generate(again, num_train=6, num_test=3, height=HEIGHT, width=WIDTH, seed=1)
    synthetic.generate(other, num_train=6, num_test=3, height=HEIGHT, width=WIDTH, seed=2)
    for name in (TRAIN_VIA_JSON, TEST_VIA_JSON):
        assert read_bytes(os.path.join(dataset, name)) == read_bytes(os.path.join(again, name))
        assert read_bytes(os.path.join(dataset, name)) != read_bytes(os.path.join(other, name))
    for name in ("0000000.jpg", "0000005.jpg", "1000002.jpg"):
        first = io.imread(os.path.join(dataset, name))
        np.testing.assert_array_equal(first, io.imread(os.path.join(again, name)))
        assert np.abs(first.astype(int) - io.imread(os.path.join(other, name))).mean() > 10


def test_via_projects_follow_the_books_format(dataset):
    names = {}
    for json_name, count in ((TRAIN_VIA_JSON, 6), (TEST_VIA_JSON, 3)):
        with open(os.path.join(dataset, json_name)) as file:
            data = json.load(file)
        assert {"_via_settings", "_via_img_metadata", "_via_attributes", "_via_image_id_list"} <= set(data)
        metadata = data["_via_img_metadata"]
        assert len(metadata) == count and data["_via_image_id_list"] == list(metadata)
        for key, entry in metadata.items():
            assert set(entry) == {"filename", "size", "regions", "file_attributes"}
            assert key == entry["filename"] + str(entry["size"])
            assert entry["size"] == os.path.getsize(os.path.join(dataset, entry["filename"]))
            image = io.imread(os.path.join(dataset, entry["filename"]))
            assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
            for region in entry["regions"]:
                shape = region["shape_attributes"]
                assert shape["name"] == "polygon" and len(shape["all_points_x"]) == len(shape["all_points_y"]) >= 3
                assert all(isinstance(x, int) and 0 <= x <= WIDTH - 1 for x in shape["all_points_x"])
                assert all(isinstance(y, int) and 0 <= y <= HEIGHT - 1 for y in shape["all_points_y"])
                assert region["region_attributes"]["Name"] in ("1", "2", "3")
            names[entry["filename"]] = json_name
        assert via.load_project(os.path.join(dataset, json_name)).version == 2
    assert len(names) == 9  # train and test images have distinct names
    assert sorted(names)[:1] == ["0000000.jpg"] and sorted(names)[-1] == "1000002.jpg"


@pytest.mark.parametrize("size", [(HEIGHT, WIDTH), (96, 128), (240, 320)])
def test_polygons_reproduce_the_drawn_label_map(size):
    height, width = size
    for index in range(6):
        scene = synthetic.render_scene(np.random.default_rng([3, 0, index]), height, width)
        rasterized = via.rasterize(scene.regions, height, width)
        assert (rasterized == scene.label_map).mean() >= 0.97
        assert set(np.unique(scene.label_map)) <= {0, 1, 2, 3}


def test_scenes_vary_in_content():
    counts, empty, classes = [], 0, set()
    for index in range(60):
        scene = synthetic.render_scene(np.random.default_rng([0, 0, index]), 48, 64)
        present = set(np.unique(scene.label_map)) - {0}
        classes |= present
        empty += not present
        counts.append(len(scene.regions))
    assert classes == {1, 2, 3}
    assert 1 <= empty <= 15
    assert max(counts) >= 4


def test_per_image_miou_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    prediction = np.array([[0, 0, 0, 1], [0, 2, 1, 1]])
    # background: 3 / 5; class 1: 3 / 4; class 2 is absent from the truth and not scored.
    assert synthetic_check.per_image_miou(prediction, truth, 4) == pytest.approx((3 / 5 + 3 / 4) / 2)
    assert synthetic_check.per_image_miou(np.zeros((2, 2), int), np.zeros((2, 2), int), 4) == 1.0


def test_check_and_show(dataset, capsys, tmp_path):
    scores = synthetic_check.color_baseline(dataset)
    assert set(scores) == {"histogram MAP (class priors)", "histogram ML (equal priors)"}
    assert all(0 <= score <= 1 for score in scores.values())
    output = str(tmp_path / "cli")
    args = ["--output", output, "--num-train", "4", "--num-test", "2", "--height", "48", "--width", "64"]
    status = synthetic.main([*args, "--check", "--show"])
    text = capsys.readouterr().out
    assert "Colour-only baseline, histogram MAP (class priors): test mIoU" in text
    best = max(synthetic_check.color_baseline(output).values())
    passed = best <= synthetic_check.CHECK_THRESHOLD
    assert status == (0 if passed else synthetic.EXIT_CHECK_FAILED)
    assert f"{'PASS' if passed else 'FAIL'}: best colour-only mIoU {best:.3f}" in text
    sheet = io.imread(os.path.join(output, "contact_sheet.png"))
    assert sheet.ndim == 3 and sheet.shape[0] > 100


@pytest.mark.parametrize("best, status, verdict", [(0.59, 0, "PASS"), (0.61, synthetic.EXIT_CHECK_FAILED, "FAIL")])
def test_check_exits_non_zero_when_colour_alone_separates_the_classes(tmp_path, capsys, monkeypatch, best, status,
                                                                       verdict):
    scores = {"histogram MAP (class priors)": best, "histogram ML (equal priors)": 0.1}
    monkeypatch.setattr(synthetic, "color_baseline", lambda output: scores)
    args = ["--output", str(tmp_path), "--num-train", "2", "--num-test", "1", "--height", "32", "--width", "32"]
    assert synthetic.main([*args, "--check"]) == status
    assert f"{verdict}: best colour-only mIoU {best:.3f}" in capsys.readouterr().out


def test_drink_classes_and_size_options_shape_the_scenes():
    small = synthetic.SceneOptions(drink_classes=1, drink_size=(0.1, 0.15))
    default_area, small_area = [], []
    for index in range(12):
        default = synthetic.render_scene(np.random.default_rng([4, 0, index]), 96, 128)
        scene = synthetic.render_scene(np.random.default_rng([4, 0, index]), 96, 128, small)
        assert {region.class_id for region in scene.regions} <= {1}
        default_area.append((default.label_map > 0).mean())
        small_area.append((scene.label_map > 0).mean())
    assert np.mean(small_area) < 0.5 * np.mean(default_area)


@pytest.mark.parametrize("text", ["0.3", "0.5,0.2", "0,0.2", "a,b"])
def test_bad_drink_size_is_refused(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.build_parser().parse_args(["--drink-size", text])
    assert exit_info.value.code == 2 and "--drink-size" in capsys.readouterr().err


def drink_designs(options, seeds, height=96, width=128):
    """For each scene seed, the (class id, design) of every drink in that scene."""
    scenes = [synthetic.scene_items(np.random.default_rng(seed), height, width, options) for seed in seeds]
    return [[(item.class_id, item.design) for item in items if item.class_id] for items in scenes]


def test_product_catalogue_is_made_from_the_seed_alone():
    catalogue = synthetic.product_catalogue(seed=5, products=3)
    assert set(catalogue) == {synthetic.WATER_BOTTLE, synthetic.SODA_CAN, synthetic.JUICE_CAN}
    assert all(len(designs) == 3 and len(set(designs)) == 3 for designs in catalogue.values())
    assert all(isinstance(design, synthetic.BottleDesign) for design in catalogue[synthetic.WATER_BOTTLE])
    assert all(design.class_id == class_id for class_id in (2, 3) for design in catalogue[class_id])
    assert synthetic.product_catalogue(seed=5, products=3) == catalogue
    first_only = {class_id: designs[:1] for class_id, designs in catalogue.items()}
    assert synthetic.product_catalogue(seed=5, products=1) == first_only
    other = synthetic.product_catalogue(seed=6, products=3)
    assert all(set(other[class_id]).isdisjoint(catalogue[class_id]) for class_id in catalogue)
    assert synthetic.product_catalogue(seed=5, products=0) == {}


def test_every_drink_in_train_and_test_scenes_is_a_catalogue_product():
    catalogue = synthetic.product_catalogue(seed=1, products=2)
    options = synthetic.SceneOptions(catalogue=catalogue)
    scenes = drink_designs(options, [[1, split_index, index] for split_index in (0, 1) for index in range(10)])
    drinks = [drink for scene in scenes for drink in scene]
    assert len(drinks) >= 20
    assert all(any(design is product for product in catalogue[class_id]) for class_id, design in drinks)
    # Every product shows up, each in several scenes.
    scenes_per_product = collections.Counter(product for scene in scenes for product in {id(d) for _, d in scene})
    assert len(scenes_per_product) == 6 and min(scenes_per_product.values()) >= 2


def test_products_zero_makes_every_drink_a_new_design():
    options = synthetic.SceneOptions(catalogue=synthetic.product_catalogue(seed=1, products=0))
    scenes = drink_designs(options, [[1, 0, index] for index in range(10)])
    designs = [design for scene in scenes for _, design in scene]
    assert len(designs) >= 10 and len(set(designs)) == len(designs)


def test_products_flag_reaches_the_scenes(tmp_path):
    parser = synthetic.build_parser()
    assert parser.parse_args([]).products == synthetic.DEFAULT_PRODUCTS == 2
    assert parser.parse_args(["--products", "0"]).products == 0
    size = {"num_train": 3, "num_test": 1, "height": 48, "width": 64, "seed": 0}
    one = synthetic.SceneOptions(catalogue=synthetic.product_catalogue(seed=0, products=1))
    synthetic.generate(str(tmp_path / "one"), **size, options=one)
    synthetic.generate(str(tmp_path / "default"), **size)
    cli_args = ["--num-train", "3", "--num-test", "1", "--height", "48", "--width", "64", "--seed", "0"]
    assert synthetic.main([*cli_args, "--output", str(tmp_path / "cli_one"), "--products", "1"]) == 0
    assert synthetic.main([*cli_args, "--output", str(tmp_path / "cli_default")]) == 0
    train = TRAIN_VIA_JSON
    assert read_bytes(tmp_path / "cli_one" / train) == read_bytes(tmp_path / "one" / train)
    assert read_bytes(tmp_path / "cli_default" / train) == read_bytes(tmp_path / "default" / train)
    assert read_bytes(tmp_path / "one" / train) != read_bytes(tmp_path / "default" / train)


@pytest.mark.parametrize("text", ["-1", "two", "1.5"])
def test_bad_products_is_refused_in_one_line(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.build_parser().parse_args(["--products", text])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert exit_info.value.code == 2 and len(errors) == 1 and "--products" in errors[0] and repr(text) in errors[0]


@pytest.mark.parametrize("score, status", [(0.7, 1), (0.6, 0), (0.5, 0)])
def test_check_exit_status_follows_the_threshold(score, status, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(synthetic, "color_baseline", lambda output: {"MAP": score, "ML": score - 0.2})
    args = ["--output", str(tmp_path), "--num-train", "1", "--num-test", "1", "--height", "32", "--width", "32"]
    assert synthetic.main([*args, "--check"]) == status
    assert ("FAIL" if status else "PASS") + f": best colour-only mIoU {score:.3f}" in capsys.readouterr().out


# One flat colour per class (background first): colour alone then separates the classes.
CLASS_PAINT = np.array([[90, 90, 90], [220, 30, 30], [30, 200, 30], [30, 40, 220]], np.uint8)


def paint_by_class(output):
    """Repaints every image of a generated set in its class colours, from its own VIA regions."""
    for json_name in (TRAIN_VIA_JSON, TEST_VIA_JSON):
        for entry in via.load_project(os.path.join(output, json_name)).images:
            path = os.path.join(output, entry.filename)
            height, width = io.imread(path).shape[:2]
            io.imsave(path, CLASS_PAINT[via.rasterize(entry.regions, height, width)], check_contrast=False,
                      **({"quality": 100} if path.lower().endswith((".jpg", ".jpeg")) else {}))


def test_a_set_colour_alone_separates_scores_high_and_fails_the_check(tmp_path, capsys, monkeypatch):
    """A known answer for `color_baseline`, and `--check` failing on it (exit 1)."""
    generate = synthetic.generate

    def generate_painted(output, *args, **kwargs):
        splits = generate(output, *args, **kwargs)
        paint_by_class(output)
        return splits

    monkeypatch.setattr(synthetic, "generate", generate_painted)
    output = str(tmp_path / "painted")
    args = ["--output", output, "--num-train", "4", "--num-test", "2", "--height", "48", "--width", "64"]
    assert synthetic.main([*args, "--check"]) == synthetic.EXIT_CHECK_FAILED == 1
    best = max(synthetic_check.color_baseline(output).values())
    assert best > 0.9
    assert f"FAIL: best colour-only mIoU {best:.3f}" in capsys.readouterr().out
