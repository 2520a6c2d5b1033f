"""One error type and one line format for every program, and narrow signatures in the package."""

import ast
import glob
import os

import pytest
from conftest import ROOT

from segmentation import errors
from segmentation.parser import build_parser
from segmentation.tools import via

# The most parameters a function of the package may take (STYLE.md 3.17); `self`, `cls` and a `**kwargs`
# handed on to Keras (`DataGenerator`'s `workers=` and the like) are not counted.
MAX_PARAMETERS = 10


@pytest.mark.parametrize("error_type, status", [
    (errors.UsageError, errors.EXIT_BAD_INPUT),
    (errors.DatasetError, errors.EXIT_BAD_INPUT),
    (errors.CheckpointError, errors.EXIT_BAD_INPUT),
    (errors.InferenceError, errors.EXIT_BAD_INPUT),
    (errors.SaveError, errors.EXIT_BAD_INPUT),
    (errors.NonFiniteLossError, errors.EXIT_NON_FINITE),
    (via.ViaError, errors.EXIT_BAD_INPUT),
])
def test_each_error_is_a_program_error_with_its_exit_status(error_type, status, capsys):
    error = error_type("data/x.npy: the reason; the fix")
    assert isinstance(error, errors.ProgramError) and error.exit_status == status
    assert errors.report_error(error, "tool.py") == status
    assert capsys.readouterr().err == "tool.py: error: data/x.npy: the reason; the fix\n"


def test_the_via_converter_line_leaves_the_name_out(capsys):
    assert errors.report_error(via.ViaError("a.json: not a VIA project"), None) == errors.EXIT_BAD_INPUT
    assert capsys.readouterr().err == "error: a.json: not a VIA project\n"


def test_the_program_name_comes_from_the_parser():
    assert build_parser().prog == "fcn-12.3.1.py"


def test_no_function_of_the_package_takes_more_than_ten_parameters():
    paths = sorted(glob.glob(os.path.join(ROOT, "segmentation", "**", "*.py"), recursive=True)) + [
        os.path.join(ROOT, name) for name in ("model.py", "resnet.py", "data_generator.py")
    ]
    wide = []
    for path in paths:
        with open(path, encoding="utf-8") as file:
            tree = ast.parse(file.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                names = [argument.arg for argument in arguments if argument.arg not in ("self", "cls")]
                names += [node.args.vararg.arg] if node.args.vararg else []
                if len(names) > MAX_PARAMETERS:
                    wide.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name} ({len(names)})")
    assert not wide, wide
