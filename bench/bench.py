"""Training and evaluation speed and memory, ours against the book's way.

    python3 bench/bench.py                     # 640x480 and 128x96, about 10 minutes on a 2-core CPU
    python3 bench/bench.py --quick             # a smoke run in seconds (64x64, depth 11)
    python3 bench/bench.py --rss-vs-dataset    # also: peak memory with 100 vs 1,000 training images

For each size, on a synthetic drinks set in the book's format
(`utils/generate_synthetic_drinks.py`, then `utils/generate_gt_segmentation.py`):

- training images/s: the median of timed `train_on_batch` steps after warm-up
  steps, batch 4, images already read (the data pipeline is timed apart);
- evaluation images/s of the per-epoch test pass (`training.evaluate_dataset`);
- peak resident memory (VmHWM) of the training process;
- the data pipeline (`DataGenerator`) images/s on its own, one thread;
- the forward FLOPs per image, counted analytically over the convolutions;
- the same for a *book-style* run: the book's network on Keras 2
  (`tf_keras`, as the book ran it; `bench/book_keras2.py`) fed the book's way
  (the whole one-hot dicts in memory, float64 images, one `predict` per test
  image, float32, no XLA);
- our training with each precision named (float32, mixed bfloat16) and with
  XLA on, by default at the demo size only (`--variant-sizes`);
- our training with another `--remat` level (`--remat-level`; by default
  `off`, no recomputation), by default at 640x480 only (`--remat-sizes`),
  for its memory: ours trains with `--remat auto`, which recomputes the stem
  and stage 0 there.

Ours trains with the command line's defaults, so in the precision
`--precision auto` picks on the machine (`precision.py`).

Training FLOP/s are approximated as 3 x forward FLOPs per image x images/s
(forward, plus a backward pass of about twice the forward) and given as a
fraction of the machine's matmul peak measured in the same run (float32 runs
against the float32 peak, mixed bfloat16 runs against the bfloat16 peak).

Each measurement runs in a fresh `python -m bench.worker` process, from the
repository root, with a time limit; one killed for memory or time is reported
as such. The table goes to stdout and the figures to `bench/results.json`.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from segmentation.quiet import quiet_start

# The package's names load TensorFlow (the measurements themselves run in `bench.worker` processes).
with quiet_start(sys.argv[1:]):
    from segmentation.ground_truth.book_labels import read_labels_whole
    from segmentation.paths import TEST_LABELS, TEST_VIA_JSON, TRAIN_LABELS, TRAIN_VIA_JSON
    from segmentation.remat import LEVELS as REMAT_LEVELS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(REPO_ROOT, "bench", "results.json")
DEFAULT_DATA_DIR = os.path.join(REPO_ROOT, "dataset", "bench")
BOOK_FALLBACK_BATCH_SIZE = 2
# Our training options measured besides the default (--precision auto, XLA as Keras chooses: off on a CPU).
VARIANTS = {
    "float32": {"precision": "float32", "jit_compile": "auto"},
    "mixed_bfloat16": {"precision": "mixed_bfloat16", "jit_compile": "off"},
    "jit_on": {"precision": "float32", "jit_compile": "on"},
}
# Another --remat level is measured apart (at --remat-sizes) because it is about memory at large sizes.
PEAK_KEYS = {"float32": "matmul_peak_gflops_fp32", "mixed_bfloat16": "matmul_peak_gflops_bf16"}
# Settings of the full run and of --quick (each can be overridden by its flag).
FULL = {
    "sizes": "640x480,128x96", "depth": 56, "warmup_steps": 1, "steps": 2, "num_test": 8,
    "matmul_size": 2048, "matmul_seconds": 2.0, "timeout": 300, "rss_counts": "100,1000",
    # The options at 640x480 too would not fit the run in 10 minutes on a 2-core CPU.
    "variant_sizes": "128x96", "remat_sizes": "640x480", "remat_level": "off",
}
QUICK = {
    "sizes": "64x64", "depth": 11, "warmup_steps": 1, "steps": 2, "num_test": 4,
    "matmul_size": 256, "matmul_seconds": 0.2, "timeout": 120, "rss_counts": "10,100",
    "variant_sizes": "64x64", "remat_sizes": "64x64", "remat_level": "all",
}


class MeasurementFailed(Exception):
    """A worker process timed out, was killed, ran out of memory or failed; the message says which."""

    def __init__(self, message: str, out_of_memory: bool = False):
        super().__init__(message)
        self.out_of_memory = out_of_memory


def parse_width_height(text: str) -> tuple[int, int]:
    """`"640x480"` (width x height, as the book writes it) -> `(640, 480)`."""
    try:
        width, height = (int(value) for value in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480; received {text!r}") from None
    if width <= 0 or height <= 0 or width % 32 or height % 32:
        raise argparse.ArgumentTypeError(f"{text}: width and height must be positive multiples of 32")
    return width, height


def size_keys_of(text: str) -> list[str]:
    """`"640x480,128x96"` -> the checked size keys `["640x480", "128x96"]`; `""` -> `[]`."""
    return [f"{width}x{height}" for width, height in map(parse_width_height, text.split(","))] if text else []


def run_worker(job: dict, timeout: float) -> dict:
    """Runs one measurement in a fresh `python -m bench.worker` process.

    Args:
        job: dict. `kind` and the measurement's arguments (see `bench.worker`).
        timeout: float. Seconds before the process is killed.

    Returns:
        The worker's JSON result.

    Raises:
        MeasurementFailed: on a timeout, a kill (the kernel's out-of-memory
            killer sends SIGKILL), an out-of-memory error, or any other failure.
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        result_path = os.path.join(folder, "result.json")
        command = [sys.executable, "-m", "bench.worker", "--job", json.dumps(job), "--result", result_path]
        try:
            process = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MeasurementFailed(f"timed out after {timeout:g} s") from None
        if process.returncode == -signal.SIGKILL:
            raise MeasurementFailed("killed (SIGKILL: out of memory?)", out_of_memory=True)
        if process.returncode != 0 and os.path.isfile(result_path):
            # The worker's own report of a failure it caught (out of memory).
            with open(result_path, encoding="utf-8") as file:
                failure = json.load(file)
            raise MeasurementFailed(failure["error"], out_of_memory=failure.get("out_of_memory", False))
        if process.returncode != 0:
            last_line = (process.stderr.strip().splitlines() or ["no output"])[-1]
            raise MeasurementFailed(f"failed (exit status {process.returncode}): {last_line}")
        with open(result_path, encoding="utf-8") as file:
            return json.load(file)


