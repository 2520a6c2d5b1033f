"""Faults of issue 29 closed: each ends in one line and exit status 2, and nothing the user has is lost.

- a label file that refers to one buffer again and again is refused by the bytes it builds, not its memo;
- `.npy` labels of more than 255 classes are refused (class 255 marks ignored pixels);
- `--seed -1`, a deeply nested `classes.json` and unreadable data or prediction folders end in one line;
- `--val-split` resumed with another `--seed` holds out the images the run held out;
- a second network trained into a save folder does not replace the first's histories and report;
- the `--patience` count comes from the history, so epochs run without `--patience` count too.
"""

import json
import os
import struct
import time
import tracemalloc

import numpy as np
import pytest
from conftest import TINY, WEIGHTS

from segmentation.callbacks import Patience
from segmentation.checkpoints import TrainingState, read_training_state
from segmentation.config import RunConfig, TrainingSettings
from segmentation.errors import DatasetError, UsageError
from segmentation.ground_truth.book_labels import read_labels_dict
from segmentation.ground_truth.class_names import read_class_names
from segmentation.ground_truth.mask_folders import images_by_stem, list_masks
from segmentation.ground_truth.splits import load_data
from segmentation.paths import RunFiles, histories_of_another_run
from segmentation.training import plan_training


def write_npy_pickle(path, data):
    """A `.npy` header for a 0-d object array (what np.save writes for a dict), then the pickle bytes `data`."""
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": "|O", "fortran_order": False, "shape": ()})
        file.write(data)
    return str(path)


# === A buffer referred to again and again ===
def unicode(text):
    encoded = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def binput(index):
    return b"r" + struct.pack("<I", index)


def binget(index):
    return b"j" + struct.pack("<I", index)


def reused_buffer_pickle(buffer_bytes, references):
    """NumPy's pickle of a dict whose masks all take their data from one old memo entry.

    The buffer is stored as the value of a first key (bytes, which the label checks refuse by name only after
    the walk), 20 small entries push it out of the newest memo entries, and each of `references` masks of
    shape (buffer_bytes, 1, 1) and dtype uint8 refers to it.
    """
    shape = b"J" + struct.pack("<i", buffer_bytes) + b"K\x01K\x01\x87"
    plain_state_end = b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    parts = [
        b"\x80\x03",
        b"cnumpy._core.multiarray\n_reconstruct\n", binput(0),
        b"cnumpy\nndarray\n", binput(1),
        b"K\x00\x85", binput(2), b"C\x01b", binput(3), b"\x87R",
        # The outer 0-d object array's state: (1, (), dtype('O8'), False, [dict]).
        b"(K\x01)", b"cnumpy\ndtype\n", binput(4), unicode("O8"), b"\x89\x88\x87R",
        b"(K\x03", unicode("|"), binput(5), b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb",
        b"\x89]}(",
        unicode("buffer.png"), b"B" + struct.pack("<I", buffer_bytes), b"\x01" * buffer_bytes, binput(6),
    ]
    parts += [unicode(f"pad{index}.png") + b"K\x01" + binput(8 + index) for index in range(20)]
    for index in range(references):
        dtype = (binget(4) + unicode("u1") + b"\x89\x88\x87R(K\x03" + binget(5) + plain_state_end + binput(7)
                 if index == 0 else binget(7))
        parts.append(unicode(f"mask{index}.png") + binget(0) + binget(1) + b"K\x00\x85" + binget(3) + b"\x87R"
                     + b"(K\x01" + shape + dtype + b"\x89" + binget(6) + b"tb")
    parts.append(b"uatb.")
    return b"".join(parts)


def test_the_walk_reads_a_few_references_to_an_old_buffer(tmp_path):
    path = write_npy_pickle(tmp_path / "shared.npy", reused_buffer_pickle(1000, 2))
    summaries = read_labels_dict(path)
    assert summaries["buffer.png"] == b"\x01" * 1000 and summaries["mask1.png"].shape == (1000, 1, 1)


