"""The classes: the book's drinks names, and the colours every mask and preview paints them in.

The book colours background black, class 1 (water bottle) red, 2 (soda can)
green and 3 (juice can) blue (Figures 12.1.1, 12.4.2 and 12.5.3). Predicted
masks, overlays, triptychs, the report and the converter's ground-truth
previews all take their colours from `class_colors`, so a class looks the same
in each, whatever the class count.
"""

import colorsys
import math

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


DRINKS_CLASS_NAMES = ("background", "water bottle", "soda can", "juice can")


def class_names(n_classes: int) -> list[str]:
    """Display names: the drinks classes for a 4-class set, else 'class k'."""
    if n_classes == len(DRINKS_CLASS_NAMES):
        return list(DRINKS_CLASS_NAMES)
    return ["background"] + [f"class {k}" for k in range(1, n_classes)]


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
        label_map: int array (H, W). Class ids, not negative.
        num_classes: int or None. Number of classes including background. Defaults to enough for
            the largest id in `label_map`; a class's colour does not depend on it.

    Returns:
        uint8 RGB image (H, W, 3).
    """
    label_map = np.asarray(label_map)
    if num_classes is None:
        num_classes = int(label_map.max()) + 1 if label_map.size else 1
    return class_colors(num_classes)[label_map]
