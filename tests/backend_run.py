"""The command line's steps on one Keras backend, in a process of its own (tests/test_backends.py runs it).

    KERAS_BACKEND=jax python tests/backend_run.py WORK_DIR [--no-tensorflow] [--mirrored]

`KERAS_BACKEND` must be set before Keras is imported, so each backend gets
its own process. With `--no-tensorflow`, TensorFlow is made absent first, as
on a GPU machine without it: `import tensorflow` fails and
`importlib.util.find_spec("tensorflow")` answers None. `WORK_DIR` holds the
book-format data set in `drinks/`, images `inputs.npy`, and the weights
TensorFlow saved of a `calibrated_network` with its predictions
(`tf.weights.h5`, `tf_predictions.npy`); the run works there and writes
`results.json` (each step's exit status, stdout, stderr and seconds, figures
the test checks), this backend's predictions of its best weights on
`inputs.npy` (`predictions.npy`), and a calibrated network of its own
(`backend.weights.h5`, `backend_predictions.npy`) for TensorFlow to load. With
`--mirrored` it runs `--distribute mirrored` alone (JAX's devices split the
CPU's threads, which slows every other step) into `results-mirrored.json`.
"""

import argparse
import contextlib
import io
import json
import os
import sys
import time

BLOCKED = ("tensorflow", "tf_keras", "tensorboard")


def make_tensorflow_absent() -> None:
    """Makes every later `import tensorflow` fail as if it were not installed."""
    for name in BLOCKED:
        sys.modules[name] = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work_dir")
    parser.add_argument("--no-tensorflow", action="store_true")
    parser.add_argument("--mirrored", action="store_true")
    args = parser.parse_args()
    if args.no_tensorflow:
        make_tensorflow_absent()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.chdir(args.work_dir)

    import keras
    import numpy as np

    from model import build_model
    from segmentation import backend, cli

    results = {"backend": backend.name(), "tensorflow_imported": sys.modules.get("tensorflow") is not None}

    def run(step, *argv):
        out, err = io.StringIO(), io.StringIO()
        started = time.monotonic()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.main(list(argv))
            except SystemExit as exit:
                status = exit.code
        results[step] = {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue(),
                         "seconds": round(time.monotonic() - started, 1)}
        keras.config.set_dtype_policy("float32")

    size = ["--height", "64", "--width", "64", "--depth", "11", "--layers", "1", "--data-path", "drinks"]
    common = [*size, "--batch-size", "2", "--workers", "1", "--save-dir", "weights", "--seed", "0"]
    mirrored = ["--train", "--epochs", "1", "--distribute", "mirrored", *size, "--workers", "1", "--save-dir",
                "mirrored", "--seed", "0"]
    if args.mirrored:
        run("distribute", *mirrored, "--batch-size", "2")
        run("odd_batch", *mirrored, "--batch-size", "3")
        with open("results-mirrored.json", "w", encoding="utf-8") as file:
            json.dump(results, file, indent=1)
        return
    weights = "ResNet11v2-1layer-drinks-best-iou.weights.h5"
    run("train", "--train", "--epochs", "1", *common)
    run("resume", "--train", "--epochs", "2", "--resume", *common)
    run("evaluate", "--evaluate", "--plot", "--restore-weights", weights, *common)
    run("image_file", "--evaluate", "--image-file", "drinks/test000.png", "--restore-weights", weights, *common)
    run("infer", "--predict-dir", "drinks", "--predict-output", "masks", "--export", "export/fcn",
        "--export-format", "keras", "--restore-weights", weights, *common)
    # Refused in one line, before anything is written.
    run("savedmodel", "--export", "refused/fcn", "--restore-weights", weights, *common)
    run("tensorboard", "--train", "--epochs", "1", "--tensorboard", "refused/tb", *common, "--overwrite")
    if backend.name() != backend.JAX:
        run("distribute", *mirrored, "--batch-size", "2")
    results["refused_outputs_written"] = sorted(os.listdir("refused")) if os.path.isdir("refused") else []

    # Weights files across backends: TensorFlow's loaded here, and this backend's for TensorFlow to load.
    inputs = np.load("inputs.npy")
    _, fcn = build_model(inputs.shape[1:], n_layers=1, n_classes=4, n=1)
    fcn.load_weights(os.path.join("weights", weights))
    np.save("predictions.npy", fcn.predict_on_batch(inputs))
    _, small = build_model(CALIBRATION_SHAPE, n_layers=1, n_classes=4, n=1)
    small.load_weights("tf.weights.h5")
    results["tf_weights_max_difference"] = float(np.max(np.abs(small.predict_on_batch(calibration_images(inputs))
                                                                - np.load("tf_predictions.npy"))))
    calibrated = calibrated_network(inputs, seed=11)
    calibrated.save_weights("backend.weights.h5")
    np.save("backend_predictions.npy", calibrated.predict_on_batch(calibration_images(inputs)))
    exported = keras.saving.load_model("export/fcn.keras")
    fcn.load_weights(os.path.join("weights", weights))
    results["export_max_difference"] = float(np.max(np.abs(exported.predict_on_batch(inputs)
                                                            - fcn.predict_on_batch(inputs))))
    results.update(check_remat(inputs))
    with open("results.json", "w", encoding="utf-8") as file:
        json.dump(results, file, indent=1)


