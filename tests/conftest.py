"""Shared fixtures and constants: the tiny network's flags, tiny data sets in the book's format, one trained tiny
run per test process, the command line run in-process or as a script, --run-slow and --force-cpu-bf16."""

import contextlib
import dataclasses
import io
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import skimage.io

from segmentation.quiet import LOG_LEVEL_VARIABLE, quiet_start

HEIGHT, WIDTH = 64, 64
N_CLASSES = 4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "fcn-12.3.1.py")
# The tiny network of the end-to-end tests: ResNet11v2 (n = 1) under a one-level pyramid, batches of two.
TINY = ["--height", str(HEIGHT), "--width", str(WIDTH), "--layers", "1", "--depth", "11", "--batch-size", "2"]
# What a tiny run on the book's data set writes in its save folder.
WEIGHTS = "ResNet11v2-1layer-drinks-best-iou.weights.h5"
RECORD = "ResNet11v2-1layer-drinks-best-iou.json"
STATE = "ResNet11v2-1layer-drinks-last.state.npz"
# The epochs of the shared tiny run (`trained_run`).
TRAINED_EPOCHS = 2
# The test files that take longest (about 25-45 s each on a 2-core machine), longest first: they run first, so that
# `make test`'s two test processes, handed whole files in collection order (--dist loadfile --no-loadscope-reorder),
# end together rather than one waiting for the other's last long file.
LONGEST_FILES = ("test_cli.py", "test_resume.py", "test_faults.py", "test_images.py", "test_budget.py",
                 "test_export.py")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow, and the fuzz tests with their full example counts")
    parser.addoption("--force-cpu-bf16", action="store_true",
                     help="run every in-process command line as on a CPU whose flags list avx512_bf16, so that "
                          "--precision auto trains in mixed bfloat16 on any CPU (the programs tests start in "
                          "subprocesses read this CPU's flags)")


def pytest_configure(config):
    """Loads TensorFlow in every process that runs tests, without its start-up lines, before the test files do.

    The environment is put back as it was, so the programs the tests start choose their own log level.
    pytest-xdist's controller runs no test, so it starts its workers without waiting for TensorFlow.
    """
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    user_log_level = os.environ.get(LOG_LEVEL_VARIABLE)
    with quiet_start([]):
        import segmentation.cli  # noqa: F401
    if user_log_level is None:
        os.environ.pop(LOG_LEVEL_VARIABLE, None)


def pytest_collection_modifyitems(config, items):
    # A stable sort: the longest files first, the others in pytest's order, each file's tests in their own.
    items.sort(key=lambda item: LONGEST_FILES.index(item.path.name) if item.path.name in LONGEST_FILES
               else len(LONGEST_FILES))
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: give --run-slow to run it")
    for item in items:
        # The other Keras backends' end-to-end runs are long subprocesses too (make test-slow runs them).
        if "slow" in item.keywords or "backends" in item.keywords:
            item.add_marker(skip)


def write_book_dataset(data_path, num_train=8, num_test=4, height=HEIGHT, width=WIDTH, seed=0):
    """Writes JPEG-free PNG images and the book's one-hot .npy dicts.

    Each image holds up to three coloured rectangles, one per object class, on
    a noisy background; the masks are the book's uint8 one-hot format.

    Returns:
        dict with the train and test label dicts.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(data_path, exist_ok=True)
    colours = {1: (220, 40, 40), 2: (40, 200, 40), 3: (40, 60, 220)}
    splits = {}
    for split, count in (("train", num_train), ("test", num_test)):
        dictionary = {}
        for i in range(count):
            image = rng.integers(90, 150, size=(height, width, 3)).astype(np.uint8)
            labels = np.zeros((height, width), dtype=np.uint8)
            for class_id, colour in colours.items():
                if rng.random() < 0.25:
                    continue
                top, left = rng.integers(0, height - 16), rng.integers(0, width - 16)
                size_y, size_x = rng.integers(8, 16, size=2)
                image[top : top + size_y, left : left + size_x] = colour
                labels[top : top + size_y, left : left + size_x] = class_id
            name = f"{split}{i:03d}.png"
            skimage.io.imsave(os.path.join(data_path, name), image, check_contrast=False)
            dictionary[name] = np.eye(N_CLASSES, dtype=np.uint8)[labels]
        np.save(os.path.join(data_path, f"segmentation_{split}.npy"), dictionary)
        splits[split] = dictionary
    return splits


@pytest.fixture(autouse=True)
def force_cpu_bf16(request, monkeypatch):
    """With --force-cpu-bf16, this CPU's flags list avx512_bf16 besides its own (`precision.cpu_bf16_flags`)."""
    from segmentation import precision

    if not request.config.getoption("--force-cpu-bf16"):
        return
    listed = precision.cpu_bf16_flags

    def with_avx512_bf16(cpuinfo_path=precision.CPU_FLAGS_FILE):
        flags = set(listed(cpuinfo_path))
        if cpuinfo_path == precision.CPU_FLAGS_FILE:  # this machine's CPU, not a test's own description of one
            flags.add(precision.AVX512_BF16)
        return tuple(flag for flag in precision.CPU_BF16_FLAGS if flag in flags)

    monkeypatch.setattr(precision, "cpu_bf16_flags", with_avx512_bf16)


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    files = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as file:
                files[os.path.relpath(path, folder)] = file.read()
    return files


