"""Every file name and suffix the program reads or writes, and the checks on its output folders.

`--save-dir` holds a run's files, named after the book's weights name
`<backbone>-<layers>layer-<dataset>-best-iou` (e.g. `ResNet56v2-3layer-drinks-best-iou`):

- `<name>.weights.h5`: the best weights (the book wrote `<name>.h5`, which Keras 3 refuses);
- `<name>.json`: their test metrics and the run's settings;
- `<run>-last.state.npz`: the last completed epoch's state, for `--resume`;
- `miou_history.npy`, `mpla_history.npy` (the book's histories), `history.csv`, `report.png`: one set per
  folder, the book's names, so a run of another network (another `--depth`, `--layers` or `--dataset`)
  is refused where they are another run's (`histories_of_another_run`).

Ground truth is read from `--data-path`: the book's `.npy` files, or folders of `<image stem>.png`
class-index masks; the class names are stored beside either (`class_names_path`).

`prediction/` holds the figures of `--evaluate --plot` and `--image-file`, and by default the
masks of `--predict-dir`.
"""

import dataclasses
import os

from resnet import backbone_name
from segmentation.errors import DatasetError, UsageError, describe_os_error

# The book's VIA projects (utils/generate_gt_segmentation.py reads them; the synthetic set writes them).
TRAIN_VIA_JSON = "segmentation_train.json"
TEST_VIA_JSON = "segmentation_test.json"
# The book's ground truth made from them, read from `--data-path` (`--train-labels`, `--test-labels`).
TRAIN_LABELS = "segmentation_train.npy"
TEST_LABELS = "segmentation_test.npy"
PREDICTION_DIR = "prediction"
WEIGHTS_SUFFIX = ".weights.h5"
BOOK_WEIGHTS_SUFFIX = ".h5"
BEST_SUFFIX = "-best-iou"
METRICS_SUFFIX = ".json"
LAST_STATE_SUFFIX = "-last.state.npz"
MIOU_HISTORY = "miou_history.npy"
MPLA_HISTORY = "mpla_history.npy"
HISTORY_CSV = "history.csv"
REPORT_FILE = "report.png"
# Held by the run training into a save folder (segmentation/lock.py).
LOCK_FILE = ".training.lock"
KERAS_SUFFIX = ".keras"
SAVED_MODEL_FILE = "saved_model.pb"
# Ground truth as a folder of class-index masks: `<image stem>.png` each, and the class names beside
# them; beside a `.npy` file the names are `<file stem>.classes.json` (`segmentation_train.classes.json`).
MASK_SUFFIX = ".png"
MASK_FOLDER_CLASSES = "classes.json"
CLASSES_SUFFIX = ".classes.json"
LABELS_SUFFIX = ".npy"
ONNX_SUFFIX = ".onnx"
LITERT_SUFFIX = ".tflite"
# What each --export-format writes from `--export PATH`; the SavedModel is the folder PATH itself.
EXPORT_SUFFIXES = {"keras": KERAS_SUFFIX, "savedmodel": "", "onnx": ONNX_SUFFIX, "litert": LITERT_SUFFIX}


def class_names_path(labels_path: str) -> str:
    """Where the class names of a ground truth are stored: in its mask folder, or beside its `.npy` file.

    Args:
        labels_path: str. A mask folder, or a `.npy` file (which need not exist yet).

    Returns:
        `<folder>/classes.json`, or `<file without .npy>.classes.json`.
    """
    if os.path.isdir(labels_path):
        return os.path.join(labels_path, MASK_FOLDER_CLASSES)
    stem = labels_path[: -len(LABELS_SUFFIX)] if labels_path.endswith(LABELS_SUFFIX) else labels_path
    return stem + CLASSES_SUFFIX


def weights_name(depth: int, n_layers: int, dataset: str) -> str:
    """The book's weights name, `ResNet56v2-3layer-drinks-best-iou`.

    Args:
        depth: int. The backbone's depth; its name opens the weights name.
        n_layers: int. The `--layers` value.
        dataset: str. The `--dataset` value.

    Returns:
        The name without a suffix.
    """
    return f"{backbone_name(depth)}-{n_layers}layer-{dataset}{BEST_SUFFIX}"


def _weights_stem(weights_path: str) -> str:
    return weights_path[: -len(WEIGHTS_SUFFIX)] if weights_path.endswith(WEIGHTS_SUFFIX) else weights_path


def best_metrics_path(weights_path: str) -> str:
    """The JSON file beside a best-weights file: `<name>-best-iou.json`."""
    return _weights_stem(weights_path) + METRICS_SUFFIX


