"""The labels loader reads the book's pickled .npy dicts of every numpy and pickle version, and runs no code.

The files are never unpickled: their opcodes are walked and only plain arrays built
(segmentation/ground_truth/pickled_npy.py).
"""

import io
import os
import pickle
import shlex

import numpy as np
import numpy1_label_files
import pytest
from conftest import HEIGHT, N_CLASSES, WIDTH, write_book_dataset

from segmentation.errors import DatasetError
from segmentation.ground_truth.book_labels import load_labels, read_labels_dict, read_labels_whole
from segmentation.ground_truth.pickled_npy import read_pickled_dict


class Touches:
    """Unpickling it calls `os.system` to create `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.path))}",))


class Evaluates:
    """Unpickling it calls `builtins.eval`."""

    def __reduce__(self):
        return (eval, ("1 + 1",))


def write_pickled_npy(path, dictionary, protocol, numpy_1_names=False):
    """The book's format, `np.save` of a dict, with the pickle protocol chosen (np.save fixes it)."""
    array = np.empty((), dtype=object)
    array[()] = dictionary
    stream = io.BytesIO()
    pickle.dump(array, stream, protocol=protocol)
    data = stream.getvalue()
    if numpy_1_names:
        # numpy 1.x names its modules numpy.core; GLOBAL opcodes (protocols 2 and 3) end at a newline.
        data = data.replace(b"numpy._core.", b"numpy.core.")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": ()})
    with open(path, "wb") as file:
        file.write(header.getvalue())
        file.write(data)


@pytest.mark.parametrize("protocol, numpy_1_names", [(2, False), (3, False), (4, False), (5, False),
                                                     (2, True), (3, True)])
def test_every_pickle_protocol_of_numpy_1_and_2_loads(tmp_path, protocol, numpy_1_names):
    splits = write_book_dataset(str(tmp_path), num_train=3, num_test=1)
    path = tmp_path / "rewritten.npy"
    write_pickled_npy(path, splits["train"], protocol, numpy_1_names)
    if numpy_1_names:
        assert b"numpy.core.multiarray" in path.read_bytes()
    labels = load_labels(str(path), str(tmp_path), HEIGHT, WIDTH)
    assert labels.n_classes == N_CLASSES and sorted(labels.masks) == sorted(splits["train"])
    for name, mask in splits["train"].items():
        np.testing.assert_array_equal(labels.masks[name], mask.argmax(axis=-1))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_pickle_that_would_run_code_is_refused_before_it_runs(tmp_path, protocol):
    splits = write_book_dataset(str(tmp_path), num_train=2, num_test=1)
    marker = tmp_path / "code-ran"
    dictionary = dict(splits["train"], hostile=Touches(marker))
    path = tmp_path / "hostile.npy"
    write_pickled_npy(path, dictionary, protocol)
    with pytest.raises(DatasetError, match="names the global posix.system; refused: label files may hold only"):
        load_labels(str(path), str(tmp_path), HEIGHT, WIDTH)
    assert not marker.exists()


def test_np_save_of_a_hostile_dict_is_refused(tmp_path):
    np.save(tmp_path / "hostile.npy", {"a.png": Evaluates()}, allow_pickle=True)
    with pytest.raises(DatasetError, match="names the global builtins.eval; refused"):
        read_labels_dict(str(tmp_path / "hostile.npy"))


