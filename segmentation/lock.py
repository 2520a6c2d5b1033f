"""One training run per save folder: a lock file held while a run trains into it.

The lock is an advisory `fcntl.flock` on `<save dir>/.training.lock`, which also records
the holder's process id, start time and command line. The operating system releases it
when the process ends, however it ends (SIGKILL included), so a lock file left behind by a
killed run is recognised as free and taken over, with a notice naming the run that left it.
Evaluation and prediction read the save folder and take no lock.
"""

import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Iterator

from segmentation.errors import SaveError, UsageError, describe_os_error
from segmentation.paths import LOCK_FILE

logger = logging.getLogger(__name__)


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"process {holder.get('pid', '?')}, started {started}: {holder.get('command', '?')}"


def _busy(save_dir: str, file) -> UsageError:
    """The one-line refusal of a folder another live run holds, naming that run."""
    return UsageError(
        f"--save-dir {save_dir}: another training run is using it ({_describe(_read_holder(file))}); "
        "wait for it to end, or give another --save-dir."
    )


def _read_holder(file) -> dict:
    file.seek(0)
    try:
        holder = json.loads(file.read().decode("utf-8", "replace") or "{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def _locked(path: str, save_dir: str) -> Iterator:
    """The lock file, open and exclusively locked; the one at `path` now, not one a finishing run removed."""
    while True:
        # Unbuffered: a write that fails (a full disk) fails at once, leaving nothing to flush at close.
        with open(path, "a+b", buffering=0) as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _busy(save_dir, file) from None
            if os.path.exists(path) and os.path.samestat(os.stat(path), os.fstat(file.fileno())):
                yield file
                return


def _refuse_if_busy(path: str, save_dir: str) -> None:
    """Refuses a folder whose lock a live process holds, before anything is created."""
    if not os.path.isfile(path):
        return
    with open(path, "rb") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(save_dir, file) from None


@contextlib.contextmanager
def training_lock(save_dir: str) -> Iterator[None]:
    """Holds the save folder's training lock for the `with` block; creates the folder if needed.

    Args:
        save_dir: str. The folder the run trains into.

    Raises:
        UsageError: if another live process holds the lock (nothing is written then).
        SaveError: if the lock file cannot be written (a full disk, say).
    """
    path = os.path.join(save_dir, LOCK_FILE)
    _refuse_if_busy(path, save_dir)
    created = not os.path.isdir(save_dir)
    with contextlib.ExitStack() as stack:
        try:
            os.makedirs(save_dir, exist_ok=True)
            file = stack.enter_context(_locked(path, save_dir))
            stack.callback(_release, file, path, save_dir, created)
            earlier = _read_holder(file)
            file.seek(0)
            file.truncate()
            holder = {"pid": os.getpid(), "started": time.time(), "command": " ".join(sys.argv)}
            file.write(json.dumps(holder).encode("utf-8"))
        except OSError as error:
            raise SaveError(
                f"{path}: cannot be written ({describe_os_error(error)}); nothing was trained or saved. "
                "Free some space, or fix the folder, and run again."
            ) from None
        if earlier:
            logger.info("%s: taking over the lock left by a run that has ended (%s)", path, _describe(earlier))
        yield


def _release(file, path: str, save_dir: str, created: bool) -> None:
    """Frees the lock: its file removed, and the folder too if the run made it and left it empty."""
    if os.path.exists(path):
        os.remove(path)
    fcntl.flock(file, fcntl.LOCK_UN)
    if created and not os.listdir(save_dir):
        # A run refused before it wrote anything leaves no empty folder behind.
        os.rmdir(save_dir)
