"""A synthetic stand-in for the book's "drinks" data set (section 12.4; a project addition).

The chapter trains on 1,000 + 50 photos of water bottles, soda cans and juice cans on a cluttered
table, annotated with VIA polygons. Those photos cannot be downloaded here, so this tool draws
drinks-like scenes and writes them in exactly the book's format: `<output>/<name>.jpg` and the VIA
2.x projects `segmentation_train.json` / `segmentation_test.json` (polygon regions, region attribute
`{"Name": "1"|"2"|"3"}`), ready for `utils/generate_gt_segmentation.py`.

Like the book's photos of a few brands of each drink, every drink is one of a small catalogue of
products (`--products K` per class, default 2): a product is a fixed design (label kind, colours and
layout, proportions, cap, plastic tint and opacity, metal, highlight) made from the data set's seed,
its class and its index alone, so train and test and every scene show the same products. Each scene
has a textured wall and table (wood, tiles, cloth, stone), distractors that are not drinks (mugs,
glasses, boxes, books, plates, fruit, cables, papers), and 0 to 6 drinks, each a product picked
uniformly at its own size, pose and lighting, standing in depth order so that nearer objects occlude
farther ones, some cut by the image border. `--products 0` makes every drink a new design instead,
the harder set. Colours come from one palette shared by every class and the distractors, so colour
alone cannot tell the classes apart; shape and the products' designs do (the bottle's neck and cap,
the squat can with its lid, the slim tall juice can). The camera adds a lighting field, blur, noise
and JPEG compression.

Each polygon traces the *visible* outline: the scene keeps an instance map while drawing, and the
outlines are traced from it with `skimage.measure.find_contours`. `--check` scores a colour-only
per-pixel classifier on the test set with the book's per-image mIoU, to show the data set is not
separable by colour (exit status 1 when it scores above 0.60); `--show` writes a contact sheet of
images and outlines.

    python3 utils/generate_synthetic_drinks.py --output dataset/synthetic --check --show
"""

import argparse
import dataclasses
import json
import math
import os
from collections.abc import Callable

import keras
import matplotlib.image
import numpy as np
from skimage import draw, filters, measure

from segmentation.classes import DRINKS_CLASS_NAMES
from segmentation.errors import EXIT_CHECK_FAILED
from segmentation.paths import TEST_VIA_JSON, TRAIN_VIA_JSON
from segmentation.process_state import kept_process_state
from segmentation.tools import via
from segmentation.tools.synthetic_check import CHECK_THRESHOLD, color_baseline, contact_sheet

