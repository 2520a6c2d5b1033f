"""The two sides of a FLOP/s share, on any Keras backend: the FCN's forward cost and the matmul peak."""

import time

import keras
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


def synchronize(tensor) -> None:
    """Waits until `tensor` is computed (some backends run asynchronously)."""
    keras.ops.convert_to_numpy(keras.ops.ravel(tensor)[:1])


def measure_matmul(size: int, seconds: float) -> dict:
    """Best matmul throughput of two `size` x `size` matrices, float32 and bfloat16, in GFLOP/s.

    Args:
        size: int. Matrix side (2048 in a full CPU run, 8192 on a GPU).
        seconds: float. Time spent timing each dtype (at least 3 products).

    Returns:
        `{"matmul_peak_gflops_fp32": ..., "matmul_peak_gflops_bf16": ...}`.
    """
    result = {}
    for dtype, key in (("float32", "matmul_peak_gflops_fp32"), ("bfloat16", "matmul_peak_gflops_bf16")):
        left = keras.random.uniform((size, size), dtype=dtype, seed=0)
        right = keras.random.uniform((size, size), dtype=dtype, seed=1)
        synchronize(keras.ops.matmul(left, right))  # warm-up: kernel selection, thread pool
        times = []
        start = time.perf_counter()
        while len(times) < 3 or time.perf_counter() - start < seconds:
            begin = time.perf_counter()
            synchronize(keras.ops.matmul(left, right))
            times.append(time.perf_counter() - begin)
        result[key] = 2 * size**3 / min(times) / 1e9
    return result
