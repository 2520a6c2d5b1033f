"""The book's chapter 12 network built with Keras 2 (`tf_keras`), as the book ran it.

Two users: the benchmark's *book* baseline (`bench/worker.py`), which times the
book's network on the book's framework, and the weights-compatibility test
(`tests/test_book_weights.py`). The book trained its published
`ResNet56v2-3layer-drinks-best-iou.h5` with `tensorflow.keras` 2.x and saved it
with `model.save_weights` in the legacy HDF5 format. That file cannot be
downloaded here, so this module rebuilds the same network (SPEC section 3:
ResNet v2 backbone, features pyramid of Listing 12.3.1, head of Listing
12.3.2) with the Keras 2 API, calling the layers in the book's order and
leaving unnamed the layers the book left unnamed, and writes its weights the
way the book did. Development only (`tf_keras` is in requirements-dev.txt):
the product code never imports it.
"""

import numpy as np
import tf_keras
from tf_keras import layers


def _resnet_layer(x, num_filters: int, kernel_size: int = 3, strides: int = 1, activation: str | None = "relu",
                  batch_normalization: bool = True, conv_first: bool = True):
    """The book's Conv2D-BN-ReLU stack (or BN-ReLU-Conv2D when not `conv_first`), L2 1e-4, unnamed layers."""
    conv = layers.Conv2D(num_filters, kernel_size=kernel_size, strides=strides, padding="same",
                         kernel_initializer="he_normal", kernel_regularizer=tf_keras.regularizers.l2(1e-4))
    if conv_first:
        x = conv(x)
    if batch_normalization:
        x = layers.BatchNormalization()(x)
    if activation is not None:
        x = layers.Activation(activation)(x)
    if not conv_first:
        x = conv(x)
    return x


def _conv_layer(x, filters: int, strides: int, postfix: str):
    """The book's named Conv2D-BN-ReLU (`conv_`, `bn_`, `relu_` + postfix), no weight decay."""
    x = layers.Conv2D(filters, kernel_size=3, strides=strides, kernel_initializer="he_normal", padding="same",
                      name=f"conv_{postfix}")(x)
    x = layers.BatchNormalization(name=f"bn_{postfix}")(x)
    return layers.Activation("relu", name=f"relu_{postfix}")(x)


def _tconv_layer(x, filters: int, postfix: str):
    """The book's stride-2 Conv2DTranspose-BN-ReLU."""
    x = layers.Conv2DTranspose(filters, kernel_size=3, strides=2, padding="same", kernel_initializer="he_normal",
                               name=f"tconv_{postfix}")(x)
    x = layers.BatchNormalization(name=f"bn_{postfix}")(x)
    return layers.Activation("relu", name=f"relu_{postfix}")(x)


def build_book_backbone(input_shape: tuple[int, int, int], n_layers: int = 3, n: int = 6) -> tf_keras.Model:
    """The book's ResNet v2 (depth 9n + 2) with its features pyramid, as a Keras 2 model.

    Args:
        input_shape: tuple. `(height, width, channels)`.
        n_layers: int. Pyramid maps after the main one. Defaults to 3.
        n: int. Bottleneck units per stage. Defaults to 6 (ResNet56v2).

    Returns:
        A `tf_keras.Model` named `ResNet{9n+2}v2` returning `[main, 1/8, 1/16, ...]`.
    """
    num_filters_in = 16
    inputs = layers.Input(shape=input_shape)
    x = _resnet_layer(inputs, num_filters_in)
    for stage in range(3):
        for res_block in range(n):
            activation, batch_normalization, strides = "relu", True, 1
            if stage == 0:
                num_filters_out = num_filters_in * 4
                if res_block == 0:
                    activation, batch_normalization = None, False
            else:
                num_filters_out = num_filters_in * 2
                if res_block == 0:
                    strides = 2
            y = _resnet_layer(x, num_filters_in, kernel_size=1, strides=strides, activation=activation,
                              batch_normalization=batch_normalization, conv_first=False)
            y = _resnet_layer(y, num_filters_in, conv_first=False)
            y = _resnet_layer(y, num_filters_out, kernel_size=1, conv_first=False)
            if res_block == 0:
                x = _resnet_layer(x, num_filters_out, kernel_size=1, strides=strides, activation=None,
                                  batch_normalization=False)
            x = layers.Add()([x, y])
        num_filters_in = num_filters_out
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    outputs = [x, layers.AveragePooling2D(pool_size=2, name="pool1")(x)]
    for level in range(2, n_layers + 1):
        outputs.append(_conv_layer(outputs[-1], 512, strides=2, postfix=f"_layer{level}"))
    return tf_keras.Model(inputs=inputs, outputs=outputs, name=f"ResNet{9 * n + 2}v2")


def build_book_fcn(input_shape: tuple[int, int, int], n_layers: int = 3, n: int = 6,
                   n_classes: int = 4) -> tf_keras.Model:
    """The book's FCN (Listing 12.3.2) around `build_book_backbone`, as a Keras 2 model.

    Args:
        input_shape: tuple. `(height, width, channels)`.
        n_layers: int. Pyramid maps after the main one. Defaults to 3.
        n: int. Bottleneck units per backbone stage. Defaults to 6.
        n_classes: int. Classes including background. Defaults to 4.

    Returns:
        The `tf_keras.Model` named `fcn`.
    """
    inputs = layers.Input(shape=input_shape)
    main_feature, *coarser_features = build_book_backbone(input_shape, n_layers, n)(inputs)
    out_features = [main_feature]
    for level, feature in enumerate(coarser_features, start=1):
        postfix = f"fcn_{4 * 2**level}"
        feature = _conv_layer(feature, 256, strides=1, postfix=postfix)
        out_features.append(layers.UpSampling2D(size=2**level, interpolation="bilinear",
                                                name=f"{postfix}_up2d")(feature))
    x = layers.Concatenate()(out_features)
    x = _tconv_layer(x, 256, postfix="up_x2")
    x = _tconv_layer(x, 256, postfix="up_x4")
    x = layers.Conv2DTranspose(n_classes, kernel_size=1, strides=1, padding="same", kernel_initializer="he_normal",
                               name="pre_activation")(x)
    x = layers.Softmax(name="segmentation")(x)
    return tf_keras.Model(inputs, x, name="fcn")


def randomize_weights(model: tf_keras.Model, images: np.ndarray, seed: int = 0) -> None:
    """Gives every bias and batch-norm vector its own values, as training would.

    Freshly built, all batch normalizations hold the same values (1, 0, 0, 1)
    and every bias is 0, so vectors loaded into the wrong layer of the same
    shape would go unnoticed. Here biases, gammas and betas get random values,
    then every moving mean and variance is set to its layer's statistics on
    `images` (one forward pass in training mode with momentum 0), so the
    activations stay normalised through all 9n + 2 layers, as in a trained
    network, and each layer's statistics are its own. The kernels keep their
    He-normal values, already random and layer-specific.

    Args:
        model: tf_keras.Model. Its weights are replaced in place.
        images: np.ndarray. A batch of inputs for the statistics.
        seed: int. Seed of the random values. Defaults to 0.
    """
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        value = weight.numpy()
        if "gamma" in weight.name:
            value = rng.uniform(0.5, 1.5, value.shape)
        elif value.ndim == 1 and "moving_" not in weight.name:
            value = rng.normal(0.0, 0.1, value.shape)
        values.append(value.astype(np.float32))
    model.set_weights(values)
    norms = [layer for layer in model.submodules if isinstance(layer, layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(images, training=True)
    for layer in norms:
        layer.momentum = 0.99
