"""Checkpoints that never lose work: the best model with its metrics, the resumable state, restoring weights.

A training run keeps two kinds of files in `--save-dir`:

- the best weights, `<name>-best-iou.weights.h5` (the book's file), with its metrics and settings
  beside it in `<name>-best-iou.json`, so that a later run knows the mIoU it has to beat;
- the last state, `<name>-last.state.npz`, rewritten after every epoch: model weights, optimizer
  variables and a JSON record (epochs done, per-epoch history, best mIoU, seeds, settings), so that
  `--resume` continues where the run stopped.

Every file is written whole or not at all (`segmentation.atomic`), so a crash or a kill leaves the
previous version whole. The state file is a plain
`.npz` of numeric arrays and is read with `allow_pickle=False`.
"""

import dataclasses
import json
import os
import warnings

import h5py
import keras
import numpy as np

from model import (
    BOOK_DECODER,
    CLASSIFIER_NAME,
    DECODER_LAYER_COUNTS,
    HEAD_WIDTH_LAYER,
    PYRAMID_PREFIX,
    SKIP_PREFIX,
    decoder_of_model,
)
from segmentation.atomic import check_free_space, json_writer, staged_file, write_atomically
from segmentation.config import TrainingSettings, setting_differences
from segmentation.errors import CheckpointError, UsageError
from segmentation.paths import BOOK_WEIGHTS_SUFFIX, METRICS_SUFFIX, WEIGHTS_SUFFIX, best_metrics_path