def test_a_bare_pickle_is_not_unpickled(tmp_path):
    """A file that is not .npy at all is read without pickle, so a plain pickle runs nothing either."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "plain.npy"
    with open(path, "wb") as file:
        pickle.dump({"a.png": Touches(marker)}, file)
    with pytest.raises(DatasetError, match="cannot read it as a .npy file"):
        load_labels(str(path), str(tmp_path), HEIGHT, WIDTH)
    assert not marker.exists()


def test_the_benchmarks_whole_dict_reader_is_as_safe(tmp_path):
    splits = write_book_dataset(str(tmp_path), num_train=2, num_test=1)
    whole = read_labels_whole(str(tmp_path / "segmentation_train.npy"))
    assert sorted(whole) == sorted(splits["train"])
    for name, mask in splits["train"].items():
        np.testing.assert_array_equal(whole[name], mask)
    marker = tmp_path / "code-ran"
    np.save(tmp_path / "hostile.npy", {"a.png": Touches(marker)}, allow_pickle=True)
    with pytest.raises(DatasetError, match="names the global posix.system; refused"):
        read_labels_whole(str(tmp_path / "hostile.npy"))
    assert not marker.exists()


# === The opcode walker: only NumPy's pickle of a dict of plain arrays, nothing executed ===
def write_npy_pickle(path, data):
    """A `.npy` header for a 0-d object array (what np.save writes for a dict), then the pickle bytes `data`."""
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": "|O", "fortran_order": False, "shape": ()})
        file.write(data)
    return str(path)


def pickled(dictionary, protocol):
    """The pickle np.save would write after its header for `dictionary`, with a chosen protocol."""
    wrapper = np.empty((), dtype=object)
    wrapper[()] = dictionary
    return pickle.dumps(wrapper, protocol=protocol)


def assert_same_masks(read, expected):
    assert list(read) == list(expected)
    for key, mask in expected.items():
        assert read[key].dtype == mask.dtype and read[key].shape == mask.shape, key
        np.testing.assert_array_equal(read[key], mask)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_the_files_numpy_1_wrote_load(tmp_path, protocol):
    path = tmp_path / "numpy1.npy"
    path.write_bytes(numpy1_label_files.file_bytes(protocol))
    assert b"numpy.core." in path.read_bytes() and b"numpy._core." not in path.read_bytes()
    whole = read_labels_whole(str(path))
    assert_same_masks(whole, numpy1_label_files.masks())
    assert all(mask.flags.writeable for mask in whole.values())
    summaries = read_labels_dict(str(path))
    assert summaries["a.png"].shape == (2, 3, 3) and summaries["a.png"].value_problem is None
    np.testing.assert_array_equal(summaries["c.png"].class_map.unpack(), [[0, 1, 2], [2, 1, 0]])


@pytest.mark.parametrize("protocol", ["np.save", 2, 3, 4, 5])
def test_the_files_numpy_2_writes_load(tmp_path, protocol):
    masks = numpy1_label_files.masks()
    if protocol == "np.save":
        np.save(tmp_path / "numpy2.npy", masks)
        path = str(tmp_path / "numpy2.npy")
    else:
        path = write_npy_pickle(tmp_path / "numpy2.npy", pickled(masks, protocol))
    assert_same_masks(read_labels_whole(path), masks)


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_one_mask_under_two_names_loads(tmp_path, protocol):
    """Pickle stores an object given twice once and refers back to it: a user's converter may share a mask."""
    mask = numpy1_label_files.masks()["a.png"]
    path = write_npy_pickle(tmp_path / "shared.npy", pickled({"a.png": mask, "b.png": mask}, protocol))
    assert_same_masks(read_labels_whole(path), {"a.png": mask, "b.png": mask})


# A plain dtype's pickled state ends (..., elsize -1, alignment -1, flags 0); a hostile file sets the flags.
PLAIN_DTYPE_STATE_END = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"


@pytest.mark.parametrize("protocol", [3, 5])  # _reconstruct and its state; protocol 5's _frombuffer
def test_a_dtype_whose_flags_hide_objects_is_refused_before_any_array_is_made(tmp_path, protocol):
    """A hostile file: a uint64 dtype flagged as holding objects made NumPy follow a pointer from the file."""
    data = pickled({"a.png": np.full(1, 0x4141414141414141, "<u8")}, protocol)
    assert data.count(PLAIN_DTYPE_STATE_END) == 1
    path = write_npy_pickle(tmp_path / "hostile.npy", data.replace(PLAIN_DTYPE_STATE_END, PLAIN_DTYPE_STATE_END[:-3]
                                                                   + b"K?t"))
    arrays_made = []
    with pytest.raises(DatasetError, match="the pickle holds a dtype 'u8' whose state is not a plain dtype's") as error:
        read_pickled_dict(path, arrays_made.append)
    assert arrays_made == [] and "\n" not in str(error.value) and str(error.value).startswith(path)


