"""A reader's own data: PNG class-index masks, ignored pixels, images of any size, class names."""

import json
import os

import keras
import numpy as np
import PIL.Image
import pytest
import skimage.io
from conftest import HEIGHT, N_CLASSES, TINY, WIDTH
from test_generate_gt_segmentation import rect, write_image, write_project

from data_generator import DataGenerator
from model import build_model
from segmentation.classes import IGNORE_LABEL, class_colors
from segmentation.evaluation import evaluate_dataset
from segmentation.ground_truth.class_names import read_class_names
from segmentation.ground_truth.fit_to_size import predict_tiled, random_crop, tile_starts
from segmentation.ground_truth.mask_folders import read_mask_png, write_mask_png
from segmentation.ground_truth.splits import load_split
from segmentation.inference import plan_outputs, predict_directory
from segmentation.losses import MaskedCrossentropy, WeightedCrossentropy, build_loss
from segmentation.metrics import SegmentationScores
from segmentation.tools import ground_truth

NAMES = ("bottle", "can", "carton")
# Each class paints its pixels in a colour of its own, so an image says which class each pixel is.
CLASS_PAINT = np.array([[100, 100, 100], [220, 40, 40], [40, 200, 40], [40, 60, 220]], dtype=np.uint8)


def write_mask_dataset(data_path, sizes, split="train", seed=0, ignore_border=True):
    """Images of any size and their PNG masks in `<data_path>/<split>_masks/`; returns {image name: class map}.

    Every pixel of an image is its class's `CLASS_PAINT` colour (background grey), so alignment of
    image and mask can be checked pixel by pixel; a 2-pixel top border is marked ignored (255).
    """
    rng = np.random.default_rng(seed)
    folder = os.path.join(data_path, f"{split}_masks")
    os.makedirs(folder, exist_ok=True)
    maps = {}
    for i, (height, width) in enumerate(sizes):
        class_map = np.zeros((height, width), dtype=np.uint8)
        for class_id in range(1, N_CLASSES):
            top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
            class_map[top : top + int(rng.integers(6, 14)), left : left + int(rng.integers(6, 14))] = class_id
        image = CLASS_PAINT[class_map]
        if ignore_border:
            class_map[:2] = IGNORE_LABEL
        name = f"{split}{i:03d}.png"
        skimage.io.imsave(os.path.join(data_path, name), image, check_contrast=False)
        write_mask_png(os.path.join(folder, f"{split}{i:03d}.png"), class_map, N_CLASSES)
        maps[name] = class_map
    return maps


def check_aligned(image, class_map):
    """Every labelled pixel of the image has its class's paint colour."""
    labelled = class_map != IGNORE_LABEL
    expected = CLASS_PAINT[np.where(labelled, class_map, 0)] / 255.0
    np.testing.assert_allclose(image[labelled], expected[labelled], atol=1e-6)


# === The format: PNG masks, palettes, names ===
def test_via_converts_to_png_masks_and_npy_alike(tmp_path, capsys):
    for name in ("a.png", "b.png"):
        write_image(str(tmp_path / name))
    write_project(tmp_path, {"a.png": [rect(4, 6, 20, 10, "can")], "b.png": [rect(30, 2, 8, 40, "carton")]})
    classes = ["--classes", ",".join(NAMES)]
    assert ground_truth.main(["-p", str(tmp_path), "--save-filename", str(tmp_path / "gt.npy"), *classes]) == 0
    assert ground_truth.main(["-p", str(tmp_path), "--save-filename", str(tmp_path / "masks"), "--save-format",
                              "png", *classes]) == 0
    assert "Class names saved in" in capsys.readouterr().out
    one_hot = np.load(tmp_path / "gt.npy", allow_pickle=True).flat[0]
    assert sorted(os.listdir(tmp_path / "masks")) == ["a.png", "b.png", "classes.json"]
    with PIL.Image.open(tmp_path / "masks" / "a.png") as image:
        assert image.mode == "P"  # a palette PNG: viewers show the classes' colours
    for name, mask in one_hot.items():
        np.testing.assert_array_equal(read_mask_png(str(tmp_path / "masks" / name)), mask.argmax(axis=-1))
    expected_names = ("background", *NAMES)
    assert read_class_names(str(tmp_path / "masks")) == expected_names
    assert read_class_names(str(tmp_path / "gt.npy")) == expected_names
    assert os.path.isfile(tmp_path / "gt.classes.json")
    folder = load_split(str(tmp_path / "masks"), str(tmp_path), 64, 96)
    book = load_split(str(tmp_path / "gt.npy"), str(tmp_path), 64, 96)
    assert folder.n_classes == book.n_classes == 4 and folder.class_names == book.class_names == expected_names
    for key in book.keys:
        np.testing.assert_array_equal(folder.masks[key], book.masks[key])
    # Converting again without names removes the names of the earlier conversion.
    write_project(tmp_path, {"a.png": [rect(4, 6, 20, 10, "2")], "b.png": []})
    assert ground_truth.main(["-p", str(tmp_path), "--save-filename", str(tmp_path / "gt.npy")]) == 0
    assert not os.path.exists(tmp_path / "gt.classes.json")


