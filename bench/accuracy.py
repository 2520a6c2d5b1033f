"""Does mixed precision train as well as float32? The demo's recipe, in each policy, over several seeds.

`--precision auto` trains in mixed bfloat16 where that is faster, on the
condition that the demo's run scores as well as in float32. One run of each is
a weak test (two seeds of the same policy differ by more than the effect
sought), so this trains `make demo`'s recipe (the Makefile's `DEMO_NETWORK`
and `DEMO_RECIPE`, read by `bench/demo.py`) through the command line for a
fixed number of epochs (the cosine schedule sized to them) once per seed and
policy, on the demo's data set, and reads each epoch's test mIoU from the
run's `history.csv`. It prints each policy's mean best test mIoU, its spread
over seeds and the per-seed differences, and writes everything to a JSON file.

The command line runs on any Keras backend, so this does too:
`KERAS_BACKEND=jax python3 -m bench.accuracy` on a GPU machine without
TensorFlow.

Example:

    python3 -m bench.accuracy --seeds 0,1,2 --epochs 10
"""

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time

from bench.demo import REPO_ROOT, demo_recipe, flag_value, run_command, without_flag
from segmentation.quiet import quiet_start

with quiet_start(sys.argv[1:]):
    from segmentation.paths import TRAIN_LABELS

DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "bench", "accuracy.json")


def train_once(settings: argparse.Namespace, policy: str, seed: int, work_dir: str) -> dict:
    """One run of the demo's recipe through the command line; returns its per-epoch test mIoU and its time."""
    save_dir = os.path.join(work_dir, f"{policy}-{seed}")
    start = time.perf_counter()
    run_command([sys.executable, "fcn-12.3.1.py", "--train", "--dataset", "synthetic",
                 "--data-path", settings.data_path, "--height", str(settings.height), "--width", str(settings.width),
                 *recipe(settings.depth), "--epochs", str(settings.epochs), "--seed", str(seed),
                 "--precision", policy, "--save-dir", save_dir])
    seconds = time.perf_counter() - start
    with open(os.path.join(save_dir, "history.csv"), encoding="utf-8") as file:
        miou = [float(row["test_miou"]) for row in csv.DictReader(file)]
    return {"policy": policy, "seed": seed, "test_miou": miou, "best_miou": max(miou), "seconds": seconds}


def recipe(depth: int | None) -> list[str]:
    """The demo's network and recipe; with `depth`, the backbone of that depth in place of the demo's."""
    flags = demo_recipe()
    return flags if depth is None else [*without_flag(flags, "--depth"), "--depth", str(depth)]


def summarize_seeds(runs: list[dict], policies: list[str]) -> dict:
    """Each policy's best mIoU averaged over seeds; each other policy's per-seed and mean difference to the first."""
    best = {policy: {run["seed"]: run["best_miou"] for run in runs if run["policy"] == policy} for policy in policies}
    reference = policies[0]
    summary = {
        "mean_best_miou": {policy: statistics.mean(values.values()) for policy, values in best.items() if values},
        "best_miou_spread": {policy: max(values.values()) - min(values.values())
                             for policy, values in best.items() if values},
    }
    for policy in policies[1:]:
        seeds = sorted(set(best[reference]) & set(best[policy]))
        differences = {seed: best[policy][seed] - best[reference][seed] for seed in seeds}
        summary[f"best_miou_difference_{policy}"] = differences
        summary[f"mean_best_miou_difference_{policy}"] = statistics.mean(differences.values()) if seeds else None
    return summary


def format_policy_table(runs: list[dict], policies: list[str], summary: dict) -> str:
    """Best test mIoU per seed and policy, each seed's difference, and the means."""
    seeds = sorted({run["seed"] for run in runs})
    best = {(run["policy"], run["seed"]): run["best_miou"] for run in runs}
    lines = ["seed".ljust(6) + "".join(f"{policy:>16}" for policy in policies)
             + "".join(f"{'diff ' + policy:>22}" for policy in policies[1:])]
    rows = [(str(seed), [best.get((policy, seed)) for policy in policies],
             [summary[f"best_miou_difference_{policy}"].get(seed) for policy in policies[1:]]) for seed in seeds]
    rows.append(("mean", [summary["mean_best_miou"].get(policy) for policy in policies],
                 [summary[f"mean_best_miou_difference_{policy}"] for policy in policies[1:]]))
    rows.append(("spread", [summary["best_miou_spread"].get(policy) for policy in policies],
                 [None for _ in policies[1:]]))
    for label, values, differences in rows:
        lines.append(label.ljust(6)
                     + "".join(f"{'-':>16}" if value is None else f"{value:>16.4f}" for value in values)
                     + "".join(f"{'-':>22}" if value is None else f"{value:>+22.4f}" for value in differences))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="bench/accuracy.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-path", default="dataset/synthetic",
                        help="a data set in the book's format (default: %(default)s, `make demo`'s)")
    parser.add_argument("--height", type=int, default=96, help="image height (default: %(default)s)")
    parser.add_argument("--width", type=int, default=128, help="image width (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=None,
                        help=f"ResNet depth (default: the demo's, {flag_value(demo_recipe(), '--depth', '110')})")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each run (default: %(default)s)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--policies", default="float32,mixed_bfloat16",
                        help="comma-separated Keras dtype policies, the first the reference (default: %(default)s)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="results JSON (default: bench/accuracy.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Trains every seed in every policy, printing each run's result as it ends; returns the exit status."""
    parser = build_parser()
    settings = parser.parse_args(argv)
    try:
        seeds = [int(seed) for seed in settings.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {settings.seeds}: expected comma-separated integers, e.g. 0,1,2.")
    policies = settings.policies.split(",")
    if not os.path.isfile(os.path.join(settings.data_path, TRAIN_LABELS)):
        print(f"bench/accuracy.py: error: {settings.data_path}: no {TRAIN_LABELS} there; write the demo's data "
              "set first (`make demo` does) or give --data-path.", file=sys.stderr)
        return 2
    runs = []
    results = {"backend": os.environ.get("KERAS_BACKEND", "tensorflow"), "recipe": " ".join(recipe(settings.depth)),
               "settings": vars(settings), "runs": runs}
    with tempfile.TemporaryDirectory() as work_dir:
        for seed in seeds:
            for policy in policies:
                outcome = train_once(settings, policy, seed, work_dir)
                runs.append(outcome)
                print(f"seed {seed} {policy}: best test mIoU {outcome['best_miou']:.4f} in "
                      f"{outcome['seconds']:.0f} s; per epoch " + " ".join(f"{value:.3f}" for value in
                                                                          outcome["test_miou"]), flush=True)
                # Written after every run, so a run cut short keeps what it measured.
                results["summary"] = summarize_seeds(runs, policies)
                with open(settings.output, "w") as file:
                    json.dump(results, file, indent=2)
    print(format_policy_table(runs, policies, results["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