@pytest.fixture
def run_cli(capsys):
    """Runs `fcn-12.3.1.py ARGV` in-process: `run_cli(argv)` returns (exit status, stdout, stderr)."""

    from segmentation import cli

    def run(argv):
        try:
            status = cli.main(list(argv))
        except SystemExit as exit:  # argparse's own errors
            status = exit.code
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


@pytest.fixture
def book_dataset(tmp_path):
    """A tiny data set in the book's layout: (data_path, {'train': dict, 'test': dict})."""
    data_path = tmp_path / "drinks"
    splits = write_book_dataset(str(data_path))
    return str(data_path), splits


def run_script(argv, cwd, script=SCRIPT, env=None, timeout=300):
    """Runs `script ARGV` (`fcn-12.3.1.py` unless told) in a fresh interpreter, as a reader does.

    Args:
        argv: list of str. The script's arguments.
        cwd: path. Its working directory.
        script: str. The script's path.
        env: dict or None. Its environment; by default this one with TensorFlow's C++ log lines off.
        timeout: float. Seconds before it is killed.

    Returns:
        subprocess.CompletedProcess, with stdout and stderr as text.
    """
    if env is None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, script, *argv], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)


def error_lines(stderr):
    """stderr without TensorFlow's own C++ start-up lines, nor blank ones."""
    noise = ("WARNING: All log messages", "I0000", "W0000", "E0000")
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(noise)]


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A copy of the shared tiny run, the test's own: `folder` holds `drinks/` (its data set, 4 training and 3 test
    images), `weights/` (its save folder) and `logs/` (its --tensorboard logs).

    Attributes:
        folder: pathlib.Path. The copy.
        data_path: str. Its data set.
        save_dir: pathlib.Path. Its save folder, after `epochs` epochs.
        flags: list of str. The run's network, data set and save folder: with `--evaluate` or
            `--restore-weights`, they use its weights; `resume(epochs)` trains it on.
        epochs: int. The epochs it has trained.
        printed: str. What its training printed on stdout.
    """

    folder: pathlib.Path
    data_path: str
    save_dir: pathlib.Path
    flags: list
    epochs: int
    printed: str = ""

    def resume(self, epochs):
        """The argv that resumes the run up to `epochs` epochs."""
        return ["--train", "--epochs", str(epochs), "--resume", "--seed", "0", "--workers", "1", *self.flags]



def trained_run_in(folder, printed=""):
    """The `TrainedRun` whose files are under `folder` and whose training printed `printed`."""
    folder = pathlib.Path(folder)
    data_path = str(folder / "drinks")
    save_dir = folder / "weights"
    # An 8-filter head keeps the files small (each test copies them); float32 whatever the CPU, so that evaluation
    # (always float32) scores the weights as the training did.
    flags = [*TINY, "--head-filters", "8", "--precision", "float32", "--data-path", data_path,
             "--save-dir", str(save_dir)]
    return TrainedRun(folder, data_path, save_dir, flags, TRAINED_EPOCHS, printed)


@pytest.fixture(scope="session")
def shared_tiny_run(tmp_path_factory):
    """One tiny seeded training run, trained once per test process: (its folder, what it printed on stdout).

    Tests take a copy of it (`trained_run`).
    """
    run = trained_run_in(tmp_path_factory.mktemp("tiny-run"))
    write_book_dataset(run.data_path, num_train=4, num_test=3)
    argv = ["--train", "--epochs", str(run.epochs), "--seed", "0", "--workers", "1", *run.flags,
            "--tensorboard", str(run.folder / "logs")]
    from segmentation import cli

    printed = io.StringIO()
    # cli.main puts back the dtype policy, the seeds and the logging it changes.
    with contextlib.redirect_stdout(printed):
        status = cli.main(argv)
    assert status == 0, f"the shared tiny training run failed: {printed.getvalue()[-3000:]}"
    return run.folder, printed.getvalue()


@pytest.fixture
def trained_run(shared_tiny_run, tmp_path):
    """A fresh copy of the shared tiny run in the test's tmp_path (a `TrainedRun`): the test may change its files."""
    source, printed = shared_tiny_run
    folder = tmp_path / "trained"
    shutil.copytree(source, folder)
    return trained_run_in(folder, printed)
