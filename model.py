"""The FCN segmentation network (Figure 12.2.3, Listing 12.3.2).

Fully Convolutional Networks (`Long et al., 2015
<https://arxiv.org/abs/1411.4038>`_) with the pyramid idea of PSPNet (`Zhao et
al., 2017 <https://arxiv.org/abs/1612.01105>`_): every pyramid map after the
main one goes through Conv2D-BN-ReLU and is upsampled back to 1/4 of the input;
the maps are concatenated, brought to full size by two stride-2 transposed
convolutions, and classified per pixel by a 1x1 transposed convolution and a
softmax.

That is the book's decoder (`--decoder book`). The project adds two that join
the backbone's half- and full-resolution stages to the head after each
upsampling (the decoder of FCN-8s, U-Net and DeepLabv3+), through narrow 1x1
projections and a 3x3 convolution, so that edges are drawn from maps that saw
them, at most 32 channels wide at full resolution: `skip` keeps the
transposed convolutions, `bilinear` upsamples bilinearly instead.
"""

import keras
from keras import layers

from resnet import build_resnet, conv_layer, stage_outputs
from segmentation import batchnorm

# Filters of the head's pyramid convolutions and transposed convolutions (Listing 12.3.2): the book's 256.
HEAD_FILTERS = 256
# The classifier: its filters are the classes (the one layer that depends on the class count).
CLASSIFIER_NAME = "pre_activation"
# The pyramid maps' convolutions are named PYRAMID_PREFIX + their scale; the first one's filters are the head's
# width (`--head-filters`) whatever the decoder.
PYRAMID_PREFIX = "conv_fcn_"
HEAD_WIDTH_LAYER = f"{PYRAMID_PREFIX}8"
# The layer that joins the pyramid's maps; its first input is the backbone's main feature map.
CONCAT_NAME = "fcn_concat"
# The output of the training-only auxiliary head (`--aux-loss`).
AUX_OUTPUT_NAME = "aux_segmentation"
# `--decoder`: the book's two transposed convolutions; the same with skip connections; bilinear upsampling with them.
BOOK_DECODER = "book"
SKIP_DECODER = "skip"
BILINEAR_DECODER = "bilinear"
DECODERS = (BOOK_DECODER, SKIP_DECODER, BILINEAR_DECODER)
# Channels of the skip connections' 1x1 projections of the half- and full-resolution stages (128 and 64 channels).
SKIP_FILTERS = {"half": 32, "full": 16}
# Each decoder's (transposed convolutions, convolutions besides the pyramid's), the classifier counted: how a
# weights file, which lists layers by type only, tells its decoder.
DECODER_LAYER_COUNTS = {BOOK_DECODER: (3, 0), SKIP_DECODER: (3, 4), BILINEAR_DECODER: (1, 5)}
# The most channels a skip decoder computes at full resolution.
FULL_RESOLUTION_FILTERS = 32
# The first layer of each skip connection: its name tells a skip decoder's weights from the book's.
SKIP_PREFIX = "skip_"


def tconv_layer(inputs, filters: int = 32, kernel_size: int = 3, strides: int = 2, postfix: str = ""):
    """Conv2DTranspose-BN-ReLU (the book's `tconv_layer`).

    Args:
        inputs: tensor. The block's input.
        filters: int. Conv2DTranspose filters. Defaults to 32.
        kernel_size: int. Square kernel size. Defaults to 3.
        strides: int. Square strides (the upsampling factor). Defaults to 2.
        postfix: str. Suffix of the layer names (`"tconv_" + postfix`).

    Returns:
        The output tensor.
    """
    x = layers.Conv2DTranspose(
        filters=filters,
        kernel_size=kernel_size,
        strides=strides,
        padding="same",
        kernel_initializer="he_normal",
        name=f"tconv_{postfix}",
    )(inputs)
    x = batchnorm.BatchNormalization(name=f"bn_{postfix}")(x)
    x = layers.Activation("relu", name=f"relu_{postfix}")(x)
    return x


def upsample_and_join(x, skip, filters: int, bilinear: bool, level: str):
    """One step of a skip decoder: upsample `x` by 2, join the projected `skip`, fuse with a 3x3 convolution.

    Args:
        x: tensor. The head's map.
        skip: tensor. A backbone stage's output at twice `x`'s resolution.
        filters: int. Filters of the upsampling transposed convolution and of the fusing convolution.
        bilinear: bool. Bilinear upsampling (no weights) instead of a stride-2 transposed convolution.
        level: str. "half" or "full": the resolution reached, which names the layers and sets the
            projection's width (`SKIP_FILTERS`).

    Returns:
        The fused map, `filters` channels, at `skip`'s resolution.
    """
    postfix = "up_x2" if level == "half" else "up_x4"
    if bilinear:
        x = layers.UpSampling2D(size=2, interpolation="bilinear", name=f"{postfix}_bilinear")(x)
    else:
        x = tconv_layer(x, filters, postfix=postfix)
    skip = conv_layer(skip, SKIP_FILTERS[level], kernel_size=1, use_maxpool=False, postfix=f"{SKIP_PREFIX}{level}")
    x = layers.Concatenate(name=f"{SKIP_PREFIX}{level}_concat")([x, skip])
    return conv_layer(x, filters, kernel_size=3, use_maxpool=False, postfix=f"{SKIP_PREFIX}{level}_fuse")


