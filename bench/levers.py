"""Training and evaluation levers, alone or stacked, at equal time: `--decoder`, `--loss`, `--augment flip`, ...

    python3 -m bench.levers                                   # 4 minutes a run, seed 0
    python3 -m bench.levers --minutes 4 --seeds 0,1,2 --levers ema,aux
    python3 -m bench.levers --minutes 8 --levers baseline,skip,skip+flip+lovasz   # levers stacked with +
    python3 -m bench.levers --data-path dataset/synthetic     # the demo's data set, made by `make demo`
    python3 -m bench.levers --quick                           # a smoke run (64x64, depth 11)

Each run is the demo's recipe (the Makefile's `DEMO_NETWORK` and `DEMO_RECIPE`) trained through the
command line with `--time-budget MINUTES` and `--seed S`, alone (the baseline) or with levers added
(`skip+flip`: both); its best weights are then evaluated with `--evaluate`. `--tta` changes no training:
the baseline's best weights are evaluated with and without it, and the evaluation of the test set alone
(the network built and its weights loaded beforehand) is timed for both. The table gives the best test
mIoU (the book's, per image), the data-set-level IoU of each class, the epochs trained, the seconds a
training step (the median of the epochs' progress-bar figures after the first) and the wall time; the
figures go to `bench/levers.json`.
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

from bench.demo import REPO_ROOT, data_flags, demo_recipe, flag_value, print_and_save, run_command
from bench.step_overhead import epoch_step_seconds

DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "bench", "levers.json")
FULL = {"height": 96, "width": 128, "network": [], "num_train": 300, "num_test": 50}
QUICK = {"height": 64, "width": 64, "network": ["--depth", "11", "--layers", "1", "--head-filters", "8"],
         "num_train": 16, "num_test": 4}
# Each lever's flags, added to the demo's recipe (a later flag overrides the recipe's).
LEVERS = {
    "baseline": [], "ema": ["--ema", "0.99"], "aux": ["--aux-loss", "0.4"],
    "skip": ["--decoder", "skip"], "bilinear": ["--decoder", "bilinear"], "flip": ["--augment", "flip"],
    "lovasz": ["--loss", "ce+lovasz"], "precise-bn": ["--precise-bn"],
}
# The evaluation's class table: "water bottle     0.3927          16883          20811".
CLASS_ROW = re.compile(r"^(\S.*?)\s+(\d\.\d{4})\s+\d+\s+\d+$", re.MULTILINE)
BOOK_MIOU = re.compile(r"mIoU \(book, mean of per-image mIoU\): (\d\.\d+)")
# The evaluation of the test set alone, timed: argv is data path, height, width, weights, then the network flags.
TIMED_EVALUATION = """
import sys, time
from segmentation.cli import build_network
from segmentation.checkpoints import restore_weights
from segmentation.config import RunConfig
from segmentation.ground_truth.splits import load_data
from segmentation.evaluation import evaluate_dataset, evaluation_data
from segmentation.parser import build_parser
data_path, height, width, weights, *network = sys.argv[1:]
args = ["--evaluate", "--dataset", "synthetic", "--data-path", data_path, "--height", height, "--width", width,
        *network]
config = RunConfig.from_namespace(build_parser().parse_args(args))
data = load_data(config)
_, fcn = build_network(config, data.n_classes)
restore_weights(fcn, weights)
test_data = evaluation_data(data.test, config)
for tta in (False, True):
    evaluate_dataset(fcn, test_data, tta=tta)  # the first call of a batch size builds its prediction function
for tta in (False, True):
    started = time.perf_counter()
    scores = evaluate_dataset(fcn, test_data, tta=tta)
    print(f"tta={tta} seconds={time.perf_counter() - started:.3f} miou={scores.mean_iou:.4f}")
