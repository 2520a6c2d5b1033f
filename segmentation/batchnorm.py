"""BatchNormalization in one fused TensorFlow op, as the book's Keras 2 ran it.

Keras 3 normalizes with a chain of elementwise ops (moments, subtract, scale,
shift), each keeping its full-size result for the backward pass. Keras 2, the
book's, called TensorFlow's fused kernel: one op forward, one op backward, and
only its input and the batch statistics kept. On the FCN's full-resolution
maps that chain holds much of a training step's memory and time
(docs/speed.md). `batchnorm.BatchNormalization` is Keras'
BatchNormalization with the same weights and options, normalizing 4-D
channels-last maps with `FusedBatchNormV3`; everything else (other ranks,
axes or dtypes, masks, synchronized statistics for `--distribute`) goes to
Keras' own code, as does every other Keras backend (the network builds under
JAX or PyTorch too, which `bench/gpu.py` uses where TensorFlow is absent).

The class keeps Keras' name on purpose: a `.weights.h5` file stores each
layer's weights under its class name, so this name lets weights saved with
Keras' layer load into this one and back.
"""

import keras

from segmentation import backend

if backend.is_tensorflow():
    import tensorflow as tf


@keras.saving.register_keras_serializable(package="fcn")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, fused for 4-D channels-last maps.

    The weights (`gamma`, `beta`, `moving_mean`, `moving_variance`) and their
    names are Keras', so weights files load either way. One difference, kept on
    purpose: the moving variance is updated with the unbiased batch variance
    (divided by N - 1), as Keras 2's fused layer did; Keras 3 divides by N.

    Example:

    >>> layer = BatchNormalization(momentum=0.9)
    >>> layer(keras.ops.ones((2, 4, 4, 3)), training=True).shape
    TensorShape([2, 4, 4, 3])
    """

    # False while `remat.recompute_in_backward` reruns the forward pass: the batch was counted once already.
    update_statistics = True

    def _is_fused(self, inputs, mask) -> bool:
        return (
            backend.is_tensorflow()
            and mask is None
            and not self.synchronized
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and inputs.dtype in (tf.float32, tf.bfloat16, tf.float16)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._is_fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        moving_mean, moving_variance = self.moving_mean.value, self.moving_variance.value
        scale = self.gamma.value if self.scale else tf.ones_like(moving_mean)
        offset = self.beta.value if self.center else tf.zeros_like(moving_mean)
        is_training = bool(training and self.trainable)
        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=scale,
            offset=offset,
            mean=moving_mean,
            variance=moving_variance,
            epsilon=self.epsilon,
            # The op's own moving-average update: new = (1 - factor) * old + factor * batch.
            exponential_avg_factor=1.0 - self.momentum if is_training else 1.0,
            data_format="NHWC",
            is_training=is_training,
        )
        if is_training and self.update_statistics:
            self.moving_mean.assign(mean)
            self.moving_variance.assign(variance)
        return tf.cast(outputs, self.compute_dtype)
