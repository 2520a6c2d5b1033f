"""The demo's recipe and data, for the benchmarks that compare with it (`step_overhead`, `time_to_accuracy`).

The recipe's one home is the Makefile (`DEMO_NETWORK`, `DEMO_RECIPE`); this module reads it from there.
"""

import json
import os
import re
import shlex
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAKEFILE = os.path.join(REPO_ROOT, "Makefile")


def makefile_flags(*names: str) -> list[str]:
    """The flags of the Makefile variables `names` (e.g. "DEMO_NETWORK", "DEMO_RECIPE"), in order.

    Raises:
        KeyError: for a variable the Makefile does not set with `:=`.
    """
    with open(MAKEFILE, encoding="utf-8") as file:
        text = file.read()
    flags = []
    for name in names:
        match = re.search(rf"^{name} := (.*)$", text, re.MULTILINE)
        if match is None:
            raise KeyError(f"{MAKEFILE} sets no {name} := ...")
        flags += shlex.split(match.group(1))
    return flags


def flag_value(flags: list[str], name: str, default: str) -> str:
    """The value the last `name` in `flags` gives, as argparse reads it."""
    positions = [index for index, flag in enumerate(flags) if flag == name]
    return flags[positions[-1] + 1] if positions else default


def without_flag(flags: list[str], name: str) -> list[str]:
    """`flags` less every `name VALUE` pair."""
    kept, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag == name:
            skip = True
        else:
            kept.append(flag)
    return kept


def demo_recipe() -> list[str]:
    """`make demo`'s network and training recipe: `DEMO_NETWORK` and `DEMO_RECIPE`."""
    return makefile_flags("DEMO_NETWORK", "DEMO_RECIPE")


def data_flags(data_path: str | None, work_dir: str, settings: dict) -> list[str]:
    """A benchmark's data flags: `data_path`, or the demo's data drawn into `work_dir`.

    `settings` gives the size and counts: `height`, `width`, `num_train`, `num_test`.
    """
    if data_path is None:
        data_path = os.path.join(work_dir, "data")
        make_data(data_path, settings["height"], settings["width"], settings["num_train"], settings["num_test"])
    return ["--dataset", "synthetic", "--data-path", data_path, "--height", str(settings["height"]),
            "--width", str(settings["width"])]


def run_command(command: list[str]) -> str:
    """Runs a command from the repository root; returns its stdout.

    Raises:
        SystemExit: with the command's error output, if it fails.
    """
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command[:3])} ... failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def make_data(data_dir: str, height: int, width: int, num_train: int, num_test: int) -> None:
    """A synthetic drinks set in the book's format, made as `make demo` makes it (seed 0)."""
    run_command([sys.executable, "utils/generate_synthetic_drinks.py", "--output", data_dir, "--seed", "0",
                 "--num-train", str(num_train), "--num-test", str(num_test), "--height", str(height),
                 "--width", str(width)])
    for split in ("train", "test"):
        run_command([sys.executable, "utils/generate_gt_segmentation.py", "-j", f"segmentation_{split}.json",
                     "-p", data_dir, "--save-filename", os.path.join(data_dir, f"segmentation_{split}.npy")])


def print_and_save(rows: list[tuple[str, ...]], record: dict, path: str) -> None:
    """Prints `rows` (the first is the header) as a Markdown table and writes `record` as JSON to `path`."""
    print(f"| {' | '.join(rows[0])} |")
    print(f"|{'---|' * len(rows[0])}")
    for row in rows[1:]:
        print(f"| {' | '.join(row)} |")
    with open(path, "w", encoding="utf-8") as file:
        json.dump(record, file, indent=2)
