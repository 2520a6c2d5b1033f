"""`--remat`: backbone stages recomputed in the backward pass instead of kept.

Training keeps every layer's output until the backward pass has used it. At
the book's 640x480 the ResNet backbone's outputs are the larger part of that
memory, most of them in stage 0, which runs at full resolution. With `--remat`
the backbone is cut at its stage boundaries; a training step keeps only each
recomputed segment's input, and the backward pass reruns that segment's
forward pass just before its gradient, one segment at a time:

- `stage0`: the stem and stage 0 are recomputed (the full-resolution part);
- `all`: each of the three segments (stem and stage 0; stage 1; stage 2 with
  the pyramid) in turn;
- `auto`, the default: `stage0` for training batches of at least
  `AUTO_MIN_BATCH_PIXELS` pixels (the book's 640x480 batch 4), `off`
  below and with synchronized BatchNormalization.

Each level trades time for memory (docs/speed.md has the measurements). The
arithmetic is the same, so the weights, the gradients and the BatchNormalization
statistics are those of a run without it.

The model's layers are untouched (only how the backbone is called during
training changes), so weights files, the book's `.h5` files included, load
either way.

On TensorFlow a segment's gradient is a `tf.custom_gradient`; under JAX and
PyTorch it is Keras' own `keras.remat` (`jax.checkpoint`,
`torch.utils.checkpoint`) around a stateless call of the segment, whose new
BatchNormalization statistics are assigned once, from the forward pass.
"""

import keras

from resnet import stage_outputs
from segmentation import backend, batchnorm

AUTO = "auto"
LEVELS = ("off", "stage0", "all")
# The book's 640x480 batch 4 holds 1.2 million pixels, the largest memory of its runs; smaller batches
# keep proportionally less and gain too little memory for the recomputation's time.
AUTO_MIN_BATCH_PIXELS = 1_000_000


def remat_level(choice: str, batch_size: int, height: int, width: int, synchronized: bool) -> str:
    """What `--remat` recomputes for a run.

    Args:
        choice: str. `"auto"` or one of `LEVELS`.
        batch_size: int. Training images per step.
        height: int. Image height.
        width: int. Image width.
        synchronized: bool. Whether BatchNormalization is synchronized
            (`--distribute`), whose statistics cannot be held back.

    Returns:
        One of `LEVELS`: `choice` itself unless it is `"auto"`.

    Example:

    >>> remat_level("auto", 4, 480, 640, synchronized=False)
    'stage0'
    >>> remat_level("auto", 4, 96, 128, synchronized=False)
    'off'
    """
    if choice != AUTO:
        return choice
    if synchronized or batch_size * height * width < AUTO_MIN_BATCH_PIXELS:
        return "off"
    return "stage0"


def recomputed(segment: keras.Model):
    """`segment`'s training call as a function whose backward pass reruns the forward pass.

    Args:
        segment: keras.Model. One input, BatchNormalization layers that are
            `batchnorm.BatchNormalization`, unsynchronized.

    Returns:
        A function of the segment's input tensor.
    """
    if not backend.is_tensorflow():
        return recomputed_by_keras(segment)
    tf = backend.import_tensorflow()
    norms = [layer for layer in segment._flatten_layers(include_self=False)
             if isinstance(layer, keras.layers.BatchNormalization)]

    @tf.custom_gradient
    def forward(inputs):
        outputs = segment(inputs, training=True)

        def backward(*output_gradients, variables):
            output_gradients = [tf.zeros_like(output) if gradient is None else gradient
                                for output, gradient in zip(tf.nest.flatten(outputs), output_gradients)]
            # Ordered after the incoming gradients: a recomputation with the same inputs as the
            # forward pass is merged into it by TensorFlow's graph optimizer, keeping every activation.
            with tf.control_dependencies(output_gradients):
                inputs_again = tf.identity(inputs)
            with tf.GradientTape() as tape:
                tape.watch(inputs_again)
                # The batch was counted in the statistics by the forward pass.
                for norm in norms:
                    norm.update_statistics = False
                try:
                    outputs_again = segment(inputs_again, training=True)
                finally:
                    for norm in norms:
                        norm.update_statistics = True
            gradients = tape.gradient(
                tf.nest.flatten(outputs_again), [inputs_again, *variables], output_gradients=output_gradients
            )
            return gradients[0], gradients[1:]

        return outputs, backward

    return forward


