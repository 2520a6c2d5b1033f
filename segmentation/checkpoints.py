"""Checkpoints that never lose work: atomic writes, the best model's metrics, the resumable state.

A training run keeps two kinds of files in `--save-dir`:

- the best weights, `<name>-best-iou.weights.h5` (the book's file), with its metrics and settings
  beside it in `<name>-best-iou.json`, so that a later run knows the mIoU it has to beat;
- the last state, `<name>-last.state.npz`, rewritten after every epoch: model weights, optimizer
  variables and a JSON record (epochs done, per-epoch history, best mIoU, seeds, settings), so that
  `--resume` continues where the run stopped.

Every file is written to a temporary name in the same folder and renamed into place with
`os.replace`, so a crash or a kill leaves the previous version whole. The state file is a plain
`.npz` of numeric arrays and is read with `allow_pickle=False`.
"""

import dataclasses
import json
import os
import warnings
from collections.abc import Callable

import keras
import numpy as np

from segmentation.config import TrainingSettings, setting_differences
from segmentation.errors import CheckpointError, UsageError
from segmentation.paths import BOOK_WEIGHTS_SUFFIX, WEIGHTS_SUFFIX, best_metrics_path

STATE_FORMAT = 1
@dataclasses.dataclass
class TrainingState:
    """What `--resume` needs besides the weights and optimizer variables.

    Attributes:
        epochs_done: int. Completed epochs; training resumes at this 0-based epoch.
        epochs: int. The `--epochs` the run was started with.
        history: dict. Per-epoch logs (`loss`, `test_miou`, `learning_rate`, ...), one value
            per completed epoch.
        best_miou: float. The mIoU the best weights file holds (the bar to beat).
        seed: int or None. The `--seed` of the run.
        shuffle_seed: int. Seed of the training set's shuffling.
        settings: dict. The run's `TrainingSettings` as recorded (`TrainingSettings.as_record`).
    """

    epochs_done: int
    epochs: int
    history: dict[str, list[float]]
    best_miou: float
    seed: int | None
    shuffle_seed: int
    settings: dict


