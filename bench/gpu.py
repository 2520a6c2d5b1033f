"""The FCN's speed on a machine with Keras 3 but not TensorFlow (a GPU box with JAX or PyTorch).

    KERAS_BACKEND=jax python -m bench.gpu --output gpu.json

`bench/bench.py` measures this project's TensorFlow program. Where only
another Keras backend is installed (a GPU machine with JAX, say), this script
times the same network (`model.build_model`, the book's ResNet56v2 with a
3-layer pyramid) on random data, in one process:

- the backend's matmul throughput in float32 and bfloat16 (the peak);
- training images/s in float32 and in mixed bfloat16, at the book's batch 4
  and at a larger batch (median of timed `train_on_batch` steps after warm-up);
- evaluation images/s our way (one `predict_on_batch` per batch of 4) and the
  book's way (one `predict` call per image), in float32;
- the device's peak memory so far, after each training measurement, where
  the backend reports it (JAX): the process's peak, so only the first
  measurement's figure is its own.

It prints a table and writes the figures as JSON. The data pipeline, the
losses and the metrics are not part of it: random images and one-hot masks go
straight to the network.
"""

import argparse
import json
import statistics
import sys
import time

from segmentation.quiet import quiet_start

# Before the backend loads: TensorFlow's start-up lines stay out unless asked for.
with quiet_start(sys.argv[1:]):
    import keras
    import numpy as np

    from bench.flops import conv_flops_per_image, measure_matmul
    from model import build_model
    from segmentation.process_state import kept_process_state

N_CLASSES = 4
PRECISIONS = ("float32", "mixed_bfloat16")


def peak_device_memory_gb() -> float | None:
    """Peak bytes the first accelerator has held, in GB, where the backend tells (JAX); else None."""
    if keras.backend.backend() != "jax":
        return None
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 1e9


def random_batch(rng: np.random.Generator, batch_size: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] and one-hot masks of random class maps, float32."""
    images = rng.random((batch_size, height, width, 3), dtype=np.float32)
    masks = np.eye(N_CLASSES, dtype=np.float32)[rng.integers(0, N_CLASSES, (batch_size, height, width))]
    return images, masks


def build(height: int, width: int, depth: int, precision: str) -> keras.Model:
    """The FCN compiled as `bench.worker` compiles it (Adam 1e-3, categorical cross-entropy)."""
    keras.mixed_precision.set_global_policy(precision)
    _, fcn = build_model((height, width, 3), n_layers=3, n_classes=N_CLASSES, n=(depth - 2) // 9)
    fcn.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy")
    return fcn


def time_training(fcn: keras.Model, batch_size: int, warmup: int, steps: int, height: int, width: int) -> float:
    """Training images/s: `batch_size` over the median time of `steps` steps after `warmup` untimed ones."""
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, batch_size, height, width) for _ in range(2)]
    times = []
    for step in range(warmup + steps):
        images, masks = batches[step % 2]
        start = time.perf_counter()
        fcn.train_on_batch(images, masks)  # returns the loss as a number, so the step has finished
        times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times[warmup:])


def time_evaluation(fcn: keras.Model, n_images: int, batch_size: int, height: int, width: int) -> dict:
    """Evaluation images/s our way (batches) and the book's way (one `predict` per image).

    Each way runs one untimed pass first: a ragged last batch compiles its own
    shape once per training run, not once per epoch.
    """
    images = np.random.default_rng(1).random((n_images, height, width, 3), dtype=np.float32)

    def ours() -> None:
        for first in range(0, n_images, batch_size):
            np.argmax(fcn.predict_on_batch(images[first : first + batch_size]), axis=-1)

    def book() -> None:
        for index in range(n_images):
            np.argmax(fcn.predict(images[index : index + 1], verbose=0)[0], axis=-1)

    result = {}
    for key, evaluate in (("eval_img_per_s", ours), ("book_eval_img_per_s", book)):
        evaluate()
        start = time.perf_counter()
        evaluate()
        result[key] = n_images / (time.perf_counter() - start)
    return result


def parse_height_width(text: str) -> tuple[int, int]:
    """`WIDTHxHEIGHT` (the README's order, e.g. 640x480) -> (height, width)."""
    width, height = (int(part) for part in text.lower().split("x"))
    return height, width


@kept_process_state()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_height_width, default=(480, 640), help="WIDTHxHEIGHT (default: 640x480)")
    parser.add_argument("--depth", type=int, default=56, help="ResNet v2 depth, 9n+2 (default: 56, the book's)")
    parser.add_argument("--batch-sizes", default="4,16", help="training batch sizes, comma-separated (default: 4,16)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first (default: 3)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (default: 10)")
    parser.add_argument("--num-test", type=int, default=50, help="images in the evaluation pass (default: 50)")
    parser.add_argument("--matmul-size", type=int, default=8192, help="side of the peak-measuring matmul")
    parser.add_argument("--matmul-seconds", type=float, default=1.0,
                        help="time spent on each matmul dtype, at least 3 products (default: %(default)s)")
    parser.add_argument("--output", default="bench/gpu_results.json", help="JSON file to write")
    args = parser.parse_args()
    height, width = args.size
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]

    results: dict = {"backend": keras.backend.backend(), "size": f"{width}x{height}", "depth": args.depth}
    if keras.backend.backend() == "jax":
        import jax

        results["device"] = str(jax.devices()[0].device_kind)

    def record(figures: dict) -> None:
        results.update(figures)
        with open(args.output, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
        print(json.dumps(figures), flush=True)

    record(measure_matmul(args.matmul_size, seconds=args.matmul_seconds))
    # The book's batch first, float32 then bfloat16, so a run cut short still has the figures that matter.
    for batch_size in batch_sizes:
        for precision in PRECISIONS:
            fcn = build(height, width, args.depth, precision)
            key = f"train_img_per_s_{precision}_batch{batch_size}"
            record({
                "forward_gflops_per_image": conv_flops_per_image(fcn) / 1e9,
                key: time_training(fcn, batch_size, args.warmup, args.steps, height, width),
                f"peak_device_gb_so_far_{key}": peak_device_memory_gb(),
            })
            if precision == "float32" and batch_size == batch_sizes[0]:
                record(time_evaluation(fcn, args.num_test, batch_size, height, width))
            keras.backend.clear_session()

    # A training step is about three forward passes (forward, and backward through activations and weights).
    step_gflop = 3 * results["forward_gflops_per_image"]
    print(f"\n{results.get('device', results['backend'])}, {results['size']}, ResNet{args.depth}v2")
    print(f"matmul peak GFLOP/s: float32 {results['matmul_peak_gflops_fp32']:.0f}, "
          f"bfloat16 {results['matmul_peak_gflops_bf16']:.0f}")
    for precision in PRECISIONS:
        peak = results["matmul_peak_gflops_fp32" if precision == "float32" else "matmul_peak_gflops_bf16"]
        for batch_size in batch_sizes:
            rate = results[f"train_img_per_s_{precision}_batch{batch_size}"]
            print(f"training {precision:>14} batch {batch_size:>2}: {rate:8.1f} img/s, "
                  f"{rate * step_gflop / peak:.2f} of the {precision} matmul peak")
    print(f"evaluation img/s: ours {results['eval_img_per_s']:.1f}, book-style {results['book_eval_img_per_s']:.1f} "
          f"({results['eval_img_per_s'] / results['book_eval_img_per_s']:.1f}x)")


if __name__ == "__main__":
    main()
