"""`--remat`: the backbone's activations recomputed in the backward pass instead of kept.

Training keeps every layer's output until the backward pass has used it. At
the book's 640x480 the ResNet backbone's outputs, most of them at full and
half resolution, are the larger part of that memory. With `--remat` a training
step keeps only the backbone's input and its pyramid of outputs; the backward
pass runs the backbone's forward pass again, then its gradient. The head's
activations are gone by then, so the two never share memory. Measured at
640x480, batch 4, mixed bfloat16 (README, Speed on a CPU): peak memory 12.3 ->
10.2 GB, each step 12 % slower (6-19 % in three measurements). The
arithmetic is the same, so the weights, the gradients and the
BatchNormalization statistics are those of a run without it.

The model's layers are untouched (only how the backbone is called during
training changes), so weights files, the book's `.h5` files included, load
either way.
"""

import keras
import tensorflow as tf

import batchnorm


def recompute_in_backward(backbone: keras.Model) -> None:
    """Makes `backbone`'s training calls keep only its input and outputs for the backward pass.

    It replaces this instance's `call` (the class and the layers stay as
    they are, so saving and loading are unchanged); calls with
    `training=False` go straight to the original.

    The recomputation reruns each BatchNormalization in training mode, on the
    same batch, with the same result; its moving statistics are updated in the
    forward pass only.

    Args:
        backbone: keras.Model. Called as a layer of a bigger model (the FCN).
            Its BatchNormalization layers must be `batchnorm.BatchNormalization`
            without synchronisation (one device), the layers whose statistics
            updates can be held back.

    Raises:
        ValueError: if a BatchNormalization layer is synchronized or is Keras'
            own, whose statistics a recomputation would update twice.
    """
    norms = [layer for layer in backbone._flatten_layers(include_self=False)
             if isinstance(layer, keras.layers.BatchNormalization)]
    unsuitable = [layer.name for layer in norms
                  if layer.synchronized or not isinstance(layer, batchnorm.BatchNormalization)]
    if unsuitable:
        raise ValueError(
            "Recomputing these BatchNormalization layers would update their statistics twice (synchronized, "
            f"or not batchnorm.BatchNormalization): {', '.join(unsuitable)}"
        )
    call = backbone.call

    def recomputing_call(inputs, training=None, mask=None):
        if not training:
            return call(inputs, training=training, mask=mask)

        @tf.custom_gradient
        def forward(images):
            outputs = call(images, training=True, mask=mask)

            def backward(*output_gradients, variables):
                output_gradients = [tf.zeros_like(output) if gradient is None else gradient
                                    for output, gradient in zip(tf.nest.flatten(outputs), output_gradients)]
                # Ordered after the incoming gradients: a recomputation with the same inputs as the
                # forward pass is merged into it by TensorFlow's graph optimizer, keeping every activation.
                with tf.control_dependencies(output_gradients):
                    images_again = tf.identity(images)
                with tf.GradientTape() as tape:
                    tape.watch(images_again)
                    for norm in norms:
                        norm.update_statistics = False
                    try:
                        outputs_again = call(images_again, training=True, mask=mask)
                    finally:
                        for norm in norms:
                            norm.update_statistics = True
                gradients = tape.gradient(
                    tf.nest.flatten(outputs_again), [images_again, *variables], output_gradients=output_gradients
                )
                return gradients[0], gradients[1:]

            return outputs, backward

        return forward(inputs)

    backbone.call = recomputing_call
