"""Fuzzing the label reader: every mutated label file loads or is refused in one line; none crashes or hangs.

Valid label files (numpy 2's `np.save` and pickle protocols 2 to 5, numpy 1.26's files, masks of several
dtypes and orders) are damaged at random: bytes flipped, the file cut or extended, opcodes swapped,
dropped or repeated, dtype strings and shape numbers changed. One subprocess reads all of them through
both readers (`read_labels_dict`, the program's, and `read_labels_whole`, the benchmarks'), under an
address-space limit, and reports each file: read, or refused with a `DatasetError` (which the command
line prints as one line with exit status 2). A crash of the subprocess (a segmentation fault), a hang
past the watchdog, or memory past the limit fails the test. 300 files by default; `pytest --run-slow`
reads 3,000.
"""

import io
import json
import os
import pickle
import pickletools
import random
import subprocess
import sys
import textwrap

import numpy as np
import numpy1_label_files
from conftest import ROOT

from segmentation.ground_truth.book_labels import read_labels_whole

FAST_FILES = 300
SLOW_FILES = 3000
# The reader's process may use this much address space (numpy and the imports take about 360 MB); a
# file that made it ask for more fails the test.
ADDRESS_SPACE_LIMIT = 1 << 30
# No file may take longer to read than this.
SECONDS_PER_FILE = 2.0

# Reads every file named on stdin, one JSON line per file on stdout; a crash leaves the report short.
READER = textwrap.dedent("""
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    from segmentation.errors import DatasetError
    from segmentation.ground_truth.book_labels import read_labels_dict, read_labels_whole
    for path in sys.stdin.read().split("\\n"):
        started = time.monotonic()
        outcome = {{"path": path}}
        try:
            read_labels_dict(path)
            read_labels_whole(path)
            outcome["status"] = 0
        except DatasetError as error:
            outcome["status"] = 2
            outcome["lines"] = len(str(error).splitlines())
            outcome["names_file"] = str(error).startswith(path)
        except BaseException as error:
            outcome["status"] = "crash"
            outcome["error"] = f"{{type(error).__name__}}: {{error}}"[:300]
        outcome["seconds"] = time.monotonic() - started
        print(json.dumps(outcome), flush=True)
""")

DTYPE_STRINGS = [b"u1", b"b1", b"f4", b"f8", b"i8", b"O8", b"V8", b"U1", b"S1", b"u8", b"<", b">", b"|", b"c8",
                 b"M8", b"m8", b"f16", b"", b"O", b"u1\x00"]


def seeds():
    """Valid label files: numpy 2's writers, then numpy 1.26's."""
    labels = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 0, 0]])
    one_hot = np.eye(4, dtype=np.uint8)[labels]
    dictionary = {"a.png": one_hot, "b.png": one_hot.astype(bool), "c.png": np.asfortranarray(one_hot.astype("<f4")),
                  "d.png": one_hot.astype(">f8")[:, ::2], "e.png": one_hot}
    files = []
    stream = io.BytesIO()
    np.save(stream, dictionary)
    files.append(stream.getvalue())
    wrapper = np.empty((), dtype=object)
    wrapper[()] = dictionary
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(wrapper))
    for protocol in (2, 3, 4, 5):
        files.append(header.getvalue() + pickle.dumps(wrapper, protocol=protocol))
    files.extend(numpy1_label_files.file_bytes(protocol) for protocol in (2, 3, 4, 5))
    return files


def opcode_spans(data):
    """(start, end) of each pickle opcode with its argument, after the .npy header."""
    start = data.index(b"\n") + 1
    positions = [start + position for _, _, position in pickletools.genops(data[start:])]
    return list(zip(positions, positions[1:] + [len(data)]))


def mutate(rng, data):
    """One to three random edits of a label file."""
    data = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.randrange(8)
        if kind == 0:  # flip bytes
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 1:  # cut
            data = data[: rng.randrange(len(data))]
        elif kind == 2:  # insert bytes, maybe opcodes
            position = rng.randrange(len(data) + 1)
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind in (3, 4, 5):  # swap, drop or repeat an opcode
            try:
                spans = opcode_spans(bytes(data))
            except Exception:
                continue
            first, second = sorted(rng.sample(spans, 2))
            a, b = bytes(data[first[0]:first[1]]), bytes(data[second[0]:second[1]])
            if kind == 3:
                data[second[0]:second[1]] = a
                data[first[0]:first[1]] = b
            elif kind == 4:
                del data[first[0]:first[1]]
            else:
                data[first[0]:first[0]] = a * rng.choice([1, 2, 100])
        elif kind == 6:  # change a dtype string
            old = rng.choice([b"u1", b"b1", b"f4", b"f8", b"O8", b"<", b">", b"|"])
            position = bytes(data).find(old, rng.randrange(len(data)))
            if position >= 0:
                data[position:position + len(old)] = rng.choice(DTYPE_STRINGS)
        else:  # change a small number (BININT1: a shape's size, a state's version or flags)
            positions = [index for index, byte in enumerate(data) if byte == ord("K")]
            if positions:
                position = rng.choice(positions) + 1
                if position < len(data):
                    data[position] = rng.choice([0, 1, 2, 3, 4, 5, 63, 255, rng.randrange(256)])
            if rng.random() < 0.3:  # or a BININT, up to 2**31
                positions = [index for index, byte in enumerate(data) if byte == ord("J")]
                if positions:
                    position = rng.choice(positions) + 1
                    data[position:position + 4] = rng.randrange(2**32).to_bytes(4, "little")
    return bytes(data)


def test_mutated_label_files_load_or_are_refused_in_one_line(tmp_path, request):
    count = SLOW_FILES if request.config.getoption("--run-slow") else FAST_FILES
    rng = random.Random(23)
    originals = seeds()
    paths = []
    for index in range(count):
        path = tmp_path / f"mutant{index:05d}.npy"
        path.write_bytes(mutate(rng, rng.choice(originals)))
        paths.append(str(path))
    result = subprocess.run(
        [sys.executable, "-c", READER.format(limit=ADDRESS_SPACE_LIMIT)], input="\n".join(paths), cwd=ROOT,
        capture_output=True, text=True, timeout=60 + count * SECONDS_PER_FILE / 10,
        env=dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"),
    )
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    # A crash (a negative status: the signal) ends the report early; name the file that did it.
    assert result.returncode == 0 and len(outcomes) == count, (
        result.returncode, paths[len(outcomes)] if len(outcomes) < count else None, result.stderr[-2000:])
    crashes = [outcome for outcome in outcomes if outcome["status"] not in (0, 2)]
    assert crashes == [], crashes[:5]
    refusals = [outcome for outcome in outcomes if outcome["status"] == 2]
    assert all(outcome["lines"] == 1 and outcome["names_file"] for outcome in refusals)
    slowest = max(outcomes, key=lambda outcome: outcome["seconds"])
    assert slowest["seconds"] < SECONDS_PER_FILE, slowest
    loaded = count - len(refusals)
    assert loaded > 0 and refusals, (loaded, len(refusals))
    print(f"fuzzed {count} label files: {loaded} loaded, {len(refusals)} refused; slowest "
          f"{slowest['seconds'] * 1000:.0f} ms")


def test_the_seeds_load(tmp_path):
    """The mutations start from files the reader reads."""
    for index, data in enumerate(seeds()):
        path = tmp_path / f"seed{index}.npy"
        path.write_bytes(data)
        assert set(read_labels_whole(str(path))) >= {"a.png", "b.png", "c.png"}
