"""The program's error types and exit statuses: each error is one line naming the file or flag and the fix."""

# Exit statuses besides 0: bad input, a numerical fault in training, Ctrl-C (128 + SIGINT), and the
# synthetic set's --check finding the classes separable by colour alone.
EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3
EXIT_INTERRUPTED = 130
EXIT_CHECK_FAILED = 1


class UsageError(Exception):
    """A command-line value or named file cannot be used; the message says how to fix it."""


class DatasetError(Exception):
    """A data set file is missing or malformed; the message says which and how to fix it."""


class CheckpointError(Exception):
    """A checkpoint file cannot be used; the message names it and says how to fix it."""


class InferenceError(Exception):
    """An input folder or output path cannot be used; the message says how to fix it."""


class NonFiniteLossError(Exception):
    """The loss or the weights became NaN or infinite; the message says when."""


class TrainingInterrupted(Exception):
    """Ctrl-C during training; carries the epochs whose state is saved."""

    def __init__(self, epochs_done: int, state_path: str):
        super().__init__(f"interrupted after {epochs_done} epoch(s)")
        self.epochs_done = epochs_done
        self.state_path = state_path
