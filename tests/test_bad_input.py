"""The bad-input catalogue: every case ends in one clear line, exit status 2, nothing written.

One row per case of the "Bad input" table in docs/never-losing-work.md (the ids match). Each row makes one thing wrong
in an otherwise good tiny data set, runs `fcn-12.3.1.py` or `utils/generate_gt_segmentation.py`
in-process, and checks: status 2, exactly one line on stderr naming the problem, no traceback,
and not a byte changed under the test's folder (the working directory included).
"""

import dataclasses
import io
import json
import os
import re
import shlex
from collections.abc import Callable

import keras
import matplotlib.image
import numpy as np
import PIL.Image
import pytest
import skimage.io
from conftest import HEIGHT, N_CLASSES, ROOT, SCRIPT, STATE, TINY, WEIGHTS, WIDTH, error_lines, run_script

from model import build_model
from segmentation import cli
from segmentation.checkpoints import TrainingState, save_training_state
from segmentation.ground_truth.book_labels import load_labels
from segmentation.ground_truth.mask_folders import write_mask_png
from segmentation.images import read_image
from segmentation.tools import ground_truth

CONVERTER = os.path.join(ROOT, "utils", "generate_gt_segmentation.py")
# An 8-filter head keeps the prepared weights and states small (the cases copy and hash them).
HEAD_FILTERS = 8
FLAGS = [*TINY, "--head-filters", str(HEAD_FILTERS)]
SETTINGS = {"height": HEIGHT, "width": WIDTH, "layers": 1, "depth": 11, "n_classes": N_CLASSES,
            "head_filters": HEAD_FILTERS, "dataset": "drinks", "batch_size": 2, "lr_schedule": "text",
            "learning_rate": 1e-3}


@dataclasses.dataclass
class Context:
    """Where a case makes its mess: the data set, the save dir, prepared weights and states."""

    data: str
    save_dir: str
    tmp: str
    prepared: dict

    def labels(self, split="train"):
        return os.path.join(self.data, f"segmentation_{split}.npy")

    def load(self, split="train"):
        return np.load(self.labels(split), allow_pickle=True).flat[0]

    def save(self, dictionary, split="train"):
        np.save(self.labels(split), dictionary, allow_pickle=True)

    def set_mask(self, mask, split="train"):
        dictionary = self.load(split)
        dictionary[next(iter(dictionary))] = mask
        self.save(dictionary, split)

    def image(self, name="train000.png"):
        return os.path.join(self.data, name)

    def put(self, name, filename):
        """Copies the prepared file `name` into the save dir as `filename`."""
        target = os.path.join(self.save_dir, filename)
        os.makedirs(self.save_dir, exist_ok=True)
        with open(self.prepared[name], "rb") as source, open(target, "wb") as file:
            file.write(source.read())
        return target


@dataclasses.dataclass
class Case:
    """One row of the catalogue."""

    id: str
    argv: list[str]
    message: str
    setup: Callable[[Context], None] = lambda context: None
    tool: str = "fcn"


def one_hot(labels, n_classes=N_CLASSES, dtype=np.uint8):
    return np.eye(n_classes, dtype=dtype)[labels]


def rename_image_to_jpeg(context, image):
    """Replaces train000.png by train000.jpg holding `image` (a PIL image) in the labels."""
    os.remove(context.image())
    image.save(context.image("train000.jpg"))
    dictionary = context.load()
    dictionary["train000.jpg"] = dictionary.pop("train000.png")
    context.save(dictionary)


class RunsCode:
    """A hostile mask: unpickling it would run a shell command that creates `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.path)}",))


def truncate(path, keep):
    with open(path, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data[:keep])


def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        file.write(text)


# The good data set's ground truth as folders of PNG class-index masks, for the cases that spoil one.
MASKS = ["--train-labels", "train_masks", "--test-labels", "test_masks"]


def mask_folders(context):
    """Writes `train_masks/` and `test_masks/` from the `.npy` dicts; returns the training folder."""
    for split in ("train", "test"):
        folder = os.path.join(context.data, f"{split}_masks")
        os.makedirs(folder)
        for key, one_hot in context.load(split).items():
            write_mask_png(mask_file(folder, os.path.splitext(key)[0]), one_hot.argmax(axis=-1), N_CLASSES)
    return os.path.join(context.data, "train_masks")


def mask_file(folder, stem="train000", suffix=".png"):
    return os.path.join(folder, stem + suffix)


# The end of a plain dtype's pickled state: (..., elsize -1, alignment -1, flags 0).
PLAIN_DTYPE_STATE_END = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"


def write_bytes(path, data):
    with open(path, "wb") as file:
        file.write(data)


def npy_bytes(dictionary):
    stream = io.BytesIO()
    np.save(stream, dictionary, allow_pickle=True)
    return stream.getvalue()


def hostile_dtype_flags(dictionary):
    """A hostile file: a uint64 mask whose dtype's pickled flags say it holds Python objects."""
    data = npy_bytes({**dictionary, next(iter(dictionary)): np.full(1, 0x4141414141414141, "<u8")})
    return data.replace(PLAIN_DTYPE_STATE_END, PLAIN_DTYPE_STATE_END[:-3] + b"K?t", 1)


