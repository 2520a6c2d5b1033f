"""`--tta`: predictions averaged with their mirror image's, whole images, tiles, one file, a folder, training."""

import json
import os
import re

import keras
import numpy as np
import pytest
import skimage.io
from conftest import HEIGHT, N_CLASSES, TINY, WIDTH

from data_generator import DataGenerator
from model import build_model
from segmentation import evaluation
from segmentation.checkpoints import restore_weights
from segmentation.classes import class_colors
from segmentation.evaluation import evaluate_dataset, predict_class_maps, segment_image_file
from segmentation.ground_truth.fit_to_size import predict_tiled
from segmentation.ground_truth.label_set import LabelSet
from segmentation.inference import plan_outputs, predict_directory
from segmentation.tta import flip_averaged

FLAGS = [*TINY, "--head-filters", "8", "--jit-compile", "off"]


def small_network(kernel_width):
    """Per-pixel softmax of a (1, kernel_width) convolution: mirror-symmetric for a width of 1 only.

    Float32 whatever the global dtype policy: the tolerances below are float32's.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((HEIGHT, WIDTH, 3))
    x = keras.layers.Conv2D(N_CLASSES, (1, kernel_width), padding="same", kernel_initializer="random_normal",
                            dtype="float32", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Softmax(dtype="float32")(x))
    # Large, lopsided weights, so that a flip changes the classes, not only the probabilities.
    kernel = model.get_layer("conv").kernel
    kernel.assign(np.random.default_rng(1).normal(0, 3, kernel.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def pointwise():
    return small_network(1)


@pytest.fixture(scope="module")
def directional():
    return small_network(7)


def images(count=2, seed=0):
    return np.random.default_rng(seed).random((count, HEIGHT, WIDTH, 3), dtype=np.float32)


def recording(predict, seen):
    """`predict` (of a batch), appending every image it is given to `seen`."""

    def predict_and_record(batch):
        seen.extend(np.asarray(batch))
        return predict(batch)

    return predict_and_record


def assert_saw_each_image_and_its_mirror(seen, batch):
    """The network was given every image and its left-right mirror (width flipped, not height)."""
    assert len(seen) == 2 * len(batch)
    for image in [*batch, *batch[:, :, ::-1]]:
        assert any(np.array_equal(view, image) for view in seen)


def test_a_network_that_treats_each_pixel_alone_predicts_the_same_with_tta(pointwise, monkeypatch):
    batch = images()
    plain = pointwise.predict_on_batch(batch)
    seen = []
    np.testing.assert_allclose(flip_averaged(recording(pointwise.predict_on_batch, seen))(batch), plain, atol=1e-6)
    # The same, though it did predict the mirror images: not an averaging that does nothing.
    assert_saw_each_image_and_its_mirror(seen, batch)
    seen = []
    predict_batch = evaluation.predict_batch
    monkeypatch.setattr("segmentation.evaluation.predict_batch",
                        lambda model, batch: recording(lambda views: predict_batch(model, views), seen)(batch))
    np.testing.assert_array_equal(predict_class_maps(pointwise, batch, None, 2, tta=True), plain.argmax(axis=-1))
    assert_saw_each_image_and_its_mirror(seen, batch)


def test_tta_is_the_mean_of_the_prediction_and_the_flipped_prediction_of_the_flipped_image(directional):
    batch = images()
    plain = directional.predict_on_batch(batch)
    mirrored = directional.predict_on_batch(batch[:, :, ::-1])[:, :, ::-1]
    expected = (plain + mirrored) / 2
    np.testing.assert_allclose(flip_averaged(directional.predict_on_batch)(batch), expected, atol=1e-6)
    predicted = predict_class_maps(directional, batch, None, 2, tta=True)
    np.testing.assert_array_equal(predicted, expected.argmax(axis=-1))
    assert (predicted != plain.argmax(axis=-1)).any()  # the mirror image's view changed some pixels


def write_images(folder, sizes, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    names = []
    for index, (height, width) in enumerate(sizes):
        names.append(f"image{index}.png")
        skimage.io.imsave(os.path.join(folder, names[-1]), rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                          check_contrast=False)
    return names


def test_tiles_evaluation_and_a_folder_take_tta(directional, pointwise, tmp_path):
    folder = str(tmp_path / "images")
    names = write_images(folder, [(100, 130), (40, 50)])
    masks = {name: np.zeros(size, dtype=np.uint8) for name, size in zip(names, [(100, 130), (40, 50)])}
    labels = LabelSet(path=folder, masks=masks, n_classes=N_CLASSES)
    generator = DataGenerator(labels, folder, batch_size=2, shuffle=False, drop_last=False, size=(HEIGHT, WIDTH),
                              fit_size="crop")
    whole = generator.read_image(names[0])
    expected = predict_tiled(flip_averaged(directional.predict_on_batch), whole, HEIGHT, WIDTH, 2).argmax(axis=-1)
    tiled = predict_class_maps(directional, [whole], (HEIGHT, WIDTH), 2, tta=True)[0]
    np.testing.assert_array_equal(tiled, expected)
    assert (tiled != predict_class_maps(directional, [whole], (HEIGHT, WIDTH), 2)[0]).any()
    # Whatever the tiles, a network that treats each pixel alone scores the same with and without it...
    assert (evaluate_dataset(pointwise, generator, tta=True).confusion
            == evaluate_dataset(pointwise, generator).confusion).all()
    # ... and one that does not scores the classes of its flip-averaged tiles (every pixel's truth is class 0).
    confusion = evaluate_dataset(directional, generator, tta=True).confusion
    maps = predict_class_maps(directional, [generator.read_image(name) for name in names], (HEIGHT, WIDTH), 2,
                              tta=True)
    np.testing.assert_array_equal(confusion[0], np.bincount(np.concatenate([m.ravel() for m in maps]),
                                                            minlength=N_CLASSES))
    assert (confusion != evaluate_dataset(directional, generator).confusion).any()
    planned = plan_outputs([os.path.join(folder, names[0])], str(tmp_path / "out"))
    predict_directory(directional, planned, str(tmp_path / "out"), batch_size=2, verbose=0, fit_size="crop",
                      tta=True)
    np.testing.assert_array_equal(skimage.io.imread(planned[0].mask_path), class_colors(N_CLASSES)[expected])


def test_one_image_file_and_a_resized_folder_take_tta(directional, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = write_images("images", [(HEIGHT, WIDTH)])
    image = skimage.io.imread(os.path.join("images", names[0])).astype(np.float32)[np.newaxis] / 255
    expected = flip_averaged(directional.predict_on_batch)(image)[0].argmax(axis=-1)
    segment_image_file(directional, os.path.join("images", names[0]), HEIGHT, WIDTH, tta=True)
    colours = class_colors(N_CLASSES)
    np.testing.assert_array_equal(skimage.io.imread("prediction/image0-mask.png"), colours[expected])
    planned = plan_outputs([os.path.join("images", names[0])], "out")
    predict_directory(directional, planned, "out", batch_size=2, verbose=0, tta=True)
    np.testing.assert_array_equal(skimage.io.imread(planned[0].mask_path), colours[expected])


def test_training_selects_and_evaluate_scores_with_tta(book_dataset, tmp_path, run_cli):
    data_path, _ = book_dataset
    save_dir = str(tmp_path / "weights")
    common = [*FLAGS, "--data-path", data_path, "--save-dir", save_dir]
    # Float32 as the network rebuilt below, whose evaluation must give the recorded score to 1e-6.
    status, out, err = run_cli([*common, "--train", "--epochs", "1", "--seed", "0", "--tta", "--precision", "float32"])
    assert status == 0, err
    assert "--tta: each prediction is the mean" in out
    with open(os.path.join(save_dir, "ResNet11v2-1layer-drinks-best-iou.json")) as file:
        record = json.load(file)
    assert record["settings"]["tta"] is True
    _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n_classes=N_CLASSES, n=1, head_filters=8)
    weights = os.path.join(save_dir, "ResNet11v2-1layer-drinks-best-iou.weights.h5")
    restore_weights(fcn, weights)
    test_labels = LabelSet(path=data_path, masks={name: mask.argmax(axis=-1).astype(np.uint8)
                                                  for name, mask in book_dataset[1]["test"].items()},
                           n_classes=N_CLASSES)
    test_data = DataGenerator(test_labels, data_path, batch_size=2, shuffle=False, drop_last=False)
    # The per-epoch evaluation scored the flip-averaged predictions.
    assert record["test_miou"] == pytest.approx(evaluate_dataset(fcn, test_data, tta=True).mean_iou, abs=1e-6)
    status, out, err = run_cli([*common, "--evaluate", "--tta", "--restore-weights", weights])
    assert status == 0, err
    printed = float(re.search(r"mIoU \(book, mean of per-image mIoU\): ([0-9.]+)", out).group(1))
    assert printed == pytest.approx(record["test_miou"], abs=1e-4)


def test_tta_needs_something_that_predicts(book_dataset, run_cli):
    status, _, err = run_cli(["--summary", "--tta", "--data-path", book_dataset[0]])
    assert status == 2 and "--tta is used with --evaluate, --train or --predict-dir" in err