def run_tool(arguments: list[str]) -> None:
    """Runs one of the project's `utils/` scripts from the repository root; raises on failure."""
    process = subprocess.run([sys.executable, *arguments], cwd=REPO_ROOT, capture_output=True, text=True)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} failed:\n{process.stderr[-2000:]}")


def make_dataset(folder: str, width: int, height: int, num_train: int, num_test: int) -> str:
    """Writes (or reuses) a synthetic drinks set in the book's format: images, VIA JSON, `.npy` masks.

    Args:
        folder: str. Parent folder; the set goes to `<folder>/<W>x<H>-<train>-<test>`.
        width: int. Image width.
        height: int. Image height.
        num_train: int. Training images.
        num_test: int. Test images.

    Returns:
        The data set's folder.
    """
    path = os.path.join(folder, f"{width}x{height}-{num_train}-{num_test}")
    if all(os.path.isfile(os.path.join(path, name)) for name in (TRAIN_LABELS, TEST_LABELS)):
        return path
    run_tool([
        "utils/generate_synthetic_drinks.py", "--output", path, "--seed", "0", "--num-train", str(num_train),
        "--num-test", str(num_test), "--height", str(height), "--width", str(width),
    ])
    for json_name, labels in ((TRAIN_VIA_JSON, TRAIN_LABELS), (TEST_VIA_JSON, TEST_LABELS)):
        run_tool(["utils/generate_gt_segmentation.py", "-j", json_name, "-p", path,
                  "--save-filename", os.path.join(path, labels)])
    return path


