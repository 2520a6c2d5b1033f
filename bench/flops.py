"""The FCN's forward cost, counted from its layers (any Keras, any backend)."""

import numpy as np


def conv_flops_per_image(model) -> int:
    """Floating-point operations of one image's forward pass through the convolutions.

    An analytic count: every multiply-add of a `Conv2D` or `Conv2DTranspose`
    kernel is 2 FLOPs (biases, batch normalisation, ReLU, pooling, upsampling
    and softmax are left out; they are a few percent at most). Nested models
    (the backbone) are counted through.

    Args:
        model: keras.Model or tf_keras.Model (the book's). A built functional model.

    Returns:
        FLOPs per image.
    """
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if hasattr(layer, "layers"):  # a nested keras.Model or tf_keras.Model
            total += conv_flops_per_image(layer)
        elif kind == "Conv2DTranspose":
            # Each input pixel scatters a kernel_size window of every output channel.
            _, height, width, in_channels = layer.input.shape
            total += 2 * height * width * in_channels * int(np.prod(layer.kernel_size)) * layer.filters
        elif kind == "Conv2D":
            _, height, width, out_channels = layer.output.shape
            in_channels = layer.input.shape[-1]
            total += 2 * height * width * out_channels * int(np.prod(layer.kernel_size)) * in_channels
    return total