WATER_BOTTLE, SODA_CAN, JUICE_CAN = 1, 2, 3
# Colours shared by drinks, distractors and backgrounds (RGB in [0, 1]).
PALETTE = np.array(
    [
        (0.80, 0.10, 0.12),  # red
        (0.50, 0.05, 0.08),  # dark red
        (0.95, 0.50, 0.10),  # orange
        (0.95, 0.85, 0.20),  # yellow
        (0.15, 0.60, 0.20),  # green
        (0.60, 0.85, 0.25),  # lime
        (0.10, 0.30, 0.80),  # blue
        (0.08, 0.10, 0.35),  # navy
        (0.30, 0.75, 0.85),  # cyan
        (0.45, 0.20, 0.60),  # purple
        (0.95, 0.55, 0.70),  # pink
        (0.93, 0.93, 0.92),  # white
        (0.70, 0.72, 0.75),  # silver
        (0.08, 0.08, 0.09),  # black
        (0.45, 0.28, 0.15),  # brown
        (0.85, 0.78, 0.62),  # beige
    ],
    dtype=np.float32,
)
SILVER = 12
# A water bottle's plastic: half its product's tint, half this clear blue-grey.
BOTTLE_CLEAR = np.array((0.8, 0.9, 0.95), dtype=np.float32)
WOOD_COLORS = np.array([(0.55, 0.36, 0.20), (0.72, 0.52, 0.32), (0.40, 0.25, 0.14), (0.80, 0.66, 0.46)], np.float32)
EMPTY_SCENE_PROBABILITY = 0.08
MAX_DRINKS = 6
DRINK_COUNT_PROBABILITIES = (0.25, 0.25, 0.2, 0.15, 0.1, 0.05)
# Visible fragments smaller than this share of the image are left as background.
MIN_FRAGMENT_SHARE = 0.0004
# The book shows "a few brands" of each drink; 2 per class keeps --check at 0.55 or less (1: 0.58).
DEFAULT_PRODUCTS = 2
RGB = tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class LabelDesign:
    """A printed label: a base colour with bands, a wave, a logo disk or fruit dots.

    Positions are in the label's normalised coordinates: `u` across (-1 .. 1), `t` down (0 .. 1).

    Attributes:
        kind: str. "bands", "wave", "logo", "dots" or "split".
        base: RGB. The label's main colour.
        second: RGB. The colour of the band, wave, logo, dots or split half.
        third: RGB. A thin line across the label (every kind but "bands").
        band: tuple of float. Top and bottom `t` of the band; the thin line sits midway.
        logo: tuple of float. The logo disk's centre `u`, `t` and radius.
        dots: tuple of (u, t) pairs. Centres of the fruit dots.
        frequency: float. Of the wave and the split's edge.
        phase: float. Of the wave.
    """

    kind: str
    base: RGB
    second: RGB
    third: RGB
    band: tuple[float, float]
    logo: tuple[float, float, float]
    dots: tuple[tuple[float, float], ...]
    frequency: float
    phase: float

    def paint(self, u: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The label's RGB (float32, shape `u.shape + (3,)`) at normalised coordinates `u`, `t`."""
        color = np.full(u.shape + (3,), self.base, dtype=np.float32)
        if self.kind == "bands":
            color[(t > self.band[0]) & (t < self.band[1])] = self.second
        elif self.kind == "wave":
            color[t > 0.5 + 0.12 * np.sin(u * self.frequency + self.phase)] = self.second
        elif self.kind == "logo":
            logo_u, logo_t, radius = self.logo
            color[((u - logo_u) / radius) ** 2 + ((t - logo_t) / (radius * 0.6)) ** 2 < 1] = self.second
        elif self.kind == "dots":
            for dot_u, dot_t in self.dots:
                color[((u - dot_u) / 0.22) ** 2 + ((t - dot_t) / 0.1) ** 2 < 1] = self.second
        else:
            color[u > 0.1 * np.sin(t * self.frequency)] = self.second
        if self.kind != "bands":
            color[np.abs(t - (self.band[0] + self.band[1]) / 2) < 0.03] = self.third
        return color


@dataclasses.dataclass(frozen=True)
class BottleDesign:
    """A water bottle product: what every bottle of this brand shares, whatever its size and pose.

    Lengths are shares of the bottle's height, widths shares of its body's width.

    Attributes:
        aspect: float. Height over body width.
        cap_height: float. Height of the cap.
        neck_height: float. Height of the neck under the cap.
        shoulder_height: float. Height of the curve from the neck out to the body.
        cap_width: float. Width of the cap.
        neck_width: float. Width of the neck.
        tint: RGB. Colour of the plastic.
        alpha: float. Opacity of the plastic.
        cap_color: RGB. Colour of the cap.
        label: LabelDesign or None. The label; None for a bare bottle.
        label_top: float. Where the label starts, from the top.
        label_height: float. Height of the label.
        ridge_spacing: float. Distance between the body's ridges.
    """

    aspect: float
    cap_height: float
    neck_height: float
    shoulder_height: float
    cap_width: float
    neck_width: float
    tint: RGB
    alpha: float
    cap_color: RGB
    label: LabelDesign | None
    label_top: float
    label_height: float
    ridge_spacing: float


@dataclasses.dataclass(frozen=True)
class CanDesign:
    """A soda or juice can product: what every can of this brand shares, whatever its size and pose.

    Attributes:
        class_id: int. SODA_CAN or JUICE_CAN.
        aspect: float. Height over width.
        top_taper: float. Width of the lid over the width of the body.
        neck: float. Height of the tapered neck, a share of the can's height.
        lid: float. Depth of the lid's ellipse, a share of half the can's width.
        label: LabelDesign. The printed body.
        specular_strength: float. Brightness of the highlight.
        metal: RGB. Colour of the lid and rims.
    """

    class_id: int
    aspect: float
    top_taper: float
    neck: float
    lid: float
    label: LabelDesign
    specular_strength: float
    metal: RGB


ProductDesign = BottleDesign | CanDesign


@dataclasses.dataclass
class Item:
    """An object to draw: outline and painter in local coordinates, pose in the image.

    Local coordinates: `u` across the object (0 on its axis), `v` down from its top (0 .. height).
    `paint(u, v, under)` returns the RGB colour and opacity of the pixels at those coordinates,
    given what lies beneath them. A drink also keeps the product design it was made from.
    """

    class_id: int
    outline: np.ndarray | list[np.ndarray]
    height: float
    paint: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    anchor_x: float = 0.0
    anchor_y: float = 0.0
    angle: float = 0.0
    shadow: bool = True
    design: ProductDesign | None = None


@dataclasses.dataclass
class Scene:
    """One rendered scene: uint8 image, drawn class map, and the VIA regions of its visible drinks."""

    image: np.ndarray
    label_map: np.ndarray
    regions: list[via.Region]


# === Colours and textures ===


def pick_color(rng: np.random.Generator, weights: np.ndarray | None = None) -> np.ndarray:
    """A palette colour with a little random variation in hue and brightness."""
    index = rng.choice(len(PALETTE), p=None if weights is None else weights / weights.sum())
    color = PALETTE[index] * rng.uniform(0.8, 1.15) + rng.normal(0, 0.04, 3)
    return np.clip(color, 0, 1).astype(np.float32)


def palette_weights(favoured: tuple[int, ...], boost: float = 2.5) -> np.ndarray:
    """Palette weights that favour some colours while keeping every colour possible."""
    weights = np.ones(len(PALETTE), dtype=np.float64)
    weights[list(favoured)] = boost
    return weights


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid, smoothly interpolated to (height, width)."""
    longest = max(height, width)
    knots_y, knots_x = max(2, cells * height // longest + 2), max(2, cells * width // longest + 2)
    grid = rng.uniform(-1, 1, (knots_y, knots_x)).astype(np.float32)
    lower_y, fraction_y = _knot_positions(height, knots_y)
    lower_x, fraction_x = _knot_positions(width, knots_x)
    rows = grid[lower_y] * (1 - fraction_y)[:, None] + grid[lower_y + 1] * fraction_y[:, None]
    return rows[:, lower_x] * (1 - fraction_x) + rows[:, lower_x + 1] * fraction_x


def _knot_positions(size: int, knots: int) -> tuple[np.ndarray, np.ndarray]:
    """For `size` pixels between evenly spaced knots: the knot before each, and a smoothstep weight."""
    position = np.linspace(0, knots - 1, size, dtype=np.float32)
    lower = np.minimum(position.astype(int), knots - 2)
    fraction = position - lower
    return lower, fraction * fraction * (3 - 2 * fraction)


def table_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A table top: wood grain, tiles, checked cloth or stone, (height, width, 3) float32."""
    rows, cols = np.mgrid[:height, :width].astype(np.float32)
    kind = rng.choice(["wood", "tiles", "cloth", "stone", "plain"], p=[0.35, 0.2, 0.2, 0.15, 0.1])
    scale = max(height, width) / 640
    if kind == "wood":
        light, dark = WOOD_COLORS[rng.choice(len(WOOD_COLORS), 2, replace=False)]
        angle = rng.uniform(-0.3, 0.3) + (math.pi / 2 if rng.random() < 0.5 else 0)
        across = (rows * math.cos(angle) - cols * math.sin(angle)) / scale
        warp = 12 * smooth_noise(rng, height, width, 6)
        grain = np.sin((across + warp) * rng.uniform(0.08, 0.3)) * 0.5 + 0.5
        grain = grain ** rng.uniform(1, 3)
        texture = dark + (light - dark) * grain[..., None]
    elif kind == "tiles":
        size = rng.uniform(30, 90) * scale
        grout = max(1.0, rng.uniform(1, 4) * scale)
        tile_color, grout_color = pick_color(rng), pick_color(rng)
        jitter = rng.uniform(0.85, 1.1, (int(height / size) + 2, int(width / size) + 2)).astype(np.float32)
        tile_rows, tile_cols = (rows / size).astype(int), (cols / size).astype(int)
        is_grout = ((rows % size) < grout) | ((cols % size) < grout)
        texture = tile_color * jitter[tile_rows, tile_cols][..., None]
        texture = np.where(is_grout[..., None], grout_color, texture)
    elif kind == "cloth":
        size = rng.uniform(15, 60) * scale
        first, second = pick_color(rng), pick_color(rng)
        checks = ((rows // size + cols // size) % 2).astype(np.float32)
        stripes = 0.5 + 0.5 * np.sin(cols * rng.uniform(0.5, 1.5))
        texture = first + (second - first) * checks[..., None]
        texture = texture * (0.9 + 0.1 * stripes[..., None])
    elif kind == "stone":
        base = pick_color(rng)
        veins = np.abs(np.sin(8 * smooth_noise(rng, height, width, 5) + cols * 0.01))
        texture = base * (0.75 + 0.25 * veins[..., None])
    else:
        texture = np.broadcast_to(pick_color(rng), (height, width, 3))
    mottling = 1 + 0.12 * smooth_noise(rng, height, width, 12)
    return (texture * mottling[..., None]).astype(np.float32)


def wall_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A wall: a pale colour with a vertical gradient, stains and sometimes stripes."""
    base = 0.5 * pick_color(rng) + 0.5 * rng.uniform(0.5, 1.0)
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    shade = (0.8 + 0.3 * rows) * (1 + 0.15 * smooth_noise(rng, height, width, 4))
    texture = base * shade[..., None]
    if rng.random() < 0.3:
        period = rng.uniform(10, 50) * max(height, width) / 640
        cols = np.arange(width, dtype=np.float32)
        stripes = (np.sin(cols * 2 * math.pi / period) > 0).astype(np.float32)
        texture = texture * (1 - 0.12 * stripes)[None, :, None]
    return texture.astype(np.float32)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Wall above a table edge (or only table), with a few soft blobs (stains, reflections)."""
    canvas = table_texture(rng, height, width).copy()
    horizon = int(height * rng.uniform(0.1, 0.45)) if rng.random() < 0.7 else 0
    if horizon:
        canvas[:horizon] = wall_texture(rng, horizon, width)
        edge = max(1, height // 120)
        canvas[horizon : horizon + edge] *= 0.6
    for _ in range(rng.integers(0, 5)):
        center = (rng.uniform(0, height), rng.uniform(0, width))
        radii = (rng.uniform(0.03, 0.15) * height, rng.uniform(0.03, 0.2) * width)
        rows, cols = draw.ellipse(*center, *radii, shape=(height, width), rotation=rng.uniform(-1, 1))
        alpha = rng.uniform(0.15, 0.5)
        canvas[rows, cols] = (1 - alpha) * canvas[rows, cols] + alpha * pick_color(rng)
    return canvas


# === Drinks and distractors, in local coordinates ===


def profile_outline(levels: np.ndarray, half_widths: np.ndarray) -> np.ndarray:
    """A symmetric outline (N, 2) of (u, v) from half widths at depths `levels` (top to bottom)."""
    right = np.stack([half_widths, levels], axis=1)
    left = np.stack([-half_widths[::-1], levels[::-1]], axis=1)
    return np.concatenate([right, left]).astype(np.float32)


def can_outline(height: float, half_width: float, lid: float, top_taper: float, neck: float) -> np.ndarray:
    """A can seen slightly from above: elliptic lid arc on top, tapered neck, rounded bottom."""
    angles = np.linspace(0, math.pi, 13)
    top_half = half_width * top_taper
    top = np.stack([top_half * np.cos(angles), lid - lid * np.sin(angles)], axis=1)[::-1]
    bottom_angles = np.linspace(0, math.pi, 9)
    bottom_half = half_width * 0.94
    bottom = np.stack([bottom_half * np.cos(bottom_angles), height - lid + lid * np.sin(bottom_angles)], axis=1)
    right = np.array([[top_half, lid], [half_width, lid + neck], [half_width, height - lid * 1.6]])
    left = right[::-1] * [-1, 1]
    # Clockwise from the top arc's right end: down the right side, the bottom arc, up the left.
    return np.concatenate([top[::-1], right, bottom, left]).astype(np.float32)


def cylinder_shading(u_normalised: np.ndarray, rng_values: tuple[float, float, float]) -> np.ndarray:
    """Diffuse shading of a vertical cylinder lit from one side, plus a specular stripe."""
    light, ambient, specular_position = rng_values
    diffuse = np.clip(np.cos((u_normalised - light) * math.pi / 2.2), 0, 1)
    specular = np.exp(-(((u_normalised - specular_position) / 0.12) ** 2))
    return ambient + (1 - ambient) * diffuse, specular


def as_rgb(color: np.ndarray) -> RGB:
    """An RGB array as a tuple of floats, to keep in a frozen design."""
    return tuple(float(channel) for channel in color)


def label_design(rng: np.random.Generator, weights: np.ndarray) -> LabelDesign:
    """A new printed label whose base colour is drawn with the palette `weights`."""
    base, second, third = pick_color(rng, weights), pick_color(rng), pick_color(rng)
    kind = str(rng.choice(["bands", "wave", "logo", "dots", "split"]))
    band = np.sort(rng.uniform(0.2, 0.8, 2))
    logo = (rng.uniform(-0.4, 0.4), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35))
    dots = rng.uniform([-0.7, 0.2], [0.7, 0.8], (rng.integers(2, 6), 2))
    frequency, phase = rng.uniform(3, 8), rng.uniform(0, 6)
    return LabelDesign(
        kind=kind,
        base=as_rgb(base),
        second=as_rgb(second),
        third=as_rgb(third),
        band=(float(band[0]), float(band[1])),
        logo=logo,
        dots=tuple((float(dot_u), float(dot_t)) for dot_u, dot_t in dots),
        frequency=frequency,
        phase=phase,
    )


def make_product(rng: np.random.Generator, class_id: int) -> ProductDesign:
    """A new product of a drink class: its label, colours and proportions.

    Soda cans are squat (aspect 1.5-2.1), juice cans slim and tall (2.2-3.2), water bottles slimmer
    still (2.6-4.2).

    Args:
        rng: numpy Generator. The product's own random stream.
        class_id: int. WATER_BOTTLE, SODA_CAN or JUICE_CAN.

    Returns:
        A `BottleDesign` for water bottles, a `CanDesign` for cans.
    """
    if class_id == WATER_BOTTLE:
        cap_height, neck_height = rng.uniform(0.05, 0.09), rng.uniform(0.04, 0.1)
        shoulder_height = rng.uniform(0.12, 0.25)
        label_top = rng.uniform(cap_height + neck_height + shoulder_height + 0.05, 0.55)
        has_label = rng.random() < 0.8
        return BottleDesign(
            aspect=rng.uniform(2.6, 4.2),
            cap_height=cap_height,
            neck_height=neck_height,
            shoulder_height=shoulder_height,
            cap_width=rng.uniform(0.38, 0.5),
            neck_width=rng.uniform(0.32, 0.42),
            tint=as_rgb(np.clip(0.5 * pick_color(rng, palette_weights((8, 11, 6, 4))) + 0.5 * BOTTLE_CLEAR, 0, 1)),
            alpha=rng.uniform(0.3, 0.65),
            cap_color=as_rgb(pick_color(rng, palette_weights((6, 11, 4, 0)))),
            label=label_design(rng, palette_weights((6, 8, 11))) if has_label else None,
            label_top=label_top,
            label_height=rng.uniform(0.15, 0.3),
            ridge_spacing=rng.uniform(0.08, 0.2),
        )
    if class_id == SODA_CAN:
        aspect, weights = rng.uniform(1.5, 2.1), palette_weights((0, 6, SILVER, 11, 13))
        top_taper, neck = rng.uniform(0.82, 0.9), rng.uniform(0.05, 0.09)
    else:
        aspect, weights = rng.uniform(2.2, 3.2), palette_weights((2, 3, 4, 5, 10))
        top_taper, neck = rng.uniform(0.7, 0.85), rng.uniform(0.06, 0.14)
    return CanDesign(
        class_id=class_id,
        aspect=aspect,
        top_taper=top_taper,
        neck=neck,
        lid=rng.uniform(0.12, 0.35),
        label=label_design(rng, weights),
        specular_strength=rng.uniform(0.1, 0.5),
        metal=as_rgb(PALETTE[SILVER] * rng.uniform(0.8, 1.1)),
    )


def product_catalogue(seed: int, products: int) -> dict[int, tuple[ProductDesign, ...]]:
    """The products of each drink class, made from the data set's seed alone.

    Product `index` of class `class_id` has its own random stream, `[seed, 1000 + class_id, index]`,
    apart from the scenes' `[seed, split_index, image_index]`: train and test, and every scene,
    share one catalogue.

    Args:
        seed: int. Data set seed.
        products: int. Products per class; 0 gives an empty catalogue (every drink a new design).

    Returns:
        {class id: its `products` designs}, or {} when `products` is 0.
    """
    if products == 0:
        return {}
    return {
        class_id: tuple(
            make_product(np.random.default_rng([seed, 1000 + class_id, index]), class_id) for index in range(products)
        )
        for class_id in (WATER_BOTTLE, SODA_CAN, JUICE_CAN)
    }


def make_can(rng: np.random.Generator, design: CanDesign, height: float) -> Item:
    """A soda or juice can of a product, with its own lighting.

    Args:
        rng: numpy Generator. The scene's stream, for this can's lighting.
        design: CanDesign. The product.
        height: float. The can's height in pixels.

    Returns:
        The can, not yet posed.
    """
    half_width = height / design.aspect / 2
    lid, neck, top_taper = half_width * design.lid, design.neck * height, design.top_taper
    outline = can_outline(height, half_width, lid, top_taper, neck)
    metal = np.array(design.metal, dtype=np.float32)
    shading = (rng.uniform(-0.6, 0.6), rng.uniform(0.35, 0.6), rng.uniform(-0.6, 0.6))

    def paint(u, v, under):
        u_normalised = np.clip(u / half_width, -1, 1)
        color = design.label.paint(u_normalised, (v - lid) / max(height - 2 * lid, 1))
        on_lid = (u / (half_width * top_taper)) ** 2 + ((v - lid) / lid) ** 2 < 1
        rim = (v > height - lid * 1.8) | ((v < lid + neck) & ~on_lid)
        color[rim] = metal
        color[on_lid] = metal * (0.75 + 0.2 * (v[on_lid] / (2 * lid)))[:, None]
        diffuse, specular = cylinder_shading(u_normalised, shading)
        color = color * diffuse[:, None] + design.specular_strength * specular[:, None]
        return color, np.ones(u.shape, dtype=np.float32)

    return Item(class_id=design.class_id, outline=outline, height=height, paint=paint, design=design)


def make_bottle(rng: np.random.Generator, design: BottleDesign, height: float) -> Item:
    """A water bottle of a product, with its own lighting: cap, neck, curved shoulders, ridged body,
    tinted see-through plastic.

    Args:
        rng: numpy Generator. The scene's stream, for this bottle's lighting.
        design: BottleDesign. The product.
        height: float. The bottle's height in pixels.

    Returns:
        The bottle, not yet posed.
    """
    half_width = height / design.aspect / 2
    cap_height, neck_height = design.cap_height * height, design.neck_height * height
    shoulder_end = cap_height + neck_height + design.shoulder_height * height
    cap_half, neck_half = half_width * design.cap_width, half_width * design.neck_width
    levels = np.concatenate(
        [
            [0, cap_height, cap_height + 1e-3],
            np.linspace(cap_height + neck_height, shoulder_end, 8),
            np.linspace(shoulder_end + 0.05 * height, height * 0.97, 6),
            [height],
        ]
    )
    shoulder = np.linspace(0, 1, 8) * math.pi / 2
    half_widths = np.concatenate(
        [
            [cap_half, cap_half, neck_half],
            neck_half + (half_width - neck_half) * np.sin(shoulder),
            np.full(6, half_width),
            [half_width * 0.9],
        ]
    )
    outline = profile_outline(levels, half_widths)
    tint, cap_color = np.array(design.tint, dtype=np.float32), np.array(design.cap_color, dtype=np.float32)
    label_top = design.label_top * height
    label_bottom = label_top + design.label_height * height
    ridges = design.ridge_spacing * height
    shading = (rng.uniform(-0.6, 0.6), rng.uniform(0.5, 0.75), rng.uniform(-0.6, 0.6))

    def paint(u, v, under):
        u_normalised = np.clip(u / half_width, -1, 1)
        diffuse, specular = cylinder_shading(u_normalised, shading)
        # Plastic refracts and darkens what lies behind it.
        color = tint * diffuse[:, None] * 0.9 + 0.5 * specular[:, None]
        opacity = np.full(u.shape, design.alpha, dtype=np.float32)
        opacity += 0.25 * (np.sin(v / ridges * 2 * math.pi) > 0.8)
        opacity += 0.3 * np.abs(u_normalised) ** 4
        is_cap = v <= cap_height
        color[is_cap] = cap_color * diffuse[is_cap, None]
        opacity[is_cap] = 1
        if design.label is not None:
            on_label = (v >= label_top) & (v <= label_bottom)
            label_t = (v[on_label] - label_top) / (label_bottom - label_top)
            color[on_label] = design.label.paint(u_normalised[on_label], label_t) * diffuse[on_label, None]
            opacity[on_label] = 1
        return color, np.clip(opacity, 0, 1)

    return Item(class_id=WATER_BOTTLE, outline=outline, height=height, paint=paint, design=design)


def make_mug(rng: np.random.Generator, height: float) -> Item:
    """A mug or cup (background): a can-like body with a dark opening and a handle."""
    half_width = height / rng.uniform(0.8, 1.4) / 2
    lid = half_width * rng.uniform(0.15, 0.4)
    flare = rng.uniform(1.0, 1.2)
    body = can_outline(height, half_width, lid, flare, 0.02 * height)
    side = 1 if rng.random() < 0.5 else -1
    angles = np.linspace(-math.pi / 2, math.pi / 2, 10)
    reach, span = half_width * rng.uniform(0.45, 0.7), height * rng.uniform(0.25, 0.35)
    center_v, thickness = height * rng.uniform(0.35, 0.5), half_width * 0.18
    outer = np.stack([side * (half_width * 0.9 + reach * np.cos(angles)), center_v + span * np.sin(angles)], 1)
    inner = np.stack(
        [side * (half_width * 0.9 + (reach - thickness) * np.cos(angles)),
         center_v + (span - thickness) * np.sin(angles)], 1
    )[::-1]
    handle = np.concatenate([outer, inner]).astype(np.float32)
    color = pick_color(rng, palette_weights((11, 0, 6, 13)))
    inside = pick_color(rng, palette_weights((13, 14)))
    design = label_design(rng, palette_weights((11,))) if rng.random() < 0.4 else None
    shading = (rng.uniform(-0.6, 0.6), rng.uniform(0.4, 0.6), rng.uniform(-0.6, 0.6))

    def paint(u, v, under):
        u_normalised = np.clip(u / half_width, -1, 1)
        diffuse, specular = cylinder_shading(u_normalised, shading)
        base = np.broadcast_to(color, u.shape + (3,)).copy()
        if design is not None:
            base = design.paint(u_normalised, v / height)
        opening = (u / (half_width * flare)) ** 2 + ((v - lid) / lid) ** 2 < 0.8
        base[opening] = inside * 0.6
        return base * diffuse[:, None] + 0.3 * specular[:, None], np.ones(u.shape, np.float32)

    return Item(class_id=0, outline=[body, handle], height=height, paint=paint)


def make_glass(rng: np.random.Generator, height: float) -> Item:
    """A drinking glass or jar (background): see-through like a bottle, without neck or cap."""
    half_width = height / rng.uniform(1.2, 2.4) / 2
    lid = half_width * rng.uniform(0.15, 0.35)
    outline = can_outline(height, half_width * rng.uniform(0.8, 0.95), lid, rng.uniform(1.0, 1.2), 0.01 * height)
    tint = np.clip(0.4 * pick_color(rng) + 0.6 * np.array([0.85, 0.9, 0.92]), 0, 1)
    fill_level = rng.uniform(0.2, 1.0) * height
    drink = pick_color(rng)
    alpha = rng.uniform(0.25, 0.5)
    shading = (rng.uniform(-0.6, 0.6), rng.uniform(0.6, 0.8), rng.uniform(-0.6, 0.6))

    def paint(u, v, under):
        u_normalised = np.clip(u / half_width, -1, 1)
        diffuse, specular = cylinder_shading(u_normalised, shading)
        color = np.where((v > height - fill_level)[:, None], drink, tint) * diffuse[:, None] + 0.5 * specular[:, None]
        opacity = np.where(v > height - fill_level, 0.8, alpha) + 0.3 * np.abs(u_normalised) ** 4
        return color, np.clip(opacity, 0, 1).astype(np.float32)

    return Item(class_id=0, outline=outline, height=height, paint=paint)


def make_box(rng: np.random.Generator, height: float) -> Item:
    """A carton, box or standing book (background): front face, lit top and side faces."""
    width = height * rng.uniform(0.3, 2.0)
    depth = width * rng.uniform(0.1, 0.4)
    slant = depth * rng.uniform(-1, 1)
    front = np.array([[-width / 2, depth], [width / 2, depth], [width / 2, height], [-width / 2, height]])
    top = np.array([[-width / 2, depth], [-width / 2 + slant, 0], [width / 2 + slant, 0], [width / 2, depth]])
    design = label_design(rng, np.ones(len(PALETTE)))
    top_color = pick_color(rng) * 0.5 + 0.4
    light = rng.uniform(0.6, 1.0)

    def paint(u, v, under):
        color = design.paint(np.clip(2 * u / width, -1, 1), np.clip((v - depth) / (height - depth), 0, 1))
        color[v < depth] = top_color
        return color * light, np.ones(u.shape, np.float32)

    return Item(class_id=0, outline=[front.astype(np.float32), top.astype(np.float32)], height=height, paint=paint)


def make_fruit(rng: np.random.Generator, height: float) -> Item:
    """An orange, apple or lemon (background): a shaded disk in juice-label colours."""
    radius = height / 2
    angles = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    squash = rng.uniform(0.85, 1.0)
    outline = np.stack([radius * np.cos(angles), radius + radius * squash * np.sin(angles)], 1).astype(np.float32)
    color = pick_color(rng, palette_weights((0, 2, 3, 4, 5), boost=4))
    light = rng.uniform(-0.5, 0.5, 2)

    def paint(u, v, under):
        x, y = u / radius, (v - radius) / radius
        shade = np.clip(1 - 0.5 * ((x - light[0]) ** 2 + (y - light[1]) ** 2), 0.3, 1)
        return color * shade[:, None], np.ones(u.shape, np.float32)

    return Item(class_id=0, outline=outline, height=height, paint=paint)


def make_flat(rng: np.random.Generator, height: float, width: float) -> Item:
    """A flat thing lying on the table (background): a plate, a sheet of paper or a cable."""
    kind = rng.choice(["plate", "paper", "cable"])
    color = pick_color(rng, palette_weights((11, 15, 13)))
    if kind == "plate":
        radius_u = rng.uniform(0.1, 0.25) * width
        radius_v = radius_u * rng.uniform(0.25, 0.45)
        angles = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        outline = np.stack([radius_u * np.cos(angles), radius_v * (1 + np.sin(angles))], 1)

        def paint(u, v, under):
            inner = (u / (0.7 * radius_u)) ** 2 + ((v - radius_v) / (0.7 * radius_v)) ** 2 < 1
            return color * np.where(inner, 0.9, 1.0)[:, None], np.ones(u.shape, np.float32)

        return Item(0, outline.astype(np.float32), 2 * radius_v, paint, shadow=False)
    if kind == "paper":
        size = rng.uniform(0.1, 0.3) * width
        outline = np.array([[-size, 0], [size * 0.9, size * 0.05], [size, size * 0.5], [-size * 0.95, size * 0.45]])
        frequency = rng.uniform(0.3, 0.8)

        def paint(u, v, under):
            lines = (np.sin(v * frequency) > 0.9)[:, None]
            return np.where(lines, color * 0.5, color), np.ones(u.shape, np.float32)

        return Item(0, outline.astype(np.float32), size * 0.5, paint, shadow=False)
    length = rng.uniform(0.3, 1.0) * width
    thickness = max(1.5, rng.uniform(0.004, 0.012) * width)
    t = np.linspace(-0.5, 0.5, 16)
    path_v = height * 0.15 * np.sin(t * rng.uniform(3, 9) + rng.uniform(0, 6))
    centre = np.stack([t * length, path_v], 1)
    outline = np.concatenate([centre + [0, thickness], centre[::-1] - [0, thickness]])

    def paint(u, v, under):
        return np.broadcast_to(color * 0.8, u.shape + (3,)), np.ones(u.shape, np.float32)

    return Item(0, outline.astype(np.float32), 0.0, paint, shadow=False)


# === Scene ===


def local_to_image(points: np.ndarray, item: Item) -> tuple[np.ndarray, np.ndarray]:
    """Image (x, y) of local (u, v) points: the item's bottom centre sits at its anchor."""
    cos_angle, sin_angle = math.cos(item.angle), math.sin(item.angle)
    u, v = points[:, 0], points[:, 1] - item.height
    return item.anchor_x + cos_angle * u - sin_angle * v, item.anchor_y + sin_angle * u + cos_angle * v


def draw_item(canvas: np.ndarray, instances: np.ndarray, item: Item, instance_id: int) -> None:
    """Paints an item over the canvas and marks its pixels in the instance map (0 for distractors)."""
    height, width = instances.shape
    polygons = item.outline if isinstance(item.outline, list) else [item.outline]
    mask = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        x, y = local_to_image(polygon, item)
        rows, cols = draw.polygon(y, x, shape=(height, width))
        mask[rows, cols] = True
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return
    if item.shadow:
        x, y = local_to_image(np.array([[0.0, item.height]]), item)
        radius_x = max(2.0, float(np.ptp(local_to_image(polygons[0], item)[0])) * 0.7)
        shadow_rows, shadow_cols = draw.ellipse(y[0], x[0] + radius_x * 0.3, radius_x * 0.25, radius_x,
                                                shape=(height, width))
        canvas[shadow_rows, shadow_cols] *= 0.7
    cos_angle, sin_angle = math.cos(item.angle), math.sin(item.angle)
    delta_x, delta_y = cols - item.anchor_x, rows - item.anchor_y
    u = cos_angle * delta_x + sin_angle * delta_y
    v = -sin_angle * delta_x + cos_angle * delta_y + item.height
    under = canvas[rows, cols]
    color, opacity = item.paint(u.astype(np.float32), v.astype(np.float32), under)
    canvas[rows, cols] = opacity[:, None] * color + (1 - opacity[:, None]) * under
    instances[rows, cols] = instance_id


@dataclasses.dataclass(frozen=True)
class SceneOptions:
    """What a scene may hold.

    Attributes:
        drink_classes: int. Drinks are drawn from classes 1 .. drink_classes
            (1: water bottles only; 3: all three, the default).
        drink_size: tuple of float. Range of a drink's height as a fraction
            of the image height.
        catalogue: dict. The products of each drink class, from
            `product_catalogue`: a drink is one of its class's products, picked
            uniformly. A drink of a class missing from it is a new design.
            Defaults to {}: every drink a new design.
    """

    drink_classes: int = 3
    drink_size: tuple[float, float] = (0.22, 0.6)
    catalogue: dict[int, tuple[ProductDesign, ...]] = dataclasses.field(default_factory=dict)


def scene_items(rng: np.random.Generator, height: int, width: int, options: SceneOptions) -> list[Item]:
    """The drinks and distractors of one scene, posed and sorted far to near."""
    items = []
    num_drinks = 0
    if rng.random() >= EMPTY_SCENE_PROBABILITY:
        num_drinks = int(rng.choice(np.arange(1, MAX_DRINKS + 1), p=DRINK_COUNT_PROBABILITIES))
    for _ in range(num_drinks):
        class_id = int(rng.integers(1, options.drink_classes + 1))
        size = rng.uniform(*options.drink_size) * height
        products = options.catalogue.get(class_id)
        design = products[rng.integers(len(products))] if products else make_product(rng, class_id)
        if class_id == WATER_BOTTLE:
            items.append(make_bottle(rng, design, size * 1.1))
        else:
            items.append(make_can(rng, design, size * (0.8 if class_id == SODA_CAN else 1.0)))
    for _ in range(rng.integers(1, 6)):
        kind = rng.choice(["mug", "glass", "box", "fruit"], p=[0.3, 0.25, 0.3, 0.15])
        size = rng.uniform(0.12, 0.45) * height
        maker = {"mug": make_mug, "glass": make_glass, "box": make_box, "fruit": make_fruit}[kind]
        items.append(maker(rng, size * (0.4 if kind == "fruit" else 1.0)))
    for item in items:
        item.anchor_x = rng.uniform(-0.05, 1.05) * width
        item.anchor_y = rng.uniform(max(item.height * 0.9, 0.3 * height), 1.12 * height)
        item.angle = rng.normal(0, 0.12)
    items.sort(key=lambda item: item.anchor_y)
    flats = []
    for _ in range(rng.integers(0, 4)):
        flat = make_flat(rng, height, width)
        flat.anchor_x, flat.anchor_y = rng.uniform(0, width), rng.uniform(0.4, 1.1) * height
        flat.angle = rng.uniform(-0.5, 0.5)
        flats.append(flat)
    return flats + items


def visible_regions(instances: np.ndarray, classes: dict[int, int], label_map: np.ndarray) -> list[via.Region]:
    """Traces the visible outline(s) of each drink in the instance map as integer polygons.

    Fragments too small to annotate are cleared from `label_map` (they stay background), so the
    label map and the polygons agree.

    Args:
        instances: int array (H, W). Instance id of the front-most drink per pixel, 0 elsewhere.
        classes: dict. Class id of each instance id.
        label_map: uint8 array (H, W). Class per pixel; updated in place.

    Returns:
        Regions in drawing order (far to near), one per visible fragment.
    """
    height, width = instances.shape
    min_pixels = max(8, int(MIN_FRAGMENT_SHARE * height * width))
    regions = []
    for instance_id in sorted(classes):
        mask = instances == instance_id
        components = measure.label(mask, connectivity=1)
        for component in measure.regionprops(components):
            top, left, bottom, right = component.bbox
            if component.area < min_pixels:
                label_map[top:bottom, left:right][component.image] = 0
                continue
            # A level just under 1 hugs the centres of the object's boundary pixels, so rounding
            # gives integer vertices that skimage.draw.polygon fills back to the same pixels.
            padded = np.pad(component.image.astype(np.float32), 1)
            for contour in measure.find_contours(padded, 0.999):
                points = np.round(contour).astype(int) - 1
                signed_area = 0.5 * np.sum(points[:-1, 1] * points[1:, 0] - points[1:, 1] * points[:-1, 0])
                if signed_area <= 0 and len(contour) > 4:
                    continue  # a hole: VIA polygons have none, the outer polygon covers it
                # Dropping the middle of straight runs first keeps Douglas-Peucker fast.
                incoming = np.diff(points, axis=0, prepend=points[-2:-1])
                outgoing = np.diff(points, axis=0, append=points[1:2])
                corners = np.any(incoming != outgoing, axis=1)
                corners[0] = True
                points = measure.approximate_polygon(points[corners], tolerance=0.6)
                points = points[np.any(np.diff(points, axis=0, prepend=points[-1:] - 1) != 0, axis=1)]
                if len(points) > 1 and np.array_equal(points[0], points[-1]):
                    points = points[:-1]
                ys = np.clip(points[:, 0] + top, 0, height - 1)
                xs = np.clip(points[:, 1] + left, 0, width - 1)
                polygon = via.Polygon(tuple(float(x) for x in xs), tuple(float(y) for y in ys))
                regions.append(via.Region(polygon, classes[instance_id], "polygon"))
    return regions


def render_scene(rng: np.random.Generator, height: int, width: int, options: SceneOptions = SceneOptions()) -> Scene:
    """Draws one scene and the VIA polygons of its visible drinks.

    Args:
        rng: numpy Generator. The scene's own random stream.
        height: int. Image height.
        width: int. Image width.
        options: SceneOptions. Drink classes, sizes and products. Defaults to
            all three classes at the default sizes, every drink a new design.

    Returns:
        The `Scene` (image before JPEG compression).
    """
    canvas = background(rng, height, width)
    instances = np.zeros((height, width), dtype=np.int16)
    classes = {}
    for item in scene_items(rng, height, width, options):
        instance_id = 0
        if item.class_id:
            instance_id = len(classes) + 1
            classes[instance_id] = item.class_id
        draw_item(canvas, instances, item, instance_id)
    gradient = np.linspace(-1, 1, width, dtype=np.float32)[None, :] * np.float32(rng.uniform(-0.2, 0.2))
    lighting = (1 + 0.25 * smooth_noise(rng, height, width, 3) + gradient) * np.float32(rng.uniform(0.75, 1.2))
    canvas = canvas * lighting[..., None]
    canvas = filters.gaussian(canvas, sigma=rng.uniform(0.3, 1.1) * max(height, width) / 640, channel_axis=-1)
    canvas = canvas + rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(0.005, 0.035))
    image = np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
    lookup = np.zeros(len(classes) + 1, dtype=np.uint8)
    for instance_id, class_id in classes.items():
        lookup[instance_id] = class_id
    label_map = lookup[instances]
    regions = visible_regions(instances, classes, label_map)
    return Scene(image=image, label_map=label_map, regions=regions)


# === Data set ===


def image_filename(split_index: int, index: int) -> str:
    """Book-like 7-digit names: train images start with 0, test images with 1."""
    return f"{split_index}{index:06d}.jpg"


def write_split(
    output: str,
    split_index: int,
    count: int,
    height: int,
    width: int,
    seed: int,
    progress: keras.utils.Progbar,
    options: SceneOptions,
) -> list[via.ImageEntry]:
    """Renders and saves one split's images; returns their VIA entries.

    Args:
        output: str. Folder for the JPEG images.
        split_index: int. 0 for train, 1 for test: part of every scene's seed and file name.
        count: int. Number of images.
        height: int. Image height.
        width: int. Image width.
        seed: int. Data set seed.
        progress: keras.utils.Progbar. Advanced once per image.
        options: SceneOptions. Drink classes, sizes and products.

    Returns:
        One `via.ImageEntry` per image, with its visible polygons.
    """
    entries = []
    for index in range(count):
        rng = np.random.default_rng([seed, split_index, index])
        scene = render_scene(rng, height, width, options)
        filename = image_filename(split_index, index)
        path = os.path.join(output, filename)
        matplotlib.image.imsave(path, scene.image, pil_kwargs={"quality": int(rng.integers(60, 91))})
        entries.append(via.ImageEntry(filename, os.path.getsize(path), tuple(scene.regions)))
        progress.add(1)
    return entries


def generate(
    output: str,
    num_train: int,
    num_test: int,
    height: int,
    width: int,
    seed: int,
    options: SceneOptions | None = None,
) -> dict[str, list]:
    """Writes the images and the two VIA projects.

    Args:
        output: str. Output folder (created).
        num_train: int. Training images.
        num_test: int. Test images.
        height: int. Image height.
        width: int. Image width.
        seed: int. Data set seed; the same seed gives the same files.
        options: SceneOptions. Drink classes, sizes and products. Defaults to
            the book-like set: all three classes at the default sizes, and
            DEFAULT_PRODUCTS products per class made from `seed`.

    Returns:
        {json file name: list of via.ImageEntry}.
    """
    if options is None:
        options = SceneOptions(catalogue=product_catalogue(seed, DEFAULT_PRODUCTS))
    os.makedirs(output, exist_ok=True)
    progress = keras.utils.Progbar(num_train + num_test, unit_name="image")
    splits = {}
    for split_index, (json_name, count) in enumerate(((TRAIN_VIA_JSON, num_train), (TEST_VIA_JSON, num_test))):
        entries = write_split(output, split_index, count, height, width, seed, progress, options)
        with open(os.path.join(output, json_name), "w", encoding="utf-8") as file:
            json.dump(via.to_via2(entries), file)
        splits[json_name] = entries
    return splits


# === Command line ===


def drink_size(text: str) -> tuple[float, float]:
    """Parses --drink-size MIN,MAX (fractions of the image height, 0 < MIN <= MAX <= 1.5)."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX such as 0.1,0.3; received {text!r}") from None
    if not 0 < low <= high <= 1.5:
        raise argparse.ArgumentTypeError(f"need 0 < MIN <= MAX <= 1.5; received {text!r}")
    return low, high


def product_count(text: str) -> int:
    """Parses --products K (a whole number, K >= 0)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number such as 2; received {text!r}") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"need K >= 0 (0: every drink a new design); received {text!r}")
    return count


def build_parser() -> argparse.ArgumentParser:
    """The generator's flags."""
    parser = argparse.ArgumentParser(
        description="Write a synthetic drinks-like data set in the book's format: JPEG images and "
        "VIA 2.x projects segmentation_train.json / segmentation_test.json."
    )
    parser.add_argument("--output", default="dataset/synthetic", metavar="DIR",
                        help="output folder (default: %(default)s)")
    parser.add_argument("--num-train", type=int, default=1000, metavar="N",
                        help="training images (default: %(default)s)")
    parser.add_argument("--num-test", type=int, default=50, metavar="N", help="test images (default: %(default)s)")
    parser.add_argument("--height", type=int, default=480, metavar="H", help="image height (default: %(default)s)")
    parser.add_argument("--width", type=int, default=640, metavar="W", help="image width (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default: %(default)s)")
    parser.add_argument(
        "--drink-classes", type=int, choices=(1, 2, 3), default=3, metavar="K",
        help="draw drinks from the first K classes only (1: water bottles; 2: and soda cans) (default: %(default)s)",
    )
    parser.add_argument(
        "--drink-size", type=drink_size, default=SceneOptions.drink_size, metavar="MIN,MAX",
        help="range of a drink's height as a fraction of the image height (default: 0.22,0.6)",
    )
    parser.add_argument(
        "--products", type=product_count, default=DEFAULT_PRODUCTS, metavar="K",
        help="products per drink class, each a fixed label, colours and proportions seen in every scene, "
        "like the book's few brands; 0: every drink a new design, the harder set (default: %(default)s)",
    )
    parser.add_argument(
        "--check", action="store_true",
        help=f"score colour-only per-pixel classifiers (fit on train, book's mIoU on test); a fair "
        f"data set keeps them at or below {CHECK_THRESHOLD}, else the exit status is {EXIT_CHECK_FAILED} "
        f"(default: %(default)s)",
    )
    parser.add_argument(
        "--show", action="store_true",
        help="save <output>/contact_sheet.png: training images with their outlines (default: %(default)s)",
    )
    return parser


@kept_process_state()
def main(argv: list[str] | None = None) -> int:
    """Generates the data set, then runs --check and --show.

    Returns:
        The exit status: 0, or EXIT_CHECK_FAILED when --check finds a colour-only classifier above
        CHECK_THRESHOLD.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_train < 1 or args.num_test < 1:
        parser.error(f"--num-train and --num-test must be at least 1; received {args.num_train}, {args.num_test}")
    if args.height < 32 or args.width < 32:
        parser.error(f"--height and --width must be at least 32; received {args.height}x{args.width}")
    options = SceneOptions(
        drink_classes=args.drink_classes,
        drink_size=args.drink_size,
        catalogue=product_catalogue(args.seed, args.products),
    )
    splits = generate(args.output, args.num_train, args.num_test, args.height, args.width, args.seed, options)
    for json_name, entries in splits.items():
        per_class = np.bincount([r.class_id for e in entries for r in e.regions], minlength=len(DRINKS_CLASS_NAMES))
        empty = sum(not entry.regions for entry in entries)
        counts = ", ".join(f"{per_class[c]} {DRINKS_CLASS_NAMES[c]}" for c in range(1, len(DRINKS_CLASS_NAMES)))
        print(f"{os.path.join(args.output, json_name)}: {len(entries)} images, regions: {counts}; "
              f"{empty} with no drinks")
    status = 0
    if args.check:
        scores = color_baseline(args.output)
        for name, score in scores.items():
            print(f"Colour-only baseline, {name}: test mIoU {score:.3f}")
        worst = max(scores.values())
        passed = worst <= CHECK_THRESHOLD
        verdict, comparison = ("PASS", "<=") if passed else ("FAIL", ">")
        print(f"{verdict}: best colour-only mIoU {worst:.3f} {comparison} {CHECK_THRESHOLD}")
        status = 0 if passed else EXIT_CHECK_FAILED
    if args.show:
        path = os.path.join(args.output, "contact_sheet.png")
        contact_sheet(args.output, splits[TRAIN_VIA_JSON], path)
        print(f"Contact sheet saved to {path}")
    return status