def test_converter_never_replaces_a_folder_of_other_files(tmp_path, capsys):
    write_image(str(tmp_path / "a.png"))
    write_project(tmp_path, {"a.png": [rect(4, 6, 20, 10)]})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    status = ground_truth.main(["-p", str(tmp_path), "--save-filename", str(tmp_path / "mine"), "--save-format", "png"])
    assert status == 2 and "holds 'notes.txt', not a mask" in capsys.readouterr().err
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_palette_grey_and_one_bit_masks_are_read_by_index(tmp_path):
    class_map = np.array([[0, 1, 2], [3, 255, 0]], dtype=np.uint8)
    palette = PIL.Image.fromarray(class_map, mode="L").convert("P")
    # VOC-style palette: colours that say nothing about the ids.
    palette.putpalette(np.random.default_rng(0).integers(0, 256, 768).astype(np.uint8).tolist())
    palette.save(tmp_path / "voc.png")
    PIL.Image.fromarray(class_map, mode="L").save(tmp_path / "grey.png")
    PIL.Image.fromarray(class_map > 1).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(read_mask_png(str(tmp_path / "voc.png")), class_map)
    np.testing.assert_array_equal(read_mask_png(str(tmp_path / "grey.png")), class_map)
    np.testing.assert_array_equal(read_mask_png(str(tmp_path / "bits.png")), class_map > 1)


def test_a_mask_folder_counts_its_classes_and_marks_ignored_pixels(tmp_path):
    data_path = str(tmp_path)
    maps = write_mask_dataset(data_path, [(HEIGHT, WIDTH)] * 3)
    labels = load_split(os.path.join(data_path, "train_masks"), data_path, HEIGHT, WIDTH)
    assert labels.n_classes == N_CLASSES and labels.counted and labels.has_ignore and labels.class_names is None
    for key, class_map in maps.items():
        np.testing.assert_array_equal(labels.masks[key], class_map)
    named = load_split(os.path.join(data_path, "train_masks"), data_path, HEIGHT, WIDTH, classes="a,b,c,d")
    assert named.n_classes == 5 and named.class_names == ("background", "a", "b", "c", "d") and not named.counted
    generator = DataGenerator(labels, data_path, batch_size=3, shuffle=False)
    _, one_hot = generator[0]
    assert one_hot.shape == (3, HEIGHT, WIDTH, N_CLASSES)
    # An ignored pixel's target is all zeros; every other pixel's is one-hot.
    np.testing.assert_array_equal(one_hot[:, :2].sum(axis=-1), 0)
    np.testing.assert_array_equal(one_hot[:, 2:].sum(axis=-1), 1)


# === Ignored pixels ===
def targets_and_predictions(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, size=(2, 8, 8))
    y_true = np.eye(N_CLASSES, dtype=np.float32)[labels]
    y_pred = keras.ops.convert_to_numpy(keras.ops.softmax(rng.normal(size=(2, 8, 8, N_CLASSES)).astype("float32")))
    return labels, y_true, y_pred