@pytest.mark.parametrize("value, message", [
    (np.array([1, "x"], dtype=object), "an object array inside the dict"),
    (np.zeros(2, dtype="V3"), "an array of dtype 'V3'"),
    (np.zeros(2, dtype=[("x", "u1")]), "the value of key 'x' is tuple, not an array"),  # the dtype's fields
    (np.zeros(2, dtype=np.complex64), "an array of dtype 'c8'"),
    (np.full((2, 2, 3), "1"), r"a mask \(at byte \d+\) has dtype <U1; expected a uint8 one-hot mask"),
    ({1, 2}, "the pickle opcode EMPTY_SET"),
    ([np.zeros(2)], "the value of key 'a.png' is list, not an array"),
    (np.float32(1.0), "the global numpy._core.multiarray.scalar; refused"),
])
def test_anything_but_plain_arrays_is_refused_in_one_line(tmp_path, value, message):
    np.save(tmp_path / "odd.npy", {"a.png": value}, allow_pickle=True)
    with pytest.raises(DatasetError, match=message) as error:
        read_labels_whole(str(tmp_path / "odd.npy"))
    assert "\n" not in str(error.value)


def test_keys_must_be_strings(tmp_path):
    np.save(tmp_path / "keys.npy", {1: np.zeros((2, 2, 2), np.uint8)}, allow_pickle=True)
    with pytest.raises(DatasetError, match="a dict key that is int, not an image filename"):
        read_labels_whole(str(tmp_path / "keys.npy"))


def test_a_few_bytes_cannot_ask_for_gigabytes(tmp_path):
    data = pickled({"a.png": np.zeros(8, np.uint8)}, 3)
    shape = b"K\x08\x85"  # BININT1 8, TUPLE1: the shape (8,)
    assert data.count(shape) == 1
    large = write_npy_pickle(tmp_path / "large.npy", data.replace(shape, b"J\x00\x00\x00\x40\x85"))
    with pytest.raises(DatasetError, match=r"shape \(1073741824,\) and dtype uint8 \(1073741824 bytes\) with 8 bytes"):
        read_labels_whole(large)
    # BINBYTES8 announcing 2**60 bytes: the read stops at the file's end.
    claims = write_npy_pickle(tmp_path / "claims.npy", b"\x80\x04\x8e" + (2**60).to_bytes(8, "little") + b"abc")
    with pytest.raises(DatasetError, match="the pickle is truncated or damaged after byte 128"):
        read_labels_whole(claims)


@pytest.mark.parametrize("nesting, message", [
    (b")" + b"\x85" * 100_000, "tuples nested deeper than 16"),  # EMPTY_TUPLE, then TUPLE1 around it again and again
    (b"(" * 100_000, "marks nested deeper than 16"),
    (b"]" * 100_000 + b"a" * 99_999, "a list holding list"),
])
def test_deep_nesting_is_refused_without_recursion(tmp_path, nesting, message):
    path = write_npy_pickle(tmp_path / "deep.npy", b"\x80\x04" + nesting + b".")
    with pytest.raises(DatasetError, match=message):
        read_labels_whole(path)


def test_every_cut_of_a_label_file_ends_in_one_line(tmp_path):
    np.save(tmp_path / "whole.npy", {"a.png": np.eye(3, dtype=np.uint8)[[[0, 1], [2, 0]]]})
    data = (tmp_path / "whole.npy").read_bytes()
    cut = tmp_path / "cut.npy"
    for length in range(len(data)):
        cut.write_bytes(data[:length])
        with pytest.raises(DatasetError) as error:
            read_labels_whole(str(cut))
        assert "\n" not in str(error.value) and str(error.value).startswith(str(cut)), length