def larger_than_its_data():
    """A mask of 8 bytes whose shape claims 2**30."""
    return npy_bytes({"train000.png": np.zeros(8, np.uint8)}).replace(b"K\x08\x85", b"J\x00\x00\x00\x40\x85", 1)


def training_masks(context):
    """The mask files of `mask_folders`' training folder."""
    folder = mask_folders(context)
    return [os.path.join(folder, name) for name in sorted(os.listdir(folder))]


# === The training program ===
FCN_CASES = [
    Case("data-folder-missing", ["--train", "--data-path", "nowhere"], "nowhere: data folder not found"),
    Case("data-folder-empty", ["--train", "--data-path", "EMPTY"], "the data folder is empty",
         lambda c: os.makedirs(os.path.join(c.tmp, "EMPTY"))),
    Case("labels-missing", ["--train", "--train-labels", "nope.npy"], "nope.npy: labels file not found"),
    Case("labels-not-npy", ["--train"], "segmentation_train.npy: cannot read it as a .npy file",
         lambda c: write_text(c.labels(), "not numpy")),
    Case("labels-not-a-dict", ["--train"], "expected np.save of a dict",
         lambda c: np.save(c.labels(), np.zeros((2, 64, 64, 4), np.uint8))),
    Case("labels-empty", ["--train"], "segmentation_train.npy: the labels dict is empty",
         lambda c: c.save({})),
    # Nothing is written: the command would create a file in the case's folder.
    Case("labels-run-code", ["--train"],
         "the pickle names the global posix.system; refused: label files may hold only arrays",
         lambda c: c.set_mask(RunsCode(os.path.join(c.tmp, "code-ran")))),
    # Label files are read by walking their pickle opcodes (segmentation/ground_truth/pickled_npy.py), never unpickled.
    Case("labels-dtype-hides-objects", ["--train"], "the pickle holds a dtype 'u8' whose state is not a plain dtype's",
         lambda c: write_bytes(c.labels(), hostile_dtype_flags(c.load()))),
    Case("labels-array-larger-than-file", ["--train"], "(1073741824 bytes) with 8 bytes of data",
         lambda c: write_bytes(c.labels(), larger_than_its_data())),
    Case("labels-truncated", ["--train"], "segmentation_train.npy: the pickle is truncated or damaged",
         lambda c: truncate(c.labels(), os.path.getsize(c.labels()) // 2)),
    Case("val-labels-share-training-images", ["--train", "--epochs", "1", "--val-labels", "segmentation_val.npy"],
         "segmentation_val.npy: 2 of its image(s) are in the training set",
         lambda c: np.save(c.labels("val"), dict(list(c.load().items())[:2]))),
    Case("val-labels-other-class-count", ["--train", "--epochs", "1", "--val-labels", "segmentation_val.npy"],
         "segmentation_val.npy: masks have 3 classes but",
         lambda c: np.save(c.labels("val"), {k: v[..., :3] for k, v in c.load("test").items()})),
    Case("test-set-empty", ["--train"], "segmentation_test.npy: the labels dict is empty",
         lambda c: c.save({}, "test")),
    Case("mask-wrong-size", ["--train"], "has shape (32, 32, 4), expected (64, 64, n_classes)",
         lambda c: c.set_mask(one_hot(np.zeros((32, 32), np.uint8)))),
    Case("mask-no-class-axis", ["--train"], "has shape (64, 64), expected (64, 64, n_classes)",
         lambda c: c.set_mask(np.zeros((HEIGHT, WIDTH), np.uint8))),
    Case("mask-one-channel", ["--train"], "masks have 1 channel(s)",
         lambda c: c.save({k: v[..., :1] for k, v in c.load().items()})),
    Case("mask-class-count-mixed", ["--train"], "has 3 classes, the first mask has 4",
         lambda c: c.save({k: (v if i == 0 else v[..., :3]) for i, (k, v) in enumerate(c.load().items())})),
    Case("mask-fractional", ["--train"], "holds values other than 0 and 1",
         lambda c: c.set_mask(np.full((HEIGHT, WIDTH, N_CLASSES), 0.25, np.float32))),
    Case("mask-negative", ["--train"], "holds values other than 0 and 1 (range -1..",
         lambda c: c.set_mask(-one_hot(np.zeros((HEIGHT, WIDTH), np.uint8), dtype=np.int8))),
    Case("mask-above-one", ["--train"], "holds values other than 0 and 1 (range 0..255)",
         lambda c: c.set_mask(255 * one_hot(np.zeros((HEIGHT, WIDTH), np.uint8)))),
    Case("mask-not-numeric", ["--train"], "has dtype <U1; expected a uint8 one-hot mask",
         lambda c: c.set_mask(np.full((HEIGHT, WIDTH, N_CLASSES), "1"))),
    Case("train-test-class-mismatch", ["--train"], "segmentation_test.npy: masks have 3 classes but",
         lambda c: c.save({k: v[..., :3] for k, v in c.load("test").items()}, "test")),
    Case("key-without-image", ["--train"], "key 'ghost.png' has no image",
         lambda c: c.save({**c.load(), "ghost.png": next(iter(c.load().values()))})),
    Case("image-corrupt", ["--train"], "train000.png: cannot read the image",
         lambda c: truncate(c.image(), 300)),
    Case("image-not-an-image", ["--train"], "train000.png: cannot read the image",
         lambda c: write_text(c.image(), "this is text")),
    Case("image-16-bit", ["--train"], "train000.png: image mode I;16 is not supported",
         lambda c: PIL.Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint16)).save(c.image())),
    Case("image-too-many-pixels", ["--train"], "train000.jpg: the image is 6000x5000 (30,000,000 pixels), more than "
         "the 25,000,000 pixels an image may have",
         lambda c: rename_image_to_jpeg(c, PIL.Image.new("RGB", (6000, 5000)))),
    Case("image-wrong-size", ["--train"], "train000.png: image is 48x32, expected 64x64",
         lambda c: skimage.io.imsave(c.image(), np.zeros((32, 48, 3), np.uint8), check_contrast=False)),
    Case("size-not-valid-for-layers", ["--train", "--layers", "5"],
         "--height must be a multiple of 2**(layers + 2) = 128 for layers=5. Received: height=64"),
    Case("height-not-multiple", ["--train", "--height", "100"], "--height must be a multiple of 2**(layers + 2) = 8"),
    Case("batch-larger-than-data", ["--train", "--batch-size", "20"], "--batch-size 20 is larger than the 8 images"),
    Case("depth-not-9n-plus-2", ["--train", "--depth", "50"], "--depth 50: ResNet v2 depth must be 9n+2"),
    Case("learning-rate-invalid", ["--train", "--learning-rate", "nan"], "--learning-rate nan: must be a positive"),
    Case("image-file-not-an-image", ["--evaluate", "--image-file", "NOTE"], "NOTE: cannot read the image",
         lambda c: write_text(os.path.join(c.tmp, "NOTE"), "text")),
    Case("weights-missing", ["--evaluate", "--restore-weights", "missing.h5"],
         "--restore-weights missing.h5: no such file"),
    Case("weights-truncated", ["--evaluate", "--restore-weights", "cut.weights.h5"], "the file is damaged",
         lambda c: truncate(c.put("weights-4", "cut.weights.h5"), 2000)),
    Case("weights-other-class-count", ["--evaluate", "--restore-weights", "W3"], "these weights do not fit the model",
         lambda c: c.put("weights-3", "W3.weights.h5")),
    Case("weights-other-layer-count", ["--evaluate", "--restore-weights", "W2"], "these weights do not fit the model",
         lambda c: c.put("weights-layers2", "W2.weights.h5")),
    Case("best-weights-of-another-model", ["--train"], "best weights of another model are in the way",
         lambda c: c.put("weights-3", WEIGHTS)),
    Case("save-dir-is-a-file", ["--train", "--save-dir", "AFILE"], "--save-dir AFILE: is a file, not a folder",
         lambda c: write_text(os.path.join(c.tmp, "AFILE"), "")),
    Case("save-dir-cannot-be-created", ["--train", "--save-dir", "AFILE/weights"], "cannot be created because",
         lambda c: write_text(os.path.join(c.tmp, "AFILE"), "")),
    Case("save-dir-read-only", ["--train", "--save-dir", "RO/weights"], "is not writable",
         lambda c: (os.makedirs(os.path.join(c.tmp, "RO")), os.chmod(os.path.join(c.tmp, "RO"), 0o555))),
    Case("resume-without-state", ["--train", "--resume"], "no saved training state to resume"),
    Case("resume-damaged-state", ["--train", "--resume"], "the training state is damaged",
         lambda c: write_text(os.path.join(c.save_dir, STATE), "garbage")),
    Case("resume-other-settings", ["--train", "--resume"], "the run was saved with batch_size 4 (now 2)",
         lambda c: c.put("state-other-batch", STATE)),
    Case("resume-finished-run", ["--train", "--resume", "--epochs", "5"], "has finished 5 epoch(s)",
         lambda c: c.put("state-finished", STATE)),
    Case("fresh-run-over-unfinished-state", ["--train"], "an unfinished run (epoch 1 of 5) is saved here",
         lambda c: c.put("state-unfinished", STATE)),
    Case("resume-with-restore-weights", ["--train", "--resume", "--restore-weights", "x"],
         "leave out --overwrite and --restore-weights"),
    # A reader's own data: folders of PNG class-index masks, --classes.
    Case("mask-png-size-differs", ["--train", *MASKS], "train000.png: mask is 48x32 but its image train000.png is 64",
         lambda c: write_mask_png(mask_file(mask_folders(c)), np.zeros((32, 48), np.uint8), N_CLASSES)),
    Case("mask-png-id-beyond-classes", ["--train", *MASKS, "--classes", "a,b,c"],
         "train000.png: holds class id 7, beyond the 4 classes named",
         lambda c: write_mask_png(mask_file(mask_folders(c)), np.full((HEIGHT, WIDTH), 7, np.uint8), 8)),
    Case("mask-png-rgb", ["--train", *MASKS], "train000.png: an RGB image, not a class-index mask",
         lambda c: PIL.Image.new("RGB", (WIDTH, HEIGHT)).save(mask_file(mask_folders(c)))),
    Case("mask-png-without-image", ["--train", *MASKS], "ghost.png: a mask without an image",
         lambda c: write_mask_png(mask_file(mask_folders(c), "ghost"), np.zeros((HEIGHT, WIDTH), np.uint8), 4)),
    Case("image-without-mask", ["--train", *MASKS], "train003.png: an image without a mask in train_masks/ or "
         "test_masks/", lambda c: os.remove(mask_file(mask_folders(c), "train003"))),
    Case("mask-png-jpeg", ["--train", *MASKS], "train000.jpg: a JPEG mask",
         lambda c: PIL.Image.new("L", (WIDTH, HEIGHT)).save(mask_file(mask_folders(c), "train000", ".jpg"))),
    Case("mask-folder-empty", ["--train", *MASKS], "train_masks: no .png mask in this folder",
         lambda c: [os.remove(path) for path in training_masks(c)]),
    Case("mask-png-only-background", ["--train", *MASKS], "train_masks: the masks hold only class 0 (background)",
         lambda c: [write_mask_png(path, np.zeros((HEIGHT, WIDTH), np.uint8), 4) for path in training_masks(c)]),
    Case("class-names-file-bad", ["--train", *MASKS], "classes.json: cannot read the class names",
         lambda c: write_text(os.path.join(mask_folders(c), "classes.json"), "oops")),
    Case("classes-count-mismatch", ["--train", "--classes", "a,b"],
         "the masks have 4 classes but --classes names 3 (background included)"),
    Case("classes-invalid", ["--train", "--classes", "a,,b"], "--classes 'a,,b': expected distinct comma-separated"),
]