def skip_decoder(x, half, full, head_filters: int, bilinear: bool):
    """The skip decoders (`--decoder skip` or `bilinear`): from the 1/4 map to full size, the stages joined on the way.

    The full-resolution steps are at most `FULL_RESOLUTION_FILTERS` wide, where each channel costs the
    most. The bilinear decoder first brings the joined pyramid to `head_filters` channels with a 3x3
    convolution at 1/4 resolution, so that it upsamples a narrow map.

    Args:
        x: tensor. The joined pyramid at 1/4 of the input.
        half: tensor. The backbone's half-resolution stage.
        full: tensor. The backbone's full-resolution stage.
        head_filters: int. `--head-filters`.
        bilinear: bool. Bilinear upsampling instead of transposed convolutions.

    Returns:
        The full-resolution map the classifier reads.
    """
    if bilinear:
        x = conv_layer(x, head_filters, kernel_size=3, use_maxpool=False, postfix=f"{SKIP_PREFIX}quarter_reduce")
    x = upsample_and_join(x, half, head_filters, bilinear, "half")
    return upsample_and_join(x, full, min(head_filters, FULL_RESOLUTION_FILTERS), bilinear, "full")


def build_fcn(input_shape: tuple[int, int, int], backbone: keras.Model, n_classes: int = 4,
              head_filters: int = HEAD_FILTERS, decoder: str = BOOK_DECODER) -> keras.Model:
    """Builds the FCN around a backbone that returns a features pyramid.

    Args:
        input_shape: tuple. `(height, width, channels)`.
        backbone: keras.Model. Returns `[main, 1/8, 1/16, ...]` feature maps,
            the main one at 1/4 of the input (see `resnet.build_resnet`).
        n_classes: int. Number of classes including background. Defaults to 4.
        head_filters: int. Filters of each pyramid map's Conv2D and of the two
            stride-2 transposed convolutions (`--head-filters`). Defaults to
            the book's 256; the head's cost grows with its square.
        decoder: str. One of `DECODERS` (`--decoder`). Defaults to the book's.

    Returns:
        A `keras.Model` named `fcn` mapping `(H, W, channels)` images in [0, 1]
        to `(H, W, n_classes)` per-pixel softmax probabilities.

    Raises:
        ValueError: if `n_classes < 2`, `head_filters < 1` or the decoder is unknown.

    Example:

    >>> backbone = build_resnet((64, 64, 3), n_layers=1, n=1)
    >>> build_fcn((64, 64, 3), backbone, n_classes=4).output_shape
    (None, 64, 64, 4)
    """
    if n_classes < 2:
        raise ValueError(
            "A segmentation network needs at least 2 classes (background and one "
            f"object class). Received: n_classes={n_classes}"
        )
    if head_filters < 1:
        raise ValueError(f"The head needs at least 1 filter. Received: head_filters={head_filters}")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}. Received: decoder={decoder!r}")
    if decoder != BOOK_DECODER:
        # The same backbone layers, also returning the full- and half-resolution stages' outputs.
        full, half, _ = stage_outputs(backbone)
        backbone = keras.Model(backbone.input, [*backbone.outputs, half, full], name=backbone.name)

    # === Layers ===
    inputs = keras.Input(shape=input_shape, name="image")
    features = backbone(inputs)
    if decoder != BOOK_DECODER:
        *features, half_feature, full_feature = features
    main_feature, *coarser_features = features
    out_features = [main_feature]
    for level, feature in enumerate(coarser_features, start=1):
        # Level 1 is the 1/8 map (named fcn_8), upsampled by 2 back to 1/4.
        upsampling = 2**level
        postfix = f"fcn_{4 * upsampling}"  # named PYRAMID_PREFIX + scale by conv_layer
        feature = conv_layer(feature, filters=head_filters, use_maxpool=False, postfix=postfix)
        feature = layers.UpSampling2D(
            size=upsampling, interpolation="bilinear", name=f"{postfix}_up2d"
        )(feature)
        out_features.append(feature)
    x = layers.Concatenate(name=CONCAT_NAME)(out_features)
    if decoder == BOOK_DECODER:
        x = tconv_layer(x, head_filters, postfix="up_x2")
        x = tconv_layer(x, head_filters, postfix="up_x4")
    else:
        x = skip_decoder(x, half_feature, full_feature, head_filters, bilinear=decoder == BILINEAR_DECODER)
    x = layers.Conv2DTranspose(
        filters=n_classes,
        kernel_size=1,
        strides=1,
        padding="same",
        kernel_initializer="he_normal",
        name=CLASSIFIER_NAME,
    )(x)
    # float32 whatever the dtype policy, so the loss and the argmax see full-precision probabilities.
    outputs = layers.Softmax(name="segmentation", dtype="float32")(x)

    # === Functional Model ===
    return keras.Model(inputs, outputs, name="fcn")