def enlarge_dataset(source: str, target: str, count: int) -> None:
    """Makes a `count`-image training set from a smaller one: hard-linked images, copied masks.

    Each mask is a separate array in the new `.npy` dict (pickle would store a
    repeated array once), so the file and its loading cost what `count` real
    masks cost.

    Args:
        source: str. A data set folder.
        target: str. The new folder (replaced).
        count: int. Training images in the new set.
    """
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target)
    masks = read_labels_whole(os.path.join(source, TRAIN_LABELS))
    keys = list(masks)
    enlarged = {}
    for index in range(count):
        key = keys[index % len(keys)]
        name = f"{index:05d}-{key}"
        os.link(os.path.join(source, key), os.path.join(target, name))
        enlarged[name] = masks[key].copy()
    np.save(os.path.join(target, TRAIN_LABELS), enlarged)


def fraction_of_peak(forward_gflops: float, images_per_s: float, peak_gflops: float | None) -> float | None:
    """Training FLOP/s (3 x forward FLOPs x images/s) as a share of a matmul peak."""
    if peak_gflops is None:
        return None
    return 3 * forward_gflops * images_per_s / peak_gflops


def measure_size(width: int, height: int, settings: argparse.Namespace, peaks: dict, log) -> dict:
    """All of one size's measurements; a failed one leaves None and a line in `status`.

    Args:
        width: int. Image width.
        height: int. Image height.
        settings: argparse.Namespace. The parsed command line.
        peaks: dict. `matmul_peak_gflops_fp32` and `_bf16` (values may be None).
        log: callable. Prints a progress line.

    Returns:
        The size's figures, keyed as in `bench/results.json`.
    """
    num_train = (settings.warmup_steps + settings.steps) * settings.batch_size
    log(f"{width}x{height}: writing the synthetic data set ({num_train} + {settings.num_test} images)")
    data_path = make_dataset(settings.data_dir, width, height, num_train, settings.num_test)
    common = {"data_path": data_path, "height": height, "width": width}
    training = {**common, "depth": settings.depth, "warmup_steps": settings.warmup_steps, "steps": settings.steps}
    figures: dict = {"status": {}}

    def attempt(name: str, job: dict) -> dict | None:
        log(f"{width}x{height}: {name}")
        start = time.perf_counter()
        try:
            result = run_worker(job, settings.timeout)
        except MeasurementFailed as error:
            figures["status"][name] = str(error)
            log(f"{width}x{height}: {name}: {error}")
            return None
        figures["status"][name] = f"ok ({time.perf_counter() - start:.0f} s)"
        return result

    pipeline = attempt("pipeline", {"kind": "pipeline", **common, "batch_size": settings.batch_size})
    figures["pipeline_img_per_s"] = pipeline and pipeline["pipeline_img_per_s"]

    ours = attempt("ours", {"kind": "train", "style": "ours", **training, "batch_size": settings.batch_size,
                            "precision": "auto", "jit_compile": "auto", "evaluate": True})
    book_job = {"kind": "train", "style": "book", **training, "batch_size": settings.batch_size,
                "precision": "float32", "jit_compile": "off", "evaluate": True}
    book = attempt("book", book_job)
    if book is None and settings.batch_size > BOOK_FALLBACK_BATCH_SIZE and "memory" in figures["status"]["book"]:
        book = attempt("book", {**book_job, "batch_size": BOOK_FALLBACK_BATCH_SIZE})
    for prefix, result in (("", ours), ("book_", book)):
        for key in ("train_img_per_s", "eval_img_per_s", "peak_rss_gb", "batch_size"):
            figures[prefix + key] = result and result[key]
        # Against the peak of the arithmetic it trained in: bf16 runs against the bf16 peak.
        figures[prefix + "train_fraction_of_peak"] = result and fraction_of_peak(
            result["forward_gflops_per_image"], result["train_img_per_s"], peaks[PEAK_KEYS[result["precision"]]])
    figures["precision"] = ours and ours["precision"]
    figures["remat"] = ours and ours["remat"]
    # Counted on each network: equal when the book's Keras 2 network is ours layer for layer.
    figures["forward_gflops_per_image"] = ours and ours["forward_gflops_per_image"]
    figures["book_forward_gflops_per_image"] = book and book["forward_gflops_per_image"]

    if f"{width}x{height}" in settings.variant_sizes:
        for name, options in VARIANTS.items():
            result = attempt(name, {"kind": "train", "style": "ours", **training, **options,
                                    "batch_size": settings.batch_size, "evaluate": False})
            peak = peaks[PEAK_KEYS[options["precision"]]]
            figures[f"train_img_per_s_{name}"] = result and result["train_img_per_s"]
            figures[f"peak_rss_gb_{name}"] = result and result["peak_rss_gb"]
            figures[f"train_fraction_of_peak_{name}"] = result and fraction_of_peak(
                result["forward_gflops_per_image"], result["train_img_per_s"], peak)
    if f"{width}x{height}" in settings.remat_sizes:
        result = attempt("remat", {"kind": "train", "style": "ours", **training, "precision": "auto",
                                   "jit_compile": "auto", "remat": settings.remat_level,
                                   "batch_size": settings.batch_size, "evaluate": False})
        figures["train_img_per_s_remat"] = result and result["train_img_per_s"]
        figures["peak_rss_gb_remat"] = result and result["peak_rss_gb"]
    return figures


