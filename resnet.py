"""ResNet v2 backbone and features pyramid (Figure 12.2.3, Listing 12.3.1).

The backbone is the book's ResNet v2 (chapter 2, reused in chapter 11): a
pre-activation bottleneck network, `He et al., Identity Mappings in Deep
Residual Networks <https://arxiv.org/abs/1603.05027>`_. Its last feature map is
1/4 of the input; `features_pyramid` adds the 1/8, 1/16, 1/32 ... maps the FCN
head fuses.

Layer order and every weight-carrying layer follow the book's published code,
because the book's trained `.h5` weights are loaded by layer order. Layers the
book left unnamed get explicit names here; names the book set are kept verbatim
(`pool1`, `conv__layer2`, ...).
"""

import keras
from keras import layers

from segmentation import batchnorm

L2_WEIGHT_DECAY = 1e-4
PYRAMID_FILTERS = 512


def backbone_name(depth: int) -> str:
    """The backbone's name, which opens the weights name: `ResNet56v2` for depth 56."""
    return f"ResNet{depth}v2"


def check_input_shape(input_shape: tuple[int, int, int], n_layers: int) -> None:
    """Refuses an input size the features pyramid cannot divide evenly.

    The smallest pyramid map is 1/2**(n_layers + 2) of the input, and the FCN
    head upsamples every map back to 1/4 and then to full size, so H and W must
    be multiples of that factor.

    Args:
        input_shape: tuple. `(height, width, channels)`.
        n_layers: int. Number of pyramid maps after the main one.

    Raises:
        ValueError: naming the size received, the rule and the nearest valid
            sizes.
    """
    if n_layers < 1:
        raise ValueError(
            f"The number of pyramid layers must be at least 1. Received: layers={n_layers}"
        )
    height, width, channels = input_shape
    if channels < 1:
        raise ValueError(f"channels must be at least 1. Received: channels={channels}")
    factor = 2 ** (n_layers + 2)
    for name, size in (("height", height), ("width", width)):
        if size < factor or size % factor:
            lower = max(factor, size // factor * factor)
            upper = max(factor, -(-size // factor) * factor)
            nearest = f"{lower}" if lower == upper else f"{lower} or {upper}"
            raise ValueError(
                f"--{name} must be a multiple of 2**(layers + 2) = {factor} for "
                f"layers={n_layers}. Received: {name}={size}. Nearest valid: {nearest}."
            )


def resnet_layer(
    inputs,
    num_filters: int = 16,
    kernel_size: int = 3,
    strides: int = 1,
    activation: str | None = "relu",
    batch_normalization: bool = True,
    conv_first: bool = True,
    name: str = "resnet",
):
    """Conv2D-BN-ReLU (or BN-ReLU-Conv2D) stack of the book's ResNet.

    Args:
        inputs: tensor. The block's input.
        num_filters: int. Conv2D filters. Defaults to 16.
        kernel_size: int. Square kernel size. Defaults to 3.
        strides: int. Square strides. Defaults to 1.
        activation: str or None. Activation name, None for none. Defaults to
            `"relu"`.
        batch_normalization: bool. Whether to add BatchNormalization. Defaults
            to True.
        conv_first: bool. Conv-BN-activation when True, BN-activation-conv
            (pre-activation, ResNet v2) when False. Defaults to True.
        name: str. Prefix of the layer names.

    Returns:
        The output tensor.
    """
    conv = layers.Conv2D(
        num_filters,
        kernel_size=kernel_size,
        strides=strides,
        padding="same",
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(L2_WEIGHT_DECAY),
        name=f"{name}_conv",
    )
    x = inputs
    if conv_first:
        x = conv(x)
    if batch_normalization:
        x = batchnorm.BatchNormalization(name=f"{name}_bn")(x)
    if activation is not None:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    if not conv_first:
        x = conv(x)
    return x


def conv_layer(
    inputs,
    filters: int = 32,
    kernel_size: int = 3,
    strides: int = 1,
    use_maxpool: bool = True,
    postfix: str = "",
):
    """Conv2D-BN-ReLU with an optional MaxPooling2D (the book's `conv_layer`).

    Used by the features pyramid and the FCN head. No weight decay, as in the
    book.

    Args:
        inputs: tensor. The block's input.
        filters: int. Conv2D filters. Defaults to 32.
        kernel_size: int. Square kernel size. Defaults to 3.
        strides: int. Square strides. Defaults to 1.
        use_maxpool: bool. Whether to end with a 2x2 MaxPooling2D. Defaults to
            True.
        postfix: str. Suffix of the layer names, as in the book
            (`"conv_" + postfix`).

    Returns:
        The output tensor.
    """
    x = layers.Conv2D(
        filters=filters,
        kernel_size=kernel_size,
        strides=strides,
        kernel_initializer="he_normal",
        padding="same",
        name=f"conv_{postfix}",
    )(inputs)
    x = batchnorm.BatchNormalization(name=f"bn_{postfix}")(x)
    x = layers.Activation("relu", name=f"relu_{postfix}")(x)
    if use_maxpool:
        x = layers.MaxPooling2D(name=f"pool{postfix}")(x)
    return x


def features_pyramid(x, n_layers: int) -> list:
    """Features pyramid from the backbone's last feature map (Listing 12.3.1).

    Args:
        x: tensor. The backbone's main feature map (1/4 of the input).
        n_layers: int. Number of maps after the main one: an average pool
            (1/8), then `n_layers - 1` stride-2 Conv2D-BN-ReLU maps (1/16,
            1/32, ...).

    Returns:
        The list `[main, 1/8, 1/16, ...]`, the book's order.
    """
    outputs = [x]
    conv = layers.AveragePooling2D(pool_size=2, name="pool1")(x)
    outputs.append(conv)
    for i in range(n_layers - 1):
        # The book's postfix "_layer2" yields the names conv__layer2, bn__layer2.
        conv = conv_layer(
            conv,
            PYRAMID_FILTERS,
            kernel_size=3,
            strides=2,
            use_maxpool=False,
            postfix=f"_layer{i + 2}",
        )
        outputs.append(conv)
    return outputs


def resnet_v2(input_shape: tuple[int, int, int], depth: int, n_layers: int = 4) -> keras.Model:
    """ResNet v2 backbone with a features pyramid.

    Three stages of bottleneck units (1x1, 3x3, 1x1, BN-ReLU before each conv)
    with 64, 128 and 256 output filters; stages 1 and 2 open with a stride-2
    unit, so the main feature map is 1/4 of the input.

    Args:
        input_shape: tuple. `(height, width, channels)`.
        depth: int. Number of core conv layers, 9n + 2 (56 in the book).
        n_layers: int. Pyramid maps after the main one. Defaults to 4.

    Returns:
        A `keras.Model` named `ResNet{depth}v2` whose outputs are the pyramid.

    Raises:
        ValueError: if depth is not 9n + 2 or the input size does not suit
            `n_layers`.
    """
    if depth < 11 or (depth - 2) % 9:
        raise ValueError(
            f"ResNet v2 depth must be 9n + 2 with n >= 1 (e.g. 11, 56, 110). Received: depth={depth}"
        )
    check_input_shape(input_shape, n_layers)
    num_res_blocks = (depth - 2) // 9
    num_filters_in = 16

    # === Layers ===
    inputs = keras.Input(shape=input_shape, name="image")
    x = resnet_layer(inputs, num_filters=num_filters_in, conv_first=True, name="stem")
    for stage in range(3):
        for res_block in range(num_res_blocks):
            prefix = f"stage{stage}_block{res_block}"
            activation = "relu"
            batch_normalization = True
            strides = 1
            if stage == 0:
                num_filters_out = num_filters_in * 4
                if res_block == 0:
                    # The stem already ended in BN-ReLU.
                    activation = None
                    batch_normalization = False
            else:
                num_filters_out = num_filters_in * 2
                if res_block == 0:
                    strides = 2
            y = resnet_layer(
                x,
                num_filters=num_filters_in,
                kernel_size=1,
                strides=strides,
                activation=activation,
                batch_normalization=batch_normalization,
                conv_first=False,
                name=f"{prefix}_1",
            )
            y = resnet_layer(y, num_filters=num_filters_in, conv_first=False, name=f"{prefix}_2")
            y = resnet_layer(
                y, num_filters=num_filters_out, kernel_size=1, conv_first=False, name=f"{prefix}_3"
            )
            if res_block == 0:
                x = resnet_layer(
                    x,
                    num_filters=num_filters_out,
                    kernel_size=1,
                    strides=strides,
                    activation=None,
                    batch_normalization=False,
                    name=f"{prefix}_shortcut",
                )
            x = layers.Add(name=f"{prefix}_add")([x, y])
        num_filters_in = num_filters_out
    x = batchnorm.BatchNormalization(name="post_bn")(x)
    x = layers.Activation("relu", name="post_relu")(x)
    outputs = features_pyramid(x, n_layers)

    # === Functional Model ===
    return keras.Model(inputs=inputs, outputs=outputs, name=backbone_name(depth))


def stage_outputs(backbone: keras.Model) -> list:
    """The output tensors of the backbone's three stages, in order.

    Args:
        backbone: keras.Model. Built by `build_resnet`.

    Returns:
        For each stage, the output of its last unit's addition
        (`stage{s}_block{n-1}_add`): full, half and quarter resolution.
    """
    last_units = {}
    for layer in backbone.layers:  # in the order they are applied
        stage = layer.name.split("_")[0]
        if stage.startswith("stage") and layer.name.endswith("_add"):
            last_units[stage] = layer
    return [last_units[stage].output for stage in sorted(last_units)]


def build_resnet(
    input_shape: tuple[int, int, int], n_layers: int = 4, n: int = 6
) -> keras.Model:
    """Builds the ResNet v2 backbone of the FCN (the book's `build_resnet`).

    The book's builder also offered ResNet v1, whose code could not run
    (undefined `n_layers`); only v2 is used in chapter 12, so only v2 is kept.

    Args:
        input_shape: tuple. `(height, width, channels)`.
        n_layers: int. Pyramid maps after the main one. Defaults to 4 (the
            CLI's `--layers` default is 3).
        n: int. Bottleneck units per stage; depth = 9n + 2. Defaults to 6
            (ResNet56v2).

    Returns:
        The backbone `keras.Model`.

    Example:

    >>> backbone = build_resnet((64, 64, 3), n_layers=1, n=1)
    >>> backbone.name
    'ResNet11v2'
    """
    return resnet_v2(input_shape, depth=9 * n + 2, n_layers=n_layers)
