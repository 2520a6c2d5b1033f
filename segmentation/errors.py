"""The program's error types and exit statuses: each error is one line naming the file or flag and the fix."""

import os

# Exit statuses besides 0: bad input, a numerical fault in training, Ctrl-C (128 + SIGINT), SIGTERM
# (128 + 15: `timeout`, Slurm, Kubernetes, a preempted cloud machine), and the synthetic set's --check
# finding the classes separable by colour alone.
EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_CHECK_FAILED = 1


class UsageError(Exception):
    """A command-line value or named file cannot be used; the message says how to fix it."""


class DatasetError(Exception):
    """A data set file is missing or malformed; the message says which and how to fix it."""


class CheckpointError(Exception):
    """A checkpoint file cannot be used; the message names it and says how to fix it."""


class InferenceError(Exception):
    """An input folder or output path cannot be used; the message says how to fix it."""


class SaveError(Exception):
    """A file could not be written (a full disk, a lost mount, permissions); the message names it."""


class NonFiniteLossError(Exception):
    """The loss or the weights became NaN or infinite; the message says when."""


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