def measure_rss_vs_dataset(width: int, height: int, counts: list[int], settings: argparse.Namespace, log) -> dict:
    """Peak memory of loading `counts` training images' labels and reading a batch, ours and the book's.

    Args:
        width: int. Image width.
        height: int. Image height.
        counts: list of int. Training set sizes, e.g. `[100, 1000]`.
        settings: argparse.Namespace. The parsed command line.
        log: callable. Prints a progress line.

    Returns:
        `size`, `ours_peak_rss_gb` and `book_peak_rss_gb` (`{count: GB}`), and
        their growth from the smallest to the largest count.
    """
    base_count = min(counts)
    log(f"rss-vs-dataset {width}x{height}: writing the synthetic data set ({base_count} images)")
    base = make_dataset(settings.data_dir, width, height, base_count, 1)
    figures: dict = {"size": f"{width}x{height}", "status": {}}
    for style in ("ours", "book"):
        figures[f"{style}_peak_rss_gb"] = {}
    for count in counts:
        folder = os.path.join(settings.data_dir, f"{width}x{height}-rss-{count}")
        log(f"rss-vs-dataset {width}x{height}: {count} training images")
        enlarge_dataset(base, folder, count)
        for style in ("ours", "book"):
            job = {"kind": "labels", "style": style, "data_path": folder, "labels_file": TRAIN_LABELS,
                   "height": height, "width": width, "batch_size": settings.batch_size}
            try:
                peak = run_worker(job, settings.timeout)["peak_rss_gb"]
            except MeasurementFailed as error:
                figures["status"][f"{style}-{count}"] = str(error)
                peak = None
            figures[f"{style}_peak_rss_gb"][str(count)] = peak
        shutil.rmtree(folder)
    for style in ("ours", "book"):
        peaks = figures[f"{style}_peak_rss_gb"]
        smallest, largest = peaks[str(min(counts))], peaks[str(max(counts))]
        figures[f"{style}_growth_gb"] = None if None in (smallest, largest) else largest - smallest
    return figures


def format_value(value: float | None, digits: int = 2) -> str:
    """A table cell: the number, or `failed`."""
    if value is None:
        return "failed"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"


TABLE_ROWS = (
    ("training img/s", "train_img_per_s", 3),
    ("training img/s, book-style", "book_train_img_per_s", 3),
    ("evaluation img/s", "eval_img_per_s", 3),
    ("evaluation img/s, book-style", "book_eval_img_per_s", 3),
    ("peak RSS GB, training", "peak_rss_gb", 3),
    ("peak RSS GB, book-style", "book_peak_rss_gb", 3),
    ("training share of peak (own dtype)", "train_fraction_of_peak", 2),
    ("  book-style (fp32)", "book_train_fraction_of_peak", 2),
    ("training img/s, float32", "train_img_per_s_float32", 3),
    ("  share of fp32 peak", "train_fraction_of_peak_float32", 2),
    ("training img/s, mixed_bfloat16", "train_img_per_s_mixed_bfloat16", 3),
    ("  share of bf16 peak", "train_fraction_of_peak_mixed_bfloat16", 2),
    ("training img/s, float32 XLA on", "train_img_per_s_jit_on", 3),
    ("training img/s, --remat-level", "train_img_per_s_remat", 3),
    ("peak RSS GB, training, --remat-level", "peak_rss_gb_remat", 3),
    ("data pipeline img/s (1 thread)", "pipeline_img_per_s", 3),
    ("forward GFLOPs/image (convs)", "forward_gflops_per_image", 3),
)


