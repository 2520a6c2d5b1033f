"""Batch inference over a folder (--predict-dir) and export for serving (--export)."""

import os

import keras
import numpy as np
import pytest
import skimage.io
import tensorflow as tf
from conftest import HEIGHT, N_CLASSES, TINY, WIDTH, write_book_dataset

from model import build_model
from segmentation.classes import class_colors
from segmentation.errors import InferenceError
from segmentation.inference import (
    check_export_paths,
    images_to_predict,
    overlay,
    plan_outputs,
    predict_directory,
    resize_labels,
)

CLASS_COLOURS = class_colors(N_CLASSES)




@pytest.fixture(scope="module")
def tiny_network(tmp_path_factory):
    """A data set (for the class count), an untrained tiny FCN and its weights file."""
    workdir = tmp_path_factory.mktemp("inference")
    data_path = str(workdir / "drinks")
    write_book_dataset(data_path, num_train=2, num_test=2)
    keras.utils.set_random_seed(0)
    # An 8-filter head: a network quick to export.
    _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=N_CLASSES, n=1, head_filters=8)
    weights = str(workdir / "tiny.weights.h5")
    fcn.save_weights(weights)
    return fcn, weights, [*TINY, "--head-filters", "8", "--data-path", data_path,
                          "--save-dir", str(workdir / "weights")]


def write_image(path, height, width, seed=0, grey=False):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width) if grey else (height, width, 3)).astype(np.uint8)
    skimage.io.imsave(path, image, check_contrast=False)
    return image


