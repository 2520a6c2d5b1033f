"""Does mixed precision train as well as float32? The demo's short run, in each policy, over several seeds.

`--precision auto` trains in mixed bfloat16 where that is faster, on the
condition that a fixed short synthetic run scores within 0.01 mIoU of
float32. One run of each is a weak test (two seeds of the same policy differ
by more than that), so this trains the demo's recipe (`make demo`: the
synthetic drinks set at 128x96, ResNet20v2, `--augment --loss ce+dice
--bn-momentum 0.9`, batch 4, Adam at the book's 1e-3) for a few epochs once
per seed and policy, scores the test set after every epoch as training does,
prints a table of the best test mIoU of each run and the per-seed
differences, and writes every epoch's scores to a JSON file.

It needs only Keras, the project's model and data modules, so it runs on any
Keras backend: `KERAS_BACKEND=jax python3 -m bench.accuracy` on a GPU machine
without TensorFlow (`batchnorm.py` then uses Keras' own BatchNormalization).

Example:

    python3 -m bench.accuracy --seeds 0,1,2 --epochs 10
"""

import argparse
import json
import os
import statistics
import sys
import time

import keras
import numpy as np

from data_generator import DataGenerator
from model import build_model, configure_batchnorm
from segmentation.augment import Augmentation
from segmentation.labels import LabelSet, load_labels
from segmentation.losses import build_loss
from segmentation.metrics import SegmentationScores

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "accuracy.json")
TRAIN_LABELS, TEST_LABELS = "segmentation_train.npy", "segmentation_test.npy"


class EpochScores(keras.callbacks.Callback):
    """Scores the test set after every epoch, in the training policy, as the command line's training does.

    Args:
        test_generator: DataGenerator. The test split, unshuffled, last batch kept.
    """

    def __init__(self, test_generator: DataGenerator):
        super().__init__()
        self.test_generator = test_generator
        self.miou: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        scores = SegmentationScores(self.test_generator.n_classes)
        for index in range(len(self.test_generator)):
            images, true_labels = self.test_generator.batch_class_maps(index)
            predicted = np.argmax(np.asarray(self.model.predict_on_batch(images)), axis=-1)
            scores.update(self.test_generator.batch_keys(index), true_labels, predicted)
        self.miou.append(scores.mean_iou)


def train_once(settings: argparse.Namespace, train_labels: LabelSet, test_labels: LabelSet, policy: str,
               seed: int) -> dict:
    """One short training run of the demo's recipe; returns its per-epoch test mIoU and its time."""
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(policy)
    n_classes = train_labels.n_classes
    _, fcn = build_model((settings.height, settings.width, 3), n_layers=3, n_classes=n_classes,
                         n=(settings.depth - 2) // 9)
    configure_batchnorm(fcn, momentum=0.9)
    fcn.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                loss=build_loss("ce+dice", None, n_classes))
    train_generator = DataGenerator(train_labels, settings.data_path, batch_size=settings.batch_size, shuffle=True,
                                    seed=seed, augmentation=Augmentation(), workers=settings.workers)
    test_generator = DataGenerator(test_labels, settings.data_path, batch_size=settings.batch_size, shuffle=False,
                                   drop_last=False)
    scores = EpochScores(test_generator)
    start = time.perf_counter()
    fcn.fit(train_generator, epochs=settings.epochs, callbacks=[scores], verbose=0)
    return {"policy": policy, "seed": seed, "test_miou": scores.miou, "best_miou": max(scores.miou),
            "seconds": time.perf_counter() - start}


def summarize(runs: list[dict], policies: list[str]) -> dict:
    """Each policy's best mIoU averaged over seeds; each other policy's per-seed and mean difference to the first."""
    best = {policy: {run["seed"]: run["best_miou"] for run in runs if run["policy"] == policy} for policy in policies}
    reference = policies[0]
    summary = {"mean_best_miou": {policy: statistics.mean(values.values()) for policy, values in best.items()
                                  if values}}
    for policy in policies[1:]:
        seeds = sorted(set(best[reference]) & set(best[policy]))
        differences = {seed: best[policy][seed] - best[reference][seed] for seed in seeds}
        summary[f"best_miou_difference_{policy}"] = differences
        summary[f"mean_best_miou_difference_{policy}"] = statistics.mean(differences.values()) if seeds else None
    return summary


def format_table(runs: list[dict], policies: list[str], summary: dict) -> str:
    """Best test mIoU per seed and policy, each seed's difference, and the means."""
    seeds = sorted({run["seed"] for run in runs})
    best = {(run["policy"], run["seed"]): run["best_miou"] for run in runs}
    lines = ["seed".ljust(6) + "".join(f"{policy:>16}" for policy in policies)
             + "".join(f"{'diff ' + policy:>22}" for policy in policies[1:])]
    rows = [(str(seed), [best.get((policy, seed)) for policy in policies],
             [summary[f"best_miou_difference_{policy}"].get(seed) for policy in policies[1:]]) for seed in seeds]
    rows.append(("mean", [summary["mean_best_miou"].get(policy) for policy in policies],
                 [summary[f"mean_best_miou_difference_{policy}"] for policy in policies[1:]]))
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
    parser.add_argument("--depth", type=int, default=20, help="ResNet v2 depth, 9n+2 (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each run (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per step (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=4, help="data generator threads (default: %(default)s)")
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
    train_labels, test_labels = (
        load_labels(os.path.join(settings.data_path, name), settings.data_path, settings.height, settings.width)
        for name in (TRAIN_LABELS, TEST_LABELS)
    )
    runs = []
    results = {"backend": keras.backend.backend(), "settings": vars(settings), "runs": runs}
    for seed in seeds:
        for policy in policies:
            run = train_once(settings, train_labels, test_labels, policy, seed)
            runs.append(run)
            print(f"seed {seed} {policy}: best test mIoU {run['best_miou']:.4f} in {run['seconds']:.0f} s; "
                  "per epoch " + " ".join(f"{value:.3f}" for value in run["test_miou"]), flush=True)
            # Written after every run, so a run cut short keeps what it measured.
            results["summary"] = summarize(runs, policies)
            with open(settings.output, "w") as file:
                json.dump(results, file, indent=2)
    print(format_table(runs, policies, results["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