"""
TIMED = re.compile(r"^tta=(\w+) seconds=([\d.]+) miou=([\d.]+)$", re.MULTILINE)


def evaluate_weights(common: list[str], network: list[str], weights: str, tta: bool) -> dict:
    """The `--evaluate` scores of one weights file: book mIoU and class IoU."""
    output = run_command([sys.executable, "fcn-12.3.1.py", "--evaluate", *common, *network,
                          "--restore-weights", weights, *(["--tta"] if tta else [])])
    return {"best_test_miou": float(BOOK_MIOU.search(output).group(1)),
            "class_iou": {name.strip(): float(value) for name, value in CLASS_ROW.findall(output)}}


def lever_flags(lever: str) -> list[str]:
    """The flags of `lever`, levers joined by `+` (`skip+flip`) stacked in that order.

    Raises:
        SystemExit: for a name not in `LEVERS`.
    """
    flags = []
    for name in lever.split("+"):
        if name not in LEVERS:
            raise SystemExit(f"--levers: no lever {name!r}; the levers are {', '.join(LEVERS)}")
        flags += LEVERS[name]
    return flags


def measure_lever(lever: str, seed: int, recipe: list[str], common: list[str], minutes: float, save_dir: str) -> dict:
    """Trains one lever (or the baseline) for `minutes` and evaluates its best weights; returns its record."""
    # The decoder is the network's: evaluating the weights needs it too.
    decoder = flag_value(lever_flags(lever), "--decoder", flag_value(recipe, "--decoder", "book"))
    network = [*recipe, "--decoder", decoder, "--save-dir", save_dir]
    started = time.monotonic()
    output = run_command([sys.executable, "fcn-12.3.1.py", "--train", *common, *network, *lever_flags(lever), "--seed",
                          str(seed), "--time-budget", str(minutes)])
    wall = time.monotonic() - started
    steps = [step for _, step in epoch_step_seconds(output)[1:]]
    with open(os.path.join(save_dir, "history.csv"), encoding="utf-8") as file:
        epochs = sum(1 for _ in file) - 1
    weights = os.path.join(save_dir, next(name for name in os.listdir(save_dir) if name.endswith(".weights.h5")))
    record = {"lever": lever, "seed": seed, "flags": " ".join(lever_flags(lever)), "train_seconds": wall,
              "epochs": epochs, "step_seconds": statistics.median(steps) if steps else None,
              **evaluate_weights(common, network, weights, tta=False)}
    if lever == "baseline":
        record["tta"] = evaluate_weights(common, network, weights, tta=True)
        data_path, height, width = (flag_value(common, flag, "") for flag in ("--data-path", "--height", "--width"))
        timed = TIMED.findall(run_command([sys.executable, "-c", TIMED_EVALUATION, data_path, height, width, weights,
                                           *recipe]))
        record["evaluation_seconds"] = {("tta" if value == "True" else "plain"): float(seconds)
                                        for value, seconds, _ in timed}
    return record


def table(records: list[dict], title: str) -> list[tuple[str, ...]]:
    """The Markdown rows: one per run, and the baseline's weights with `--tta`."""
    classes = list(records[0]["class_iou"])
    rows = [(title, "seed", "epochs", "s/step", "train s", "eval s", "best test mIoU", *classes)]
    for record in records:
        seconds = record.get("evaluation_seconds", {})
        rows.append((record["lever"] + (f" ({record['flags']})" if record["flags"] else ""), str(record["seed"]),
                     str(record["epochs"]), f"{record['step_seconds']:.3f}" if record["step_seconds"] else "",
                     f"{record['train_seconds']:.0f}",
                     f"{seconds['plain']:.2f}" if seconds else "", f"{record['best_test_miou']:.3f}",
                     *(f"{record['class_iou'][name]:.2f}" for name in classes)))
        if "tta" in record:
            rows.append(("baseline's weights, --tta", str(record["seed"]), "", "", "", f"{seconds['tta']:.2f}",
                         f"{record['tta']['best_test_miou']:.3f}",
                         *(f"{record['tta']['class_iou'][name]:.2f}" for name in classes)))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Trains each lever at each seed, prints the table and writes the JSON; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levers", default="baseline,ema,aux",
                        help=f"comma-separated runs of {', '.join(LEVERS)}; the baseline's weights are also "
                             "evaluated with --tta (default: %(default)s)")
    parser.add_argument("--seeds", default="0", help="comma-separated --seed values (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=4.0, help="--time-budget of each run (default: %(default)s)")
    parser.add_argument("--data-path", help="a data set in the book's format at the size below (default: the "
                                            "demo's, drawn into a temporary folder)")
    parser.add_argument("--save-dir", help="folder of the runs' weights (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="a smoke run at 64x64 (default: %(default)s)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="JSON file (default: bench/levers.json)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    recipe = [*demo_recipe(), *settings["network"]]
    records = []
    with tempfile.TemporaryDirectory() as work_dir:
        common = data_flags(args.data_path, work_dir, settings)
        for seed in (int(value) for value in args.seeds.split(",")):
            for lever in args.levers.split(","):
                save_dir = os.path.join(args.save_dir or work_dir, f"{lever}-seed{seed}")
                records.append(measure_lever(lever, seed, recipe, common, args.minutes, save_dir))
                print(records[-1], file=sys.stderr, flush=True)
    title = f"{settings['width']}x{settings['height']}, {args.minutes:g} min each"
    print_and_save(table(records, title), {"recipe": " ".join(recipe), "minutes": args.minutes, "runs": records},
                   args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
