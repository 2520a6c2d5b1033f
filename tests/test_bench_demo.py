"""The benchmarks that compare with the demo: step overhead and time to accuracy (smoke runs and their parsers)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from bench.demo import demo_recipe, flag_value, makefile_flags, without_flag
from bench.step_overhead import epoch_step_seconds
from bench.time_to_accuracy import EPOCH_MIOU, summarize_curve


def test_demo_recipe_comes_from_the_makefile():
    recipe = demo_recipe()
    assert recipe[:2] == ["--depth", "20"] and "--lr-schedule" in recipe
    assert makefile_flags("DEMO_SIZE") == ["--height", "96", "--width", "128"]
    with pytest.raises(KeyError, match="NO_SUCH_VARIABLE"):
        makefile_flags("NO_SUCH_VARIABLE")


def test_progress_bar_parser_reads_each_epochs_last_line():
    output = ("Epoch 1/2\n\r 1/75 ━━ 5:05 4s/step - loss: 7.2\r\x1b[1m75/75\x1b[0m \x1b[32m━━━━\x1b[0m\x1b[37m\x1b[0m "
              "\x1b[1m45s\x1b[0m 601ms/step - loss: 1.1\n"
              "Epoch 1: mIoU improved 0.0000 -> 0.4525\nEpoch 2/3\n\r75/75 ━━━━ 0s 530ms/step - loss: 0.9"
              "\r75/75 ━━━━ 40s 533ms/step - loss: 0.9\nEpoch 3/3\n\r 8/8 ━━━━ 12s 1s/step - loss: 0.5\n")
    # Each epoch's last full bar: the time it took, not the 0 s left drawn just before.
    assert epoch_step_seconds(output) == [(45.0, 0.601), (40.0, 0.533), (12.0, 1.0)]
    assert flag_value(["--depth", "20", "--loss", "ce", "--depth", "11"], "--depth", "56") == "11"
    assert flag_value([], "--depth", "56") == "56"
    assert without_flag(["--depth", "20", "--head-filters", "64", "--loss", "ce"], "--head-filters") == \
        ["--depth", "20", "--loss", "ce"]


def test_time_to_accuracy_reads_mious_and_finds_the_first_to_reach_the_target():
    lines = ["Epoch 3: mIoU improved 0.4665 -> 0.7018 (pixel accuracy 90.89%), saving x",
             "Epoch 4: mIoU 0.5370 (best 0.7018), pixel accuracy 91.65%", "Epoch 4/9"]
    assert [EPOCH_MIOU.match(line).group(2) if EPOCH_MIOU.match(line) else None for line in lines] == \
        ["0.7018", "0.5370", None]
    summary = summarize_curve([(60.0, 0.5), (120.0, 0.71), (180.0, 0.69), (240.0, 0.82)], targets=[0.70, 0.80])
    assert summary["best_miou"] == 0.82 and summary["epochs"] == 4
    assert summary["minutes_to_target"] == {"0.70": 2.0, "0.80": 4.0}
    assert summarize_curve([(60.0, 0.5)], targets=[0.70])["minutes_to_target"] == {"0.70": None}


def run_module(module, tmp_path, *flags):
    output = tmp_path / "results.json"
    result = subprocess.run([sys.executable, "-m", module, "--quick", "--output", str(output), *flags],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads(output.read_text())


@pytest.mark.slow
def test_step_overhead_quick_run(tmp_path):
    table, results = run_module("bench.step_overhead", tmp_path, "--heads", "16,8", "--precisions", "float32")
    assert [record["head_filters"] for record in results["runs"]] == [16, 8]
    for record in results["runs"]:
        assert record["cli_step_seconds"] > 0 and record["bare_step_seconds"] > 0
        assert record["ratio"] == pytest.approx(record["cli_step_seconds"] / record["bare_step_seconds"])
        assert len(record["cli_epoch_step_seconds"]) == 3 and record["depth"] == 11
    assert "| 8-filter head, float32 |" in table


@pytest.mark.slow
def test_time_to_accuracy_quick_run(tmp_path):
    table, results = run_module("bench.time_to_accuracy", tmp_path, "--minutes", "0.25")
    for name in ("book", "demo"):
        assert results[name]["epochs"] >= 1 and 0 <= results[name]["best_miou"] <= 1
        # The stamps also count the start-up before the budget.
        assert results[name]["curve"][-1]["minutes"] <= 0.25 + 0.2
    assert "--lr-schedule cosine" in results["demo"]["flags"] and "| book (" in table


@pytest.mark.slow
def test_head_width_quick_run(tmp_path):
    table, results = run_module("bench.head_width", tmp_path, "--minutes", "0.3")
    assert [record["head_filters"] for record in results["runs"]] == [8, 16]
    for record in results["runs"]:
        assert record["epochs"] >= 1 and 0 <= record["best_test_miou"] <= 1
        assert record["gflops_per_image"] > 0 and "background" in record["class_iou"]
    # The head's convolutions grow with its width.
    assert results["runs"][0]["gflops_per_image"] < results["runs"][1]["gflops_per_image"]
    assert "| 16-filter head |" in table