# The network compared across backends, at 32x32: a training step of JAX's CPU kernels at 64x64 takes seconds.
CALIBRATION_SHAPE = (32, 32, 3)


def calibration_images(inputs):
    """The images a `calibrated_network` is calibrated and compared on: `inputs` cropped to `CALIBRATION_SHAPE`."""
    return inputs[:, : CALIBRATION_SHAPE[0], : CALIBRATION_SHAPE[1]]


def calibrated_network(inputs, seed: int):
    """The tiny FCN, seeded, its BatchNormalization statistics those of `calibration_images(inputs)`, logits small.

    A network fresh from its initializers, with the initial statistics (mean
    0, variance 1), is not normalized, and its logits reach the hundreds;
    calibrated (one step of learning rate 0 and momentum 0) they still reach
    about 50, where float32 rounding in another backend's order of operations
    (a relative 1e-6) moves the probabilities by 1e-5. With the classifier's
    kernel scaled to a tenth they stay within a few units, and the rounding far
    below 1e-5: a wrong weight shows, a rounding does not.

    Args:
        inputs: array. Images `(N, H, W, 3)` with H and W at least 32.
        seed: int. For `keras.utils.set_random_seed`.

    Returns:
        The calibrated `keras.Model`, of input shape `CALIBRATION_SHAPE`.
    """
    import keras
    import numpy as np

    from model import CLASSIFIER_NAME, build_model, configure_batchnorm

    keras.utils.set_random_seed(seed)
    _, fcn = build_model(CALIBRATION_SHAPE, n_layers=1, n_classes=4, n=1)
    configure_batchnorm(fcn, momentum=0.0)
    fcn.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="categorical_crossentropy")
    images = calibration_images(inputs)
    fcn.train_on_batch(images, np.full((*images.shape[:3], 4), 0.25, dtype="float32"))
    classifier = fcn.get_layer(CLASSIFIER_NAME)
    kernel, bias = classifier.get_weights()
    classifier.set_weights([kernel / 10, bias])
    return fcn


def check_remat(inputs) -> dict:
    """Two training steps with and without `--remat all`: the weights and statistics after them, and the recomputation.

    Returns:
        `remat_max_difference` (weights and moving statistics), and `remat_recomputes`: PyTorch ran a
        BatchNormalization of the backbone twice in a step (forward pass and recomputation), once without;
        JAX's gradient holds a `jax.checkpoint` with `--remat all` only.
    """
    import keras
    import numpy as np

    from model import build_model
    from segmentation import backend
    from segmentation.remat import recompute_in_backward

    inputs = calibration_images(inputs)[:2]
    masks = np.eye(4, dtype="float32")[np.random.default_rng(1).integers(0, 4, inputs.shape[:3])]
    trained, calls, checkpointed = [], [], []
    for level in ("off", "all"):
        keras.utils.set_random_seed(0)
        backbone, fcn = build_model(inputs.shape[1:], n_layers=1, n_classes=4, n=1)
        recompute_in_backward(backbone, level)
        norm = backbone.get_layer("post_bn")
        count = [0]
        original = norm.call

        def counting(*args, original=original, count=count, **kwargs):
            count[0] += 1
            return original(*args, **kwargs)

        norm.call = counting
        if backend.name() == backend.JAX:
            checkpointed.append(jax_gradient_checkpoints(fcn, inputs))
        fcn.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        fcn.train_on_batch(inputs, masks)
        # Counted on a second step: the first also builds what the trainer needs.
        count[0] = 0
        fcn.train_on_batch(inputs, masks)
        trained.append(fcn.get_weights())
        calls.append(count[0])
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(*trained))
    if backend.name() == backend.JAX:
        recomputes = checkpointed == [False, True]
    else:
        recomputes = calls[1] == 2 * calls[0]
    return {"remat_max_difference": difference, "remat_recomputes": recomputes, "remat_calls": calls,
            "remat_checkpointed": checkpointed}


def jax_gradient_checkpoints(fcn, inputs) -> bool:
    """Whether the gradient of `fcn`'s training call holds a `jax.checkpoint` (a recomputation)."""
    import jax
    import keras

    def loss(trainable, non_trainable):
        return keras.ops.sum(fcn.stateless_call(trainable, non_trainable, inputs, training=True)[0])

    values = ([v.value for v in fcn.trainable_variables], [v.value for v in fcn.non_trainable_variables])
    text = str(jax.make_jaxpr(jax.grad(loss))(*values))
    # The primitive is "remat2" in JAX 0.10, "checkpoint" in others.
    return "remat" in text or "checkpoint" in text


if __name__ == "__main__":
    main()
