"""Losses for imbalanced segmentation: class-weighted cross-entropy, soft Dice and Lovász-softmax.

The book trains with plain categorical cross-entropy, which a rare foreground
lets the network minimise by predicting background everywhere. Three remedies,
chosen on the command line (`--class-weights auto`, `--loss ce+dice`,
`--loss ce+lovasz`):

- median-frequency class balancing (Eigen & Fergus, 2015): each class's
  cross-entropy is weighted by `median(freq) / freq(c)`, where `freq(c)` is
  the class's share of the pixels of the training images that contain it;
- soft Dice, `1 - mean over classes of 2|P∩Y| / (|P| + |Y|)`, which scores
  overlap per class whatever the class's size;
- Lovász-softmax (Berman et al., 2018), a convex surrogate of `1 - IoU` taken,
  like the book's mIoU (SPEC section 5), per image over the classes present in
  that image's ground truth, then averaged over the images. Alone from scratch
  it trains badly, so `ce+lovasz` adds it to the cross-entropy.

Pixels labelled `IGNORE_LABEL` (255) have an all-zero one-hot target. When the
data can hold them, the losses are means over the labelled pixels only
(`MaskedCrossentropy`, `WeightedCrossentropy(mask_unlabelled=True)`), so an
ignored pixel changes neither the loss nor its gradient.
"""

from collections.abc import Iterable

import keras
import numpy as np
from keras import ops

LOSSES = ("ce", "ce+dice", "ce+lovasz")
CLASS_WEIGHTS = ("none", "auto")


def median_frequency_weights(class_maps: Iterable[np.ndarray], n_classes: int) -> np.ndarray:
    """Median-frequency balancing weights from training class-index maps.

    Args:
        class_maps: iterable of int arrays `(H, W)`. One class-index map per image.
        n_classes: int. Number of classes including background.

    Returns:
        float32 array `(n_classes,)`: `median(freq) / freq(c)` over the classes
        seen in the training set; 1 for a class seen nowhere (it has no pixel
        to weight).

    Example:

    >>> median_frequency_weights([np.array([[0, 0, 0, 1]])], 2)
    array([0.6666667, 2.       ], dtype=float32)
    """
    class_pixels = np.zeros(n_classes, dtype=np.int64)
    present_pixels = np.zeros(n_classes, dtype=np.int64)
    for class_map in class_maps:
        # Ignored pixels (IGNORE_LABEL) fall past n_classes and are counted nowhere.
        counts = np.bincount(np.asarray(class_map).ravel(), minlength=n_classes)[:n_classes]
        class_pixels += counts
        present_pixels += np.where(counts > 0, counts.sum(), 0)
    seen = class_pixels > 0
    if not seen.any():
        return np.ones(n_classes, dtype=np.float32)
    frequency = class_pixels[seen] / present_pixels[seen]
    weights = np.ones(n_classes, dtype=np.float64)
    weights[seen] = np.median(frequency) / frequency
    return weights.astype(np.float32)


