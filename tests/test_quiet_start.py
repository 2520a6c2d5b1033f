"""A quiet start: no TensorFlow C++ start-up line and no idle dependency warning, unless the user asks."""

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from segmentation.quiet import shows_tensorflow_lines, without_start_up_lines

# What the commands printed before the quiet start, on a machine without a GPU.
START_UP_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796166383.229713    9173 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
    "GPU will not be used.",
    "E0000 00:00:1796166735.497855    9403 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1796166390.101010    9173 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.",
    "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find cuda drivers "
    "on your machine, GPU will not be used.",
)
# What a tiny training run prints must hold none of these (test_cli's run in a subprocess checks it).
NOISE = re.compile(
    r"absl::InitializeLog|cudart_stub|cuInit|oneDNN custom operations|Memory patch applied"
    r"|^[IWE]\d{4} \d\d:\d\d:\d\d"  # any C++ log line in absl's format
    r"|^\S+:\d+: \w*Warning: ",  # any Python warning, as warnings.showwarning prints it
    re.MULTILINE,
)
# Writes the start-up lines to file descriptor 2, as TensorFlow's C++ code does, inside `quiet_start`.
FAKE_START = f"""
import os, sys
from segmentation.quiet import quiet_start
with quiet_start(sys.argv[1:]):
    os.write(2, {"".join(line + chr(10) for line in START_UP_LINES).encode()!r})
    os.write(2, b"F0000 00:00:1796166735.497855    9403 main.cc:1] a fatal line stays\\n")
    print("a line of the program's own stays", file=sys.stderr)
print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
"""


def environment(**extra):
    """The test's environment without a log level of the user's: the program chooses its own."""
    environ = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return {**environ, **extra}


def run_fake_start(*argv, **extra):
    return subprocess.run([sys.executable, "-c", FAKE_START, *argv], cwd=ROOT, capture_output=True, text=True,
                          env=environment(**extra), timeout=60)


def test_the_start_up_lines_are_recognised_and_nothing_else():
    kept = "Epoch 1: mIoU improved 0.0000 -> 0.0321\nTraceback (most recent call last):\nF0000 00:00:1.0 1 a.cc:1] x\n"
    assert without_start_up_lines("".join(line + "\n" for line in START_UP_LINES) + kept) == kept


@pytest.mark.parametrize("argv, environ, expected", [
    ([], {}, False),
    (["--train", "--verbose", "1"], {}, False),
    (["--train", "--verbose", "2"], {}, True),
    (["--verbose=3", "--train"], {}, True),
    (["--verb", "2"], {}, True),  # argparse's prefix of --verbose
    (["--verbose"], {}, False),
    (["--save-dir", "2"], {}, False),
    ([], {"TF_CPP_MIN_LOG_LEVEL": "0"}, True),
])
def test_the_user_asks_for_tensorflow_lines_by_verbose_2_or_their_own_log_level(argv, environ, expected):
    assert shows_tensorflow_lines(argv, environ) == expected


def test_quiet_start_hides_the_start_up_lines_written_to_descriptor_2():
    result = run_fake_start("--train")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "3\n"
    assert result.stderr.splitlines() == [
        "F0000 00:00:1796166735.497855    9403 main.cc:1] a fatal line stays", "a line of the program's own stays",
    ]


@pytest.mark.parametrize("argv, extra", [(["--verbose", "2"], {}), ([], {"TF_CPP_MIN_LOG_LEVEL": "0"})])
def test_verbose_2_or_the_users_log_level_leaves_every_line(argv, extra):
    result = run_fake_start(*argv, **extra)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("0\n" if extra else "None\n")
    assert result.stderr.splitlines()[: len(START_UP_LINES)] == list(START_UP_LINES)


def test_what_the_body_printed_comes_back_when_it_raises():
    code = ("import os, sys\nfrom segmentation.quiet import quiet_start\nwith quiet_start([]):\n"
            "    print('before the error', file=sys.stderr)\n    raise ImportError('no such module')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env=environment(), timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("before the error\n") and "ImportError: no such module" in result.stderr