# === The VIA converter ===
def polygon(xs, ys, name="1"):
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
            "region_attributes": {"Name": name}}


GOOD_POLYGON = polygon([2, 20, 20, 2], [2, 2, 20, 20])


def via_project(context, images, raw=None):
    """Writes context.tmp/via/project.json: VIA 2 entries {key: (filename, regions)} or raw text."""
    if raw is None:
        metadata = {key: {"filename": filename, "size": 1, "regions": regions, "file_attributes": {}}
                    for key, (filename, regions) in images.items()}
        raw = json.dumps({"_via_settings": {}, "_via_img_metadata": metadata, "_via_attributes": {}})
    write_text(os.path.join(context.tmp, "via", "project.json"), raw)


def via_regions(*regions):
    return lambda c: via_project(c, {"a.png1": ("a.png", list(regions))})


def shape(name, **attributes):
    return {"shape_attributes": {"name": name, **attributes}, "region_attributes": {"Name": "1"}}


VIA_CASES = [
    Case("via-file-missing", [], "project.json: cannot read the file", lambda c: None, "via"),
    Case("via-not-json", [], "project.json: not valid JSON", lambda c: via_project(c, {}, raw="{oops"), "via"),
    Case("via-not-a-project", [], "not a VIA project", lambda c: via_project(c, {}, raw='{"a": 1}'), "via"),
    Case("via-unknown-shape", [], "region 0: unknown shape 'star'", via_regions(shape("star", x=1)), "via"),
    Case("via-missing-coordinates", [], "polygon has no 'all_points_y'",
         via_regions(shape("polygon", all_points_x=[1, 2, 3])), "via"),
    Case("via-unequal-lengths", [], "all_points_x has 3 values but all_points_y has 2",
         via_regions(polygon([1, 5, 9], [1, 5])), "via"),
    Case("via-non-numeric", [], "'all_points_x' holds 'ten', expected only numbers",
         via_regions(polygon([1, "ten", 9], [1, 5, 9])), "via"),
    Case("via-nan", [], "'cx' must be a finite coordinate",
         lambda c: via_project(c, {}, raw=json.dumps({"_via_img_metadata": {"a": {
             "filename": "a.png", "regions": [shape("circle", cx=float("nan"), cy=1, r=2)]}}})), "via"),
    Case("via-class-out-of-range", [], "Name '7': class id 7 is out of range; expected 1..3",
         via_regions(polygon([1, 5, 9], [1, 5, 9], "7")), "via"),
    Case("via-class-name-unknown", ["--classes", "bottle,can"], "Name 'cola': unknown class name; expected one of",
         via_regions(polygon([1, 5, 9], [1, 5, 9], "cola")), "via"),
    Case("via-region-without-class", [], "no class in region attribute 'Name'",
         via_regions({"shape_attributes": GOOD_POLYGON["shape_attributes"], "region_attributes": {}}), "via"),
    Case("via-image-listed-twice", [], "image 'a.png' is listed twice",
         lambda c: via_project(c, {"a.png1": ("a.png", []), "a.png2": ("a.png", [GOOD_POLYGON])}), "via"),
    Case("via-image-missing", [], "image 'missing.png': no file",
         lambda c: via_project(c, {"m": ("missing.png", [GOOD_POLYGON])}), "via"),
    Case("via-image-corrupt", [], "c.png: cannot read the image",
         lambda c: (write_text(os.path.join(c.tmp, "via", "c.png"), "text"),
                    via_project(c, {"a": ("a.png", [GOOD_POLYGON]), "c": ("c.png", [])})), "via"),
]

