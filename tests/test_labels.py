"""The labels loader reads the book's pickled .npy dicts of every numpy and pickle version, and runs no code."""

import io
import os
import pickle
import shlex

import numpy as np
import pytest
from conftest import HEIGHT, N_CLASSES, WIDTH, write_book_dataset

from segmentation.errors import DatasetError
from segmentation.labels import load_labels, read_labels_dict, read_labels_whole


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
