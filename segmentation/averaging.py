"""Weight averaging (`--ema M`, project addition): an exponential moving average of the weights.

The optimizer keeps, beside every trainable weight, its moving average, updated after each step
(Keras 3's `use_ema=True, ema_momentum=M`): `average = M * average + (1 - M) * weight`, the first
step's weights taken as they are. The average of the last ~1 / (1 - M) steps is smoother than the
weights of any single step. `averaged_weights` lends the average to the model for a while (the
per-epoch evaluation and the saving of the best weights) and puts the raw weights back, so training
goes on from them. The average lives among the optimizer's variables, so the resume state saves it.

BatchNormalization's moving mean and variance are not trainable weights: they are not averaged, and
the averaged weights are evaluated with the moving statistics of the raw ones.
"""

import contextlib
from collections.abc import Iterator

import keras


def averaging_optimizer(optimizer: keras.optimizers.Optimizer | None) -> keras.optimizers.Optimizer | None:
    """The optimizer that keeps a moving average of the weights (inside a loss-scale wrapper too), or None."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if inner is None or not getattr(inner, "use_ema", False):
        return None
    return inner


def moving_averages(optimizer: keras.optimizers.Optimizer) -> list[keras.Variable]:
    """The average of each weight the optimizer trains, in the order of `optimizer._trainable_variables`.

    Keras 3.x keeps them in a private attribute, `_model_variables_moving_average` (its own
    `SwapEMAWeights` callback reads it too); this is the one place that reads it here.
    """
    return list(optimizer._model_variables_moving_average)


@contextlib.contextmanager
def averaged_weights(optimizer: keras.optimizers.Optimizer | None) -> Iterator[bool]:
    """Lends the moving average of the weights to the model for the `with` block, then puts the raw weights back.

    Args:
        optimizer: keras Optimizer or None. The training model's; without `use_ema` (or None) the
            block runs on the weights as they are.

    Yields:
        Whether the weights in the model are the averaged ones.
    """
    averaging = averaging_optimizer(optimizer)
    if averaging is None or not averaging.built:
        yield False
        return
    variables = list(averaging._trainable_variables)
    raw = [keras.ops.convert_to_numpy(variable) for variable in variables]
    for variable, average in zip(variables, moving_averages(averaging)):
        variable.assign(average)
    try:
        yield True
    finally:
        for variable, value in zip(variables, raw):
            variable.assign(value)
