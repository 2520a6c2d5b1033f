"""Which Keras backend runs the program, and what in it needs TensorFlow: the one seam.

Keras 3 runs the network on TensorFlow (the default), JAX or PyTorch, chosen by
the `KERAS_BACKEND` environment variable before Keras is imported. Training,
`--resume`, the callbacks, evaluation, `--image-file`, `--plot`,
`--predict-dir`, the `.keras` export and the report run on all three. These
parts are TensorFlow's:

- the fused BatchNormalization kernel (`segmentation.batchnorm`): elsewhere
  the same layer runs Keras' own code, with the same weights;
- `tf.distribute` (`segmentation.distribution`): under JAX `--distribute
  mirrored` is `keras.distribution.DataParallel` over the local devices;
  `multi-worker` needs TensorFlow, and PyTorch has neither;
- the SavedModel, ONNX and LiteRT exports (`segmentation.inference`): Keras
  converts them from TensorFlow graphs;
- the `--tensorboard` event files (`segmentation.callbacks`): written with
  `tf.summary`, so any backend logs them where TensorFlow is installed;
- `--remat` recomputes through `tf.custom_gradient` on TensorFlow and through
  `keras.remat` (`jax.checkpoint`, `torch.utils.checkpoint`) elsewhere.

No module imports TensorFlow at import time on another backend: what needs it
calls `import_tensorflow` when it runs, and `config.check_backend` refuses,
in one line and before anything is written, what the backend cannot do.
"""

import importlib
import importlib.util

import keras

TENSORFLOW = "tensorflow"
JAX = "jax"
TORCH = "torch"
# The backends that train: Keras' numpy and openvino backends have no gradients.
SUPPORTED = (TENSORFLOW, JAX, TORCH)


def name() -> str:
    """The Keras backend of this process (`KERAS_BACKEND`): `"tensorflow"`, `"jax"`, `"torch"`, ..."""
    return keras.backend.backend()


def is_tensorflow() -> bool:
    """Whether Keras runs on TensorFlow, the only backend of the fused kernels, `tf.distribute` and the exports."""
    return name() == TENSORFLOW


def tensorflow_installed() -> bool:
    """Whether `import tensorflow` can succeed, without importing it."""
    if is_tensorflow():
        return True
    try:
        return importlib.util.find_spec(TENSORFLOW) is not None
    except (ImportError, ValueError):
        return False


def import_tensorflow():
    """TensorFlow, imported when a part that needs it runs (`--tensorboard` under JAX, say).

    Off the TensorFlow backend, TensorFlow is kept off the GPUs: it would
    otherwise reserve nearly all of their memory for itself beside JAX or
    PyTorch.

    Returns:
        The `tensorflow` module.

    Raises:
        ImportError: if TensorFlow is not installed (`config.check_backend`
            refuses the flags that need it before this is reached).
    """
    tf = importlib.import_module(TENSORFLOW)
    if not is_tensorflow():
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass  # TensorFlow set up its devices already, in an earlier call.
    return tf


def parse_compute_capability(value: object) -> tuple[int, int] | None:
    """A CUDA compute capability as `(major, minor)`, from `"8.0"`, `(8, 0)` or None (unknown)."""
    if value is None:
        return None
    try:
        parts = [int(part) for part in (value.split(".") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        return None
    return (parts[0], parts[1] if len(parts) > 1 else 0) if parts else None


def gpu_compute_capabilities() -> list[tuple[int, int] | None]:
    """The compute capability of each GPU the backend computes on; an empty list without a GPU.

    None stands for a GPU that reports none (an AMD GPU, say).
    """
    backend = name()
    if backend == TENSORFLOW:
        tf = import_tensorflow()
        return [parse_compute_capability(tf.config.experimental.get_device_details(device).get("compute_capability"))
                for device in tf.config.list_physical_devices("GPU")]
    if backend == JAX:
        import jax

        return [parse_compute_capability(getattr(device, "compute_capability", None))
                for device in jax.devices() if device.platform == "gpu"]
    if backend == TORCH:
        import torch

        if not torch.cuda.is_available():
            return []
        return [parse_compute_capability(torch.cuda.get_device_capability(index))
                for index in range(torch.cuda.device_count())]
    return []
