"""`--precise-bn` (project addition to Listing 12.3.3): BatchNormalization statistics of the training images.

During training each BatchNormalization layer follows its batches' mean and variance with a moving
average (`--bn-momentum`, e.g. 0.9): at batch 4 that average is mostly the epoch's last few
batches, so the per-epoch evaluation, which normalizes with it, swings with them. With
`--precise-bn` the moving mean and variance are recomputed before each per-epoch evaluation as the
population statistics of the network being evaluated: the average of the batch means and of the
batch variances over the first `MAX_IMAGES` training images of the epoch's order, unaugmented, in
batches of `--batch-size` (statistics are per batch, as in training), as Detectron2's
`update_bn_stats` does ([Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021](
https://arxiv.org/abs/2105.07576)). It is one compiled forward pass in training mode per batch,
without gradients; every other variable stays as it is. Under `--ema` it runs on the averaged weights, the
ones evaluated and saved. The statistics stay in the model afterwards, and so in the resume state:
training normalizes with each batch's own statistics, so they change nothing it learns, and the next
evaluation recomputes them.
"""

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator

import keras
import numpy as np

from data_generator import DataGenerator
from segmentation import backend
from segmentation.errors import UsageError
from segmentation.ground_truth.fit_to_size import random_crop

logger = logging.getLogger(__name__)

