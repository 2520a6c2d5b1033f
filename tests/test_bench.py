"""The benchmark's smoke run (`bench/bench.py --quick`), in a subprocess as a reader runs it."""

import json
import math
import subprocess
import sys

import pytest
from conftest import ROOT

SIZE = "64x64"
FIGURES = ("train_img_per_s", "eval_img_per_s", "peak_rss_gb", "train_fraction_of_peak")
VARIANT_FIGURES = tuple(f"{figure}_{variant}" for variant in ("float32", "mixed_bfloat16", "jit_on")
                        for figure in ("train_img_per_s", "peak_rss_gb", "train_fraction_of_peak"))


def run_bench(tmp_path, *flags):
    output = tmp_path / "results.json"
    command = [sys.executable, "bench/bench.py", "--quick", "--data-dir", str(tmp_path / "data"),
               "--output", str(output), *flags]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads(output.read_text())


def is_positive_number(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_run_writes_every_figure(tmp_path):
    table, results = run_bench(tmp_path)
    assert is_positive_number(results["matmul_peak_gflops_fp32"])
    assert is_positive_number(results["matmul_peak_gflops_bf16"])
    figures = results[SIZE]
    for name in (*FIGURES, *(f"book_{figure}" for figure in FIGURES), *VARIANT_FIGURES,
                 "train_img_per_s_remat", "peak_rss_gb_remat", "pipeline_img_per_s", "forward_gflops_per_image"):
        assert is_positive_number(figures[name]), name
    assert figures["book_batch_size"] == 4
    assert figures["precision"] in ("float32", "mixed_bfloat16")
    # --remat auto recomputes nothing at 64x64; the quick run measures --remat all beside it.
    assert figures["remat"] == "off" and results["settings"]["remat_level"] == "all"
    # The baseline is the book's network on Keras 2, convolution for convolution ours.
    assert figures["book_forward_gflops_per_image"] == figures["forward_gflops_per_image"]
    assert all(status.startswith("ok") for status in figures["status"].values())
    assert "training img/s, book-style" in table and SIZE in table


@pytest.mark.slow
def test_rss_vs_dataset_size(tmp_path):
    _, results = run_bench(tmp_path, "--rss-vs-dataset", "--variant-sizes", "")
    rss = results["rss_vs_dataset"]
    for style in ("ours", "book"):
        assert all(is_positive_number(value) for value in rss[f"{style}_peak_rss_gb"].values())
        assert math.isfinite(rss[f"{style}_growth_gb"])


def test_help_runs():
    result = subprocess.run([sys.executable, "bench/bench.py", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "--rss-vs-dataset" in result.stdout


@pytest.mark.slow
def test_gpu_script_times_the_network_on_the_installed_backend(tmp_path):
    # bench/gpu.py is for machines without TensorFlow; it only needs Keras, so it runs here on TensorFlow too.
    output = tmp_path / "gpu.json"
    command = [sys.executable, "-m", "bench.gpu", "--size", "32x32", "--depth", "11", "--batch-sizes", "2",
               "--warmup", "1", "--steps", "1", "--num-test", "3", "--matmul-size", "64", "--output", str(output)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    for name in ("matmul_peak_gflops_fp32", "matmul_peak_gflops_bf16", "forward_gflops_per_image",
                 "train_img_per_s_float32_batch2", "train_img_per_s_mixed_bfloat16_batch2",
                 "eval_img_per_s", "book_eval_img_per_s"):
        assert is_positive_number(results[name]), name
    assert results["backend"] == "tensorflow" and "evaluation img/s: ours" in result.stdout


@pytest.mark.slow
def test_accuracy_script_trains_each_seed_in_each_policy(book_dataset, tmp_path, capsys):
    from bench import accuracy

    data_path, _ = book_dataset
    output = tmp_path / "accuracy.json"
    status = accuracy.main(["--data-path", data_path, "--height", "64", "--width", "64", "--depth", "11",
                            "--epochs", "2", "--seeds", "0,1", "--output", str(output)])
    assert status == 0
    results = json.loads(output.read_text())
    assert [(run["seed"], run["policy"]) for run in results["runs"]] == [
        (0, "float32"), (0, "mixed_bfloat16"), (1, "float32"), (1, "mixed_bfloat16")]
    for run in results["runs"]:
        assert len(run["test_miou"]) == 2 and all(0 <= value <= 1 for value in run["test_miou"])
        assert run["best_miou"] == max(run["test_miou"])
    by_run = {(run["seed"], run["policy"]): run["best_miou"] for run in results["runs"]}
    differences = results["summary"]["best_miou_difference_mixed_bfloat16"]
    for seed in (0, 1):
        assert differences[str(seed)] == pytest.approx(by_run[seed, "mixed_bfloat16"] - by_run[seed, "float32"])
    assert results["summary"]["mean_best_miou_difference_mixed_bfloat16"] == pytest.approx(
        (differences["0"] + differences["1"]) / 2)
    table = capsys.readouterr().out
    assert "diff mixed_bfloat16" in table and "mean" in table


def test_accuracy_script_asks_for_the_data_set_in_one_line(tmp_path, capsys):
    from bench import accuracy

    assert accuracy.main(["--data-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path}: no segmentation_train.npy there; write the demo's data" in err


@pytest.mark.slow
def test_levers_script_trains_each_lever_and_evaluates_the_baseline_with_tta(tmp_path):
    output = tmp_path / "levers.json"
    command = [sys.executable, "-m", "bench.levers", "--quick", "--minutes", "0.3", "--levers", "baseline,aux",
               "--output", str(output)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(output.read_text())["runs"]
    assert [run["lever"] for run in runs] == ["baseline", "aux"]
    assert all(0 <= run["best_test_miou"] <= 1 and run["epochs"] >= 1 for run in runs)
    assert set(runs[0]["evaluation_seconds"]) == {"plain", "tta"} and 0 <= runs[0]["tta"]["best_test_miou"] <= 1
    assert "baseline's weights, --tta" in result.stdout