def decoder_of_model(fcn: keras.Model) -> str:
    """The FCN's decoder (`--decoder`), told from its layers' names."""
    names = {layer.name for layer in fcn.layers}
    if not any(name.startswith(SKIP_PREFIX) for name in names):
        return BOOK_DECODER
    return BILINEAR_DECODER if "up_x2_bilinear" in names else SKIP_DECODER


def build_model(
    input_shape: tuple[int, int, int], n_layers: int = 3, n_classes: int = 4, n: int = 6,
    head_filters: int = HEAD_FILTERS, decoder: str = BOOK_DECODER,
) -> tuple[keras.Model, keras.Model]:
    """Builds the book's backbone and the FCN on top of it.

    Args:
        input_shape: tuple. `(height, width, channels)`.
        n_layers: int. Pyramid maps after the main one. Defaults to 3 (the
            book's `--layers`).
        n_classes: int. Number of classes including background. Defaults to 4.
        n: int. Bottleneck units per backbone stage (depth 9n + 2). Defaults
            to 6 (ResNet56v2).
        head_filters: int. The head's width (`build_fcn`). Defaults to the book's 256.
        decoder: str. One of `DECODERS` (`build_fcn`). Defaults to the book's.

    Returns:
        `(backbone, fcn)`.

    Raises:
        ValueError: for an input size, depth or class count the network
            cannot take.
    """
    backbone = build_resnet(input_shape, n_layers=n_layers, n=n)
    return backbone, build_fcn(input_shape, backbone, n_classes, head_filters, decoder)


def build_training_model(fcn: keras.Model) -> keras.Model:
    """The FCN with an auxiliary classifier on the backbone's main feature map, for training only (`--aux-loss`).

    A light head, a 1x1 convolution to the classes, bilinear upsampling by 4 back to the input size
    and a softmax, classifies every pixel from the 1/4 map the pyramid pools from, so the backbone
    gets a loss of its own (the auxiliary loss of PSPNet). The model shares every layer of `fcn` and
    adds the head's; `fcn` itself is unchanged, so its saved weights, its evaluation and the book's
    `.h5` know nothing of the head.

    Args:
        fcn: keras.Model. From `build_fcn`.

    Returns:
        A `keras.Model` named `fcn_training` with two outputs: `fcn`'s probabilities
        (`segmentation`) and the auxiliary head's (`aux_segmentation`), both `(H, W, n_classes)`.
    """
    # === Layers ===
    main_feature = fcn.get_layer(CONCAT_NAME).input[0]
    n_classes = fcn.output_shape[-1]
    upsampling = fcn.input_shape[1] // main_feature.shape[1]
    x = layers.Conv2D(n_classes, kernel_size=1, kernel_initializer="he_normal", name="aux_classifier")(main_feature)
    x = layers.UpSampling2D(size=upsampling, interpolation="bilinear", name="aux_up2d")(x)
    aux_outputs = layers.Softmax(name=AUX_OUTPUT_NAME, dtype="float32")(x)

    # === Functional Model ===
    return keras.Model(fcn.input, [fcn.output, aux_outputs], name="fcn_training")


def configure_batchnorm(model: keras.Model, momentum: float, synchronized: bool = False) -> None:
    """Sets the momentum and synchronisation of every BatchNormalization layer.

    Keras' default momentum, 0.99, keeps 85 % of the initial statistics after
    an epoch of 16 batches: on a few dozen images the network is evaluated with
    statistics it has barely met. 0.9 follows the batches ten times faster.

    Synchronized layers (for `--distribute`) take their batch statistics over
    the global batch, as on one device, so every replica keeps the same moving
    averages. Neither setting adds weights: the book's weights still load.

    Args:
        model: keras.Model. Searched recursively (the backbone is a layer of the FCN).
        momentum: float. In [0, 1).
        synchronized: bool. Defaults to False (one device).
    """
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            layer.synchronized = synchronized