# Detectron2 recomputes over 200 iterations; at batch 4, 200 images are 50 forward passes, under a third of
# the cost of a training epoch on the demo's 300 images (a forward pass is about a third of a step).
MAX_IMAGES = 200


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of `model`, nested models (the backbone) searched too."""
    return [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)]


@contextlib.contextmanager
def _zero_momentum(layers: list[keras.layers.BatchNormalization]) -> Iterator[None]:
    """Momentum 0 for the block, so a training call's new moving statistics are its batch's; then put back."""
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def _compiled(function):
    """`function` compiled for the backend (a TensorFlow graph, `jax.jit`); under PyTorch, without autograd."""
    if backend.is_tensorflow():
        return backend.import_tensorflow().function(function)
    if backend.name() == backend.JAX:
        import jax

        return jax.jit(function)
    import torch

    return torch.no_grad()(function)


class BatchStatistics:
    """Each BatchNormalization layer's batch mean and variance of a batch of images, as in training.

    One compiled training-mode forward pass of `model`, stateless (`Model.stateless_call`): no
    variable is read back or assigned, no gradient is taken. The statistics are what the layer's
    training call would average into its moving mean and variance (`batchnorm.BatchNormalization`'s
    fused kernel divides the variance by N - 1, Keras' own layer by N). The pass is compiled on the
    first call, each layer's momentum 0 around every call (the compiled pass keeps it).

    Args:
        model: keras.Model. Its layers must not be synchronized (one device).

    Raises:
        ValueError: if a BatchNormalization layer is synchronized (`--distribute`), whose
            statistics this single-device pass cannot reproduce.
    """

    def __init__(self, model: keras.Model):
        # A frozen layer keeps its statistics in training too.
        self.layers = [layer for layer in batchnorm_layers(model) if layer.trainable]
        synchronized = [layer.name for layer in self.layers if layer.synchronized]
        if synchronized:
            raise ValueError("Precise BatchNormalization statistics are computed on one device; these layers are "
                             f"synchronized across replicas: {', '.join(synchronized)}")
        self.model = model
        position = {id(variable): index for index, variable in enumerate(model.non_trainable_variables)}
        self._positions = [position[id(variable)] for layer in self.layers
                           for variable in (layer.moving_mean, layer.moving_variance)]
        self._forward = _compiled(self._statistics)

    def moving_variables(self) -> list[keras.Variable]:
        """Each layer's moving mean and moving variance, in the order `__call__` returns their statistics."""
        return [variable for layer in self.layers for variable in (layer.moving_mean, layer.moving_variance)]

    def _statistics(self, trainable_values: list, non_trainable_values: list, images) -> list:
        _, new_values = self.model.stateless_call(trainable_values, non_trainable_values, images, training=True)
        return [new_values[index] for index in self._positions]

    def __call__(self, images: np.ndarray) -> list:
        """The batch mean and variance of each layer in turn (`moving_variables`' order) for `images`."""
        with _zero_momentum(self.layers):
            return self._forward([variable.value for variable in self.model.trainable_variables],
                                 [variable.value for variable in self.model.non_trainable_variables], images)


def recompute_batchnorm_statistics(model: keras.Model, batches: Iterable,
                                   statistics: BatchStatistics | None = None) -> int:
    """Sets each BatchNormalization layer's moving mean and variance to their averages over `batches`.

    Each batch goes once through `model` in training mode, all layers at once (`BatchStatistics`);
    each layer's moving mean becomes the mean of its batch means, its moving variance the mean of
    its batch variances (Detectron2's `update_bn_stats`). Nothing else changes: no other variable,
    no momentum, no gradient; a non-trainable (frozen) layer keeps its statistics, as in training.
    Without any batch nothing changes.

    Args:
        model: keras.Model. The network; its layers must not be synchronized (one device).
        batches: iterable of float arrays `(N, H, W, 3)`. The images, in batches of the training size.
        statistics: BatchStatistics or None. `model`'s compiled pass, kept from an earlier call to
            save compiling it again. Defaults to None (compiled here).

    Returns:
        The number of batches passed through.

    Raises:
        ValueError: if a BatchNormalization layer is synchronized (`--distribute`).

    Example:

    >>> recompute_batchnorm_statistics(fcn, (images[i : i + 4] for i in range(0, 200, 4)))
    50
    """
    statistics = statistics or BatchStatistics(model)
    sums = None
    count = 0
    for images in batches:
        values = statistics(images)
        sums = values if sums is None else [keras.ops.add(total, value) for total, value in zip(sums, values)]
        count += 1
    if sums is not None:
        for variable, total in zip(statistics.moving_variables(), sums):
            variable.assign(keras.ops.divide(total, count))
    return count


def statistics_batches(data: DataGenerator, max_images: int = MAX_IMAGES) -> Iterator[np.ndarray]:
    """The training images the statistics are taken over: the first batches of `data`'s current order.

    As many whole batches of `data.batch_size` as hold `max_images` distinct images (at least one
    batch), read without augmentation; with `--fit-size crop` each image gives one random window of
    the network's input size, as in training, drawn from a generator seeded by the batch.

    Args:
        data: DataGenerator. The training batches.
        max_images: int. At most this many images, unless one batch is larger. Defaults to `MAX_IMAGES`.

    Yields:
        float32 arrays `(batch_size, height, width, 3)`.
    """
    for index in range(count_statistics_batches(data, max_images)):
        images, class_maps = data.batch_class_maps(index)
        if data.fit_size == "crop":
            rng = np.random.default_rng(index)
            images = np.stack([random_crop(image, class_map, data.height, data.width, rng)[0]
                               for image, class_map in zip(images, class_maps)])
        yield images


def count_statistics_batches(data: DataGenerator, max_images: int = MAX_IMAGES) -> int:
    """How many batches `statistics_batches` yields."""
    return min(max(1, min(max_images, len(data.labels.keys)) // data.batch_size), len(data))


def check_one_device() -> None:
    """Refuses `--precise-bn` within a distribution strategy: it is not computed across replicas.

    Raises:
        UsageError: inside a `tf.distribute` strategy's scope or a `keras.distribution` one.
    """
    distributed = keras.distribution.distribution() is not None
    if backend.is_tensorflow():
        distributed = distributed or backend.import_tensorflow().distribute.has_strategy()
    if distributed:
        raise UsageError("--precise-bn recomputes the statistics on one device: leave out --distribute, or "
                         "--precise-bn.")


class PreciseStatistics:
    """Recomputes a network's BatchNormalization statistics over the training images.

    `callbacks.EpochEnd` calls `recompute` before each evaluation, on the weights the epoch's
    evaluation scores and saves (the averaged ones under `--ema`). The first pass's cost is logged
    at `--verbose 2`.

    Args:
        network: keras.Model. The network evaluated and saved; its layers must not be synchronized.
        data: DataGenerator. The training batches, read in their current order.
        max_images: int. Images per pass. Defaults to `MAX_IMAGES`.
    """

    def __init__(self, network: keras.Model, data: DataGenerator, max_images: int = MAX_IMAGES):
        self.network = network
        self.data = data
        self.max_images = max_images
        self.seconds: list[float] = []
        self._statistics: BatchStatistics | None = None

    def recompute(self) -> None:
        """Sets the network's moving statistics to those of the first `max_images` training images."""
        started = time.monotonic()
        if self._statistics is None:
            self._statistics = BatchStatistics(self.network)
        batches = recompute_batchnorm_statistics(self.network, statistics_batches(self.data, self.max_images),
                                                 self._statistics)
        self.seconds.append(time.monotonic() - started)
        if len(self.seconds) == 1:
            logger.debug("--precise-bn: BatchNormalization statistics recomputed over %d batch(es) of %d training "
                         "images in %.1f s", batches, self.data.batch_size, self.seconds[0])
