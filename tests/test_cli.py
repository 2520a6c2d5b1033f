"""fcn-12.3.1.py end to end, as a reader runs it, and its answers to bad input."""

import json
import os

import numpy as np
import pytest
from conftest import RECORD, STATE, TINY, WEIGHTS, run_script, write_book_dataset
from test_quiet_start import NOISE, environment

from segmentation.checkpoints import read_training_state
from segmentation.precision import default_precision


def test_training_writes_weights_histories_and_csv_and_no_start_up_line_or_warning(tmp_path):
    data_path = str(tmp_path / "drinks")
    write_book_dataset(data_path, num_train=4, num_test=2)
    save_dir = tmp_path / "weights"
    # A real 2-epoch run in a fresh interpreter and environment, as a reader starts it, and the suite's one run with
    # XLA on: the compiled path must work end to end.
    result = run_script(["--train", "--epochs", "2", "--seed", "1", "--workers", "2", "--jit-compile", "on", *TINY,
                         "--data-path", data_path, "--save-dir", str(save_dir)], tmp_path, env=environment())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    # The quiet start (tests/test_quiet_start.py): no TensorFlow start-up line, no warning.
    assert NOISE.findall(output) == [], output[-3000:]
    assert (save_dir / WEIGHTS).is_file()
    assert len(np.load(save_dir / "miou_history.npy")) == 2
    assert len(np.load(save_dir / "mpla_history.npy")) == 2
    header, *rows = (save_dir / "history.csv").read_text().splitlines()
    assert {"epoch", "loss", "test_miou", "test_pixel_accuracy", "learning_rate"} <= set(header.split(","))
    assert len(rows) == 2
    assert "Epoch 2/2" in result.stdout and "Epoch 1: mIoU improved 0.0000 ->" in result.stdout
    # Nothing lands in the working directory but what the user asked for.
    assert sorted(os.listdir(tmp_path)) == ["drinks", "weights"]


def test_evaluation_with_the_books_h5_name(trained_run, run_cli):
    book_name = WEIGHTS.replace(".weights.h5", ".h5")
    status, out, err = run_cli(["--evaluate", f"--restore-weights={book_name}", *trained_run.flags])
    assert status == 0, err
    lines = out.splitlines()
    assert "Keras 3 saves weights with the .weights.h5 suffix" in lines[0]
    per_image = [line for line in lines if line.startswith("test0")]
    assert len(per_image) == 3 and all("mIoU=" in line and "pixel accuracy=" in line for line in per_image)
    totals = next(line for line in lines if line.startswith("Test images: 3"))
    miou = float(totals.split("mIoU (book, mean of per-image mIoU): ")[1].split()[0])
    # The reported total is the best mIoU the training history recorded.
    assert miou == pytest.approx(np.load(trained_run.save_dir / "miou_history.npy").max(), abs=1e-4)
    assert any(line.startswith("soda can") for line in lines)
    assert any(line.startswith("Data-set-level mIoU") for line in lines)


def test_image_file_and_plot_write_the_books_figures(trained_run, run_cli, monkeypatch):
    # The figures go to prediction/ in the working directory, as the book's did.
    monkeypatch.chdir(trained_run.folder)
    image = os.path.join(trained_run.data_path, "test001.png")
    status, _, err = run_cli(["-e", "--restore-weights", WEIGHTS, "--image-file", image, *trained_run.flags])
    assert status == 0, err
    prediction = trained_run.folder / "prediction"
    assert {"test001-input.png", "test001-mask.png"} <= set(os.listdir(prediction))
    status, _, err = run_cli(["-e", "--restore-weights", WEIGHTS, "--plot", *trained_run.flags])
    assert status == 0, err
    for index in range(3):
        assert (prediction / f"test{index:03d}-triptych.png").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--train", "--height", "100"], "--height must be a multiple of 2**(layers + 2) = 8"),
        (["--train", "--data-path", "nowhere"], "nowhere: data folder not found"),
        (["--train", "--train-labels", "nope.npy"], "nope.npy: labels file not found"),
        (["--evaluate", "--restore-weights", "missing.h5"], "--restore-weights missing.h5: no such file"),
        (["--train", "--depth", "50"], "--depth 50: ResNet v2 depth must be 9n+2"),
        (["--train", "--channels", "1"], "--channels must be 3"),
        (["--train", "--batch-size", "20"], "--batch-size 20 is larger than the 8 images"),
        ([], "nothing to do"),
        (["--image-file", "x.jpg"], "--image-file is used with --evaluate"),
        (["--evaluate", "--image-file", "nowhere.jpg"], "--image-file nowhere.jpg: no such file"),
        (["--train", "--precision", "mixed_bfloat16", "--jit-compile", "on"], "use --jit-compile off"),
        (["--train", "--bn-momentum", "1"], "--bn-momentum 1.0: must be in [0, 1)"),
        (["--evaluate", "--remat"], "--remat all is used with --train"),
        (["--evaluate", "--remat", "stage0"], "--remat stage0 is used with --train"),
        (["--train", "--remat", "some"], "argument --remat: invalid choice: 'some'"),
        (["--train", "--remat", "--distribute", "mirrored"], "--remat all cannot be combined with --distribute"),
    ],
)
def test_bad_input_ends_with_one_line_and_status_2(book_dataset, tmp_path, run_cli, extra, message):
    data_path, _ = book_dataset
    argv = [*TINY, "--data-path", data_path, "--save-dir", str(tmp_path / "w"), *extra]
    # Later flags win, so the extra ones override the tiny defaults.
    status, _, err = run_cli(argv)
    assert status == 2
    assert err.count("\n") == 1 and message in err and err.startswith("fcn-12.3.1.py: error: ")
    assert not (tmp_path / "w").exists() or os.listdir(tmp_path / "w") == []


