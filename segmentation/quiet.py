"""A quiet start: TensorFlow's C++ start-up lines and dependencies' idle warnings left out (project addition).

Every command that loads TensorFlow used to open with lines such as `Could not find cuda drivers on
your machine`, `oneDNN custom operations are on` and `E0000 ... failed call to cuInit` (which reads as a
failure on a machine that simply has no GPU). `quiet_start` wraps an entry point's imports: it sets
`TF_CPP_MIN_LOG_LEVEL` to 3 (only fatal errors), which must happen before TensorFlow is imported, and
leaves out the lines TensorFlow prints while it loads regardless of that level (its CUDA stubs log
through absl before the level is read). `--verbose 2` (or more) on the command line, or a
`TF_CPP_MIN_LOG_LEVEL` the user set, keeps every line.

    with quiet_start(sys.argv[1:]):
        from segmentation import cli
"""

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# TensorFlow's C++ log level while quiet: 3 hides INFO, WARNING and ERROR (the cuInit line is an ERROR).
QUIET_LOG_LEVEL = "3"
# The `--verbose` level from which TensorFlow's own lines are shown (the command line's DEBUG level).
VERBOSE_SHOWS_TENSORFLOW = 2
# Lines TensorFlow prints while it loads, before its log level applies: absl's notice, and INFO, WARNING
# and ERROR lines in absl's format (`I0000 00:00:1796166383.229713    9173 cudart_stub.cc:31] ...`) or in
# TensorFlow's own (`2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ...`). FATAL lines stay.
START_UP_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\] "
)
# Python warnings raised inside dependencies that tell a user of this program nothing they can act on:
# deprecations inside TensorFlow, Keras and their own dependencies (pytest ignores them too, pyproject.toml).
# The export's `np.object` FutureWarning is filtered where it arises (inference.export_model).
IDLE_WARNINGS = ((DeprecationWarning, ""),)


def shows_tensorflow_lines(argv: Sequence[str], environ: dict | None = None) -> bool:
    """Whether the user asked for TensorFlow's own lines: `--verbose 2` or more, or their own log level.

    Args:
        argv: sequence of str. The command line, without the program name.
        environ: dict or None. The environment. Defaults to None: `os.environ`.

    Returns:
        True to leave TensorFlow's output as it is.
    """
    environ = os.environ if environ is None else environ
    if LOG_LEVEL_VARIABLE in environ:
        return True
    for index, argument in enumerate(argv):
        name, equals, value = argument.partition("=")
        # argparse also takes an unambiguous prefix of a long flag (`--verb 2`).
        if not (name.startswith("--v") and "--verbose".startswith(name)):
            continue
        if not equals:
            value = argv[index + 1] if index + 1 < len(argv) else ""
        with contextlib.suppress(ValueError):
            if int(value) >= VERBOSE_SHOWS_TENSORFLOW:
                return True
    return False


def filter_idle_warnings() -> None:
    """Leaves out the dependencies' warnings listed in `IDLE_WARNINGS` (the project's own still show)."""
    for category, message in IDLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def without_start_up_lines(text: str) -> str:
    """`text` less TensorFlow's start-up lines (`START_UP_LINE`)."""
    return "".join(line for line in text.splitlines(keepends=True) if not START_UP_LINE.match(line))


@contextlib.contextmanager
def quiet_start(argv: Sequence[str]) -> Iterator[None]:
    """Quiets TensorFlow and the dependencies for the imports in the `with` body, unless asked not to.

    Sets `TF_CPP_MIN_LOG_LEVEL` for the whole process and filters `IDLE_WARNINGS`; while the body runs,
    stderr (file descriptor 2, where C++ writes) goes to a temporary file, which is then written to the
    real stderr less TensorFlow's start-up lines, also when the body raises. Nothing changes when
    `shows_tensorflow_lines(argv)`.

    Args:
        argv: sequence of str. The command line, without the program name.
    """
    if shows_tensorflow_lines(argv):
        yield
        return
    os.environ[LOG_LEVEL_VARIABLE] = QUIET_LOG_LEVEL
    filter_idle_warnings()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                captured.seek(0)
                text = captured.read().decode(errors="replace")
                sys.stderr.write(without_start_up_lines(text))
                sys.stderr.flush()
    finally:
        os.close(saved)
