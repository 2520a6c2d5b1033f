"""Plot a per-epoch metric history (Figures 12.5.1 and 12.5.2).

    python3 utils/plot_history.py --history weights/miou_history.npy
    python3 utils/plot_history.py --history weights/mpla_history.npy

The training program saves `miou_history.npy` (test mIoU per epoch) and
`mpla_history.npy` (mean pixel accuracy per epoch, in percent, as the book
saved it) in its `--save-dir`. This tool prints the best value and saves
`<history>.png`, for any number of epochs.
"""

import argparse
import os

import numpy as np
from matplotlib.figure import Figure

from segmentation.errors import ProgramError, UsageError, report_error
from segmentation.process_state import kept_process_state


def load_history(path: str) -> np.ndarray:
    """Reads a 1-D history saved with `np.save`.

    Args:
        path: str. The `.npy` file.

    Returns:
        float64 array of one value per epoch.

    Raises:
        UsageError: if the file is missing, unreadable, empty or not 1-D numbers.
    """
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file. Train first; histories are saved in --save-dir.")
    try:
        history = np.load(path, allow_pickle=False)
    except Exception as error:  # np.load raises many types for a bad file
        raise UsageError(f"{path}: not a .npy array ({type(error).__name__}).") from None
    if history.ndim != 1 or history.size == 0 or not np.issubdtype(history.dtype, np.number):
        raise UsageError(f"{path}: expected a non-empty 1-D array of per-epoch values, got {history.shape}.")
    return history.astype(np.float64)


def plot_history(history: np.ndarray, name: str, path: str) -> None:
    """Plots one metric against its epochs (1-based) and saves a PNG.

    Args:
        history: array. One value per epoch.
        name: str. The history file's name; "iou" in it means mIoU, otherwise
            mean pixel accuracy.
        path: str. The PNG to write.
    """
    if "iou" in name:
        label, title = "mIoU", "mIoU on test dataset"
    else:
        label, title = "mean pixel accuracy (%)", "Mean pixel accuracy on test dataset"
    epochs = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(6.4, 4.8))
    axis = fig.subplots()
    axis.plot(epochs, history, marker="." if len(history) < 30 else None)
    axis.set_xlabel("epoch")
    axis.set_ylabel(label)
    axis.set_title(title, fontsize=14)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


@kept_process_state()
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description="Plot a per-epoch metric history (Figures 12.5.1, 12.5.2).")
    parser.add_argument("--history", default="miou_history.npy",
                        help="history file saved by fcn-12.3.1.py --train (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        history = load_history(args.history)
    except ProgramError as error:
        return report_error(error, parser.prog)
    best_epoch = int(np.argmax(history)) + 1
    print(f"Max: {history.max():.4f} at epoch {best_epoch} of {len(history)}")
    output = args.history + ".png"
    plot_history(history, os.path.basename(args.history), output)
    print(f"Saved {output}")
    return 0

