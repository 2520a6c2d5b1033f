"""The programs' error types and exit statuses: each error is one line naming the file or flag and the fix.

Every error a command line reports derives from `ProgramError`, which carries its exit status; each entry
point catches `ProgramError` once and prints it with `report_error` as `<prog>: error: <message>`, the
name being its parser's `prog`.
"""

import os
import sys

# Exit statuses besides 0: bad input, a numerical fault in training, Ctrl-C (128 + SIGINT), SIGTERM
# (128 + 15: `timeout`, Slurm, Kubernetes, a preempted cloud machine), and the synthetic set's --check
# finding the classes separable by colour alone.
EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_CHECK_FAILED = 1


class ProgramError(Exception):
    """An error that ends a program with one line on stderr; `exit_status` is the program's exit status."""

    exit_status = EXIT_BAD_INPUT


class UsageError(ProgramError):
    """A command-line value or named file cannot be used; the message says how to fix it."""


class DatasetError(ProgramError):
    """A data set file is missing or malformed; the message says which and how to fix it."""


class CheckpointError(ProgramError):
    """A checkpoint file cannot be used; the message names it and says how to fix it."""


class InferenceError(ProgramError):
    """An input folder or output path cannot be used; the message says how to fix it."""


class SaveError(ProgramError):
    """A file could not be written (a full disk, a lost mount, permissions); the message names it."""


class NonFiniteLossError(ProgramError):
    """The loss or the weights became NaN or infinite; the message says when."""

    exit_status = EXIT_NON_FINITE


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; raised where Ctrl-C's KeyboardInterrupt would be, and handled alike."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM during training; carries the epochs whose state is saved."""

    def __init__(self, epochs_done: int, state_path: str, terminated: bool = False):
        super().__init__(f"interrupted after {epochs_done} epoch(s)")
        self.epochs_done = epochs_done
        self.state_path = state_path
        self.terminated = terminated


def describe_os_error(error: OSError) -> str:
    """The OS's words for an error (`No space left on device`), or the error's first line."""
    if error.errno is not None:
        return os.strerror(error.errno)
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def report_error(error: ProgramError, prog: str | None) -> int:
    """Prints `error` as its one line on stderr and returns its exit status.

    Args:
        error: ProgramError. What ended the program.
        prog: str or None. The program's name, its parser's `prog`: the line reads
            `<prog>: error: <message>`. None leaves the name out (`error: <message>`), the
            VIA converter's line (`utils/generate_gt_segmentation.py`).

    Returns:
        `error.exit_status`.
    """
    print(f"{prog}: error: {error}" if prog else f"error: {error}", file=sys.stderr)
    return error.exit_status
