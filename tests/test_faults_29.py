"""Faults of issue 29 closed: each ends in one line and exit status 2, and nothing the user has is lost.

- a label file that refers to one buffer again and again is refused by the bytes it builds, not its memo;
- `.npy` labels of more than 255 classes are refused (class 255 marks ignored pixels);
- `--seed -1`, a deeply nested `classes.json` and unreadable data or prediction folders end in one line;
- `--val-split` resumed with another `--seed` holds out the images the run held out;
- a second network trained into a save folder does not replace the first's histories and report;
- the `--patience` count comes from the history, so epochs run without `--patience` count too.
"""

import struct
import time
import tracemalloc

import numpy as np
import pytest

from segmentation.errors import DatasetError
from segmentation.labels import read_labels_dict


def write_npy_pickle(path, data):
    """A `.npy` header for a 0-d object array (what np.save writes for a dict), then the pickle bytes `data`."""
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": "|O", "fortran_order": False, "shape": ()})
        file.write(data)
    return str(path)


# === A buffer referred to again and again ===
def unicode(text):
    encoded = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def binput(index):
    return b"r" + struct.pack("<I", index)


def binget(index):
    return b"j" + struct.pack("<I", index)


def reused_buffer_pickle(buffer_bytes, references):
    """NumPy's pickle of a dict whose masks all take their data from one old memo entry.

    The buffer is stored as the value of a first key (bytes, which the label checks refuse by name only after
    the walk), 20 small entries push it out of the newest memo entries, and each of `references` masks of
    shape (buffer_bytes, 1, 1) and dtype uint8 refers to it.
    """
    shape = b"J" + struct.pack("<i", buffer_bytes) + b"K\x01K\x01\x87"
    plain_state_end = b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    parts = [
        b"\x80\x03",
        b"cnumpy._core.multiarray\n_reconstruct\n", binput(0),
        b"cnumpy\nndarray\n", binput(1),
        b"K\x00\x85", binput(2), b"C\x01b", binput(3), b"\x87R",
        # The outer 0-d object array's state: (1, (), dtype('O8'), False, [dict]).
        b"(K\x01)", b"cnumpy\ndtype\n", binput(4), unicode("O8"), b"\x89\x88\x87R",
        b"(K\x03", unicode("|"), binput(5), b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb",
        b"\x89]}(",
        unicode("buffer.png"), b"B" + struct.pack("<I", buffer_bytes), b"\x01" * buffer_bytes, binput(6),
    ]
    parts += [unicode(f"pad{index}.png") + b"K\x01" + binput(8 + index) for index in range(20)]
    for index in range(references):
        dtype = (binget(4) + unicode("u1") + b"\x89\x88\x87R(K\x03" + binget(5) + plain_state_end + binput(7)
                 if index == 0 else binget(7))
        parts.append(unicode(f"mask{index}.png") + binget(0) + binget(1) + b"K\x00\x85" + binget(3) + b"\x87R"
                     + b"(K\x01" + shape + dtype + b"\x89" + binget(6) + b"tb")
    parts.append(b"uatb.")
    return b"".join(parts)


def test_the_walk_reads_a_few_references_to_an_old_buffer(tmp_path):
    path = write_npy_pickle(tmp_path / "shared.npy", reused_buffer_pickle(1000, 2))
    summaries = read_labels_dict(path)
    assert summaries["buffer.png"] == b"\x01" * 1000 and summaries["mask1.png"].shape == (1000, 1, 1)


def test_a_buffer_referred_to_thousands_of_times_is_refused_fast_in_little_memory(tmp_path):
    """3,000 references to one 1 MiB buffer in a 1.1 MB file took 21 s and 264 MB before the refusal."""
    path = write_npy_pickle(tmp_path / "reused.npy", reused_buffer_pickle(1 << 20, 3000))
    size = (tmp_path / "reused.npy").stat().st_size
    assert size < 1.3e6
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(DatasetError) as refused:
            read_labels_dict(path)
        seconds = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(refused.value)
    assert message.startswith(f"{path}: refused at byte ") and "\n" not in message
    assert "more bytes than its file" in message
    assert seconds < 2.0
    # The file read once, and a few of its arrays: not 3,000 of them.
    assert peak < 4 * size + (8 << 20), peak