def folder_bytes(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_resize_labels_is_nearest_neighbour():
    labels = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    np.testing.assert_array_equal(resize_labels(labels, 4, 4), np.kron(labels, np.ones((2, 2), dtype=np.uint8)))
    np.testing.assert_array_equal(resize_labels(resize_labels(labels, 4, 6), 2, 2), labels)
    assert resize_labels(labels, 3, 5).shape == (3, 5)
    assert set(np.unique(resize_labels(labels, 7, 3))) <= {0, 1, 2, 3}


def test_overlay_tints_objects_and_leaves_background():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    labels = np.array([[0, 1], [2, 0]])
    blended = overlay(image, labels)
    np.testing.assert_array_equal(blended[0, 0], image[0, 0])
    np.testing.assert_array_equal(blended[0, 1], [178, 50, 50])  # halfway to red (255, 0, 0)
    np.testing.assert_array_equal(blended[1, 0], [50, 178, 50])


def test_images_to_predict_and_plan_outputs(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ["b.PNG", "a.jpg", "a.png", "c.jpeg", "notes.txt"]:
        (photos / name).write_bytes(b"x")
    (photos / "sub.png").mkdir()
    paths = images_to_predict(str(photos))
    assert [os.path.basename(path) for path in paths] == ["a.jpg", "a.png", "b.PNG", "c.jpeg"]
    planned = plan_outputs(paths, str(tmp_path / "out"))
    assert [os.path.basename(item.mask_path) for item in planned] == [
        "a_jpg-mask.png", "a_png-mask.png", "b-mask.png", "c-mask.png"]
    assert os.path.basename(planned[2].overlay_path) == "b-overlay.png"
    with pytest.raises(InferenceError, match="this is the folder of the images"):
        plan_outputs(paths, str(photos))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "c-overlay.png").write_bytes(b"mine")
    with pytest.raises(InferenceError, match="1 output file.s. exist already, e.g. .*c-overlay.png"):
        plan_outputs(paths, str(tmp_path / "out"))
    assert len(plan_outputs(paths, str(tmp_path / "out"), overwrite=True)) == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(InferenceError, match="no .jpg, .jpeg or .png file"):
        images_to_predict(str(tmp_path / "empty"))


class HalvesModel:
    """Stands in for the FCN: class 1 on the left half of its 8x8 input, class 3 on the right."""

    input_shape = (None, 8, 8, 3)

    def __init__(self):
        self.batch_sizes = []

    def predict_on_batch(self, images):
        assert images.shape[1:] == (8, 8, 3) and images.dtype == np.float32
        assert 0.0 <= images.min() and images.max() <= 1.0
        self.batch_sizes.append(len(images))
        labels = np.where(np.arange(8) < 4, 1, 3)[np.newaxis, np.newaxis, :].repeat(8, axis=1)
        return np.eye(N_CLASSES, dtype=np.float32)[np.repeat(labels, len(images), axis=0)]


def test_predict_directory_batches_resizes_back_and_skips_unreadable(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = {"a.png": (10, 6), "b.jpg": (8, 8), "c.png": (5, 13), "e.png": (30, 40)}
    originals = {name: write_image(str(photos / name), *size, seed=i, grey=name == "c.png")
                 for i, (name, size) in enumerate(sizes.items())}
    (photos / "d.png").write_bytes(b"not an image at all")
    before = folder_bytes(photos)
    model = HalvesModel()
    planned = plan_outputs(images_to_predict(str(photos)), str(tmp_path / "out"))
    summary = predict_directory(model, planned, str(tmp_path / "out"), batch_size=2, verbose=0)
    # Batches of the listing a,b | c,d | e, less the unreadable d: one predict call per batch.
    assert model.batch_sizes == [2, 1, 1]
    assert [path for path, _ in summary.skipped] == [str(photos / "d.png")]
    assert summary.skipped[0][1].startswith(str(photos / "d.png") + ": cannot read the image")
    assert [os.path.basename(item.image_path) for item in summary.written] == ["a.png", "b.jpg", "c.png", "e.png"]
    for name, (height, width) in sizes.items():
        stem = name.split(".")[0]
        mask = skimage.io.imread(tmp_path / "out" / f"{stem}-mask.png")
        assert mask.shape == (height, width, 3)
        left = (np.arange(width) + 0.5) * 8 / width < 4
        expected = np.where(left, 1, 3)[np.newaxis, :].repeat(height, axis=0)
        np.testing.assert_array_equal(mask, CLASS_COLOURS[expected])
        blended = skimage.io.imread(tmp_path / "out" / f"{stem}-overlay.png")
        assert blended.shape == (height, width, 3)
        if name.endswith(".png") and name != "c.png":
            np.testing.assert_array_equal(blended, overlay(originals[name], expected))
    assert folder_bytes(photos) == before
    assert not (tmp_path / "out" / "d-mask.png").exists()


def test_predict_dir_command_line(tiny_network, tmp_path, run_cli):
    fcn, weights, common = tiny_network
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(str(photos / "big.jpg"), 96, 128, seed=1)
    write_image(str(photos / "small.png"), 40, 30, seed=2)
    write_image(str(photos / "exact.png"), HEIGHT, WIDTH, seed=3)
    before = folder_bytes(photos)
    out = tmp_path / "out"
    argv = ["--restore-weights", weights, "--predict-dir", str(photos), "--predict-output", str(out), *common]
    status, stdout, stderr = run_cli(argv)
    assert status == 0, stderr
    assert "Wrote 3 mask(s) and overlay(s)" in stdout
    assert sorted(os.listdir(out)) == sorted(f"{stem}-{kind}.png" for stem in ("big", "small", "exact")
                                             for kind in ("mask", "overlay"))
    assert skimage.io.imread(out / "big-mask.png").shape == (96, 128, 3)
    assert skimage.io.imread(out / "small-overlay.png").shape == (40, 30, 3)
    # The image of the network's size: its mask is the FCN's own argmax, colour for colour.
    image = skimage.io.imread(photos / "exact.png").astype(np.float32) / 255.0
    expected = np.argmax(fcn.predict_on_batch(image[np.newaxis]), axis=-1)[0]
    np.testing.assert_array_equal(skimage.io.imread(out / "exact-mask.png"), CLASS_COLOURS[expected])
    assert folder_bytes(photos) == before

    # Run again: nothing of the first run is overwritten without --overwrite.
    outputs = folder_bytes(out)
    status, _, stderr = run_cli(argv)
    assert status == 2 and stderr.count("\n") == 1 and "exist already" in stderr and "--overwrite" in stderr
    assert folder_bytes(out) == outputs

    # An unreadable file is skipped with a warning; the others are segmented; status 2 at the end.
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 cut short")
    status, stdout, stderr = run_cli([*argv, "--overwrite"])
    assert status == 2
    assert f"skipped {photos / 'broken.jpg'}: cannot read the image" in stdout
    assert stderr.count("\n") == 1 and "1 of 4 image(s) could not be read and were skipped" in stderr
    assert {"big-mask.png", "small-mask.png", "exact-mask.png"} <= set(os.listdir(out))
    assert "broken-mask.png" not in os.listdir(out)


def test_export_round_trips_and_never_overwrites(tiny_network, tmp_path, run_cli):
    fcn, weights, common = tiny_network
    images = np.random.default_rng(0).random((2, HEIGHT, WIDTH, 3), dtype=np.float32)
    expected = fcn.predict_on_batch(images)
    target = tmp_path / "fcn"
    status, stdout, stderr = run_cli(["--restore-weights", weights, "--export", str(target), *common])
    assert status == 0, stderr
    assert "Exported the network" in stdout
    assert sorted(os.listdir(tmp_path)) == ["fcn", "fcn.keras"]

    reloaded = keras.saving.load_model(tmp_path / "fcn.keras")
    np.testing.assert_allclose(reloaded.predict_on_batch(images), expected, atol=1e-5)
    # Keep the loaded object: its variables die with it, and `serve` alone does not hold them.
    served = tf.saved_model.load(str(target))
    np.testing.assert_allclose(served.serve(tf.constant(images)).numpy(), expected, atol=1e-5)

    keras_bytes = (tmp_path / "fcn.keras").read_bytes()
    status, _, stderr = run_cli(["--restore-weights", weights, "--export", f"{target}.keras", *common])
    assert status == 2 and stderr.count("\n") == 1
    assert "exist(s) already" in stderr and "--overwrite" in stderr
    assert (tmp_path / "fcn.keras").read_bytes() == keras_bytes

    # --overwrite replaces an earlier export, never some other folder.
    status, _, stderr = run_cli(
        ["--restore-weights", weights, "--export", str(target), "--overwrite", *common])
    assert status == 0, stderr
    assert sorted(os.listdir(tmp_path)) == ["fcn", "fcn.keras"]
    served = tf.saved_model.load(str(target))
    np.testing.assert_allclose(served.serve(images).numpy(), expected, atol=1e-5)
    (tmp_path / "notes").mkdir()
    with pytest.raises(InferenceError, match="is not a SavedModel folder"):
        check_export_paths(str(tmp_path / "notes"), overwrite=True)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--predict-dir", "PHOTOS"], "--predict-dir and --export need trained weights: give --restore-weights"),
        (["--export", "OUT/fcn", "--restore-weights", "w.weights.h5", "--train"], "are not used with --train"),
        (["--predict-dir", "OUT/nowhere", "--restore-weights", "WEIGHTS"], "--predict-dir OUT/nowhere: no such folder"),
        (["--predict-dir", "OUT", "--restore-weights", "WEIGHTS"], "no .jpg, .jpeg or .png file"),
        (["--predict-dir", "PHOTOS", "--predict-output", "PHOTOS", "--restore-weights", "WEIGHTS"],
         "this is the folder of the images"),
        (["--predict-dir", "PHOTOS", "--predict-output", "PHOTOS/a.png", "--restore-weights", "WEIGHTS"],
         "--predict-output PHOTOS/a.png: is a file, not a folder"),
        (["--evaluate", "--predict-output", "OUT"], "--predict-output is used with --predict-dir"),
        (["--export", "PHOTOS/a.png/fcn", "--restore-weights", "WEIGHTS"], "a.png: is a file, not a folder"),
        (["--evaluate", "--overwrite"], "--overwrite is used with --train, --predict-dir or --export"),
    ],
)
def test_bad_inference_input_ends_with_one_line_and_status_2(tiny_network, tmp_path, run_cli, extra, message):
    _, weights, common = tiny_network
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(str(photos / "a.png"), 8, 8)
    (tmp_path / "out").mkdir()

    def fill(text):
        return text.replace("PHOTOS", str(photos)).replace("OUT", str(tmp_path / "out")).replace("WEIGHTS", weights)

    status, _, stderr = run_cli([*common, *map(fill, extra)])
    message = fill(message)
    assert status == 2
    assert stderr.count("\n") == 1 and message in stderr, stderr
    assert os.listdir(tmp_path / "out") == [] and sorted(os.listdir(photos)) == ["a.png"]


