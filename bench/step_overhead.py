"""The command line's training step against a bare `train_on_batch` loop of the same network.

    python3 -m bench.step_overhead            # the demo's recipe at 128x96, batch 4, the book's head and a
                                              # 64-filter one (about 15 minutes in float32 on 2 cores)
    python3 -m bench.step_overhead --quick    # a smoke run (64x64, depth 11)

For each head width (`--heads`) and dtype policy (`--precisions`; by default float32, and mixed
bfloat16 too where the CPU computes it natively), two figures, each in a fresh process, side by side:

- **the command line's step**: `fcn-12.3.1.py --train` with the demo's recipe (`bench/demo.py`), so with
  the data set on disk and its reader threads, the demo's loss and the callbacks, for a few epochs; the seconds a step
  of each epoch after the first, as Keras' progress bar reports them at the epoch's end (the
  per-epoch evaluation comes after that line, so it is not counted); the median over those epochs;
- **the bare step**: the median of timed `train_on_batch` steps of the same network, loss, optimizer,
  precision and batch shapes on one random batch held in memory, after warm-up steps.

Their ratio is the whole cost of the data pipeline, augmentation and callbacks per step. The first
epoch's wall time (building the compiled step, its evaluation's first prediction) is reported
apart: it is paid once per run. The table goes to stdout, the figures to `bench/step_overhead.json`.
"""

import argparse
import os
import re
import statistics
import sys
import tempfile

from bench.demo import REPO_ROOT, demo_recipe, flag_value, make_data, print_and_save, run_command
from segmentation.quiet import quiet_start

with quiet_start(sys.argv[1:]):
    from model import HEAD_FILTERS
    from segmentation.precision import cpu_bf16_flags

DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "bench", "step_overhead.json")
FULL = {"height": 96, "width": 128, "network": [], "num_train": 300, "num_test": 50, "epochs": 4, "bare_steps": 30}
QUICK = {"height": 64, "width": 64, "network": ["--depth", "11"], "num_train": 16, "num_test": 4, "epochs": 3,
         "bare_steps": 5}
# Keras' progress bar at an epoch's end: "75/75 ━━━━ 40s 533ms/step - loss: ...".
EPOCH_LINE = re.compile(r"(\d+)/(\d+) \S+ (\d+)s (\d+(?:\.\d+)?)(ms|s)/step")
EPOCH_HEADER = re.compile(r"^Epoch \d+/\d+$")
# Keras colours the bar with ANSI escape codes, also when the output is not a terminal.
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")
BARE_STEP = """
import sys, time
from segmentation.kernels import prefer_onednn
prefer_onednn()
import keras, numpy as np
from segmentation.losses import build_loss
from model import build_model, configure_batchnorm
height, width, depth, head_filters, steps, precision, loss, momentum, decoder = sys.argv[1:]
height, width, depth, head_filters, steps = int(height), int(width), int(depth), int(head_filters), int(steps)
keras.mixed_precision.set_global_policy(precision)
keras.utils.set_random_seed(0)
_, fcn = build_model((height, width, 3), n_layers=3, n_classes=4, n=(depth - 2) // 9, head_filters=head_filters,
                     decoder=decoder)
configure_batchnorm(fcn, float(momentum))
fcn.compile(optimizer=keras.optimizers.Adam(1e-3), loss=build_loss(loss, None, 4))
rng = np.random.default_rng(0)
images = rng.random((4, height, width, 3), dtype=np.float32)
masks = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (4, height, width))]
for _ in range(3):
    fcn.train_on_batch(images, masks)
times = []
for _ in range(steps):
    start = time.perf_counter()
    fcn.train_on_batch(images, masks)
    times.append(time.perf_counter() - start)
print(sorted(times)[len(times) // 2])
"""


