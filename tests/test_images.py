"""Bad images met after the start-up check: one line, exit status 2, nothing the user has lost.

The start-up check reads each image's header only (docs/never-losing-work.md); a JPEG whose data is cut
off after a sound header, or an image spoiled while a run trains, is only found when it is decoded. These
tests spoil an image that way and run the command line in-process, as `tests/test_faults.py` does.
"""

import os
import shutil
import time
import tracemalloc

import numpy as np
import PIL.Image
import pytest
from conftest import HEIGHT, STATE, TINY, WEIGHTS, WIDTH, snapshot, write_book_dataset

from segmentation import cli
from segmentation.checkpoints import read_training_state
from segmentation.images import check_image

FLAGS = [*TINY, "--head-filters", "8", "--precision", "float32", "--seed", "0"]


def as_jpeg(data_path, name):
    """Replaces the PNG `name` of a book data set by a JPEG of the same pixels; returns the JPEG's path."""
    png = os.path.join(data_path, name)
    jpeg = os.path.splitext(png)[0] + ".jpg"
    PIL.Image.open(png).convert("RGB").save(jpeg, quality=95)
    os.remove(png)
    split = "train" if name.startswith("train") else "test"
    labels_path = os.path.join(data_path, f"segmentation_{split}.npy")
    labels = np.load(labels_path, allow_pickle=True).flat[0]
    labels[os.path.basename(jpeg)] = labels.pop(name)
    np.save(labels_path, labels, allow_pickle=True)
    return jpeg


