"""--decoder: the book's head by default; skip connections from the half- and full-resolution stages on demand."""

import keras
import numpy as np
import pytest
from conftest import HEIGHT, TINY, WEIGHTS, WIDTH

from model import (
    BOOK_DECODER,
    DECODER_LAYER_COUNTS,
    DECODERS,
    FULL_RESOLUTION_FILTERS,
    SKIP_DECODER,
    SKIP_FILTERS,
    build_model,
    decoder_of_model,
)
from segmentation.augment import build_augmentation
from segmentation.checkpoints import decoder_of_weights, read_best_metrics, restore_weights
from segmentation.errors import UsageError

FLAGS = [*TINY, "--head-filters", "8", "--precision", "float32"]
# The backbone's full- and half-resolution stages (stage 0 and stage 1 of the bottleneck ResNet v2).
STAGE_CHANNELS = {"full": 64, "half": 128}


def conv_bn_parameters(kernel: int, inputs: int, filters: int) -> int:
    """Weights of a Conv2D (or Conv2DTranspose) with bias followed by BatchNormalization (4 per channel)."""
    return kernel * kernel * inputs * filters + filters + 4 * filters


def decoder_parameters(decoder: str, filters: int) -> int:
    """What the decoder's layers and the classifier (4 classes) weigh, from the 1/4 map (256 backbone channels and one
    pyramid map) to full size."""
    concat = 256 + filters
    full = min(filters, FULL_RESOLUTION_FILTERS)
    if decoder == BOOK_DECODER:
        return conv_bn_parameters(3, concat, filters) + conv_bn_parameters(3, filters, filters) + 4 * filters + 4
    projections = sum(conv_bn_parameters(1, STAGE_CHANNELS[level], SKIP_FILTERS[level]) for level in STAGE_CHANNELS)
    fuse_half = conv_bn_parameters(3, filters + SKIP_FILTERS["half"], filters)
    if decoder == SKIP_DECODER:
        upsampling = conv_bn_parameters(3, concat, filters) + conv_bn_parameters(3, filters, full)
        fuse_full = conv_bn_parameters(3, full + SKIP_FILTERS["full"], full)
    else:
        # Bilinear upsampling has no weights and keeps the channels; a 3x3 convolution first narrows the 1/4 map.
        upsampling = conv_bn_parameters(3, concat, filters)
        fuse_full = conv_bn_parameters(3, filters + SKIP_FILTERS["full"], full)
    return projections + fuse_half + fuse_full + upsampling + 4 * full + 4


@pytest.mark.parametrize("filters", [8, 64])
@pytest.mark.parametrize("decoder", DECODERS)
def test_each_decoder_builds_with_its_parameter_count_and_the_input_s_size(decoder, filters):
    _, book = build_model((HEIGHT, WIDTH, 3), n_layers=1, n=1, head_filters=filters)
    _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n=1, head_filters=filters, decoder=decoder)
    expected = book.count_params() - decoder_parameters(BOOK_DECODER, filters) + decoder_parameters(decoder, filters)
    assert fcn.count_params() == expected
    assert fcn.output_shape == (None, HEIGHT, WIDTH, 4)
    assert decoder_of_model(fcn) == decoder
    # What a weights file's layer counts tell the decoder by.
    transposed = sum(isinstance(layer, keras.layers.Conv2DTranspose) for layer in fcn.layers)
    convolutions = sum(type(layer) is keras.layers.Conv2D for layer in fcn.layers) - 1  # less the pyramid's
    assert DECODER_LAYER_COUNTS[decoder] == (transposed, convolutions)
    probabilities = fcn(np.random.default_rng(0).random((1, HEIGHT, WIDTH, 3), dtype=np.float32), training=False)
    np.testing.assert_allclose(np.asarray(probabilities).sum(-1), 1.0, rtol=1e-5)


def test_the_book_s_decoder_is_the_default_and_the_book_s_network():
    _, fcn = build_model((480, 640, 3), n_layers=3, n_classes=4)
    assert fcn.count_params() == 11_120_900
    assert decoder_of_model(fcn) == BOOK_DECODER
    assert not any(layer.name.startswith("skip_") for layer in fcn.layers)


def test_an_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="decoder"):
        build_model((HEIGHT, WIDTH, 3), n_layers=1, n=1, decoder="unet")


@pytest.mark.parametrize("saved", DECODERS)
def test_weights_name_their_decoder_and_load_only_into_it(saved, tmp_path):
    path = str(tmp_path / f"{saved}.weights.h5")
    _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=1, n=1, head_filters=8, decoder=saved)
    fcn.save_weights(path)
    for decoder in DECODERS:
        _, other = build_model((HEIGHT, WIDTH, 3), n_layers=1, n=1, head_filters=8, decoder=decoder)
        assert decoder_of_weights(path, other) == saved
        if decoder == saved:
            restore_weights(other, path)
            continue
        with pytest.raises(UsageError) as refused:
            restore_weights(other, path)
        message = str(refused.value)
        assert "\n" not in message
        assert f"the {saved} decoder and the network the {decoder} one; give --decoder {saved}" in message


def test_a_skip_decoder_trains_records_its_decoder_and_refuses_another(book_dataset, tmp_path, run_cli):
    data_path, _ = book_dataset
    save_dir = str(tmp_path / "weights")
    common = [*FLAGS, "--data-path", data_path, "--save-dir", save_dir]
    status, _, err = run_cli(["--train", "--epochs", "1", "--seed", "0", "--decoder", "bilinear", *common])
    assert status == 0, err
    weights = str(tmp_path / "weights" / WEIGHTS)
    assert read_best_metrics(weights)["settings"]["decoder"] == "bilinear"
    # Evaluating with the book's decoder: one line naming the one to give.
    status, _, err = run_cli(["--evaluate", "--restore-weights", WEIGHTS, *common])
    assert status == 2 and err.count("\n") == 1 and "give --decoder bilinear" in err
    # A resume must keep the decoder; a new run must not replace another decoder's best weights.
    status, _, err = run_cli(["--train", "--epochs", "2", "--seed", "0", "--decoder", "skip", *common, "--resume"])
    assert status == 2 and "decoder 'bilinear' (now 'skip')" in err
    status, _, err = run_cli(["--train", "--epochs", "1", "--seed", "0", "--decoder", "skip", *common])
    assert status == 2 and "with the bilinear decoder are in the way of this run's 8-filter network" in err
    status, _, err = run_cli(["--evaluate", "--restore-weights", WEIGHTS, "--decoder", "bilinear", *common])
    assert status == 0, err


def test_augment_flip_mirrors_or_keeps_and_changes_nothing_else():
    rng = np.random.default_rng(0)
    image = rng.random((8, 12, 3), dtype=np.float32)
    class_map = rng.integers(0, 4, size=(8, 12)).astype(np.uint8)
    augmentation = build_augmentation("flip")
    mirrored = 0
    for _ in range(40):
        out_image, out_map = augmentation(image, class_map, rng)
        if np.array_equal(out_image, image):
            assert np.array_equal(out_map, class_map)
        else:
            mirrored += 1
            assert np.array_equal(out_image, image[:, ::-1]) and np.array_equal(out_map, class_map[:, ::-1])
    assert 10 < mirrored < 30
    assert build_augmentation("none") is None
    assert build_augmentation("full").scale != (1.0, 1.0)