def test_the_masked_loss_is_the_books_crossentropy_without_ignored_pixels():
    _, y_true, y_pred = targets_and_predictions()
    book = float(keras.losses.CategoricalCrossentropy()(y_true, y_pred))
    assert float(MaskedCrossentropy()(y_true, y_pred)) == book
    assert build_loss("ce", None, N_CLASSES) == "categorical_crossentropy"
    assert isinstance(build_loss("ce", None, N_CLASSES, ignore_pixels=True), MaskedCrossentropy)
    weighted = WeightedCrossentropy(np.ones(N_CLASSES), mask_unlabelled=True)
    assert float(weighted(y_true, y_pred)) == pytest.approx(book, rel=1e-6)


@pytest.mark.parametrize("loss", [
    MaskedCrossentropy(),
    WeightedCrossentropy([0.5, 2.0, 1.0, 3.0], mask_unlabelled=True),
    WeightedCrossentropy([1.0] * N_CLASSES, dice_weight=1.0, mask_unlabelled=True),
], ids=["ce", "weighted", "ce+dice"])
def test_ignored_pixels_change_neither_the_loss_nor_its_mean(loss):
    labels, y_true, y_pred = targets_and_predictions()
    ignored = np.zeros(labels.shape, dtype=bool)
    ignored[:, :3] = True
    masked_true = np.where(ignored[..., None], 0.0, y_true).astype(np.float32)
    other_pred = y_pred.copy()
    other_pred[ignored] = np.roll(y_pred[ignored], 1, axis=-1)
    first, second = float(loss(masked_true, y_pred)), float(loss(masked_true, other_pred))
    assert first == pytest.approx(second, rel=1e-6)
    # The mean is over the labelled pixels: the labelled pixels alone give the same number.
    alone = float(loss(y_true[:, 3:], y_pred[:, 3:]))
    assert first == pytest.approx(alone, rel=1e-5)


def test_ignored_pixels_change_no_score():
    labels, _, y_pred = targets_and_predictions()
    truth = labels.copy()
    truth[:, :3] = IGNORE_LABEL
    predicted = y_pred.argmax(axis=-1)
    other = predicted.copy()
    other[:, :3] = (predicted[:, :3] + 1) % N_CLASSES
    scores, other_scores, alone = (SegmentationScores(N_CLASSES) for _ in range(3))
    scores.update(["a", "b"], truth, predicted)
    other_scores.update(["a", "b"], truth, other)
    alone.update(["a", "b"], labels[:, 3:], predicted[:, 3:])
    for result in (other_scores, alone):
        np.testing.assert_array_equal(result.confusion, scores.confusion)
        assert result.mean_iou == scores.mean_iou and result.mean_pixel_accuracy == scores.mean_pixel_accuracy
    assert scores.confusion.sum() == 2 * 8 * 5
    # An image with no labelled pixel is not scored at all.
    scores.update(["empty"], np.full((1, 8, 8), IGNORE_LABEL), predicted[:1])
    assert [image.name for image in scores.images] == ["a", "b"]


# === Images of any size ===
def test_resize_scales_image_and_mask_together(tmp_path):
    data_path = str(tmp_path)
    os.makedirs(tmp_path / "train_masks")
    # 96x128 scaled to 64x64: rows by 2/3, columns by 1/2.
    class_map = np.zeros((96, 128), dtype=np.uint8)
    class_map[24:72, 32:96] = 1
    class_map[:24, :32] = 2
    class_map[84:, 100:] = IGNORE_LABEL
    skimage.io.imsave(tmp_path / "a.png", CLASS_PAINT[np.where(class_map == IGNORE_LABEL, 3, class_map)],
                      check_contrast=False)
    write_mask_png(str(tmp_path / "train_masks" / "a.png"), class_map, N_CLASSES)
    labels = load_split(os.path.join(data_path, "train_masks"), data_path, HEIGHT, WIDTH, fit_size="resize")
    generator = DataGenerator(labels, data_path, batch_size=1, shuffle=False, size=(HEIGHT, WIDTH),
                              fit_size="resize")
    images, class_maps = generator.batch_class_maps(0)
    assert images.shape == (1, HEIGHT, WIDTH, 3) and class_maps.shape == (1, HEIGHT, WIDTH)
    expected = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    expected[16:48, 16:48] = 1
    expected[:16, :16] = 2
    expected[56:, 50:] = IGNORE_LABEL
    np.testing.assert_array_equal(class_maps[0], expected)
    # Bilinear scaling blends colours across the edges of the objects only: inside each object
    # (two pixels from its edges) the image has the object's colour.
    for class_id, (rows, columns) in {1: (slice(18, 46), slice(18, 46)), 2: (slice(0, 14), slice(0, 14))}.items():
        inside = images[0][rows, columns]
        np.testing.assert_allclose(inside, np.broadcast_to(CLASS_PAINT[class_id] / 255.0, inside.shape), atol=0.01)