CASES = FCN_CASES + VIA_CASES


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Weights of three tiny networks and three saved training states, made once."""
    folder = tmp_path_factory.mktemp("prepared")
    files = {}
    for name, n_layers, n_classes in (("weights-4", 1, 4), ("weights-3", 1, 3), ("weights-layers2", 2, 4)):
        _, fcn = build_model((HEIGHT, WIDTH, 3), n_layers=n_layers, n_classes=n_classes, n=1,
                             head_filters=HEAD_FILTERS)
        files[name] = str(folder / f"{name}.weights.h5")
        fcn.save_weights(files[name])
        if name == "weights-4":
            fcn.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy")
            fcn.optimizer.build(fcn.trainable_variables)
            for state_name, done, epochs, batch_size in (
                ("state-unfinished", 1, 5, 2), ("state-finished", 5, 5, 2), ("state-other-batch", 1, 5, 4)
            ):
                state = TrainingState(epochs_done=done, epochs=epochs, history={"loss": [1.0] * done},
                                      best_miou=0.1, seed=None, shuffle_seed=1,
                                      settings={**SETTINGS, "batch_size": batch_size})
                files[state_name] = str(folder / f"{state_name}.npz")
                save_training_state(fcn, state, files[state_name])
    return files


def tree(folder):
    """Every file and folder under `folder` with its size and contents' hash."""
    listing = {}
    for parent, folders, files in os.walk(folder):
        for name in folders:
            listing[os.path.join(parent, name)] = "dir"
        for name in files:
            path = os.path.join(parent, name)
            with open(path, "rb") as file:
                listing[path] = hash(file.read())
    return listing