def format_speed_table(results: dict, size_keys: list[str]) -> str:
    """The results as a plain-text table, one column per size, failures listed below."""
    label_width = max(len(label) for label, _, _ in TABLE_ROWS)
    lines = [
        f"matmul peak: float32 {format_value(results['matmul_peak_gflops_fp32'], 4)} GFLOP/s, "
        f"bfloat16 {format_value(results['matmul_peak_gflops_bf16'], 4)} GFLOP/s "
        f"({results['settings']['matmul_size']}x{results['settings']['matmul_size']} tf.matmul)",
        " " * label_width + "".join(f"{key:>12}" for key in size_keys),
    ]
    for label, key, digits in TABLE_ROWS:
        cells = [results[size].get(key, "-") for size in size_keys]
        if all(cell == "-" for cell in cells):
            continue
        lines.append(label.ljust(label_width) + "".join(
            f"{cell if cell == '-' else format_value(cell, digits):>12}" for cell in cells))
    policies = sorted({results[size]["precision"] for size in size_keys if results[size].get("precision")})
    if policies:
        lines.append(f"ours trains in {', '.join(policies)} (--precision auto on this machine); "
                     "the book-style baseline in float32")
    levels = ", ".join(f"{results[size]['remat']} at {size}" for size in size_keys if results[size].get("remat"))
    if levels:
        lines.append(f"ours trains with --remat auto: {levels}; --remat-level is {results['settings']['remat_level']}")
    batch_notes = [f"{size} batch {results[size]['book_batch_size']}" for size in size_keys
                   if results[size].get("book_batch_size") not in (None, results["settings"]["batch_size"])]
    if batch_notes:
        lines.append("book-style batch size lowered (batch 4 did not fit): " + ", ".join(batch_notes))
    for size in size_keys:
        for name, status in results[size]["status"].items():
            if not status.startswith("ok"):
                lines.append(f"{size} {name}: {status}")
    rss = results.get("rss_vs_dataset")
    if rss:
        for style in ("ours", "book"):
            peaks = ", ".join(f"{count} images {format_value(value, 3)} GB"
                              for count, value in rss[f"{style}_peak_rss_gb"].items())
            lines.append(f"peak RSS vs data set size at {rss['size']}, {style}: {peaks} "
                         f"(growth {format_value(rss[f'{style}_growth_gb'], 3)} GB)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(
        prog="bench/bench.py",
        description="Training and evaluation speed and memory of the chapter 12 FCN, ours against the book's way. "
                    "Defaults are the full run; --quick changes them to a smoke run, and any flag given wins.",
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK['sizes']}, depth {QUICK['depth']}, {QUICK['steps']} timed steps")
    parser.add_argument("--sizes", metavar="WxH,...",
                        help=f"image sizes, width x height (default: {FULL['sizes']})")
    parser.add_argument("--variant-sizes", metavar="WxH,...",
                        help="sizes where our float32, mixed_bfloat16 and XLA-on trainings are measured too, '' for "
                             f"none (default: {FULL['variant_sizes']})")
    parser.add_argument("--remat-sizes", metavar="WxH,...",
                        help="sizes where our training with --remat-level is measured too, '' for none "
                             f"(default: {FULL['remat_sizes']})")
    parser.add_argument("--remat-level", choices=REMAT_LEVELS,
                        help="the --remat level measured at --remat-sizes; ours trains with --remat auto "
                             f"(default: {FULL['remat_level']}; {QUICK['remat_level']} with --quick)")
    parser.add_argument("--depth", type=int, help=f"ResNet v2 depth, 9n+2 (default: {FULL['depth']})")
    parser.add_argument("--batch-size", type=int, default=4, help="images per training step (default: %(default)s)")
    parser.add_argument("--warmup-steps", type=int,
                        help=f"untimed training steps first (default: {FULL['warmup_steps']})")
    parser.add_argument("--steps", type=int, help=f"timed training steps (default: {FULL['steps']})")
    parser.add_argument("--num-test", type=int,
                        help=f"test images of the evaluation pass (default: {FULL['num_test']})")
    parser.add_argument("--matmul-size", type=int,
                        help=f"side of the peak-measuring matmul (default: {FULL['matmul_size']})")
    parser.add_argument("--matmul-seconds", type=float,
                        help=f"time spent on each matmul dtype (default: {FULL['matmul_seconds']})")
    parser.add_argument("--timeout", type=float,
                        help=f"seconds before a measurement process is killed (default: {FULL['timeout']})")
    parser.add_argument("--rss-vs-dataset", action="store_true",
                        help="also measure the peak memory of loading the labels and reading a batch with different "
                             "training set sizes, at the first size, ours and the book's way")
    parser.add_argument("--rss-counts", metavar="N,...",
                        help=f"training set sizes for --rss-vs-dataset (default: {FULL['rss_counts']})")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, metavar="DIR",
                        help="where the synthetic data sets are written and reused (default: dataset/bench)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, metavar="FILE",
                        help="results JSON (default: bench/results.json)")
    return parser