def test_crops_cut_image_and_mask_together_seeded_and_padded(tmp_path):
    data_path = str(tmp_path)
    # One image larger than the 64x64 crop, one smaller on both sides, one narrower only.
    write_mask_dataset(data_path, [(100, 130), (40, 50), (80, 56)])
    labels = load_split(os.path.join(data_path, "train_masks"), data_path, HEIGHT, WIDTH, fit_size="crop")
    first, second = (DataGenerator(labels, data_path, batch_size=3, shuffle=False, seed=5, size=(HEIGHT, WIDTH),
                                   fit_size="crop") for _ in range(2))
    images, one_hot = first[0]
    assert images.shape == (3, HEIGHT, WIDTH, 3) and one_hot.shape == (3, HEIGHT, WIDTH, N_CLASSES)
    np.testing.assert_array_equal(images, second[0][0])
    rng = np.random.default_rng([first._augmentation_seed, 0, 0])
    for i, key in enumerate(first.batch_keys(0)):
        image, class_map = random_crop(first.read_image(key), labels.masks[key], HEIGHT, WIDTH, rng)
        np.testing.assert_array_equal(image, images[i])
        check_aligned(image, class_map)
        labelled = class_map != IGNORE_LABEL
        np.testing.assert_array_equal(one_hot[i].sum(axis=-1), labelled)
        if key == "train001.png":  # 40x50 in 64x64: the padding is ignored, the image whole
            assert labelled.sum() == (40 - 2) * 50 and (class_map == IGNORE_LABEL).sum() == 64 * 64 - 38 * 50
    first.on_epoch_end()
    assert not np.array_equal(first[0][0], images)  # new crops every epoch


def test_tile_starts_cover_the_side_evenly():
    assert tile_starts(64, 64) == [0] and tile_starts(40, 64) == [0]
    assert tile_starts(128, 64) == [0, 64] and tile_starts(96, 64) == [0, 32]
    assert tile_starts(150, 64) == [0, 43, 86]


@pytest.fixture(scope="module")
def tiny_fcn():
    _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=N_CLASSES, n=1)
    return fcn


def test_tiled_prediction_equals_whole_image_prediction_where_they_coincide(tiny_fcn):
    rng = np.random.default_rng(0)
    one_tile = rng.random((HEIGHT, WIDTH, 3), dtype=np.float32)
    whole = tiny_fcn.predict_on_batch(one_tile[None])[0]
    np.testing.assert_array_equal(predict_tiled(tiny_fcn.predict_on_batch, one_tile, HEIGHT, WIDTH, 4), whole)
    two_tiles = rng.random((HEIGHT, 2 * WIDTH, 3), dtype=np.float32)
    alone = tiny_fcn.predict_on_batch(np.stack([two_tiles[:, :WIDTH], two_tiles[:, WIDTH:]]))
    stitched = predict_tiled(tiny_fcn.predict_on_batch, two_tiles, HEIGHT, WIDTH, 1)
    # A batch of two and two batches of one round float32 differently on some CPUs' kernels (1.8e-6 seen on an
    # AMD EPYC with AVX2): the same probabilities, within float32's rounding of the sums.
    np.testing.assert_allclose(stitched, np.concatenate(list(alone), axis=1), atol=1e-5)
    # Overlapping tiles are averaged, and an image smaller than a tile comes back at its own size.
    overlap = rng.random((HEIGHT, WIDTH + 32, 3), dtype=np.float32)
    left, right = tiny_fcn.predict_on_batch(np.stack([overlap[:, :WIDTH], overlap[:, 32:]]))
    stitched = predict_tiled(tiny_fcn.predict_on_batch, overlap, HEIGHT, WIDTH, 2)
    np.testing.assert_allclose(stitched[:, 32:WIDTH], (left[:, 32:] + right[:, :32]) / 2, atol=1e-6)
    np.testing.assert_allclose(stitched[:, WIDTH:], right[:, 32:], atol=1e-6)
    assert predict_tiled(tiny_fcn.predict_on_batch, one_tile[:40, :50], HEIGHT, WIDTH, 4).shape == (40, 50, 4)