STATE_FORMAT = 1
# HDF5's metadata in a `.weights.h5` file: per variable, and per file (with room to spare).
HDF5_BYTES_PER_VARIABLE = 4096
HDF5_BYTES_PER_FILE = 1 << 20
# Where a Keras 3 weights file keeps the kernel of the FCN's first pyramid convolution (`HEAD_WIDTH_LAYER`).
KERAS3_HEAD_WIDTH_KERNEL = "layers/conv2d/vars/0"
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
        total_steps: int or None. The optimizer steps a `--time-budget` run planned (its last
            epoch may be shorter than the others); None: `epochs` whole epochs.
        epochs_without_improvement: int. Epochs in a row, up to the last completed one, whose
            selection mIoU did not beat the run's best so far, as `--patience` last counted them;
            `--resume` counts them again from `history` (`epochs_since_best`), which every epoch
            extends, with `--patience` or without.
        schedule: dict or None. The `--lr-schedule cosine` schedule (`WarmupCosine.get_config()`): its
            last step and where it was last resized, so a resumed run goes on with the same rates.
    """

    epochs_done: int
    epochs: int
    history: dict[str, list[float]]
    best_miou: float
    seed: int | None
    shuffle_seed: int
    settings: dict
    total_steps: int | None = None
    epochs_without_improvement: int = 0
    schedule: dict | None = None


def epochs_since_best(mious: list[float]) -> int:
    """Epochs after the one of the best mIoU (the first of equals): those in a row that did not beat it.

    Args:
        mious: list of float. The selection mIoU of each completed epoch, in order.

    Returns:
        0 when the last epoch is the best or there is none.
    """
    if not mious:
        return 0
    best = max(range(len(mious)), key=mious.__getitem__)  # the first index of the largest value
    return len(mious) - 1 - best


def weights_file_bytes(model: keras.Model) -> int:
    """A generous size of the model's `.weights.h5` file: its (and its optimizer's) variables and HDF5's metadata.

    Measured: 1.5-1.7 KB of metadata per variable besides the data, for the tests' ResNet11v2
    up to the book's ResNet56v2.
    """
    # A compiled model's file holds its optimizer's variables too.
    variables = [*model.weights, *(model.optimizer.variables if getattr(model, "optimizer", None) else [])]
    data = sum(int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize for variable in variables)
    return data + HDF5_BYTES_PER_VARIABLE * len(variables) + HDF5_BYTES_PER_FILE


def save_best_model(model: keras.Model, weights_path: str, record: dict) -> None:
    """Writes new best weights and their metrics record: both whole on disk before either replaces its old one.

    The record is renamed first: a kill between the two renames leaves a bar that is too high,
    which can keep a worse model out but never lets one in. A write that fails (a full disk)
    changes neither file.
    """
    check_free_space(weights_path, weights_file_bytes(model))
    with (
        staged_file(best_metrics_path(weights_path), json_writer(record), suffix=METRICS_SUFFIX) as commit_record,
        staged_file(weights_path, model.save_weights, suffix=WEIGHTS_SUFFIX) as commit_weights,
    ):
        commit_record()
        commit_weights()


def read_best_metrics(weights_path: str) -> dict | None:
    """The metrics record of a best-weights file, or None when there is none or it is unreadable.

    Args:
        weights_path: str. The best `.weights.h5` file.

    Returns:
        The decoded JSON dict (with a float mIoU of the split it was selected on), or None.
    """
    try:
        with open(best_metrics_path(weights_path), encoding="utf-8") as file:
            record = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(selection_miou(record), int | float):
        return None
    return record


def selection_miou(record: dict) -> object:
    """The mIoU the best weights were selected by: on the test set (the book's), or on validation images."""
    return record.get(f"{record.get('selected_on', 'test')}_miou")


def add_test_scores(weights_path: str, record: dict, scores: dict) -> None:
    """Adds the test set's scores, measured once at the end of a run selected on validation, to the record."""
    write_atomically(best_metrics_path(weights_path), json_writer({**record, **scores}), suffix=METRICS_SUFFIX)


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



def head_filters_of_model(model: keras.Model) -> int:
    """The FCN's head width (`--head-filters`): the filters of its first pyramid convolution."""
    return int(model.get_layer(HEAD_WIDTH_LAYER).kernel.shape[-1])


def head_filters_of_weights(path: str) -> int | None:
    """The head width a weights file was trained with, None where the file does not tell.

    A Keras 3 file lists the FCN's own layers under `layers/` by type, its first convolution, the first
    pyramid map's (`layers/conv2d/vars/0`), first; its kernel is `(3, 3, channels, head filters)`. The
    book's Keras 2 files have the book's decoder, whose classifier (`pre_activation`), the network's one
    1x1 transposed convolution, has the kernel `(1, 1, classes, head filters)`.
    """
    found: list[int] = []

    def visit(name: str, item: object) -> None:
        shape = getattr(item, "shape", None)
        if shape is not None and len(shape) == 4 and shape[:2] == (1, 1) and CLASSIFIER_NAME in name:
            found.append(int(shape[-1]))

    try:
        with h5py.File(path, "r") as file:
            if "layers" in file:
                kernel = file.get(KERAS3_HEAD_WIDTH_KERNEL)
                return int(kernel.shape[-1]) if kernel is not None and len(kernel.shape) == 4 else None
            file.visititems(visit)
    except (OSError, ValueError):
        return None
    return found[0] if len(set(found)) == 1 else None


def decoder_of_weights(path: str, model: keras.Model) -> str | None:
    """The decoder (`--decoder`) a weights file was trained with, None where the file does not tell.

    A Keras 3 file lists the FCN's own layers (the backbone's are nested) under `layers/` by type only:
    its counts of transposed and other convolutions, less the pyramid's, name the decoder
    (`model.DECODER_LAYER_COUNTS`). The book's Keras 2 files name their layers, and no layer of the book's is
    named `skip_`.

    Args:
        path: str. The weights file.
        model: keras.Model. The FCN the file is to be loaded into, whose pyramid convolutions are counted.
    """
    try:
        with h5py.File(path, "r") as file:
            if "layers" not in file:
                names: list[str] = []
                file.visit(names.append)
                return None if any(SKIP_PREFIX in name for name in names) else BOOK_DECODER
            groups = list(file["layers"].keys())
    except (OSError, ValueError):
        return None
    transposed = sum(name.startswith("conv2d_transpose") for name in groups)
    pyramid = sum(layer.name.startswith(PYRAMID_PREFIX) for layer in model.layers)
    counts = (transposed, sum(name.startswith("conv2d") for name in groups) - transposed - pyramid)
    return next((decoder for decoder, decoder_counts in DECODER_LAYER_COUNTS.items() if decoder_counts == counts), None)


def check_head(model: keras.Model, path: str) -> None:
    """Refuses weights of another head width (`--head-filters`) or decoder (`--decoder`) in one line naming both.

    Raises:
        UsageError: if the file says it was trained with another width or decoder.
    """
    trained, built = head_filters_of_weights(path), head_filters_of_model(model)
    if trained is not None and trained != built:
        raise UsageError(
            f"{path}: these weights have a {trained}-filter head and the network a {built}-filter one; "
            f"give --head-filters {trained} to load them."
        )
    trained, built = decoder_of_weights(path, model), decoder_of_model(model)
    if trained is not None and trained != built:
        raise UsageError(
            f"{path}: these weights have the {trained} decoder and the network the {built} one; "
            f"give --decoder {trained} to load them."
        )


def restore_weights(model: keras.Model, path: str) -> None:
    """Loads weights, turning Keras' errors into one-line UsageErrors.

    Args:
        model: keras.Model. The FCN.
        path: str. A `.weights.h5` file, or the book's Keras 2 `.h5` file.

    Raises:
        UsageError: if the file is unreadable or does not fit the model.
    """
    check_head(model, path)
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


def restore_for_fine_tuning(model: keras.Model, path: str) -> list[str]:
    """Loads every layer whose weights fit the model (`--fine-tune`); returns the names of those left out.

    Weights of another class count fit every layer but the classifier, `pre_activation`, which
    keeps its fresh initial weights. Each layer is first filled with NaN, so a layer that was not
    loaded is told from one that was, whatever their values.

    Raises:
        UsageError: if the file is unreadable, or layers other than the classifier do not fit.
    """
    check_head(model, path)
    layers = [layer for layer in model.layers if layer.weights]
    initial = {layer.name: layer.get_weights() for layer in layers}
    for layer in layers:
        layer.set_weights([np.full_like(value, np.nan) for value in initial[layer.name]])
    try:
        with warnings.catch_warnings():
            # Keras warns for each layer it skips; the caller says which were left out, once.
            warnings.simplefilter("ignore")
            model.load_weights(path, skip_mismatch=True)
    except Exception as error:  # h5py and Keras raise many types for a bad or mismatched file
        for layer in layers:
            layer.set_weights(initial[layer.name])
        detail = " ".join(str(error).split())[:300]
        raise UsageError(f"{path}: cannot be read for --fine-tune: {detail}") from None
    left_out = [layer.name for layer in layers
                if any(np.isnan(value).any() for value in layer.get_weights())]
    refused = set(left_out) - {CLASSIFIER_NAME}
    for layer in layers:
        if refused or layer.name in left_out:
            layer.set_weights(initial[layer.name])
    if refused:
        raise UsageError(
            f"{path}: --fine-tune keeps every layer but the classifier, and these weights do not fit "
            f"{', '.join(left_out)} (--layers, --depth and --height/--width must be those they were trained with)."
        )
    return left_out