def last_state_path(weights_path: str) -> str:
    """The last-state file of a run whose best weights go to `weights_path`."""
    stem = _weights_stem(weights_path)
    stem = stem[: -len(BEST_SUFFIX)] if stem.endswith(BEST_SUFFIX) else stem
    return stem + LAST_STATE_SUFFIX


def list_folder(directory: str, fix: str) -> list[str]:
    """The names in a folder, sorted; one that cannot be listed (no permission, a lost mount) is refused.

    Args:
        directory: str. The folder.
        fix: str. How to fix it, ending the message, e.g. "make it readable or give the right --data-path".

    Raises:
        DatasetError: naming the folder, the OS's reason and `fix`.
    """
    try:
        return sorted(os.listdir(directory))
    except OSError as error:
        raise DatasetError(f"{directory}: cannot list the folder ({describe_os_error(error)}); {fix}.") from None


def check_output_dir(directory: str, flag: str = "--save-dir") -> None:
    """Refuses an output folder that is a file or cannot be written, without creating anything.

    Args:
        directory: str. The folder.
        flag: str. The flag that named it, for the message. Defaults to "--save-dir".

    Raises:
        UsageError: naming the folder and the reason.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"{flag} {directory}: is a file, not a folder. Choose another {flag}.")
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag} {directory}: cannot be created because {existing} is a file. "
                         f"Choose another {flag}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {directory}: {existing} is not writable. Choose another {flag}.")


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """The files of one training run in its save folder.

    Attributes:
        save_dir: str. The folder (`--save-dir`, or a worker's own folder in it).
        weights: str. The best weights, `<save_dir>/<weights name>.weights.h5`.
    """

    save_dir: str
    weights: str

    @classmethod
    def of(cls, save_dir: str, depth: int, n_layers: int, dataset: str) -> "RunFiles":
        return cls(save_dir, os.path.join(save_dir, weights_name(depth, n_layers, dataset) + WEIGHTS_SUFFIX))

    @property
    def state(self) -> str:
        return last_state_path(self.weights)

    @property
    def history_csv(self) -> str:
        return os.path.join(self.save_dir, HISTORY_CSV)

    @property
    def report(self) -> str:
        return os.path.join(self.save_dir, REPORT_FILE)

    @property
    def histories(self) -> tuple[str, ...]:
        """The files every run into the folder writes under the same names: histories and report."""
        return (self.history_csv, os.path.join(self.save_dir, MIOU_HISTORY), os.path.join(self.save_dir, MPLA_HISTORY),
                self.report)


def histories_of_another_run(files: RunFiles) -> str | None:
    """The last state of another network's run whose histories and report lie in the save folder, or None.

    The histories carry no run's name, so they are taken to be those of the run that saved its state
    last (a run rewrites them after every epoch, just before its state). None when there are no
    histories, no other run's state, or this run's state is the newest: the histories are then this
    run's, or they were left by a run that kept no state (the book's own).

    Args:
        files: RunFiles. This run's files.

    Returns:
        The other run's last-state file, or None.
    """
    if not any(os.path.isfile(path) for path in files.histories):
        return None
    own = os.path.basename(files.state)
    states = [os.path.join(files.save_dir, name) for name in os.listdir(files.save_dir)
              if name.endswith(LAST_STATE_SUFFIX) and name != own]
    if not states:
        return None
    newest = max(states, key=os.path.getmtime)
    if os.path.isfile(files.state) and os.path.getmtime(files.state) >= os.path.getmtime(newest):
        return None
    return newest


def check_histories_are_this_runs(files: RunFiles, resume: bool) -> None:
    """Refuses a run that would replace another network's histories and report (`histories_of_another_run`).

    Args:
        files: RunFiles. This run's files.
        resume: bool. `--resume`, which cannot be given `--overwrite`.

    Raises:
        UsageError: naming both runs and the fix.
    """
    other = histories_of_another_run(files)
    if other is None:
        return
    fix = ("move them away to resume it." if resume else
           "choose another --save-dir, move them away, or give --overwrite to replace them.")
    raise UsageError(
        f"{files.save_dir}: {', '.join(os.path.basename(path) for path in files.histories)} are those of the run "
        f"{_run_name(other)} (its state {os.path.basename(other)}); this run of {_run_name(files.state)} would "
        f"replace them: {fix}"
    )


def _run_name(state_path: str) -> str:
    return os.path.basename(state_path).removesuffix(LAST_STATE_SUFFIX)
