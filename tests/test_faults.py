"""Faults a long run meets on a shared or cloud machine: a full disk and a second run in the same save dir."""

import builtins
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import ROOT, STATE, TINY, WEIGHTS, error_lines, run_script, snapshot, write_book_dataset

from segmentation.checkpoints import read_training_state
from segmentation.paths import LOCK_FILE


def test_a_full_disk_ends_the_run_in_one_line_and_keeps_every_earlier_file(trained_run, run_cli, monkeypatch):
    save_dir = trained_run.save_dir
    before = snapshot(save_dir)
    real_fsync = os.fsync

    def full_disk(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    resume = trained_run.resume(trained_run.epochs + 1)
    status, _, err = run_cli(resume)
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{save_dir}{os.sep}" in err and "cannot be written (No space left on device)" in err
    assert snapshot(save_dir) == before, "an earlier file changed, or a partial file was left"
    # Space again: the run resumes where it was.
    monkeypatch.setattr(os, "fsync", real_fsync)
    status, _, err = run_cli(resume)
    assert status == 0, err
    assert read_training_state(str(save_dir / STATE)).epochs_done == trained_run.epochs + 1


class FullDiskFile:
    """A file opened for writing whose every write fails as a full disk's does."""

    def __init__(self, file):
        self._file = file

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._file.name)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self._file.close()


def test_writes_failing_on_a_full_disk_end_the_run_in_one_line_and_keep_every_earlier_file(
        trained_run, run_cli, monkeypatch):
    """The writes themselves fail (not only the fsync after them), for every file Python writes in the save dir.

    HDF5 writes its `.weights.h5` files in C, past Python's `open`: a full disk there is the tmpfs tests' case.
    """
    save_dir = trained_run.save_dir
    before = snapshot(save_dir)
    real_open = builtins.open
    failed = []

    def full_disk_open(file, mode="r", *args, **kwargs):
        opened = real_open(file, mode, *args, **kwargs)
        writing = isinstance(file, str | os.PathLike) and any(letter in mode for letter in "wax+")
        if writing and os.path.abspath(file).startswith(str(save_dir)) and not str(file).endswith(LOCK_FILE):
            failed.append(os.path.basename(file))
            return FullDiskFile(opened)
        return opened

    monkeypatch.setattr(builtins, "open", full_disk_open)
    monkeypatch.setattr(io, "open", full_disk_open)
    status, _, err = run_cli(trained_run.resume(trained_run.epochs + 1))
    monkeypatch.undo()
    assert failed, "no file was written through open()"
    assert status == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "cannot be written (No space left on device)" in err
    assert snapshot(save_dir) == before, "an earlier file changed, or a partial file was left"


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs(size)` mounts a tmpfs of that size in tmp_path (needs root, as CI has); unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the injected fault above runs everywhere")
    mounted = []

    def mount(size):
        mount_point = tmp_path / f"tmpfs{len(mounted)}"
        mount_point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                                capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(mount_point)
        return mount_point

    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_disk_too_small_for_the_best_weights_exits_2_without_a_crash(tmp_path, tmpfs):
    """HDF5 cannot survive a full disk mid-file (the process crashed at exit, status 139): checked first."""
    # An 8-filter head's best weights (4 MB) do not fit in 2 MB.
    save_dir = tmpfs("2m") / "weights"
    data_path = str(tmp_path / "drinks")
    write_book_dataset(data_path, num_train=4, num_test=2)
    result = run_script(["--train", "--epochs", "1", "--seed", "0", "--workers", "1", *TINY, "--head-filters", "8",
                         "--data-path", data_path, "--save-dir", str(save_dir)], tmp_path)
    lines = error_lines(result.stderr)
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "-best-iou.weights.h5: cannot be written (No space left on device: it needs" in lines[0]
    assert not [name for name in os.listdir(save_dir) if ".partial" in name or name.endswith(".h5")]


def test_a_really_full_disk_exits_2_without_a_traceback(trained_run, tmp_path, tmpfs, run_cli):
    """The program on a filesystem that fills up: no traceback, no crash at exit, nothing lost."""
    small = tmpfs("32m")  # the shared run's 8 MB and the filler
    save_dir = small / "weights"
    shutil.copytree(trained_run.save_dir, save_dir)
    # The run's flags with the save folder on the small filesystem (the later --save-dir wins).
    resume = [*trained_run.resume(trained_run.epochs + 1), "--save-dir", str(save_dir)]
    before = snapshot(save_dir)
    filler = small / "filler"
    with open(filler, "wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    # In a process of its own: HDF5 failing in C could crash it at exit.
    result = run_script(resume, tmp_path)
    lines = error_lines(result.stderr)
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot be written (No space left on device" in lines[0]
    after = snapshot(save_dir)
    assert after == before, sorted(set(after) ^ set(before))
    filler.unlink()
    status, _, err = run_cli(resume)
    assert status == 0, err
    assert read_training_state(str(save_dir / STATE)).epochs_done == trained_run.epochs + 1


HOLD_LOCK = """
import sys, time
from segmentation.lock import training_lock
with training_lock(sys.argv[1]):
    open(sys.argv[2], "w").close()
    time.sleep(600)
"""


def hold_lock(save_dir, marker):
    """A process holding the save dir's training lock, started and waited for."""
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(save_dir), str(marker)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    return process


def test_a_busy_save_dir_is_refused_and_the_lock_of_a_killed_run_is_taken_over_with_a_notice(trained_run, tmp_path,
                                                                                               run_cli):
    save_dir = trained_run.save_dir
    resume = trained_run.resume(trained_run.epochs + 1)
    holder = hold_lock(save_dir, tmp_path / "locked")
    try:
        before = snapshot(save_dir)
        status, _, err = run_cli(resume)
        assert status == 2 and err.count("\n") == 1
        assert f"another training run is using it (process {holder.pid}," in err
        assert snapshot(save_dir) == before
        # Evaluation only reads the folder: no lock needed.
        status, _, err = run_cli(["--evaluate", *trained_run.flags, "--restore-weights", WEIGHTS])
        assert status == 0, err
    finally:
        holder.kill()
        holder.wait()
    # The holder killed, as a run is by SIGKILL or a crash: its lock file stays, and the next run takes it over.
    lock = save_dir / LOCK_FILE
    assert json.loads(lock.read_text())["pid"] == holder.pid
    status, out, err = run_cli(resume)
    assert status == 0, err
    assert f"taking over the lock left by a run that has ended (process {holder.pid}," in out
    assert not lock.exists()
