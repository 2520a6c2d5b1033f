"""Process-wide state an entry point sets, put back when it returns (project addition).

The entry points (`segmentation.cli.main`, the tools' `main`, the benchmarks' in-process `main`) are
also called in-process, by the tests and by other programs. What a run sets for the whole process
would otherwise outlive it: after a `--train` under `--precision auto` on a CPU that computes
bfloat16 natively, every network built later in the process was mixed bfloat16. `kept_process_state`
wraps an entry point's body and puts back, however the body ends (a return, an exception,
`SystemExit`, `KeyboardInterrupt`):

- Keras' global dtype policy (`--precision`), also where Keras is first imported inside the body;
- the random state `keras.utils.set_random_seed` (`--seed`) sets: Python's `random`, NumPy's global
  `RandomState`, Keras' record of the seed and its global `SeedGenerator` (the generator and the
  state of its variable), and PyTorch's CPU generator where PyTorch was loaded before the body;
- TensorFlow's global seed, as far as it can be: TensorFlow has no getter for it, so it is put back
  to the seed Keras recorded before the body (none: unseeded again) where the body changed Keras'
  record. A seed given to `tf.random.set_seed` directly is not seen, and TensorFlow's sequence of
  operation seeds and its random kernels' counters start again from that seed, not where they were;
- the environment variables (`os.environ`);
- the logging configuration: the root logger's handlers and level (`logging.basicConfig`), the
  level of every logger that existed before the body, and `logging.disable`;
- the warning filters.

Not put back: what cannot be undone once done (TensorFlow's device setup, modules imported), the
counters of Keras' automatic layer names, and the state of a run's own objects.

    with kept_process_state():
        ...  # the entry point's body
"""

import contextlib
import importlib
import logging
import os
import random
import sys
import warnings
from collections.abc import Iterator

import numpy as np

# The names Keras keeps its global dtype policy, seed and seed generator under (keras.src.backend.common.
# global_state; `keras.config.dtype_policy()` has a public getter, the seed and the generator have none).
KERAS_POLICY = "dtype_policy"
KERAS_SEED = "global_random_seed"
KERAS_SEED_GENERATOR = "global_seed_generator"
KERAS_ATTRIBUTES = (KERAS_POLICY, KERAS_SEED, KERAS_SEED_GENERATOR)


@contextlib.contextmanager
def kept_environment() -> Iterator[None]:
    """Puts back `os.environ` as it was: variables added are removed, changed or removed ones restored."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


@contextlib.contextmanager
def kept_logging() -> Iterator[None]:
    """Puts back the root logger's handlers and level, the levels of the loggers that exist, and `logging.disable`."""
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    levels = {name: logger.level for name, logger in logging.Logger.manager.loggerDict.items()
              if isinstance(logger, logging.Logger)}
    disabled = logging.root.manager.disable
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in handlers:
                handler.close()  # the handlers `logging.basicConfig` added; a stream handler leaves its stream open
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(root_level)
        for name, level in levels.items():
            logger = logging.getLogger(name)
            if logger.level != level:
                logger.setLevel(level)
        logging.disable(disabled)


def keras_global_state() -> object | None:
    """Keras' global-state module, or None where Keras is not loaded (importing it would load a backend)."""
    if "keras" not in sys.modules:
        return None
    return importlib.import_module("keras.src.backend.common.global_state")


@contextlib.contextmanager
def kept_keras_state() -> Iterator[None]:
    """Puts back Keras' dtype policy, seed and global seed generator, and TensorFlow's seed as far as it can.

    Where Keras is not loaded yet, the state to put back is a fresh Keras' (no policy set: float32; no
    seed; no generator). TensorFlow's global seed is reset to Keras' record where the body changed it.
    """
    global_state = keras_global_state()
    saved = {name: global_state.get_global_attribute(name) if global_state else None for name in KERAS_ATTRIBUTES}
    generator = saved[KERAS_SEED_GENERATOR]
    generator_state = None if generator is None else np.array(generator.state.value)
    try:
        yield
    finally:
        global_state = keras_global_state()
        if global_state is not None:
            seed_changed = global_state.get_global_attribute(KERAS_SEED) != saved[KERAS_SEED]
            for name, value in saved.items():
                global_state.set_global_attribute(name, value)
            if generator is not None:
                generator.state.assign(generator_state)
            # None where TensorFlow is absent, or blocked (`sys.modules["tensorflow"] = None`).
            tensorflow = sys.modules.get("tensorflow")
            if seed_changed and tensorflow is not None:
                tensorflow.random.set_seed(saved[KERAS_SEED])


@contextlib.contextmanager
def kept_random_state() -> Iterator[None]:
    """Puts back the state of Python's `random`, NumPy's global `RandomState` and PyTorch's CPU generator."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    torch = sys.modules.get("torch")
    torch_state = None if torch is None else torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if torch_state is not None:
            torch.set_rng_state(torch_state)


@contextlib.contextmanager
def kept_process_state() -> Iterator[None]:
    """Puts back, when the `with` body ends in any way, the process-wide state the module docstring lists."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(kept_environment())
        stack.enter_context(kept_logging())
        stack.enter_context(warnings.catch_warnings())
        stack.enter_context(kept_random_state())
        stack.enter_context(kept_keras_state())
        yield