def test_crop_evaluation_and_predict_dir_segment_whole_images(tiny_fcn, tmp_path):
    data_path = str(tmp_path / "data")
    write_mask_dataset(data_path, [(100, 130), (40, 50)], split="test")
    labels = load_split(os.path.join(data_path, "test_masks"), data_path, HEIGHT, WIDTH, fit_size="crop")
    generator = DataGenerator(labels, data_path, batch_size=2, shuffle=False, drop_last=False, size=(HEIGHT, WIDTH),
                              fit_size="crop")
    seen = {}

    def remember_shapes(keys, images, truths, predictions):
        for key, image, truth, predicted in zip(keys, images, truths, predictions):
            seen[key] = (image.shape, truth.shape, predicted.shape)

    scores = evaluate_dataset(tiny_fcn, generator, on_batch=remember_shapes)
    assert seen == {"test000.png": ((100, 130, 3), (100, 130), (100, 130)),
                    "test001.png": ((40, 50, 3), (40, 50), (40, 50))}
    assert scores.confusion.sum() == 98 * 130 + 38 * 50  # every labelled pixel, at full size
    planned = plan_outputs([os.path.join(data_path, "test000.png")], str(tmp_path / "out"))
    predict_directory(tiny_fcn, planned, str(tmp_path / "out"), batch_size=2, verbose=0, fit_size="crop")
    mask = skimage.io.imread(planned[0].mask_path)
    probabilities = predict_tiled(tiny_fcn.predict_on_batch, generator.read_image("test000.png"), HEIGHT, WIDTH, 2)
    np.testing.assert_array_equal(mask, class_colors(N_CLASSES)[probabilities.argmax(axis=-1)])


# === The command line ===
def test_names_flow_to_the_evaluation_table(tmp_path, run_cli):
    data_path = str(tmp_path / "data")
    write_mask_dataset(data_path, [(HEIGHT, WIDTH)] * 2, split="test")
    with open(os.path.join(data_path, "test_masks", "classes.json"), "w") as file:
        json.dump({"class_names": ["background", *NAMES]}, file)
    common = [*TINY, "--data-path", data_path, "--test-labels", "test_masks", "--evaluate", "--verbose", "1"]
    status, out, err = run_cli(common)
    assert status == 0, err
    table = out.split("class ", 1)[1]
    assert all(name in table for name in NAMES) and "class 1" not in table
    status, out, err = run_cli([*common, "--classes", "water,soda,juice"])
    assert status == 0, err
    assert "water" in out and "juice" in out and "bottle" not in out


def test_a_folder_of_png_masks_of_any_size_trains_with_crops_and_evaluates(tmp_path, run_cli):
    data_path = str(tmp_path / "data")
    write_mask_dataset(data_path, [(96, 112), (64, 64), (80, 100), (48, 72)], split="train")
    write_mask_dataset(data_path, [(72, 90), (40, 56)], split="test", seed=1)
    save_dir = str(tmp_path / "weights")
    common = [*TINY, "--head-filters", "8", "--data-path", data_path, "--save-dir", save_dir,
              "--train-labels", "train_masks", "--test-labels", "test_masks", "--fit-size", "crop",
              "--classes", ",".join(NAMES)]
    status, out, err = run_cli([*common, "--train", "--epochs", "1", "--seed", "2", "--jit-compile", "off"])
    assert status == 0, err
    with open(os.path.join(save_dir, "ResNet11v2-1layer-drinks-best-iou.json")) as file:
        record = json.load(file)
    assert record["settings"]["class_names"] == ["background", *NAMES]
    assert record["settings"]["fit_size"] == "crop"
    assert os.path.isfile(os.path.join(save_dir, "report.png"))
    status, out, err = run_cli([*common, "--evaluate", "--restore-weights", "ResNet11v2-1layer-drinks-best-iou.h5"])
    assert status == 0, err
    assert "Test images: 2" in out and "carton" in out
