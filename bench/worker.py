"""One benchmark measurement in a fresh process (run by `bench/bench.py`, never by hand).

    python -m bench.worker --job '{"kind": "train", ...}' --result FILE

Run from the repository root, so the project's modules import by their plain
names. Each measurement gets its own process so that its peak resident memory
(the kernel's high-water mark) is its own. The result is a JSON object written
to FILE; a measurement that runs out of memory writes `{"error": ...}` and
exits with `EXIT_OUT_OF_MEMORY` (its `"out_of_memory"` true).

Jobs (`kind`):

- `matmul`: the machine's float32 and bfloat16 matmul throughput (`bench.flops`).
- `pipeline`: `DataGenerator` batches per second, no model.
- `train`: timed training steps of the FCN, our way or the book's way
  (`style`), then optionally the per-epoch test pass.
- `labels`: peak memory of loading a labels file and reading one batch, our
  way or the book's way (for `--rss-vs-dataset`).
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

from segmentation.quiet import quiet_start

# Before TensorFlow loads: its start-up lines would otherwise end the stderr that bench.py reports from.
with quiet_start(sys.argv[1:]):
    import keras
    import numpy as np
    import skimage
    import skimage.io
    import tensorflow as tf
    import tf_keras

    from bench import book_keras2
    from bench.flops import conv_flops_per_image, measure_matmul
    from data_generator import DataGenerator
    from model import build_model
    from segmentation.config import JIT_CHOICES
    from segmentation.evaluation import evaluate_dataset
    from segmentation.ground_truth.book_labels import load_labels, read_labels_whole
    from segmentation.paths import TEST_LABELS, TRAIN_LABELS
    from segmentation.precision import AUTO, default_precision
    from segmentation.process_state import kept_process_state
    from segmentation.remat import AUTO as REMAT_AUTO
    from segmentation.remat import recompute_in_backward, remat_level

# The exit status of a measurement that ran out of memory.
EXIT_OUT_OF_MEMORY = 3
BYTES_PER_GB = 1e9


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB (10^9 bytes): VmHWM, else ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / BYTES_PER_GB
    except OSError:
        pass
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / BYTES_PER_GB


def measure_pipeline(data_path: str, height: int, width: int, batch_size: int) -> dict:
    """Images per second of `DataGenerator` alone: one thread, every batch of the training set.

    Args:
        data_path: str. A data set in the book's format.
        height: int. Image height.
        width: int. Image width.
        batch_size: int. Images per batch.

    Returns:
        `{"pipeline_img_per_s": ...}`.
    """
    labels = load_labels(os.path.join(data_path, TRAIN_LABELS), data_path, height, width)
    generator = DataGenerator(labels, data_path, batch_size=batch_size, shuffle=False)
    generator[0]  # warm-up: imports, file cache
    start = time.perf_counter()
    for index in range(len(generator)):
        generator[index]
    return {"pipeline_img_per_s": len(generator) * batch_size / (time.perf_counter() - start)}


def read_book_image(path: str) -> np.ndarray:
    """The book's image reading: `img_as_float(imread(path))`, float64 in [0, 1]."""
    return skimage.img_as_float(skimage.io.imread(path))


