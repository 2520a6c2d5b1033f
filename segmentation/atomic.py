"""Files written whole or not at all: a temporary beside the target, renamed into place.

Every file the program writes (weights, their metrics, the training state, histories, figures, masks,
exports) goes through `staged_file` or `write_atomically`: the new bytes go to a hidden temporary in the
same folder and `os.replace` puts them in place, so a crash, a kill or a full disk leaves the previous
version whole. `check_free_space` refuses an HDF5 write the disk cannot hold before it starts.
"""

import contextlib
import gc
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator

from segmentation.errors import SaveError, describe_os_error


@contextlib.contextmanager
def staged_file(path: str, write: Callable[[str], None], suffix: str = ".tmp") -> Iterator[Callable[[], None]]:
    """Has `write` fill a temporary file beside `path`; yields the function that renames it over `path`.

    The temporary file is in the same folder (so `os.replace` is atomic), hidden, and named
    after the process so that two runs sharing a folder stay apart. Until the rename, `path`
    is untouched; a temporary not renamed by the end of the `with` block (an error, a kill of
    the block) is removed. Staging several files first and renaming them after writes all or,
    when one fails, none.

    Args:
        path: str. Target file.
        write: callable. Called with the temporary path; writes the whole file there.
        suffix: str. Ending of the temporary name (Keras wants `.weights.h5`). Defaults to ".tmp".

    Raises:
        SaveError: if the file cannot be written (a full disk, say): one line naming it.
    """
    directory, filename = os.path.split(path)
    temporary = os.path.join(directory, f".{filename}.{os.getpid()}.partial{suffix}")
    try:
        reason = None
        with _unraisable_errors_held() as held:
            try:
                write(temporary)
                with open(temporary, "rb+") as file:
                    os.fsync(file.fileno())
            except OSError as error:
                reason = describe_os_error(error)
            if reason is not None:
                # The failed write's objects (an h5py file still open, say) are referenced only by the
                # finished exception's frames now: free them here, their close errors held back, and
                # not at exit, where closing a file that cannot be flushed crashes HDF5.
                gc.collect()
                held.clear()
        if reason is not None:
            raise SaveError(
                f"{path}: cannot be written ({reason}); the files written before are unchanged. "
                "Free some space, or fix the folder, and run again."
            )
        for unraisable in held:
            sys.unraisablehook(unraisable)
        yield lambda: os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_atomically(path: str, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Has `write` fill a temporary file beside `path`, then renames it over `path` (see `staged_file`).

    A crash or kill at any moment leaves either the old `path` or the new one, never a mix.

    Raises:
        SaveError: if the file cannot be written; `path` is then unchanged.
    """
    with staged_file(path, write, suffix) as commit:
        commit()


@contextlib.contextmanager
def _unraisable_errors_held() -> Iterator[list]:
    """Holds back the errors Python can only print (an h5py file's close failing in `__del__`).

    A failed write makes h5py print a traceback for each object it frees; the failure itself
    is reported once, by `write_atomically`. The caller passes on what it does not clear.
    """
    held: list = []
    hook = sys.unraisablehook
    sys.unraisablehook = held.append
    try:
        yield held
    finally:
        sys.unraisablehook = hook


def check_free_space(path: str, needed: int) -> None:
    """Refuses to start an HDF5 write that the disk cannot hold.

    HDF5 cannot recover from a full disk in the middle of a file: its open objects can be
    neither flushed nor closed, and the process crashes at exit. So a weights file is written
    only where its whole size is free; Python's own writes (the state, JSON, CSV, images) fail
    cleanly on their own and need no such check.

    Raises:
        SaveError: naming the file, the bytes needed and the bytes free.
    """
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if free < needed:
        raise SaveError(
            f"{path}: cannot be written (No space left on device: it needs {needed / 1e6:.1f} MB, "
            f"{free / 1e6:.1f} MB are free); the files written before are unchanged. Free some space, or "
            "choose another --save-dir, and run again."
        )


def json_writer(record: dict) -> Callable[[str], None]:
    """A `write` for `staged_file`: `record` as indented JSON."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(record, file, indent=2)
            file.write("\n")

    return write
