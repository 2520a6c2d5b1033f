"""The network of Figure 12.2.3: sizes, names, parameter counts, saving."""

import keras
import numpy as np
import pytest

from model import build_fcn, build_model, configure_batchnorm
from resnet import build_resnet, check_input_shape
from segmentation.paths import weights_name


def count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def test_book_network_has_the_books_parameter_count():
    backbone, fcn = build_model((480, 640, 3), n_layers=3, n_classes=4)
    assert fcn.count_params() == 11_120_900
    assert count(fcn.trainable_weights) == 11_105_892
    assert count(fcn.non_trainable_weights) == 15_008
    assert backbone.count_params() == 5_215_232
    assert backbone.name == "ResNet56v2"
    assert weights_name(56, 3, "drinks") == "ResNet56v2-3layer-drinks-best-iou"


def test_book_layer_names_and_order_are_kept():
    backbone, fcn = build_model((96, 128, 3), n_layers=3, n_classes=4, n=1)
    assert [layer.name for layer in fcn.layers] == [
        "image", "ResNet11v2",
        "conv_fcn_8", "conv_fcn_16", "conv_fcn_32",
        "bn_fcn_8", "bn_fcn_16", "bn_fcn_32",
        "relu_fcn_8", "relu_fcn_16", "relu_fcn_32",
        "fcn_8_up2d", "fcn_16_up2d", "fcn_32_up2d",
        "fcn_concat",
        "tconv_up_x2", "bn_up_x2", "relu_up_x2",
        "tconv_up_x4", "bn_up_x4", "relu_up_x4",
        "pre_activation", "segmentation",
    ]
    # The backbone stays a nested model, as the book's .h5 weights expect.
    assert fcn.get_layer("ResNet11v2") is backbone
    names = [layer.name for layer in backbone.layers]
    assert names[-7:] == ["pool1", "conv__layer2", "bn__layer2", "relu__layer2",
                          "conv__layer3", "bn__layer3", "relu__layer3"]
    assert len(names) == len(set(names))


def test_pyramid_sizes_are_quarter_to_thirty_second():
    backbone = build_resnet((64, 96, 3), n_layers=3, n=1)
    shapes = [tuple(output.shape[1:]) for output in backbone.outputs]
    assert shapes == [(16, 24, 256), (8, 12, 256), (4, 6, 512), (2, 3, 512)]


def test_tiny_fcn_outputs_probabilities_per_pixel():
    _, fcn = build_model((64, 64, 3), n_layers=1, n_classes=4, n=1)
    images = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    probabilities = keras.ops.convert_to_numpy(fcn(images, training=False))
    assert probabilities.shape == (2, 64, 64, 4)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    assert (probabilities >= 0).all()


def test_number_of_classes_sets_the_output_channels():
    _, fcn = build_model((64, 64, 3), n_layers=1, n_classes=2, n=1)
    assert fcn.output_shape == (None, 64, 64, 2)


@pytest.mark.parametrize(
    "shape, layers, expected",
    [
        ((480, 650, 3), 3, "Nearest valid: 640 or 672"),
        ((100, 64, 3), 3, "Nearest valid: 96 or 128"),
        ((16, 64, 3), 3, "Nearest valid: 32"),
        ((64, 70, 3), 1, "Nearest valid: 64 or 72"),
    ],
)
def test_sizes_the_pyramid_cannot_divide_are_refused(shape, layers, expected):
    with pytest.raises(ValueError, match=expected):
        check_input_shape(shape, layers)


def test_valid_sizes_pass_the_check():
    check_input_shape((480, 640, 3), 3)
    check_input_shape((96, 128, 3), 3)
    check_input_shape((24, 40, 3), 1)


def test_bad_depth_and_class_count_are_refused():
    with pytest.raises(ValueError, match="9n \\+ 2"):
        build_resnet((64, 64, 3), n_layers=1, n=0)
    backbone = build_resnet((64, 64, 3), n_layers=1, n=1)
    with pytest.raises(ValueError, match="n_classes=1"):
        build_fcn((64, 64, 3), backbone, n_classes=1)


def test_weights_round_trip(tmp_path):
    _, fcn = build_model((64, 64, 3), n_layers=2, n_classes=3, n=1)
    images = np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32)
    expected = fcn.predict_on_batch(images)
    path = str(tmp_path / "fcn.weights.h5")
    fcn.save_weights(path)
    _, restored = build_model((64, 64, 3), n_layers=2, n_classes=3, n=1)
    assert not np.allclose(restored.predict_on_batch(images), expected)
    restored.load_weights(path)
    np.testing.assert_allclose(restored.predict_on_batch(images), expected, atol=1e-6)


def test_batchnorm_settings_reach_every_batchnorm_layer_of_backbone_and_head():
    _, fcn = build_model((64, 64, 3), n_layers=1, n=1)
    configure_batchnorm(fcn, 0.9, synchronized=True)
    settings = [(layer.momentum, layer.synchronized)
                for layer in fcn._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    # The backbone's and the head's: 13 in this n=1, one-layer network.
    assert len(settings) == 13 and set(settings) == {(0.9, True)}