def book_batch(dictionary: dict, keys: list[str], data_path: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch the book's way: float64 images, the dict's one-hot masks stacked as they are."""
    images = np.array([read_book_image(os.path.join(data_path, key)) for key in keys])
    return images, np.array([dictionary[key] for key in keys])


def book_evaluate(model: tf_keras.Model, dictionary: dict, data_path: str, n_classes: int) -> tuple[float, float]:
    """The book's per-epoch test pass: one `predict` per image, metrics on one-hot masks.

    Args:
        model: tf_keras.Model. The book's FCN.
        dictionary: dict. The whole test ground truth, one-hot masks.
        data_path: str. Folder of the images.
        n_classes: int. Number of classes.

    Returns:
        The book's mIoU and mean pixel accuracy.
    """
    image_ious, pixel_accuracies = [], []
    for key, truth in dictionary.items():
        image = read_book_image(os.path.join(data_path, key))
        probabilities = model.predict(image[np.newaxis], verbose=0)[0]
        predicted = keras.utils.to_categorical(np.argmax(probabilities, axis=-1), n_classes).astype(np.uint8)
        pixel_accuracies.append((truth == predicted).all(axis=-1).mean())
        ious = []
        for channel in range(n_classes):
            if truth[..., channel].sum() == 0:
                continue
            intersection = (predicted[..., channel] * truth[..., channel]).sum()
            union = np.ceil((predicted[..., channel] + truth[..., channel]) / 2.0).sum()
            ious.append(intersection / union)
        image_ious.append(np.mean(ious))
    return float(np.mean(image_ious)), float(np.mean(pixel_accuracies))


def measure_training(
    style: str,
    data_path: str,
    height: int,
    width: int,
    depth: int,
    batch_size: int,
    warmup_steps: int,
    steps: int,
    precision: str,
    jit_compile: str,
    evaluate: bool,
    remat: str = REMAT_AUTO,
) -> dict:
    """Times training steps of the FCN and, optionally, the per-epoch test pass.

    `style="ours"` is this project's path: streamed uint8 class maps,
    `DataGenerator` batches (float32), `evaluate_dataset` (one
    `predict_on_batch` per batch). `style="book"` is the book's code: its
    network on Keras 2 (`tf_keras`, `book_keras2`), fed its way (the whole
    one-hot dicts in memory, float64 images, one `predict` per test image),
    float32 and no XLA.

    Args:
        style: str. `"ours"` or `"book"`.
        data_path: str. A data set in the book's format.
        height: int. Image height.
        width: int. Image width.
        depth: int. ResNet v2 depth, 9n+2.
        batch_size: int. Images per training step.
        warmup_steps: int. Untimed steps first (tracing, memory pools).
        steps: int. Timed steps; their median time gives the speed.
        precision: str. Keras dtype policy or `"auto"` (ours only; the book's is float32).
        jit_compile: str. `"auto"`, `"on"` or `"off"` (ours only).
        evaluate: bool. Also time the test pass.
        remat: str. `--remat`: `"auto"`, `"off"`, `"stage0"` or `"all"`
            (ours only). Defaults to `"auto"`, the command line's.

    Returns:
        `train_img_per_s`, `peak_rss_gb` (after training, before the test
        pass), `forward_gflops_per_image`, `batch_size`, the `precision` and
        `remat` level trained with, and with `evaluate` `eval_img_per_s`.
    """
    train_path, test_path = os.path.join(data_path, TRAIN_LABELS), os.path.join(data_path, TEST_LABELS)
    if style == "book":
        train_dictionary = read_labels_whole(train_path)
        test_dictionary = read_labels_whole(test_path)
        keys = list(train_dictionary)
        n_classes = next(iter(train_dictionary.values())).shape[-1]
        num_batches = len(keys) // batch_size

        def get_batch(index: int) -> tuple[np.ndarray, np.ndarray]:
            return book_batch(train_dictionary, keys[index * batch_size : (index + 1) * batch_size], data_path)

        fcn = book_keras2.build_book_fcn((height, width, 3), n_layers=3, n=(depth - 2) // 9, n_classes=n_classes)
        fcn.compile(optimizer=tf_keras.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy")
        precision, remat = "float32", "off"
    else:
        train_labels = load_labels(train_path, data_path, height, width)
        generator = DataGenerator(train_labels, data_path, batch_size=batch_size, shuffle=False)
        n_classes, num_batches, get_batch = train_labels.n_classes, len(generator), generator.__getitem__
        if precision == AUTO:
            precision = default_precision(jit_compile)
        keras.mixed_precision.set_global_policy(precision)
        backbone, fcn = build_model((height, width, 3), n_layers=3, n_classes=n_classes, n=(depth - 2) // 9)
        remat = remat_level(remat, batch_size, height, width, synchronized=False)
        recompute_in_backward(backbone, remat)
        fcn.compile(
            optimizer=keras.optimizers.Adam(learning_rate=1e-3),
            loss="categorical_crossentropy",
            jit_compile=JIT_CHOICES[jit_compile],
        )
    step_times = []
    for step in range(warmup_steps + steps):
        images, masks = get_batch(step % num_batches)
        start = time.perf_counter()
        fcn.train_on_batch(images, masks)
        step_times.append(time.perf_counter() - start)
    result = {
        "train_img_per_s": batch_size / statistics.median(step_times[warmup_steps:]),
        "peak_rss_gb": peak_rss_gb(),
        "forward_gflops_per_image": conv_flops_per_image(fcn) / 1e9,
        "batch_size": batch_size,
        "precision": precision,
        "remat": remat,
    }
    if evaluate:
        if style == "book":
            first_key = next(iter(test_dictionary))
            fcn.predict(read_book_image(os.path.join(data_path, first_key))[np.newaxis], verbose=0)
            start = time.perf_counter()
            book_evaluate(fcn, test_dictionary, data_path, n_classes)
            num_test = len(test_dictionary)
        else:
            test_labels = load_labels(test_path, data_path, height, width)
            test_generator = DataGenerator(test_labels, data_path, batch_size=batch_size, shuffle=False,
                                           drop_last=False)
            fcn.predict_on_batch(test_generator.batch_class_maps(0)[0])  # warm-up: tracing
            start = time.perf_counter()
            evaluate_dataset(fcn, test_generator)
            num_test = len(test_labels.masks)
        result["eval_img_per_s"] = num_test / (time.perf_counter() - start)
    return result


def measure_labels(style: str, data_path: str, labels_file: str, height: int, width: int, batch_size: int) -> dict:
    """Peak memory of loading a labels file and reading one training batch, no model.

    Args:
        style: str. `"ours"` (`load_labels`, uint8 class maps) or `"book"`
            (`np.load` of the whole one-hot dict).
        data_path: str. Folder of the images and the labels file.
        labels_file: str. The labels file name.
        height: int. Image height.
        width: int. Image width.
        batch_size: int. Images in the batch.

    Returns:
        `{"peak_rss_gb": ..., "num_images": ...}`.
    """
    path = os.path.join(data_path, labels_file)
    if style == "book":
        dictionary = read_labels_whole(path)
        book_batch(dictionary, list(dictionary)[:batch_size], data_path)
        num_images = len(dictionary)
    else:
        labels = load_labels(path, data_path, height, width)
        DataGenerator(labels, data_path, batch_size=batch_size, shuffle=False)[0]
        num_images = len(labels.masks)
    return {"peak_rss_gb": peak_rss_gb(), "num_images": num_images}


JOBS = {"matmul": measure_matmul, "pipeline": measure_pipeline, "train": measure_training, "labels": measure_labels}


@kept_process_state()
def main(argv: list[str] | None = None) -> int:
    """Runs the job given as JSON and writes its result; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="JSON object: 'kind' and the measurement's arguments")
    parser.add_argument("--result", required=True, metavar="FILE", help="where the JSON result goes")
    args = parser.parse_args(argv)
    job = json.loads(args.job)
    measure = JOBS[job.pop("kind")]
    status = 0
    try:
        result = measure(**job)
    except (MemoryError, tf.errors.ResourceExhaustedError) as error:
        result = {"error": f"out of memory ({type(error).__name__})", "out_of_memory": True}
        status = EXIT_OUT_OF_MEMORY
    with open(args.result, "w", encoding="utf-8") as file:
        json.dump(result, file)
    return status


if __name__ == "__main__":
    sys.exit(main())