def run_case(case, book_dataset, tmp_path, prepared, capsys, monkeypatch):
    if case.id == "save-dir-read-only" and os.geteuid() == 0:
        # Root writes through read-only permissions (CI runs as root): let os.access
        # report the folder as the permissions say.
        read_only = os.path.join(str(tmp_path), "RO")
        real_access = os.access
        monkeypatch.setattr(
            os, "access", lambda path, mode, **kw: not os.path.abspath(path).startswith(read_only)
            and real_access(path, mode, **kw)
        )
    data, _ = book_dataset
    tmp = str(tmp_path)
    context = Context(data=data, save_dir=os.path.join(tmp, "weights"), tmp=tmp, prepared=prepared)
    case.setup(context)
    monkeypatch.chdir(tmp_path)
    before = tree(tmp)
    if case.tool == "fcn":
        argv = [*FLAGS, "--data-path", data, "--save-dir", context.save_dir, *case.argv]
        status = cli.main(argv)
        prefix = "fcn-12.3.1.py: error: "
    else:
        os.makedirs(os.path.join(tmp, "via"), exist_ok=True)
        if not os.path.exists(os.path.join(tmp, "via", "a.png")):
            matplotlib.image.imsave(os.path.join(tmp, "via", "a.png"), np.zeros((32, 48, 3), np.uint8))
        before = tree(tmp)
        argv = ["-j", "project.json", "-p", os.path.join(tmp, "via"), "--save-filename", "out.npy", "--show",
                *case.argv]
        status = ground_truth.main(argv)
        prefix = "error: "
    error = capsys.readouterr().err
    return status, error, before, tree(tmp), prefix


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, book_dataset, tmp_path, prepared, capsys, monkeypatch):
    status, error, before, after, prefix = run_case(case, book_dataset, tmp_path, prepared, capsys, monkeypatch)
    assert status == 2, error
    lines = error.splitlines()
    assert len(lines) == 1, error
    assert lines[0].startswith(prefix) and case.message in lines[0], lines[0]
    assert "Traceback" not in error
    assert after == before, "something was written"