def test_outputs_of_images_whose_joined_names_meet_are_distinct(tmp_path):
    """x.jpg and x.png share a stem, so they become x_jpg and x_png; x_png.png must not then share x_png."""
    photos = tmp_path / "photos"
    photos.mkdir()
    names = ["x.jpg", "x.png", "x_png.png", "x_png_2.png", "y.png", "Z.png", "z.PNG"]
    for i, name in enumerate(names):
        write_image(str(photos / name), 8, 8, seed=i)
    planned = plan_outputs(images_to_predict(str(photos)), str(tmp_path / "out"))
    targets = [path for item in planned for path in (item.mask_path, item.overlay_path)]
    # Distinct even where a file system does not tell capitals from small letters.
    assert len({os.path.basename(path).casefold() for path in targets}) == 2 * len(names)
    by_image = {os.path.basename(item.image_path): os.path.basename(item.mask_path) for item in planned}
    # An image whose own stem is free keeps it; a joined name already taken gets a number.
    assert by_image["x_png.png"] == "x_png-mask.png" and by_image["x.jpg"] == "x_jpg-mask.png"
    assert by_image["x_png_2.png"] == "x_png_2-mask.png" and by_image["x.png"] == "x_png_3-mask.png"
    assert by_image["y.png"] == "y-mask.png" and by_image["Z.png"] == "Z-mask.png"
    assert by_image["z.PNG"] == "z_2-mask.png"
    summary = predict_directory(HalvesModel(), planned, str(tmp_path / "out"), batch_size=3, verbose=0)
    assert len(summary.written) == len(names) and summary.skipped == []
    assert len(os.listdir(tmp_path / "out")) == 2 * len(names)