@keras.saving.register_keras_serializable(package="fcn")
class WeightedCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy of softmax outputs with a weight per class.

    With all weights 1 it equals `keras.losses.CategoricalCrossentropy`.

    Args:
        class_weights: sequence of float. One weight per class.
        dice_weight: float. Adds this times the soft Dice loss (0: none).
            Defaults to 0.
        lovasz_weight: float. Adds this times the per-image Lovász-softmax loss
            (`lovasz_softmax_loss`; 0: none). Defaults to 0.
        mask_unlabelled: bool. Leave out the pixels whose target is all zeros
            (`IGNORE_LABEL`): the cross-entropy is their mean over the labelled
            pixels and the Dice loss sees no prediction there. Defaults to False.
            The Lovász-softmax loss leaves them out either way.
        name: str. Defaults to "weighted_crossentropy".
    """

    def __init__(self, class_weights, dice_weight: float = 0.0, lovasz_weight: float = 0.0,
                 mask_unlabelled: bool = False, name: str = "weighted_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = [float(weight) for weight in class_weights]
        self.dice_weight = float(dice_weight)
        self.lovasz_weight = float(lovasz_weight)
        self.mask_unlabelled = bool(mask_unlabelled)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        probabilities = ops.cast(y_pred, "float32")
        y_pred = ops.clip(probabilities, keras.config.epsilon(), 1.0)
        weights = ops.convert_to_tensor(self.class_weights, dtype="float32")
        # Per pixel: -w[c] log p[c] for its true class c.
        loss = -ops.sum(y_true * weights * ops.log(y_pred), axis=-1)
        if self.mask_unlabelled:
            # One number for the batch: Keras' mean over the elements of a scalar is the scalar.
            labelled = ops.sum(y_true, axis=-1, keepdims=True)
            loss = ops.sum(loss) / ops.maximum(ops.sum(labelled), 1.0)
            if self.dice_weight:
                loss = loss + self.dice_weight * ops.mean(soft_dice_loss(y_true, y_pred * labelled))
            if self.lovasz_weight:
                loss = loss + self.lovasz_weight * ops.mean(lovasz_softmax_loss(y_true, probabilities))
            return loss
        if self.dice_weight:
            # One Dice term per image, spread over its pixels so the mean over pixels adds it once.
            dice = soft_dice_loss(y_true, y_pred)
            loss = loss + self.dice_weight * dice[:, None, None]
        if self.lovasz_weight:
            lovasz = lovasz_softmax_loss(y_true, probabilities)
            loss = loss + self.lovasz_weight * lovasz[:, None, None]
        return loss

    def get_config(self) -> dict:
        return {**super().get_config(), "class_weights": self.class_weights, "dice_weight": self.dice_weight,
                "lovasz_weight": self.lovasz_weight, "mask_unlabelled": self.mask_unlabelled}


@keras.saving.register_keras_serializable(package="fcn")
class MaskedCrossentropy(keras.losses.Loss):
    """The book's categorical cross-entropy, averaged over the labelled pixels only.

    A pixel whose one-hot target is all zeros (`IGNORE_LABEL`) adds 0 to the sum
    and is left out of the count. Where every pixel is labelled it is the same
    number as `keras.losses.CategoricalCrossentropy`: the same per-pixel values,
    summed, over the same count.

    Args:
        name: str. Defaults to "masked_crossentropy".
    """

    def __init__(self, name: str = "masked_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        per_pixel = keras.losses.categorical_crossentropy(y_true, y_pred)
        # One number for the batch: Keras' mean over the elements of a scalar is the scalar.
        return ops.sum(per_pixel) / ops.maximum(ops.sum(y_true), 1.0)


def soft_dice_loss(y_true, y_pred, smooth: float = 1.0):
    """Soft Dice loss per image: 1 - mean over classes of the smoothed Dice coefficient.

    Args:
        y_true: float tensor `(N, H, W, C)`. One-hot masks.
        y_pred: float tensor `(N, H, W, C)`. Class probabilities.
        smooth: float. Added to numerator and denominator, so a class absent
            from both prediction and truth scores 1. Defaults to 1.

    Returns:
        float tensor `(N,)`.
    """
    intersection = ops.sum(y_true * y_pred, axis=(1, 2))
    total = ops.sum(y_true, axis=(1, 2)) + ops.sum(y_pred, axis=(1, 2))
    dice = (2.0 * intersection + smooth) / (total + smooth)
    return 1.0 - ops.mean(dice, axis=-1)


def lovasz_softmax_loss(y_true, y_pred):
    """Lovász-softmax loss per image, over the classes present in its ground truth.

    The convex surrogate of `1 - IoU` of [Berman et al., 2018](https://arxiv.org/abs/1705.08790)
    with their `classes="present", per_image=True`, so that it follows the book's
    per-image mIoU. For each image and each class c with a labelled pixel in its
    ground truth: the errors `e_i = |y_ic - p_ic|` over the labelled pixels,
    sorted in decreasing order, are dotted with the Lovász extension's gradient
    of the Jaccard loss, `g_k = J_k - J_(k-1)` (`J_0 = 0`), where
    `J_k = 1 - (|Y| - F_k) / (|Y| + B_k)` is the Jaccard loss when the first k
    sorted pixels are wrong: `|Y|` counts the class's pixels, `F_k` those among
    the first k, `B_k` the other labelled pixels among them. The mean over the
    present classes is the image's loss.
    A pixel whose target is all zeros (`IGNORE_LABEL`) is left out; an image
    without any labelled pixel scores 0.

    Args:
        y_true: float tensor `(N, H, W, C)`. One-hot masks; an all-zero target
            marks an ignored pixel.
        y_pred: float tensor `(N, H, W, C)`. Class probabilities.

    Returns:
        float32 tensor `(N,)`.
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    n_classes = y_true.shape[-1]
    # (N, C, H*W): each (image, class) row is sorted on its own, along the last axis.
    y_true = ops.transpose(ops.reshape(y_true, (ops.shape(y_true)[0], -1, n_classes)), (0, 2, 1))
    y_pred = ops.transpose(ops.reshape(y_pred, (ops.shape(y_pred)[0], -1, n_classes)), (0, 2, 1))
    labelled = ops.broadcast_to(ops.sum(y_true, axis=1, keepdims=True), ops.shape(y_true))
    errors = ops.abs(y_true - y_pred)
    order = ops.argsort(-errors, axis=-1)
    errors = ops.take_along_axis(errors, order, axis=-1)
    truth = ops.take_along_axis(y_true, order, axis=-1)
    labelled = ops.take_along_axis(labelled, order, axis=-1)
    class_pixels = ops.sum(y_true, axis=-1, keepdims=True)
    # An ignored pixel adds to neither count, so its step of the Lovász gradient is 0.
    intersection = class_pixels - ops.cumsum(truth, axis=-1)
    union = class_pixels + ops.cumsum(labelled - truth, axis=-1)
    # The union is at least 1 for a present class; the floor only keeps absent classes (dropped below) finite.
    jaccard = 1.0 - intersection / ops.maximum(union, 1.0)
    lovasz_gradient = ops.concatenate([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], axis=-1)
    per_class = ops.sum(errors * lovasz_gradient, axis=-1)
    present = ops.cast(class_pixels[..., 0] > 0, "float32")
    return ops.sum(per_class * present, axis=-1) / ops.maximum(ops.sum(present, axis=-1), 1.0)


def build_loss(loss: str, class_weights: np.ndarray | None, n_classes: int,
               ignore_pixels: bool = False) -> keras.losses.Loss | str:
    """The training loss the command line names.

    Args:
        loss: str. One of `LOSSES`.
        class_weights: float array `(n_classes,)` or None (all 1).
        n_classes: int. Number of classes.
        ignore_pixels: bool. Whether training targets can hold ignored pixels
            (`IGNORE_LABEL` in a mask, or `--fit-size crop`'s padding), left out
            of the mean. Defaults to False.

    Returns:
        The book's "categorical_crossentropy" for `ce` without weights or ignored
        pixels (so the book's run is unchanged), a `MaskedCrossentropy` for `ce`
        with ignored pixels, else a `WeightedCrossentropy` (with a Dice weight of 1
        for `ce+dice`, a Lovász-softmax weight of 1 for `ce+lovasz`).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}. Received: loss={loss}")
    if loss == "ce" and class_weights is None:
        return MaskedCrossentropy() if ignore_pixels else "categorical_crossentropy"
    weights = np.ones(n_classes, dtype=np.float32) if class_weights is None else class_weights
    return WeightedCrossentropy(weights, dice_weight=1.0 if loss == "ce+dice" else 0.0,
                                lovasz_weight=1.0 if loss == "ce+lovasz" else 0.0, mask_unlabelled=ignore_pixels)
