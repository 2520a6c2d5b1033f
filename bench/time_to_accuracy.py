"""Time to accuracy: the book's recipe against the demo's, on the same data, with the same time budget.

    python3 -m bench.time_to_accuracy                 # 128x96, 8 minutes each (about 18 minutes in all)
    python3 -m bench.time_to_accuracy --minutes 0.5 --quick    # a smoke run

Both recipes train through the command line, one after the other, on one synthetic drinks set
(`utils/generate_synthetic_drinks.py`, as `make demo` makes it) with `--time-budget MINUTES`:

- **book**: ResNet56v2 with the book's 256-filter head, Adam at a flat 1e-3 (the chapter's schedule
  decays only after epoch 40), categorical cross-entropy, no augmentation, BatchNormalization
  momentum 0.99;
- **demo**: the Makefile's `DEMO_NETWORK` and `DEMO_RECIPE` (`bench/demo.py`).

Each epoch's test mIoU is stamped with the seconds since its run started, as the lines reach this
script. The table gives the best test mIoU within the budget and the minutes each recipe needed to
first reach each of `--targets` (0.70 and 0.80); the figures go to `bench/time_to_accuracy.json`.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

from bench.demo import REPO_ROOT, demo_recipe, make_data, print_and_save

DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "bench", "time_to_accuracy.json")
BOOK_RECIPE = ["--depth", "56"]
RECIPES = {"book": BOOK_RECIPE, "demo": demo_recipe()}
FULL = {"height": 96, "width": 128, "num_train": 300, "num_test": 50}
QUICK = {"height": 64, "width": 64, "num_train": 16, "num_test": 4}
QUICK_RECIPE = ["--depth", "11", "--layers", "1"]
# "Epoch 3: mIoU improved 0.4665 -> 0.5018 ..." or "Epoch 4: mIoU 0.5370 (best ...".
EPOCH_MIOU = re.compile(r"^Epoch (\d+): mIoU (?:improved \S+ -> )?(\d\.\d+)")


def train_timed(arguments: list[str]) -> list[tuple[float, float]]:
    """Runs `fcn-12.3.1.py --train ARGUMENTS`; returns (seconds since its start, test mIoU) per epoch."""
    # Unbuffered, so that each line is stamped when it is written.
    environment = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.monotonic()
    curve = []
    with subprocess.Popen([sys.executable, "fcn-12.3.1.py", "--train", *arguments], cwd=REPO_ROOT, env=environment,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        for line in process.stdout:
            match = EPOCH_MIOU.match(line)
            if match:
                curve.append((time.monotonic() - started, float(match.group(2))))
    if process.returncode:
        raise SystemExit(f"fcn-12.3.1.py --train {' '.join(arguments)} failed with status {process.returncode}")
    return curve


def minutes_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """Minutes to first reach `target` (None if never)."""
    reached = next((seconds for seconds, miou in curve if miou >= target), None)
    return None if reached is None else reached / 60


def summarize_curve(curve: list[tuple[float, float]], targets: list[float]) -> dict:
    """Best mIoU, and minutes to first reach each target (None if never)."""
    return {
        "best_miou": max(miou for _, miou in curve),
        "epochs": len(curve),
        "minutes_to_target": {f"{target:.2f}": minutes_to(curve, target) for target in targets},
        "curve": [{"minutes": seconds / 60, "test_miou": miou} for seconds, miou in curve],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="time budget of each run (default: %(default)s)")
    parser.add_argument("--targets", default="0.70,0.80",
                        help="comma-separated test mIoUs to reach (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a smoke run at 64x64 (default: %(default)s)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="JSON file (default: bench/time_to_accuracy.json)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    targets = [float(value) for value in args.targets.split(",")]
    results = {"minutes": args.minutes, "targets": targets, "size": f"{settings['width']}x{settings['height']}"}
    with tempfile.TemporaryDirectory() as work_dir:
        data_dir = os.path.join(work_dir, "data")
        make_data(data_dir, settings["height"], settings["width"], settings["num_train"], settings["num_test"])
        common = ["--data-path", data_dir, "--height", str(settings["height"]), "--width", str(settings["width"]),
                  "--seed", "0", "--time-budget", str(args.minutes)]
        for name, recipe in RECIPES.items():
            recipe = [*recipe, *QUICK_RECIPE] if args.quick else recipe
            curve = train_timed([*common, *recipe, "--save-dir", os.path.join(work_dir, name)])
            results[name] = {"flags": " ".join(recipe), **summarize_curve(curve, targets)}
    rows = [(f"{results['size']}, {args.minutes:g} min each", "best test mIoU", "epochs",
             *(f"minutes to {target:.2f}" for target in targets))]
    for name in RECIPES:
        record = results[name]
        minutes = ["not reached" if value is None else f"{value:.1f}" for value in record["minutes_to_target"].values()]
        rows.append((f"{name} (`{record['flags']}`)", f"{record['best_miou']:.3f}", str(record["epochs"]), *minutes))
    print_and_save(rows, results, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