def test_symbolic_link_loops_and_dangling_links_are_named_among_the_skipped(tiny_network, tmp_path, run_cli):
    _, weights, common = tiny_network
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(str(photos / "good.png"), 20, 30)
    os.symlink("loop.png", photos / "loop.png")
    os.symlink(str(tmp_path / "gone.jpg"), photos / "dangling.jpg")
    os.symlink("good.png", photos / "alias.png")
    paths = images_to_predict(str(photos))
    assert [os.path.basename(path) for path in paths] == ["alias.png", "dangling.jpg", "good.png", "loop.png"]
    out = tmp_path / "out"
    status, stdout, stderr = run_cli(
        ["--restore-weights", weights, "--predict-dir", str(photos), "--predict-output", str(out), *common])
    assert status == 2
    assert f"skipped {photos / 'loop.png'}: cannot read the image (a symbolic link loop)" in stdout
    assert (f"skipped {photos / 'dangling.jpg'}: cannot read the image (a symbolic link to "
            f"{tmp_path / 'gone.jpg'}, which does not exist)") in stdout
    assert "Wrote 2 mask(s) and overlay(s)" in stdout
    assert stderr.count("\n") == 1 and "2 of 4 image(s) could not be read and were skipped" in stderr
    assert "Traceback" not in stderr
    assert sorted(os.listdir(out)) == ["alias-mask.png", "alias-overlay.png", "good-mask.png", "good-overlay.png"]