def test_weights_for_another_network_are_refused(trained_run, run_cli):
    status, _, err = run_cli(["--evaluate", "--restore-weights", WEIGHTS, *trained_run.flags, "--layers", "2"])
    assert status == 2
    assert err.count("\n") == 1 and "these weights do not fit the model" in err


def test_truncated_weights_are_refused(trained_run, tmp_path, run_cli):
    truncated = tmp_path / "truncated.weights.h5"
    truncated.write_bytes((trained_run.save_dir / WEIGHTS).read_bytes()[:2000])
    status, _, err = run_cli(["--evaluate", "--restore-weights", str(truncated), *trained_run.flags])
    assert status == 2 and "truncated.weights.h5" in err and err.count("\n") == 1


def test_help_keeps_the_books_flags(run_cli):
    status, text, _ = run_cli(["--help"])
    assert status == 0
    for flag in ["--layers", "--batch-size", "--epochs", "--workers", "--train", "--summary", "--save-dir",
                 "--dataset", "--height", "--width", "--channels", "--data-path", "--train-labels",
                 "--test-labels", "--restore-weights", "--evaluate", "--image-file", "--plot", "--verbose"]:
        assert flag in text


def test_summary_prints_both_models(book_dataset, tmp_path, run_cli):
    data_path, _ = book_dataset
    status, out, err = run_cli(
        ["--summary", *TINY, "--data-path", data_path, "--save-dir", str(tmp_path / "w")])
    assert status == 0, err
    assert 'Model: "ResNet11v2"' in out and 'Model: "fcn"' in out
    # Either the diagram was drawn or one line says how to get it.
    assert (tmp_path / "w" / "fcn.png").is_file() or "pip install pydot" in out


def test_small_data_recipe_trains_and_is_part_of_the_resume_settings(tmp_path, run_cli):
    data_path = str(tmp_path / "drinks")
    write_book_dataset(data_path, num_train=4, num_test=2)
    common = [*TINY, "--head-filters", "8", "--data-path", data_path, "--save-dir", str(tmp_path / "weights")]
    recipe = ["--augment", "--class-weights", "auto", "--loss", "ce+dice", "--precision", "float32",
              "--bn-momentum", "0.9", "--passes", "2", "--remat"]
    status, out, err = run_cli(["--train", "--verbose", "1", "--epochs", "1", "--seed", "0", *recipe, *common])
    assert status == 0, err
    assert "Class weights (median-frequency balancing): background" in out
    assert "Recomputing the backbone's stages one at a time in the backward pass (--remat all)" in out
    record = json.loads((tmp_path / "weights" / RECORD).read_text())
    expected = {"augment": "full", "class_weights": "auto", "loss": "ce+dice", "precision": "float32",
                "bn_momentum": 0.9, "passes": 2}
    assert record["settings"] | expected == record["settings"]
    assert np.isfinite(record["test_miou"])
    # Resuming under the book's recipe would silently change the run: refused, in one line.
    status, _, err = run_cli(["--train", "--epochs", "2", "--seed", "0", "--resume", *common])
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "augment 'full' (now 'none')" in lines[0] and "loss 'ce+dice' (now 'ce')" in lines[0]


def test_precision_auto_records_this_machines_policy_and_resumes_with_the_saved_one(tmp_path, run_cli,
                                                                                   trained_run):
    data_path = str(tmp_path / "drinks")
    write_book_dataset(data_path, num_train=4, num_test=2)
    save_dir = tmp_path / "weights"
    status, _, err = run_cli(["--train", "--epochs", "1", "--seed", "0", *TINY, "--head-filters", "8",
                              "--data-path", data_path, "--save-dir", str(save_dir)])
    assert status == 0, err
    assert json.loads((save_dir / RECORD).read_text())["settings"]["precision"] == default_precision()
    # A run saved in float32 (as every run before "auto" was) resumes in float32 under "auto".
    assert read_training_state(str(trained_run.save_dir / STATE)).settings["precision"] == "float32"
    status, _, err = run_cli([*trained_run.resume(trained_run.epochs + 1), "--precision", "auto"])
    assert status == 0, err
    state = read_training_state(str(trained_run.save_dir / STATE))
    assert state.epochs_done == trained_run.epochs + 1 and state.settings["precision"] == "float32"