def test_a_buffer_referred_to_thousands_of_times_is_refused_fast_in_little_memory(tmp_path):
    """3,000 references to one 1 MiB buffer in a 1.1 MB file took 21 s and 264 MB before the refusal."""
    path = write_npy_pickle(tmp_path / "reused.npy", reused_buffer_pickle(1 << 20, 3000))
    size = (tmp_path / "reused.npy").stat().st_size
    assert size < 1.3e6
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(DatasetError) as refused:
            read_labels_dict(path)
        seconds = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(refused.value)
    assert message.startswith(f"{path}: refused at byte ") and "\n" not in message
    assert "more bytes than its file" in message
    assert seconds < 2.0
    # The file read once, and a few of its arrays: not 3,000 of them.
    assert peak < 4 * size + (8 << 20), peak


# === One line for every bad input of a run ===
FLAGS = [*TINY, "--head-filters", "8", "--precision", "float32", "--jit-compile", "off"]


def assert_one_line(status, err, *fragments):
    """Exit status 2 and one line on stderr, `fcn-12.3.1.py: error: ...`, holding each fragment."""
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fcn-12.3.1.py: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def one_hot_masks(keys, n_classes, size=64):
    """One-hot uint8 masks of `n_classes` classes, pixel (i, j) of class (i + j) % n_classes."""
    class_map = np.add.outer(np.arange(size), np.arange(size)) % n_classes
    return {key: np.eye(n_classes, dtype=np.uint8)[class_map] for key in keys}


@pytest.mark.parametrize("n_classes", [256, 300])
def test_npy_labels_of_more_than_255_classes_are_refused_in_one_line(book_dataset, tmp_path, run_cli, n_classes):
    """With 256 classes class 255 would be scored as the ignore label; past 256 a broadcast traceback."""
    data_path, splits = book_dataset
    for split in ("train", "test"):
        np.save(os.path.join(data_path, f"segmentation_{split}.npy"), one_hot_masks(splits[split], n_classes))
    save_dir = tmp_path / "weights"
    status, _, err = run_cli([*FLAGS, "--data-path", data_path, "--save-dir", str(save_dir), "--train",
                              "--epochs", "1"])
    assert_one_line(status, err, "segmentation_t", f"{n_classes} classes", "at most 255")
    assert not save_dir.exists()


def test_a_mask_folder_named_with_more_than_255_classes_is_refused(tmp_path):
    folder = tmp_path / "train_masks"
    folder.mkdir()
    names = ["background", *(f"class {index}" for index in range(1, 256))]
    (folder / "classes.json").write_text(json.dumps({"class_names": names}))
    with pytest.raises(DatasetError, match="256 names.*at most 255"):
        read_class_names(str(folder))


def test_a_negative_seed_is_refused_in_one_line(book_dataset, tmp_path, run_cli):
    data_path, _ = book_dataset
    for seed in ("-1", str(2**32)):
        status, _, err = run_cli([*FLAGS, "--data-path", data_path, "--save-dir", str(tmp_path / "weights"),
                                  "--train", "--epochs", "1", "--seed", seed])
        assert_one_line(status, err, f"--seed {seed}", "0 to 4294967295")
    assert not (tmp_path / "weights").exists()


def test_a_deeply_nested_classes_json_is_refused_in_one_line(book_dataset, tmp_path, run_cli):
    data_path, _ = book_dataset
    names = os.path.join(data_path, "segmentation_train.classes.json")
    with open(names, "w", encoding="utf-8") as file:
        file.write('{"class_names": ' + "[" * 200_000 + "]" * 200_000 + "}")
    status, _, err = run_cli([*FLAGS, "--data-path", data_path, "--save-dir", str(tmp_path / "weights"),
                              "--train", "--epochs", "1"])
    assert_one_line(status, err, names, "nested too deeply")