def write_atomically(path: str, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Has `write` fill a temporary file beside `path`, then renames it over `path`.

    The temporary file is in the same folder (so `os.replace` is atomic), hidden, and named
    after the process so that two runs sharing a folder stay apart. A crash or kill at any
    moment leaves either the old `path` or the new one, never a mix; on an error the
    temporary file is removed.

    Args:
        path: str. Target file.
        write: callable. Called with the temporary path; writes the whole file there.
        suffix: str. Ending of the temporary name (Keras wants `.weights.h5`). Defaults to ".tmp".
    """
    directory, filename = os.path.split(path)
    temporary = os.path.join(directory, f".{filename}.{os.getpid()}.partial{suffix}")
    try:
        write(temporary)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save_weights_atomically(model: keras.Model, path: str) -> None:
    """Saves weights to a temporary file and renames it over `path`.

    Args:
        model: keras.Model. The model to save.
        path: str. Target, ending in `.weights.h5`.
    """
    write_atomically(path, model.save_weights, suffix=WEIGHTS_SUFFIX)


def write_json_atomically(record: dict, path: str) -> None:
    """Writes `record` as indented JSON to `path` through a temporary file.

    Args:
        record: dict. JSON-serialisable values.
        path: str. Target file.
    """
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(record, file, indent=2)
            file.write("\n")

    write_atomically(path, write)


def read_best_metrics(weights_path: str) -> dict | None:
    """The metrics record of a best-weights file, or None when there is none or it is unreadable.

    Args:
        weights_path: str. The best `.weights.h5` file.

    Returns:
        The decoded JSON dict (with a float `test_miou`), or None.
    """
    try:
        with open(best_metrics_path(weights_path), encoding="utf-8") as file:
            record = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("test_miou"), int | float):
        return None
    return record


def save_training_state(model: keras.Model, state: TrainingState, path: str) -> None:
    """Saves weights, optimizer variables and `state` to one `.npz`, atomically.

    Args:
        model: keras.Model. The compiled model whose optimizer has been built.
        state: TrainingState. The record to keep beside the arrays.
        path: str. Target, ending in `.state.npz`.
    """
    arrays = {f"weight_{index}": value for index, value in enumerate(model.get_weights())}
    for index, variable in enumerate(model.optimizer.variables):
        arrays[f"optimizer_{index}"] = keras.ops.convert_to_numpy(variable)
    record = {"format": STATE_FORMAT, **dataclasses.asdict(state)}
    arrays["state_json"] = np.frombuffer(json.dumps(record).encode("utf-8"), dtype=np.uint8)

    def write(temporary: str) -> None:
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)

    write_atomically(path, write)


def read_training_state(path: str) -> TrainingState:
    """Reads the record of a last-state file, without touching any model.

    Args:
        path: str. A file written by `save_training_state`.

    Returns:
        The `TrainingState`.

    Raises:
        CheckpointError: if the file is missing, damaged or of another format.
    """
    if not os.path.isfile(path):
        raise CheckpointError(
            f"{path}: no saved training state to resume (it is written after each epoch). "
            "Run without --resume, or give the --save-dir/--layers/--depth/--dataset of the run."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            record = json.loads(archive["state_json"].tobytes().decode("utf-8"))
        version = record.pop("format")
        state = TrainingState(**record)
    except Exception as error:  # zipfile, numpy and json raise many types for a damaged file
        raise CheckpointError(
            f"{path}: the training state is damaged ({type(error).__name__}); delete it and "
            "continue from the best weights with --restore-weights, or start afresh."
        ) from None
    if version != STATE_FORMAT:
        raise CheckpointError(f"{path}: written by another version of this program (format {version}); start afresh.")
    return state


def check_same_settings(state: TrainingState, settings: TrainingSettings, path: str) -> None:
    """Refuses to resume a state under different model, data or schedule settings.

    Args:
        state: TrainingState. The saved state.
        settings: TrainingSettings. This run's settings.
        path: str. The state file, for the message.

    Raises:
        CheckpointError: naming every setting that differs.
    """
    differences = setting_differences(state.settings, settings)
    if differences:
        raise CheckpointError(
            f"{path}: the run was saved with {', '.join(differences)}; give the same flags "
            "to --resume it."
        )


def restore_training_state(model: keras.Model, path: str) -> None:
    """Loads a last-state file's weights and optimizer variables into a compiled model.

    Args:
        model: keras.Model. Compiled, with the architecture the state was saved from.
        path: str. A file written by `save_training_state`.

    Raises:
        CheckpointError: if the arrays do not fit the model or the file is damaged.
    """
    model.optimizer.build(model.trainable_variables)
    try:
        with np.load(path, allow_pickle=False) as archive:
            weights = [archive[f"weight_{index}"] for index in range(len(model.weights))]
            optimizer_values = [archive[f"optimizer_{index}"] for index in range(len(model.optimizer.variables))]
        model.set_weights(weights)
        for variable, value in zip(model.optimizer.variables, optimizer_values):
            if tuple(variable.shape) != value.shape:
                raise ValueError(f"{variable.path} has shape {tuple(variable.shape)}, the file {value.shape}")
            variable.assign(value)
    except Exception as error:  # a damaged archive or arrays for another model
        detail = " ".join(str(error).split())[:200]
        raise CheckpointError(
            f"{path}: the saved state does not fit this model or is damaged ({detail}); start "
            "afresh or continue from the best weights with --restore-weights."
        ) from None


def resolve_weights_path(name: str, save_dir: str) -> tuple[str, str]:
    """Finds the weights file a `--restore-weights` value means.

    Tries `<save_dir>/NAME`, then NAME as a path. A book-style `.h5` name is
    taken as it is if that file exists (the book's own Keras 2 weights),
    otherwise it means the Keras 3 `.weights.h5` file of the same name.

    Args:
        name: str. The `--restore-weights` value.
        save_dir: str. The `--save-dir` value.

    Returns:
        `(path, explanation)`: the file to load and a sentence on how it was found.

    Raises:
        UsageError: if no candidate exists.
    """
    tried = []
    for base in dict.fromkeys([os.path.join(save_dir, name), name]):
        if base.endswith(WEIGHTS_SUFFIX):
            candidates = [base]
        elif base.endswith(BOOK_WEIGHTS_SUFFIX):
            candidates = [base, base[: -len(BOOK_WEIGHTS_SUFFIX)] + WEIGHTS_SUFFIX]
        else:
            candidates = [base, base + WEIGHTS_SUFFIX]
        for candidate in candidates:
            tried.append(candidate)
            if os.path.isfile(candidate):
                if candidate == base:
                    return candidate, f"Loading weights {candidate}"
                return candidate, (
                    f"Loading weights {candidate} (--restore-weights {name} names no file; Keras 3 "
                    f"saves weights with the {WEIGHTS_SUFFIX} suffix)"
                )
    names = os.listdir(save_dir) if os.path.isdir(save_dir) else []
    available = sorted(name for name in names if name.endswith(BOOK_WEIGHTS_SUFFIX))
    hint = f" Weights in {save_dir}: {', '.join(available)}." if available else " Train first with --train."
    raise UsageError(f"--restore-weights {name}: no such file (tried {', '.join(tried)}).{hint}")



def restore_weights(model: keras.Model, path: str) -> None:
    """Loads weights, turning Keras' errors into one-line UsageErrors.

    Args:
        model: keras.Model. The FCN.
        path: str. A `.weights.h5` file, or the book's Keras 2 `.h5` file.

    Raises:
        UsageError: if the file is unreadable or does not fit the model.
    """
    try:
        with warnings.catch_warnings():
            # Keras warns per mismatched sublayer before raising; the error says it once.
            warnings.simplefilter("ignore")
            model.load_weights(path)
    except Exception as error:  # h5py and Keras raise many types for a bad or mismatched file
        detail = " ".join(str(error).split())[:300]
        raise UsageError(
            f"{path}: these weights do not fit the model (--layers, --depth, class count, "
            f"--height/--width) or the file is damaged: {detail}"
        ) from None
