"""Distributed training with `tf.distribute`: one machine's GPUs, or several machines.

`--distribute mirrored` trains on all local GPUs with `tf.distribute.MirroredStrategy`;
`--distribute multi-worker` trains on several machines with
`tf.distribute.MultiWorkerMirroredStrategy`, each machine (a *worker*) told the
cluster and its own place in it by the standard `TF_CONFIG` environment
variable. Both are synchronous data parallelism: every replica holds the whole
model, takes its share of each batch, and the gradients are averaged before
every update, so all replicas keep the same weights.

One worker is the chief: the task of type "chief", or worker 0 when the
cluster has no chief. It alone writes to `--save-dir`; every other worker
writes its own copies of the files to a folder of its own inside it
(`worker_folder`), which its `--resume` reads back.

`tf.distribute` is TensorFlow's. Under JAX, `--distribute mirrored` is
`keras.distribution.DataParallel` over this machine's devices (`KerasDataParallel`):
one program over the global batch, whose BatchNormalization statistics are
those of the whole batch without synchronizing. `multi-worker`, and any
`--distribute` under PyTorch, are refused by `config.check_backend`.
"""

import contextlib
import json
import os

import keras

from segmentation import backend

DISTRIBUTE_CHOICES = ("none", "mirrored", "multi-worker")
TASK_TYPES = ("chief", "worker")


def read_tf_config(environ: dict[str, str] = os.environ) -> dict:
    """Reads and checks the `TF_CONFIG` of a multi-worker run.

    Args:
        environ: dict. The environment. Defaults to `os.environ`.

    Returns:
        The decoded `TF_CONFIG`: `{"cluster": {"chief": [...], "worker": [...]},
        "task": {"type": ..., "index": ...}}`.

    Raises:
        ValueError: if it is missing, not JSON, or does not place this
            task in the cluster.
    """
    text = environ.get("TF_CONFIG")
    hint = "see docs/distributed.md"
    if not text:
        raise ValueError(
            "--distribute multi-worker needs the TF_CONFIG environment variable (the cluster's "
            f"addresses and this worker's place in it); {hint}."
        )
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}); {hint}.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG needs a 'cluster' and a 'task' object; {hint}.")
    unknown = sorted(set(cluster) - set(TASK_TYPES))
    if unknown or not all(isinstance(cluster[name], list) and cluster[name] for name in cluster):
        raise ValueError(
            "TF_CONFIG 'cluster' must map 'worker' (and optionally 'chief') to non-empty lists of "
            f"host:port addresses. Received: {json.dumps(cluster)}."
        )
    task_type, index = task.get("type"), task.get("index")
    if task_type not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise ValueError(
            f"TF_CONFIG 'task' {json.dumps(task)} is not in the cluster; give its type ("
            f"{' or '.join(sorted(cluster))}) and an index below the number of its addresses."
        )
    return config


class OneDevice:
    """No `--distribute` off TensorFlow: the members of a `tf.distribute.Strategy` the command line uses."""

    cluster_resolver = None
    num_replicas_in_sync = 1

    def scope(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


class KerasDataParallel(OneDevice):
    """`--distribute mirrored` under JAX: `keras.distribution.DataParallel` over this machine's devices.

    Each batch is split along its first axis across the devices (so the
    batch size must be a multiple of their number), the weights are
    replicated, and the gradients are those of the global batch.

    Args:
        devices: list of str or None. Keras device names (`"gpu:0"`); None takes
            `keras.distribution.list_devices()`, the backend's GPUs or else its CPU.
            Defaults to None.
    """

    def __init__(self, devices: list[str] | None = None):
        self.distribution = keras.distribution.DataParallel(devices=devices or keras.distribution.list_devices())
        self.num_replicas_in_sync = self.distribution.device_mesh.devices.size

    def scope(self) -> contextlib.AbstractContextManager:
        return self.distribution.scope()


def make_strategy(name: str):
    """The strategy `--distribute NAME` asks for: `tf.distribute`'s, or `keras.distribution`'s under JAX.

    Args:
        name: str. `"none"` (the default strategy: one device), `"mirrored"`
            (all local GPUs) or `"multi-worker"` (the cluster in `TF_CONFIG`).

    Returns:
        The strategy (`tf.distribute.Strategy`, `KerasDataParallel` or `OneDevice`).
        A multi-worker one waits until every worker has started.

    Raises:
        ValueError: for a missing or bad `TF_CONFIG`.
    """
    if not backend.is_tensorflow():
        # `config.check_backend` has refused what the backend has no strategy for.
        return KerasDataParallel() if name == "mirrored" else OneDevice()
    tf = backend.import_tensorflow()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        read_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def replicas_in_scope() -> int:
    """The replicas of the `tf.distribute` strategy in scope; 1 off TensorFlow.

    (`keras.distribution`'s `predict_on_batch` splits a batch across the
    devices, where `tf.distribute`'s runs it whole on every replica.)
    """
    if not backend.is_tensorflow():
        return 1
    return backend.import_tensorflow().distribute.get_strategy().num_replicas_in_sync


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files: the "chief" task, or worker 0 without one.

    Args:
        strategy: tf.distribute.Strategy or OneDevice. From `make_strategy`.

    Returns:
        True for every single-machine strategy.
    """
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_folder(strategy) -> str:
    """The folder name, inside `--save-dir`, of a non-chief worker's own files (e.g. `worker1`)."""
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type}{resolver.task_id}"


def prepare_for_fit(model: keras.Model) -> None:
    """Readies a compiled model, built in a strategy's scope, for `fit`, also on several workers.

    The optimizer's variables are created here, in the strategy's
    cross-replica scope, rather than inside the first training step. On
    several workers, two gaps in Keras 3's `fit` under
    MultiWorkerMirroredStrategy are bridged:

    - before the first step, a model that recorded its strategy averages the
      whole first (images, masks) batch across replicas with one
      `strategy.reduce`, which takes single values only
      (keras-team/keras#20329); so the model forgets the strategy it
      recorded, and `fit` skips that averaging (the model is built already)
      and uses the strategy in scope, the same one;
    - after each step, the logged loss is averaged across workers along axis
      0, which a scalar does not have (tensorflow/tensorflow#72388); so the
      training step returns its logs as 1-element vectors, averaged to
      scalars.

    Call `fit` within `strategy.scope()`.

    Args:
        model: keras.Model. Compiled within `strategy.scope()`.
    """
    model.optimizer.build(model.trainable_variables)
    if not backend.is_tensorflow():
        return
    resolver = model.distribute_strategy.cluster_resolver
    if resolver is None or sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) < 2:
        return
    model._distribute_strategy = None
    train_step = model.train_step
    model.train_step = lambda data: {name: keras.ops.reshape(value, (1,)) for name, value in train_step(data).items()}