def epoch_step_seconds(output: str) -> list[tuple[float, float]]:
    """(epoch seconds, seconds a step) of each epoch, from the progress bar's final line in it.

    The bar is redrawn at every step with the time left, and once more at the epoch's end with
    the time the epoch took; each epoch's block starts with Keras' `Epoch k/N` line.
    """
    epochs: list[tuple[float, float] | None] = []
    for line in ANSI_CODE.sub("", output).replace("\r", "\n").splitlines():
        if EPOCH_HEADER.match(line):
            epochs.append(None)
        match = EPOCH_LINE.search(line)
        if epochs and match and match.group(1) == match.group(2):
            step = float(match.group(4)) / (1000 if match.group(5) == "ms" else 1)
            epochs[-1] = (float(match.group(3)), step)
    return [epoch for epoch in epochs if epoch is not None]


def measure_setting(settings: dict, precision: str, head_filters: int, data_dir: str, work_dir: str) -> dict:
    """Both figures for one setting; returns the JSON record."""
    size = ["--height", str(settings["height"]), "--width", str(settings["width"])]
    recipe = [*demo_recipe(), *settings["network"], "--head-filters", str(head_filters)]
    output = run_command([sys.executable, "fcn-12.3.1.py", "--train", "--data-path", data_dir, *size, *recipe,
                          "--epochs", str(settings["epochs"]), "--seed", "0", "--precision", precision,
                          "--save-dir", os.path.join(work_dir, f"weights-{head_filters}-{precision}")])
    epochs = epoch_step_seconds(output)
    if len(epochs) != settings["epochs"]:
        raise SystemExit(f"expected {settings['epochs']} epoch lines in the training output, found {len(epochs)}")
    depth = flag_value(recipe, "--depth", "56")
    bare = float(run_command([sys.executable, "-c", BARE_STEP, str(settings["height"]), str(settings["width"]), depth,
                              str(head_filters), str(settings["bare_steps"]), precision,
                              flag_value(recipe, "--loss", "ce"), flag_value(recipe, "--bn-momentum", "0.99"),
                              flag_value(recipe, "--decoder", "book")]).split()[-1])
    cli = statistics.median(step for _, step in epochs[1:])
    return {
        "size": f"{settings['width']}x{settings['height']}", "depth": int(depth), "head_filters": head_filters,
        "batch_size": 4,
        "flags": " ".join(recipe),
        "precision": precision, "cli_step_seconds": cli, "bare_step_seconds": bare, "ratio": cli / bare,
        "cli_epoch_step_seconds": [step for _, step in epochs], "first_epoch_seconds": epochs[0][0],
        "steps_per_epoch": settings["num_train"] // 4,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run at 64x64 (default: %(default)s)")
    parser.add_argument("--heads", default=f"{HEAD_FILTERS},64",
                        help="comma-separated --head-filters values (default: %(default)s)")
    native_bf16 = bool(cpu_bf16_flags())
    parser.add_argument("--precisions", default="float32,mixed_bfloat16" if native_bf16 else "float32",
                        help="comma-separated dtype policies; mixed_bfloat16 is in the default only on a CPU "
                             "that computes bfloat16 natively (default: %(default)s)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="JSON file (default: bench/step_overhead.json)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    records = []
    with tempfile.TemporaryDirectory() as work_dir:
        data_dir = os.path.join(work_dir, "data")
        make_data(data_dir, settings["height"], settings["width"], settings["num_train"], settings["num_test"])
        for head_filters in (int(value) for value in args.heads.split(",")):
            for precision in args.precisions.split(","):
                records.append(measure_setting(settings, precision, head_filters, data_dir, work_dir))
    first = records[0]
    rows = [(f"{first['size']}, ResNet{first['depth']}v2, batch 4", "command line s/step (median of epochs "
             f"2-{len(first['cli_epoch_step_seconds'])})", "bare train_on_batch s/step (median)", "ratio",
             f"first epoch, {first['steps_per_epoch']} steps, wall s")]
    for record in records:
        rows.append((f"{record['head_filters']}-filter head, {record['precision']}",
                     f"{record['cli_step_seconds']:.3f}", f"{record['bare_step_seconds']:.3f}",
                     f"{record['ratio']:.3f}", f"{record['first_epoch_seconds']:.0f}"))
    print_and_save(rows, {"cpu_bf16_flags": list(cpu_bf16_flags()), "runs": records}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