def recomputed_by_keras(segment: keras.Model):
    """`recomputed` under JAX or PyTorch: `keras.remat` around the segment's stateless training call.

    The recomputation in the backward pass reruns the pure function only, so
    the moving statistics it returns again are dropped; those of the forward
    pass are assigned once.

    Args:
        segment: keras.Model. One input.

    Returns:
        A function of the segment's input tensor.
    """

    def stateless_forward(trainable_values, non_trainable_values, inputs):
        return segment.stateless_call(trainable_values, non_trainable_values, inputs, training=True)

    checkpointed = keras.remat(stateless_forward)

    def forward(inputs):
        outputs, non_trainable_values = checkpointed([variable.value for variable in segment.trainable_variables],
                                                     [variable.value for variable in segment.non_trainable_variables],
                                                     inputs)
        for variable, value in zip(segment.non_trainable_variables, non_trainable_values):
            variable.assign(value)
        return outputs

    return forward


def recompute_in_backward(backbone: keras.Model, level: str = "all") -> None:
    """Makes `backbone`'s training calls keep only its segments' inputs for the backward pass.

    It replaces this instance's `call` (the class and the layers stay as
    they are, so saving and loading are unchanged); calls with
    `training=False` go straight to the original.

    The recomputation reruns each BatchNormalization in training mode, on the
    same batch, with the same result; its moving statistics are updated in the
    forward pass only.

    Args:
        backbone: keras.Model. The ResNet v2 backbone (`resnet.build_resnet`),
            called as a layer of a bigger model (the FCN). Its
            BatchNormalization layers must be `batchnorm.BatchNormalization`
            without synchronisation (one device), the layers whose statistics
            updates can be held back.
        level: str. `"stage0"` or `"all"` (see the module's docstring);
            `"off"` leaves the backbone as it is. Defaults to `"all"`.

    Raises:
        ValueError: for another level, or if a BatchNormalization layer is
            synchronized or is Keras' own, whose statistics a recomputation
            would update twice.
    """
    if level not in LEVELS:
        raise ValueError(f"Unknown recomputation level {level!r}: expected one of {', '.join(LEVELS)}.")
    if level == "off":
        return
    # Off TensorFlow every BatchNormalization is suitable: the recomputation is a stateless call.
    held_back = backend.is_tensorflow()
    unsuitable = [layer.name for layer in backbone._flatten_layers(include_self=False)
                  if isinstance(layer, keras.layers.BatchNormalization)
                  and (layer.synchronized or (held_back and not isinstance(layer, batchnorm.BatchNormalization)))]
    if unsuitable:
        raise ValueError(
            "Recomputing these BatchNormalization layers would update their statistics twice (synchronized, "
            f"or not batchnorm.BatchNormalization): {', '.join(unsuitable)}"
        )
    # Models between intermediate tensors of the backbone's graph: they share its layers and weights.
    cuts = stage_outputs(backbone)[: 1 if level == "stage0" else 2]
    bounds = [backbone.inputs[0], *cuts]
    segments = [recomputed(keras.Model(start, end)) for start, end in zip(bounds[:-1], bounds[1:])]
    rest = keras.Model(bounds[-1], backbone.outputs)
    if level == "all":
        segments.append(recomputed(rest))
    else:
        segments.append(lambda inputs: rest(inputs, training=True))
    call = backbone.call

    def recomputing_call(inputs, training=None, mask=None):
        if not training:
            return call(inputs, training=training, mask=mask)
        for segment in segments:
            inputs = segment(inputs)
        return inputs

    backbone.call = recomputing_call