def test_case_ids_are_unique_and_all_in_the_docs():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) >= 30
    with open(os.path.join(ROOT, "docs", "never-losing-work.md"), encoding="utf-8") as file:
        readme = file.read()
    section = readme.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE))
    assert listed >= set(ids), sorted(set(ids) - listed)


@pytest.mark.parametrize("script, argv, prefix, message", [
    (SCRIPT, ["--train", *TINY, "--data-path", "nowhere"], "fcn-12.3.1.py: error: ", "nowhere: data folder not found"),
    (CONVERTER, ["-j", "none.json", "-p", "."], "error: ", "none.json: cannot read the file"),
])
def test_scripts_exit_2_without_traceback(tmp_path, script, argv, prefix, message):
    result = run_script(argv, tmp_path, script=script, timeout=120)
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(prefix) and message in lines[0], lines[0]
    assert "Traceback" not in result.stderr and os.listdir(tmp_path) == []


def test_grey_and_rgba_images_are_converted_with_one_warning(book_dataset, caplog):
    data, splits = book_dataset
    grey, rgba = os.path.join(data, "train000.png"), os.path.join(data, "train001.png")
    PIL.Image.open(grey).convert("L").save(grey)
    PIL.Image.open(rgba).convert("RGBA").save(rgba)
    with caplog.at_level("WARNING"):
        load_labels(os.path.join(data, "segmentation_train.npy"), data, HEIGHT, WIDTH)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and "2 image(s) are not plain RGB" in warnings[0]
    assert "train000.png (L)" in warnings[0] and "train001.png (RGBA)" in warnings[0]
    for path in (grey, rgba):
        image = read_image(path, HEIGHT, WIDTH)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.float32
    image = read_image(grey, HEIGHT, WIDTH)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
