"""The classes: the book's drinks names, and the colours every mask and preview paints them in.

The book colours background black, class 1 (water bottle) red, 2 (soda can)
green and 3 (juice can) blue (Figures 12.1.1, 12.4.2 and 12.5.3). Predicted
masks, overlays, triptychs, the report and the converter's ground-truth
previews all take their colours from `class_colors`, so a class looks the same
in each, whatever the class count.
"""

import colorsys
import math
from collections.abc import Sequence

import numpy as np

DRINKS_CLASS_NAMES = ("background", "water bottle", "soda can", "juice can")
# The names of the drinks classes 1-3 in the book's VIA projects and the converter's summary.
DRINKS_VIA_NAMES = tuple(name.replace(" ", "_") for name in DRINKS_CLASS_NAMES[1:])
# The colours of predicted masks (figures.py, report.py, inference.py) and of ground-truth previews
# (the --show tools) alike: the book's black background, red water bottle,
# green soda can and blue juice can, then a fixed table; `class_colors` extends it past its end.
CLASS_COLORS = (
    (0, 0, 0),
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (0, 255, 255),
    (255, 0, 255),
    (255, 128, 0),
    (128, 0, 255),
    (0, 128, 255),
    (128, 255, 0),
    (255, 0, 128),
    (0, 255, 128),
    (128, 64, 0),
    (128, 128, 128),
    (255, 255, 255),
)
# Classes past CLASS_COLORS walk the hue circle by the golden ratio, which keeps each new hue far
# from the earlier ones, at full saturation and a brightness that cycles so neighbours differ more.
GOLDEN_RATIO_CONJUGATE = (math.sqrt(5.0) - 1.0) / 2.0
EXTRA_COLOR_VALUES = (1.0, 0.75, 0.5)

# The class id of pixels left out of the loss and every score (PASCAL VOC's "void"), and its colour
# in ground-truth pictures (VOC's cream), which no class has.
IGNORE_LABEL = 255
IGNORE_COLOR = (224, 224, 192)


def class_names(n_classes: int, names: Sequence[str] | None = None) -> list[str]:
    """Display names of classes 0 .. n_classes - 1.

    Args:
        n_classes: int. Number of classes including background.
        names: sequence of str or None. The names of classes 0 .. n_classes - 1 when known (from
            `--classes` or the file beside the labels). Defaults to None: the drinks classes for a
            4-class set, else 'class k'.

    Returns:
        list of str, `n_classes` long.
    """
    if names is not None:
        return list(names)
    if n_classes == len(DRINKS_CLASS_NAMES):
        return list(DRINKS_CLASS_NAMES)
    return ["background"] + [f"class {k}" for k in range(1, n_classes)]


def split_class_names(text: str) -> tuple[str, ...]:
    """The names of `--classes NAMES`: classes 1, 2, ... (background, class 0, is not named).

    Args:
        text: str. Comma-separated names, e.g. "water bottle,soda can,juice can".

    Returns:
        The names with the surrounding spaces removed.

    Raises:
        ValueError: for an empty or repeated name, "background" (class 0 is never named), or more
            names than a class-index mask can hold (`IGNORE_LABEL - 1`).
    """
    names = tuple(name.strip() for name in text.split(","))
    folded = [name.casefold() for name in names]
    if not all(names) or len(set(folded)) != len(names):
        raise ValueError(f"--classes {text!r}: expected distinct comma-separated names of classes 1, 2, ..., "
                         "e.g. bottle,can")
    if "background" in folded:
        raise ValueError(f"--classes {text!r}: name classes 1, 2, ... only; background is class 0.")
    if len(names) >= IGNORE_LABEL:
        raise ValueError(f"--classes: {len(names)} names; a class-index mask holds classes 1..{IGNORE_LABEL - 1}.")
    return names


def class_colors(num_classes: int) -> np.ndarray:
    """RGB colours of classes 0 .. num_classes - 1: the book's black, red, green, blue, then more.

    Classes past the `CLASS_COLORS` table get colours from a golden-ratio hue walk, skipping any
    colour an earlier class has, so no class but 0 is black and no two classes share a colour.

    Args:
        num_classes: int. Number of classes including background.

    Returns:
        uint8 array (num_classes, 3), the same for a given class whatever `num_classes` is.
    """
    colors = list(CLASS_COLORS[:num_classes])
    used = set(colors)
    step = 0
    while len(colors) < num_classes:
        step += 1
        value = EXTRA_COLOR_VALUES[step % len(EXTRA_COLOR_VALUES)]
        rgb = colorsys.hsv_to_rgb((step * GOLDEN_RATIO_CONJUGATE) % 1.0, 1.0, value)
        color = tuple(round(channel * 255) for channel in rgb)
        # Value >= 0.5 keeps every channel maximum >= 128, so never black. The walk yields thousands
        # of distinct colours; past that (far beyond via's 256 classes) it would repeat one rather
        # than loop for ever.
        if color not in used or step > 64 * num_classes:
            colors.append(color)
            used.add(color)
    return np.array(colors, dtype=np.uint8).reshape(num_classes, 3)


def colorize(label_map: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Colours a class-index map with `class_colors` (Figures 12.1.1 / 12.4.2 / 12.5.3).

    Args:
        label_map: int array (H, W). Class ids, not negative; `IGNORE_LABEL` pixels are painted
            `IGNORE_COLOR`.
        num_classes: int or None. Number of classes including background. Defaults to enough for
            the largest id in `label_map`; a class's colour does not depend on it.

    Returns:
        uint8 RGB image (H, W, 3).
    """
    label_map = np.asarray(label_map)
    ignored = label_map == IGNORE_LABEL
    if num_classes is None:
        labelled = label_map[~ignored]
        num_classes = int(labelled.max()) + 1 if labelled.size else 1
    colors = class_colors(num_classes)
    if not ignored.any() or num_classes > IGNORE_LABEL:
        return colors[label_map]
    table = np.zeros((IGNORE_LABEL + 1, 3), dtype=np.uint8)
    table[:num_classes] = colors
    table[IGNORE_LABEL] = IGNORE_COLOR
    return table[label_map]