def refuse_to_list(monkeypatch, folder):
    """Makes listing `folder` fail as an unreadable folder does (the tests run as root, where chmod cannot)."""
    real_listdir, real_scandir = os.listdir, os.scandir
    target = os.path.realpath(folder)

    def check(path):
        if os.path.realpath(os.fspath(path)) == target:
            raise PermissionError(13, "Permission denied", os.fspath(path))

    def listdir(path="."):
        check(path)
        return real_listdir(path)

    def scandir(path="."):
        check(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(os, "scandir", scandir)


def test_an_unreadable_data_folder_is_refused_in_one_line(book_dataset, tmp_path, run_cli, monkeypatch):
    data_path, _ = book_dataset
    refuse_to_list(monkeypatch, data_path)
    status, _, err = run_cli([*FLAGS, "--data-path", data_path, "--save-dir", str(tmp_path / "weights"),
                              "--train", "--epochs", "1"])
    assert_one_line(status, err, data_path, "Permission denied", "--data-path")
    assert not (tmp_path / "weights").exists()


def test_an_unreadable_mask_folder_is_refused_in_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "train_masks"
    folder.mkdir()
    refuse_to_list(monkeypatch, folder)
    with pytest.raises(DatasetError, match="train_masks: cannot list the folder .Permission denied."):
        list_masks(str(folder))
    refuse_to_list(monkeypatch, tmp_path)
    with pytest.raises(DatasetError, match="cannot list the folder .Permission denied."):
        images_by_stem(str(tmp_path))


# === --patience counts from the history ===
def patience_settings(patience):
    config = RunConfig(height=64, width=64, layers=1, depth=11, batch_size=2, seed=0, data_path="d", train_labels="a",
                       test_labels="b", patience=patience)
    return TrainingSettings(config, n_classes=4, precision="float32")


def saved_state(files, history, waited, settings):
    state = TrainingState(epochs_done=len(history["test_miou"]), epochs=len(history["test_miou"]), history=history,
                          best_miou=max(history["test_miou"]), seed=0, shuffle_seed=0,
                          settings=settings.as_record(), epochs_without_improvement=waited)
    record = json.dumps({"format": 1, **vars(state)}).encode()
    with open(files.state, "wb") as file:
        np.savez(file, state_json=np.frombuffer(record, dtype=np.uint8))


def test_epochs_run_without_patience_count_for_a_resume_with_it(tmp_path):
    """Stopped early by --patience 2 after 0.5, 0.4, 0.3; resumed without it to 0.6, 0.7: the count is 0, not 2."""
    files = RunFiles.of(str(tmp_path), 11, 1, "drinks")
    saved_state(files, {"test_miou": [0.5, 0.4, 0.3, 0.6, 0.7]}, 2, patience_settings(2))
    state = plan_training(files, patience_settings(2), resume=True, overwrite=False, epochs=10, seed=0)
    assert (state.epochs_done, state.epochs_without_improvement) == (5, 0)
    # Two epochs without a better one since 0.7, whatever the state says.
    saved_state(files, {"test_miou": [0.5, 0.7, 0.6, 0.65]}, 0, patience_settings(None))
    with pytest.raises(UsageError, match="not improved for 2 epoch.*--patience 2"):
        plan_training(files, patience_settings(2), resume=True, overwrite=False, epochs=10, seed=0)


def test_the_patience_callback_counts_from_the_history_not_a_stale_count():
    state = TrainingState(epochs_done=5, epochs=10, history={"test_miou": [0.5, 0.4, 0.3, 0.6, 0.7]}, best_miou=0.7,
                          seed=0, shuffle_seed=0, settings={}, epochs_without_improvement=2)
    patience = Patience(2, state)
    assert not patience.count(5, 0.65) and state.epochs_without_improvement == 1
    state.history["test_miou"].append(0.65)
    assert patience.count(6, 0.7) and state.epochs_without_improvement == 2  # a tie is no improvement


# === --val-split resumed with another --seed ===
def val_split_config(data_path, save_dir, seed, resume):
    return RunConfig(train=True, resume=resume, height=64, width=64, layers=1, depth=11, head_filters=8,
                     batch_size=2, data_path=data_path, save_dir=save_dir, seed=seed, val_split=0.25)


@pytest.mark.parametrize("seed_now", [2, None])
def test_a_resumed_val_split_holds_out_the_images_the_run_held_out(book_dataset, tmp_path, seed_now, caplog):
    data_path, _ = book_dataset
    save_dir = str(tmp_path / "weights")
    started = load_data(val_split_config(data_path, save_dir, 1, resume=False))
    other = load_data(val_split_config(data_path, save_dir, seed_now, resume=False))
    assert started.validation.keys != other.validation.keys
    os.makedirs(save_dir)
    files = RunFiles.of(save_dir, 11, 1, "drinks")
    saved_state(files, {"test_miou": [0.5]}, 0, patience_settings(None))  # a state of a run started with --seed 0
    state = read_training_state(files.state)
    state.seed, state.epochs = 1, 5
    record = json.dumps({"format": 1, **vars(state)}).encode()
    with open(files.state, "wb") as file:
        np.savez(file, state_json=np.frombuffer(record, dtype=np.uint8))
    caplog.set_level("INFO")
    resumed = load_data(val_split_config(data_path, save_dir, seed_now, resume=True))
    assert resumed.validation.keys == started.validation.keys
    assert resumed.train.keys == started.train.keys
    assert "holds out the images the run drew with seed 1" in caplog.text


# === Two networks trained into one save folder ===
HISTORY_FILES = ("history.csv", "miou_history.npy", "mpla_history.npy", "report.png")


def test_a_second_network_does_not_replace_the_first_ones_histories(trained_run, run_cli):
    save_dir = trained_run.save_dir
    common = [*trained_run.flags, "--train", "--epochs", "1"]
    before = {name: (save_dir / name).read_bytes() for name in HISTORY_FILES}
    listing = sorted(os.listdir(save_dir))
    status, _, err = run_cli([*common, "--depth", "20"])
    assert_one_line(status, err, "history.csv", "ResNet11v2-1layer-drinks", "ResNet20v2-1layer-drinks",
                    "--overwrite")
    assert {name: (save_dir / name).read_bytes() for name in HISTORY_FILES} == before
    assert sorted(os.listdir(save_dir)) == listing


def write_run_files(save_dir, name, mtime):
    """A stand-in for a run's last state, dated `mtime`."""
    path = os.path.join(save_dir, f"{name}-last.state.npz")
    with open(path, "wb") as file:
        file.write(b"state")
    os.utime(path, (mtime, mtime))


def test_the_histories_belong_to_the_run_that_saved_its_state_last(tmp_path):
    save_dir = str(tmp_path)
    files = RunFiles.of(save_dir, 20, 1, "drinks")
    for name in HISTORY_FILES:
        (tmp_path / name).write_bytes(b"curves")
    # The book's histories, or any left without a run's state: no run to name, as before.
    assert histories_of_another_run(files) is None
    write_run_files(save_dir, "ResNet11v2-1layer-drinks", 1000)
    assert histories_of_another_run(files).endswith("ResNet11v2-1layer-drinks-last.state.npz")
    # This run saved after the other one: the histories are its own.
    write_run_files(save_dir, "ResNet20v2-1layer-drinks", 2000)
    assert histories_of_another_run(files) is None
    # The other one saved since (it was given --overwrite): resuming this one would replace its histories.
    write_run_files(save_dir, "ResNet11v2-1layer-drinks", 3000)
    assert histories_of_another_run(files).endswith("ResNet11v2-1layer-drinks-last.state.npz")
    for name in HISTORY_FILES:
        os.remove(tmp_path / name)
    assert histories_of_another_run(files) is None


def test_a_resume_over_another_runs_histories_is_refused_and_overwrite_lets_a_fresh_run_replace_them(tmp_path):
    save_dir = str(tmp_path)
    settings = patience_settings(None)
    files = RunFiles.of(save_dir, 11, 1, "drinks")
    saved_state(files, {"test_miou": [0.5]}, 0, settings)
    os.utime(files.state, (1000, 1000))
    state = read_training_state(files.state)
    state.epochs = 5
    for name in HISTORY_FILES:
        (tmp_path / name).write_bytes(b"curves")
    write_run_files(save_dir, "ResNet20v2-1layer-drinks", 2000)
    with pytest.raises(UsageError, match="ResNet20v2-1layer-drinks.*move them away"):
        plan_training(files, settings, resume=True, overwrite=False, epochs=5, seed=0)
    other = RunFiles.of(save_dir, 56, 1, "drinks")
    with pytest.raises(UsageError, match="--overwrite"):
        plan_training(other, settings, resume=False, overwrite=False, epochs=5, seed=0)
    assert plan_training(other, settings, resume=False, overwrite=True, epochs=5, seed=0).epochs_done == 0


def test_an_unreadable_predict_dir_is_refused_in_one_line(trained_run, tmp_path, run_cli, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    refuse_to_list(monkeypatch, folder)
    status, _, err = run_cli([*trained_run.flags, "--predict-dir", str(folder), "--predict-output",
                              str(tmp_path / "masks"), "--restore-weights", WEIGHTS])
    assert_one_line(status, err, str(folder), "Permission denied")
    assert not (tmp_path / "masks").exists()
