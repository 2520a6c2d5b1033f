"""The head's width (`--head-filters`) at equal time: what each width learns in the demo's budget.

    python3 -m bench.head_width                            # widths 32, 64, 128, 256, 8 minutes each
    python3 -m bench.head_width --widths 64,256 --minutes 5 --precision float32
    python3 -m bench.head_width --quick                    # a smoke run (64x64, depth 11, widths 8 and 16)

For each width, the demo's recipe (the Makefile's `DEMO_NETWORK` and `DEMO_RECIPE`, its `--head-filters`
replaced) trains through the command line on the demo's data with `--time-budget MINUTES`, and its best
weights are evaluated with `--evaluate`. The table gives the convolutions' forward GFLOPs of one image
(`bench/flops.py`), the seconds a training step took (the budget's last plan), the epochs trained, the
best test mIoU (the book's, per image) and the data-set-level IoU of each class; the figures go to
`bench/head_width.json`.
"""

import argparse
import os
import re
import sys
import tempfile

from bench.demo import REPO_ROOT, data_flags, demo_recipe, flag_value, print_and_save, run_command, without_flag

DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "bench", "head_width.json")
FULL = {"height": 96, "width": 128, "network": [], "num_train": 300, "num_test": 50, "widths": "32,64,128,256"}
QUICK = {"height": 64, "width": 64, "network": ["--depth", "11", "--layers", "1"], "num_train": 16, "num_test": 4,
         "widths": "8,16"}
# The budget's plan: "Time budget: 0.627 s a step, ...".
STEP_SECONDS = re.compile(r"^Time budget: (\d+\.\d+) s a step", re.MULTILINE)
# The evaluation's class table: "water bottle     0.3927          16883          20811".
CLASS_ROW = re.compile(r"^(\S.*?)\s+(\d\.\d{4})\s+\d+\s+\d+$", re.MULTILINE)
BOOK_MIOU = re.compile(r"mIoU \(book, mean of per-image mIoU\): (\d\.\d+)")
FLOPS = """
import sys
from model import build_model
from bench.flops import conv_flops_per_image
*sizes, decoder = sys.argv[1:]
height, width, depth, layers, head_filters = (int(value) for value in sizes)
_, fcn = build_model((height, width, 3), n_layers=layers, n=(depth - 2) // 9, head_filters=head_filters,
                     decoder=decoder)
print(conv_flops_per_image(fcn))
"""


def measure_width(width: int, recipe: list[str], common: list[str], save_dir: str) -> dict:
    """Trains and evaluates one width; returns its record."""
    network = [*recipe, "--head-filters", str(width), "--save-dir", save_dir]
    output = run_command([sys.executable, "fcn-12.3.1.py", "--train", *common, *network])
    steps = STEP_SECONDS.findall(output)
    with open(os.path.join(save_dir, "history.csv"), encoding="utf-8") as file:
        epochs = sum(1 for _ in file) - 1
    weights = next(name for name in os.listdir(save_dir) if name.endswith("-best-iou.weights.h5"))
    evaluation = run_command([sys.executable, "fcn-12.3.1.py", "--evaluate", *without_flag(common, "--time-budget"),
                              *network, "--restore-weights", weights])
    depth, layers = flag_value(recipe, "--depth", "56"), flag_value(recipe, "--layers", "3")
    height, width_pixels = flag_value(common, "--height", "480"), flag_value(common, "--width", "640")
    decoder = flag_value(recipe, "--decoder", "book")
    flops = int(run_command([sys.executable, "-c", FLOPS, height, width_pixels, depth, layers, str(width),
                             decoder]).split()[-1])
    return {
        "head_filters": width, "gflops_per_image": flops / 1e9,
        "step_seconds": float(steps[-1]) if steps else None, "epochs": epochs,
        "best_test_miou": float(BOOK_MIOU.search(evaluation).group(1)),
        "class_iou": {name.strip(): float(value) for name, value in CLASS_ROW.findall(evaluation)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", help="comma-separated --head-filters values (default: 32,64,128,256)")
    parser.add_argument("--minutes", type=float, default=8.0, help="--time-budget of each run (default: %(default)s)")
    parser.add_argument("--precision", default="auto", help="--precision of each run (default: %(default)s)")
    parser.add_argument("--data-path", help="a data set in the book's format at the size below (default: the "
                                            "demo's, drawn into a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="a smoke run at 64x64 (default: %(default)s)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="JSON file (default: bench/head_width.json)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    widths = [int(value) for value in (args.widths or settings["widths"]).split(",")]
    recipe = [*without_flag(demo_recipe(), "--head-filters"), *settings["network"]]
    records = []
    with tempfile.TemporaryDirectory() as work_dir:
        common = [*data_flags(args.data_path, work_dir, settings), "--seed", "0", "--precision", args.precision,
                  "--time-budget", str(args.minutes)]
        for width in widths:
            records.append(measure_width(width, recipe, common, os.path.join(work_dir, f"head-{width}")))
    classes = list(records[0]["class_iou"])
    rows = [(f"{settings['width']}x{settings['height']}, {args.minutes:g} min each, --precision {args.precision}",
             "GFLOPs an image", "s a step", "epochs", "best test mIoU", *classes)]
    for record in records:
        step = "-" if record["step_seconds"] is None else f"{record['step_seconds']:.3f}"
        rows.append((f"{record['head_filters']}-filter head", f"{record['gflops_per_image']:.2f}", step,
                     str(record["epochs"]), f"{record['best_test_miou']:.3f}",
                     *(f"{record['class_iou'][name]:.2f}" for name in classes)))
    print_and_save(rows, {"recipe": " ".join(recipe), "minutes": args.minutes, "precision": args.precision,
                          "runs": records}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