def parse_settings(argv: list[str] | None) -> argparse.Namespace:
    """Parses the command line and fills the flags not given from the full or quick settings."""
    parser = build_parser()
    settings = parser.parse_args(argv)
    for name, value in (QUICK if settings.quick else FULL).items():
        if getattr(settings, name) is None:
            setattr(settings, name, value)
    try:
        settings.sizes = [parse_width_height(text) for text in settings.sizes.split(",")]
        settings.variant_sizes = size_keys_of(settings.variant_sizes)
        settings.remat_sizes = size_keys_of(settings.remat_sizes)
        settings.rss_counts = sorted({int(count) for count in settings.rss_counts.split(",")})
    except (argparse.ArgumentTypeError, ValueError) as error:
        parser.error(str(error))
    if settings.depth < 11 or (settings.depth - 2) % 9:
        parser.error(f"--depth {settings.depth}: ResNet v2 depth must be 9n+2 (11, 20, ..., 56).")
    if min(settings.batch_size, settings.steps, settings.num_test, settings.matmul_size, *settings.rss_counts) < 1:
        parser.error("--batch-size, --steps, --num-test, --matmul-size and --rss-counts must be at least 1.")
    return settings


def main(argv: list[str] | None = None) -> int:
    """Runs every measurement, prints the table and writes the results JSON; returns the exit status."""
    settings = parse_settings(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {message}", file=sys.stderr, flush=True)

    os.makedirs(settings.data_dir, exist_ok=True)
    results: dict = {
        "settings": {
            "batch_size": settings.batch_size, "depth": settings.depth, "warmup_steps": settings.warmup_steps,
            "steps": settings.steps, "num_test": settings.num_test, "matmul_size": settings.matmul_size,
            "quick": settings.quick, "remat_level": settings.remat_level,
        },
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "notes": {
            "flops": "forward FLOPs counted analytically over Conv2D and Conv2DTranspose layers (2 per "
                     "multiply-add); training FLOP/s approximated as 3 x forward FLOPs x images/s",
            "book_style": "the book's network on Keras 2 (tf_keras) run the book's way: whole one-hot dicts in "
                          "memory, float64 images, one predict per test image, float32, no XLA",
            "train_fraction_of_peak": "against the matmul peak of the dtype the run trained in",
            "peak_rss_gb": "VmHWM of the measurement process, 10^9 bytes, after the training steps",
        },
    }
    log("matmul peak")
    try:
        results.update(run_worker(
            {"kind": "matmul", "size": settings.matmul_size, "seconds": settings.matmul_seconds}, settings.timeout))
    except MeasurementFailed as error:
        log(f"matmul peak: {error}")
        results.update({"matmul_peak_gflops_fp32": None, "matmul_peak_gflops_bf16": None})
    size_keys = []
    for width, height in settings.sizes:
        key = f"{width}x{height}"
        size_keys.append(key)
        results[key] = measure_size(width, height, settings, results, log)
    if settings.rss_vs_dataset:
        width, height = settings.sizes[0]
        results["rss_vs_dataset"] = measure_rss_vs_dataset(width, height, settings.rss_counts, settings, log)
    results["elapsed_s"] = time.perf_counter() - started
    os.makedirs(os.path.dirname(os.path.abspath(settings.output)), exist_ok=True)
    with open(settings.output, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    print(format_speed_table(results, size_keys))
    log(f"done; results in {settings.output}")
    failed = any(not status.startswith("ok") for key in size_keys for status in results[key]["status"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
