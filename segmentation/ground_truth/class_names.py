"""The class-names files stored with a ground truth, of either format, read and written.

A mask folder's names are its `classes.json`, a book label file's the `<stem>.classes.json` beside it
(`paths.class_names_path`): `{"class_names": ["background", "name 1", ...]}`, classes 0 .. n - 1 in order.
"""

import json
import os
import tempfile
from collections.abc import Sequence

from segmentation.classes import IGNORE_LABEL
from segmentation.errors import DatasetError
from segmentation.paths import class_names_path


def read_class_names(labels_path: str) -> tuple[str, ...] | None:
    """The class names stored with a ground truth (`paths.class_names_path`), or None if there are none.

    Args:
        labels_path: str. A mask folder or a `.npy` file.

    Returns:
        The names of classes 0 .. n - 1, background first.

    Raises:
        DatasetError: if the file is not a JSON object whose `class_names` lists two or more distinct names.
    """
    path = class_names_path(labels_path)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            names = json.load(file)["class_names"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        # json's C decoder raises RecursionError for arrays nested past Python's recursion limit.
        reason = "JSON nested too deeply" if isinstance(error, RecursionError) else f"{type(error).__name__}: {error}"
        raise DatasetError(f"{path}: cannot read the class names ({reason}). Expected "
                           '{"class_names": ["background", "name 1", ...]}; fix or delete the file.') from None
    valid = isinstance(names, list) and len(names) >= 2 and all(isinstance(name, str) and name for name in names)
    if not valid or len(set(names)) != len(names):
        raise DatasetError(f"{path}: 'class_names' must list two or more distinct names, background first; "
                           "fix or delete the file.")
    if len(names) > IGNORE_LABEL:
        raise DatasetError(f"{path}: 'class_names' lists {len(names)} names; at most {IGNORE_LABEL} classes fit a "
                           f"class-index mask (ids 0..{IGNORE_LABEL - 1}; {IGNORE_LABEL} marks ignored pixels). "
                           "Merge classes, or fix the file.")
    return tuple(names)


def write_class_names(labels_path: str, names: Sequence[str]) -> str:
    """Stores class names with a ground truth (atomically); returns the file written.

    Args:
        labels_path: str. The mask folder or `.npy` file they name the classes of.
        names: sequence of str. Names of classes 0 .. n - 1, background first.
    """
    path = class_names_path(labels_path)
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".json.tmp", delete=False, encoding="utf-8") as file:
        json.dump({"class_names": list(names)}, file, indent=1)
        file.write("\n")
    os.replace(file.name, path)
    return path