def cut_scan_data(path):
    """Cuts a JPEG's entropy-coded data in half: its header stays sound, so Pillow opens and sizes it."""
    with open(path, "rb") as file:
        data = file.read()
    start = data.index(b"\xff\xda")  # start of scan
    with open(path, "wb") as file:
        file.write(data[: start + (len(data) - start) // 2])


def run_argv(folder):
    """The argv of a 1-epoch run on the data set `folder`/drinks into the save folder `folder`/weights."""
    return ["--train", *FLAGS, "--data-path", str(folder / "drinks"), "--save-dir", str(folder / "weights"),
            "--epochs", "1"]


def jpeg_run(tmp_path, name="train009.png"):
    """A 12-image training set whose image `name` is a JPEG, and the argv of a 1-epoch run on it.

    With 6 batches an epoch and seed 0, train009 and train000 are read in a batch after the first (which
    Keras reads itself before the fit, outside TensorFlow's data pipeline), inside TensorFlow's.
    """
    write_book_dataset(str(tmp_path / "drinks"), num_train=12, num_test=2)
    jpeg = as_jpeg(str(tmp_path / "drinks"), name)
    return run_argv(tmp_path), jpeg, tmp_path / "weights"


@pytest.fixture(scope="module")
def trained_on_a_jpeg(tmp_path_factory):
    """The folder of a finished 1-epoch run on `jpeg_run`'s data set (drinks/ and weights/), trained once."""
    folder = tmp_path_factory.mktemp("jpeg-run")
    argv, _, _ = jpeg_run(folder)
    assert cli.main([*argv, "--workers", "1"]) == 0
    return folder


def check_one_line(status, err, path):
    assert status == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("fcn-12.3.1.py: error: ") and path in err, err


def test_the_header_check_lets_a_cut_jpeg_through(tmp_path):
    """The premise of the tests below: the cut JPEG is not found before it is decoded."""
    _, jpeg, _ = jpeg_run(tmp_path)
    cut_scan_data(jpeg)
    assert check_image(jpeg, HEIGHT, WIDTH) == "RGB"


@pytest.mark.parametrize("workers, name", [("1", "train009.png"), ("4", "train009.png"), ("4", "train000.png"),
                                           ("1", "test001.png")])
def test_a_cut_jpeg_in_the_training_set_ends_the_run_in_one_line(tmp_path, run_cli, workers, name):
    argv, jpeg, save_dir = jpeg_run(tmp_path, name)
    cut_scan_data(jpeg)
    status, _, err = run_cli([*argv, "--workers", workers])
    check_one_line(status, err, jpeg)
    assert "truncated" in err and "Replace the file" in err
    assert not os.path.exists(save_dir / STATE)


@pytest.mark.parametrize("workers", ["1", "4"])
def test_an_image_cut_after_training_started_keeps_the_best_weights_and_the_state(trained_on_a_jpeg, tmp_path,
                                                                                   run_cli, workers):
    shutil.copytree(trained_on_a_jpeg, tmp_path, dirs_exist_ok=True)
    jpeg, save_dir = str(tmp_path / "drinks" / "train009.jpg"), tmp_path / "weights"
    before = snapshot(save_dir)
    assert STATE in before and WEIGHTS in before
    with open(jpeg, "rb") as file:
        sound = file.read()
    cut_scan_data(jpeg)
    resume = [*run_argv(tmp_path)[:-1], "2", "--resume", "--workers", workers]
    status, _, err = run_cli(resume)
    check_one_line(status, err, jpeg)
    assert snapshot(save_dir) == before, "the best weights or the resume state changed"
    # The image replaced: the run resumes where it was.
    with open(jpeg, "wb") as file:
        file.write(sound)
    status, _, err = run_cli(resume)
    assert status == 0, err
    assert read_training_state(str(save_dir / STATE)).epochs_done == 2


RED = (220, 30, 30)


class BackgroundModel:
    """Stands in for the FCN: background everywhere, so each overlay is its image as it was read."""

    input_shape = (None, 8, 8, 3)

    def predict_on_batch(self, images):
        probabilities = np.zeros(images.shape[:3] + (4,), dtype=np.float32)
        probabilities[..., 0] = 1.0
        return probabilities


def write_cmyk_jpeg(path, size=(WIDTH, HEIGHT)):
    """A red RGB picture saved as a CMYK JPEG (as print workflows and some cameras write them)."""
    PIL.Image.new("RGB", size, RED).convert("CMYK").save(path, quality=95)
    assert PIL.Image.open(path).mode == "CMYK"
    return path


def cut_png(path, keep=200):
    """A PNG of a picture, cut after `keep` bytes."""
    picture = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    picture[10:40, 10:50] = RED
    picture[::5] = np.random.default_rng(0).integers(0, 256, picture[::5].shape)
    PIL.Image.fromarray(picture).save(path)
    with open(path, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data[:keep])
    return path


def test_a_cmyk_jpeg_is_read_as_its_rgb_colours_by_every_reader(tmp_path):
    from data_generator import DataGenerator
    from segmentation.ground_truth.book_labels import load_labels
    from segmentation.images import decode_image, read_image

    data_path = str(tmp_path / "drinks")
    write_book_dataset(data_path, num_train=2, num_test=1)
    jpeg = write_cmyk_jpeg(str(tmp_path / "drinks" / "train000.jpg"))
    os.remove(os.path.join(data_path, "train000.png"))
    labels_path = os.path.join(data_path, "segmentation_train.npy")
    labels = np.load(labels_path, allow_pickle=True).flat[0]
    labels["train000.jpg"] = labels.pop("train000.png")
    np.save(labels_path, labels, allow_pickle=True)

    # The start-up check takes it, as it takes grey and RGBA images, to be converted on reading.
    assert check_image(jpeg, HEIGHT, WIDTH) == "CMYK"
    # Prediction and --fit-size resize/crop decode it; training and evaluation read it at the network's size.
    np.testing.assert_allclose(decode_image(jpeg).reshape(-1, 3).mean(axis=0), RED, atol=3)
    np.testing.assert_allclose(read_image(jpeg, HEIGHT, WIDTH).reshape(-1, 3).mean(axis=0) * 255, RED, atol=3)
    generator = DataGenerator(load_labels(labels_path, data_path, HEIGHT, WIDTH), data_path, batch_size=1)
    np.testing.assert_allclose(generator.read_image("train000.jpg").reshape(-1, 3).mean(axis=0) * 255, RED, atol=3)


def test_a_cmyk_jpeg_in_predict_dir_is_segmented_in_its_rgb_colours(tmp_path):
    from segmentation.inference import images_to_predict, plan_outputs, predict_directory

    photos = tmp_path / "photos"
    photos.mkdir()
    write_cmyk_jpeg(str(photos / "print.jpg"), size=(30, 20))
    planned = plan_outputs(images_to_predict(str(photos)), str(tmp_path / "out"))
    summary = predict_directory(BackgroundModel(), planned, str(tmp_path / "out"), verbose=0)
    assert summary.skipped == [] and len(summary.written) == 1
    written = np.asarray(PIL.Image.open(tmp_path / "out" / "print-overlay.png"))
    assert written.shape == (20, 30, 3)
    np.testing.assert_allclose(written.reshape(-1, 3).mean(axis=0), RED, atol=3)


def test_a_png_cut_after_200_bytes_is_refused_by_every_reader_in_one_line(tmp_path):
    from segmentation.errors import DatasetError
    from segmentation.images import decode_image, image_header, read_image
    from segmentation.inference import images_to_predict, plan_outputs, predict_directory

    photos = tmp_path / "photos"
    photos.mkdir()
    cut = cut_png(str(photos / "cut.png"))
    for read in (image_header, decode_image, lambda path: read_image(path, HEIGHT, WIDTH)):
        with pytest.raises(DatasetError) as refused:
            read(cut)
        message = str(refused.value)
        assert message.startswith(f"{cut}: cannot read the image (") and "truncated" in message.lower()
        assert message.endswith("Replace the file or remove it.") and "\n" not in message
    planned = plan_outputs(images_to_predict(str(photos)), str(tmp_path / "out"))
    summary = predict_directory(BackgroundModel(), planned, str(tmp_path / "out"), verbose=0)
    assert summary.written == [] and [path for path, _ in summary.skipped] == [cut]
    assert not (tmp_path / "out" / "cut-mask.png").exists()


def test_a_huge_image_in_predict_dir_is_skipped_from_its_header_in_one_line(tmp_path):
    """The issue's 6000x6000 PNG of about 110 KB took 3.37 GB and 47 s; now it is refused before decoding."""
    from segmentation.images import MAX_PIXELS
    from segmentation.inference import images_to_predict, plan_outputs, predict_directory

    photos = tmp_path / "photos"
    photos.mkdir()
    huge = PIL.Image.new("RGB", (6000, 6000))
    huge.paste(RED, (1500, 1500, 3000, 3000))
    huge.save(photos / "huge.png")
    del huge
    assert os.path.getsize(photos / "huge.png") < 200_000
    write_cmyk_jpeg(str(photos / "small.jpg"), size=(30, 20))
    planned = plan_outputs(images_to_predict(str(photos)), str(tmp_path / "out"))
    tracemalloc.start()
    started = time.monotonic()
    summary = predict_directory(BackgroundModel(), planned, str(tmp_path / "out"), verbose=0)
    seconds, peak = time.monotonic() - started, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    huge_path = str(photos / "huge.png")
    assert [path for path, _ in summary.skipped] == [huge_path]
    reason = summary.skipped[0][1]
    assert reason.startswith(f"{huge_path}: the image is 6000x6000 (36,000,000 pixels), more than the "
                             f"{MAX_PIXELS:,} pixels an image may have") and "\n" not in reason
    assert reason.endswith("Scale it down and run again.")
    assert [os.path.basename(item.image_path) for item in summary.written] == ["small.jpg"]
    assert sorted(os.listdir(tmp_path / "out")) == ["small-mask.png", "small-overlay.png"]
    # Not decoded: no pixel array of it was made (36 Mpx are 108 MB as uint8), and no time spent.
    assert peak < 20_000_000 and seconds < 10, (peak, seconds)
