"""VGG Image Annotator (VIA) project files: reading, validating, rasterising.

Section 12.4 of the book annotates the drinks data set with VIA and turns each image's polygons into
a segmentation mask (`utils/generate_gt_segmentation.py`). This module holds the part of that tool
that knows the file format, so that the converter and the synthetic data generator share it:

- `load_project` reads a VIA 2.x project (images under `_via_img_metadata`, `regions` a list) or a
  VIA 1.x one (images at the top level, `regions` a dict keyed "0", "1", ...) into plain records,
  checking every field it touches. Every problem raises `ViaError`, whose message is one line naming
  the file, the image entry and region, what is wrong and how to fix it.
- `rasterize` paints the regions of one image into a class-index map with `skimage.draw`, later
  regions over earlier ones, clipped to the image.
- `to_via2` writes records back as a VIA 2.x project, as the synthetic generator does.

Shapes follow VIA's `shape_attributes`: `polygon` and `polyline` (closed as a polygon) take
`all_points_x`/`all_points_y`; `rect` takes `x`, `y`, `width`, `height` and covers the pixels
`x .. x + width - 1`; `circle` takes `cx`, `cy`, `r`; `ellipse` takes `cx`, `cy`, `rx`, `ry` and an
optional `theta` (radians, clockwise on screen as VIA draws it). `point` regions carry no area and are
skipped with a warning. Polygon vertices and centres are pixel-centre coordinates, as in
`skimage.draw`.
"""

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence

import numpy as np
from skimage import draw

from segmentation.errors import DatasetError

logger = logging.getLogger(__name__)

SHAPE_NAMES = ("polygon", "polyline", "rect", "circle", "ellipse", "point")
VIA2_METADATA_KEY = "_via_img_metadata"
DEFAULT_CLASS_ATTRIBUTE = "Name"
# Coordinates beyond this are surely corrupt; refusing them keeps scaling finite.
MAX_COORDINATE = 1e7
# Vertices used when a rotated ellipse must become a polygon (for an anisotropic rescale).
ELLIPSE_POLYGON_VERTICES = 90


class ViaError(DatasetError, ValueError):
    """A VIA project file that cannot be used; the message is one line naming file and entry."""

    def __init__(self, message: str):
        # One line whatever the file or entry names contain.
        super().__init__(" ".join(str(message).split()))


@dataclasses.dataclass(frozen=True)
class Polygon:
    """A closed polygon in pixel-centre coordinates (VIA `polygon` and `polyline`)."""

    points_x: tuple[float, ...]
    points_y: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle covering columns `x .. x + width - 1` and rows likewise."""

    x: float
    y: float
    width: float
    height: float


@dataclasses.dataclass(frozen=True)
class Circle:
    """A disk of `radius` around a pixel-centre coordinate."""

    center_x: float
    center_y: float
    radius: float


@dataclasses.dataclass(frozen=True)
class Ellipse:
    """An ellipse; `theta` rotates the x semi-axis clockwise on screen, in radians."""

    center_x: float
    center_y: float
    radius_x: float
    radius_y: float
    theta: float = 0.0


Shape = Polygon | Rect | Circle | Ellipse


@dataclasses.dataclass(frozen=True)
class Region:
    """One annotated region: its geometry, its class id and the VIA shape name it came from."""

    shape: Shape
    class_id: int
    shape_name: str


@dataclasses.dataclass(frozen=True)
class ImageEntry:
    """One image of a project: file name (relative to the data path), size in bytes, regions."""

    filename: str
    size: int
    regions: tuple[Region, ...]


@dataclasses.dataclass(frozen=True)
class Project:
    """A parsed VIA project: where it came from, its VIA major version and its images."""

    source: str
    version: int
    images: tuple[ImageEntry, ...]


def load_project(
    path: str | os.PathLike,
    num_classes: int = 4,
    class_attribute: str = DEFAULT_CLASS_ATTRIBUTE,
    class_names: Sequence[str] | None = None,
    default_class: str | None = None,
) -> Project:
    """Reads and validates a VIA 1.x or 2.x project file.

    Args:
        path: str or path. The VIA JSON file.
        num_classes: int. Number of classes including background (id 0); region classes must be
            ids 1 .. num_classes - 1. Defaults to 4 (the book's drinks).
        class_attribute: str. The region attribute holding the class. Defaults to "Name".
        class_names: list of str or None. Names of classes 1, 2, ...; a region may then give its
            class by name (case-insensitive) as well as by number. Defaults to None.
        default_class: str or None. Class (number or name) of regions without the class
            attribute; None makes such regions an error. Defaults to None.

    Returns:
        The `Project`, images in file order and regions in drawing order.

    Raises:
        ViaError: the file is unreadable, not JSON, not a VIA project, or an entry is malformed.
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as file:
            data = json.load(file)
    except OSError as error:
        raise ViaError(f"{source}: cannot read the file ({error.strerror or error}); check the path") from None
    except UnicodeDecodeError:
        raise ViaError(f"{source}: not UTF-8 text; give a VIA project saved as JSON") from None
    except json.JSONDecodeError as error:
        raise ViaError(
            f"{source}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
            "export the project again from VIA"
        ) from None
    except RecursionError:
        raise ViaError(f"{source}: JSON nested too deeply to be a VIA project") from None
    return parse_project(
        data,
        source=source,
        num_classes=num_classes,
        class_attribute=class_attribute,
        class_names=class_names,
        default_class=default_class,
    )


def parse_project(
    data: object,
    source: str = "<json>",
    num_classes: int = 4,
    class_attribute: str = DEFAULT_CLASS_ATTRIBUTE,
    class_names: Sequence[str] | None = None,
    default_class: str | None = None,
) -> Project:
    """Validates decoded VIA JSON (see `load_project` for the arguments).

    Args:
        data: object. What `json.load` returned.
        source: str. Name used in error messages. Defaults to "<json>".
        num_classes: int. See `load_project`.
        class_attribute: str. See `load_project`.
        class_names: list of str or None. See `load_project`.
        default_class: str or None. See `load_project`.

    Returns:
        The `Project`.

    Raises:
        ViaError: on any malformed field.
    """
    if not isinstance(num_classes, int) or not 2 <= num_classes <= 256:
        raise ViaError(f"{source}: num_classes must be an integer in 2..256; received {num_classes!r}")
    names = tuple(name.casefold() for name in class_names) if class_names else ()
    default_id = None
    if default_class is not None:
        default_id = _resolve_class(default_class, num_classes, names)
        if isinstance(default_id, str):
            raise ViaError(f"{source}: default class {default_class!r} is invalid: {default_id}")
    if not isinstance(data, dict):
        raise ViaError(
            f"{source}: not a VIA project (top level is a JSON {type(data).__name__}, expected an "
            "object); save the project from VIA with 'Project > Save'"
        )
    if VIA2_METADATA_KEY in data:
        version, entries = 2, data[VIA2_METADATA_KEY]
        if not isinstance(entries, dict):
            raise ViaError(f"{source}: '{VIA2_METADATA_KEY}' is not a JSON object; the file is damaged")
    else:
        version, entries = 1, data
        if not entries or not all(isinstance(entry, dict) and "filename" in entry for entry in entries.values()):
            raise ViaError(
                f"{source}: not a VIA project (no '{VIA2_METADATA_KEY}' key, and the top-level "
                "entries are not VIA 1.x image records with a 'filename'); give a VIA 1.x or 2.x "
                "project file"
            )
    images = []
    seen = {}
    for key, entry in entries.items():
        image = _parse_image(entry, key, source, num_classes, class_attribute, names, default_id)
        if image.filename in seen:
            raise ViaError(
                f"{source}: image {image.filename!r} is listed twice (entries {seen[image.filename]!r} "
                f"and {key!r}); merge its regions into one entry"
            )
        seen[image.filename] = key
        images.append(image)
    return Project(source=source, version=version, images=tuple(images))


def _parse_image(entry, key, source, num_classes, class_attribute, names, default_id) -> ImageEntry:
    """Validates one image entry of a VIA project."""
    if not isinstance(entry, dict):
        raise ViaError(f"{source}: entry {key!r} is a JSON {type(entry).__name__}, expected an image object")
    filename = entry.get("filename")
    if not isinstance(filename, str) or not filename or "\x00" in filename:
        raise ViaError(f"{source}: entry {key!r} has no valid 'filename'; give the image file name")
    size = entry.get("size")
    size = size if isinstance(size, int) and not isinstance(size, bool) else -1
    raw_regions = entry.get("regions", [])
    if isinstance(raw_regions, dict):
        try:
            raw_regions = [raw_regions[k] for k in sorted(raw_regions, key=int)]
        except ValueError:
            raw_regions = list(raw_regions.values())
    if not isinstance(raw_regions, list):
        raise ViaError(f"{source}: image {filename!r}: 'regions' must be a list (VIA 2) or an object (VIA 1)")
    regions = []
    for index, raw_region in enumerate(raw_regions):
        where = f"{source}: image {filename!r} region {index}"
        region = _parse_region(raw_region, where, num_classes, class_attribute, names, default_id)
        if region is not None:
            regions.append(region)
    return ImageEntry(filename=filename, size=size, regions=tuple(regions))


def _parse_region(raw_region, where, num_classes, class_attribute, names, default_id) -> Region | None:
    """Validates one region; returns None for a `point`, which has no area."""
    if not isinstance(raw_region, dict):
        raise ViaError(f"{where}: a region must be a JSON object, not a {type(raw_region).__name__}")
    attributes = raw_region.get("shape_attributes")
    if not isinstance(attributes, dict):
        raise ViaError(f"{where}: no 'shape_attributes' object; draw the region again in VIA")
    shape_name = attributes.get("name")
    if shape_name not in SHAPE_NAMES:
        raise ViaError(f"{where}: unknown shape {shape_name!r}; expected one of {', '.join(SHAPE_NAMES)}")
    if shape_name == "point":
        logger.warning("%s: 'point' regions have no area and are skipped", where)
        return None
    shape = _parse_shape(shape_name, attributes, where)
    region_attributes = raw_region.get("region_attributes", {})
    if not isinstance(region_attributes, dict):
        raise ViaError(f"{where}: 'region_attributes' must be a JSON object")
    value = region_attributes.get(class_attribute)
    if value is None or value == "" or value == {}:
        if default_id is None:
            raise ViaError(
                f"{where}: no class in region attribute {class_attribute!r}; set it in VIA, choose "
                "another attribute with --class-attribute, or give --default-class"
            )
        return Region(shape=shape, class_id=default_id, shape_name=shape_name)
    class_id = _resolve_class(value, num_classes, names)
    if isinstance(class_id, str):
        raise ViaError(f"{where}: {class_attribute} {_short(value)}: {class_id}")
    return Region(shape=shape, class_id=class_id, shape_name=shape_name)


def _resolve_class(value: object, num_classes: int, names: tuple[str, ...]) -> int | str:
    """Maps a class attribute value to an id; returns an error text (str) when it cannot."""
    if isinstance(value, dict):
        # VIA checkbox and dropdown attributes store {option: true}.
        chosen = [option for option, selected in value.items() if selected]
        if len(chosen) != 1:
            return "a checkbox attribute must have exactly one option ticked"
        value = chosen[0]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return f"a class must be a number or a name, not a JSON {type(value).__name__}"
    if isinstance(value, str):
        text = value.strip()
        if text.casefold() in names:
            return names.index(text.casefold()) + 1
        try:
            value = float(text)
        except ValueError:
            known = f"one of {', '.join(names)}" if names else "a class number, or give --classes to use names"
            return f"unknown class name; expected {known}"
    if not math.isfinite(value) or value != int(value):
        return "a class number must be a whole number"
    class_id = int(value)
    if not 1 <= class_id < num_classes:
        return f"class id {class_id} is out of range; expected 1..{num_classes - 1} (0 is background)"
    return class_id


def _short(value: object) -> str:
    """A one-line, bounded repr of a JSON value for error messages."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(attributes: dict, key: str, where: str, minimum: float | None = None) -> float:
    """Reads one finite numeric shape attribute."""
    if key not in attributes:
        raise ViaError(f"{where}: {attributes['name']} has no {key!r}; draw the region again in VIA")
    value = attributes[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ViaError(f"{where}: {key!r} must be a number, not {_short(value)}")
    value = float(value)
    if not math.isfinite(value) or abs(value) > MAX_COORDINATE:
        raise ViaError(f"{where}: {key!r} must be a finite coordinate within +-{MAX_COORDINATE:g}, not {value}")
    if minimum is not None and value < minimum:
        raise ViaError(f"{where}: {key!r} must be >= {minimum:g}, not {value:g}")
    return value


def _points(attributes: dict, key: str, where: str) -> tuple[float, ...]:
    """Reads one coordinate list of a polygon or polyline."""
    if key not in attributes:
        raise ViaError(f"{where}: {attributes['name']} has no {key!r}; draw the region again in VIA")
    values = attributes[key]
    if not isinstance(values, list) or not values:
        raise ViaError(f"{where}: {key!r} must be a non-empty list of numbers")
    points = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ViaError(f"{where}: {key!r} holds {_short(value)}, expected only numbers")
        if not math.isfinite(value) or abs(value) > MAX_COORDINATE:
            raise ViaError(f"{where}: {key!r} holds {value}, expected finite coordinates")
        points.append(float(value))
    return tuple(points)


def _parse_shape(shape_name: str, attributes: dict, where: str) -> Shape:
    """Builds the geometry record of a VIA `shape_attributes` object."""
    if shape_name in ("polygon", "polyline"):
        points_x = _points(attributes, "all_points_x", where)
        points_y = _points(attributes, "all_points_y", where)
        if len(points_x) != len(points_y):
            raise ViaError(
                f"{where}: all_points_x has {len(points_x)} values but all_points_y has "
                f"{len(points_y)}; every vertex needs both"
            )
        return Polygon(points_x=points_x, points_y=points_y)
    if shape_name == "rect":
        return Rect(
            x=_number(attributes, "x", where),
            y=_number(attributes, "y", where),
            width=_number(attributes, "width", where, minimum=0),
            height=_number(attributes, "height", where, minimum=0),
        )
    if shape_name == "circle":
        return Circle(
            center_x=_number(attributes, "cx", where),
            center_y=_number(attributes, "cy", where),
            radius=_number(attributes, "r", where, minimum=0),
        )
    theta = _number(attributes, "theta", where) if "theta" in attributes else 0.0
    return Ellipse(
        center_x=_number(attributes, "cx", where),
        center_y=_number(attributes, "cy", where),
        radius_x=_number(attributes, "rx", where, minimum=0),
        radius_y=_number(attributes, "ry", where, minimum=0),
        theta=theta,
    )


def scale_shape(shape: Shape, scale_y: float, scale_x: float) -> Shape:
    """Maps a shape onto an image resized by (scale_y, scale_x), as `skimage.transform.resize` does.

    Pixel-centre coordinates map as `(v + 0.5) * scale - 0.5`; a rectangle's edges and all radii
    scale plainly. A circle scaled unevenly becomes an ellipse, and a rotated ellipse scaled
    unevenly becomes a polygon.

    Args:
        shape: Shape. The geometry in the original image.
        scale_y: float. New height / old height.
        scale_x: float. New width / old width.

    Returns:
        The geometry in the resized image.
    """
    def centre_x(value):
        return (value + 0.5) * scale_x - 0.5

    def centre_y(value):
        return (value + 0.5) * scale_y - 0.5

    if isinstance(shape, Polygon):
        return Polygon(
            points_x=tuple(centre_x(value) for value in shape.points_x),
            points_y=tuple(centre_y(value) for value in shape.points_y),
        )
    if isinstance(shape, Rect):
        return Rect(shape.x * scale_x, shape.y * scale_y, shape.width * scale_x, shape.height * scale_y)
    if isinstance(shape, Circle):
        if scale_x == scale_y:
            return Circle(centre_x(shape.center_x), centre_y(shape.center_y), shape.radius * scale_x)
        shape = Ellipse(shape.center_x, shape.center_y, shape.radius, shape.radius)
    if scale_x == scale_y or math.sin(shape.theta) == 0:
        # An even rescale, or an unrotated ellipse (theta 0 or pi), keeps the shape an ellipse.
        return Ellipse(
            centre_x(shape.center_x),
            centre_y(shape.center_y),
            shape.radius_x * scale_x,
            shape.radius_y * scale_y,
            shape.theta,
        )
    angles = np.linspace(0, 2 * np.pi, ELLIPSE_POLYGON_VERTICES, endpoint=False)
    cos_theta, sin_theta = math.cos(shape.theta), math.sin(shape.theta)
    along_x = shape.radius_x * np.cos(angles)
    along_y = shape.radius_y * np.sin(angles)
    polygon = Polygon(
        points_x=tuple(shape.center_x + along_x * cos_theta - along_y * sin_theta),
        points_y=tuple(shape.center_y + along_x * sin_theta + along_y * cos_theta),
    )
    return scale_shape(polygon, scale_y, scale_x)


def shape_pixels(shape: Shape, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels a shape covers, clipped to the image.

    Args:
        shape: Shape. The geometry.
        height: int. Image height.
        width: int. Image width.

    Returns:
        (rows, cols) integer arrays, as `skimage.draw` returns them.
    """
    image_shape = (height, width)
    if isinstance(shape, Polygon):
        return draw.polygon(shape.points_y, shape.points_x, shape=image_shape)
    if isinstance(shape, Rect):
        # Pixel c is covered when its centre c + 0.5 lies in [x, x + width).
        first_col = max(0, math.ceil(shape.x - 0.5))
        last_col = min(width - 1, math.ceil(shape.x + shape.width - 0.5) - 1)
        first_row = max(0, math.ceil(shape.y - 0.5))
        last_row = min(height - 1, math.ceil(shape.y + shape.height - 0.5) - 1)
        if first_col > last_col or first_row > last_row:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
        rows, cols = draw.rectangle((first_row, first_col), end=(last_row, last_col), shape=image_shape)
        return rows.ravel().astype(np.intp), cols.ravel().astype(np.intp)
    if isinstance(shape, Circle):
        return draw.disk((shape.center_y, shape.center_x), shape.radius, shape=image_shape)
    if shape.radius_x == 0 or shape.radius_y == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    # skimage rotates counter-clockwise on screen, VIA clockwise.
    return draw.ellipse(
        shape.center_y,
        shape.center_x,
        shape.radius_y,
        shape.radius_x,
        shape=image_shape,
        rotation=-shape.theta,
    )


def rasterize(regions: Sequence[Region], height: int, width: int) -> np.ndarray:
    """Paints regions into a class-index map; later regions paint over earlier ones.

    Args:
        regions: list of Region. In drawing order.
        height: int. Image height.
        width: int. Image width.

    Returns:
        uint8 array (height, width): 0 where no region lies, else the class id of the last region
        covering the pixel.
    """
    label_map = np.zeros((height, width), dtype=np.uint8)
    for region in regions:
        rows, cols = shape_pixels(region.shape, height, width)
        label_map[rows, cols] = region.class_id
    return label_map


def to_one_hot(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """The book's mask format: uint8 one-hot (H, W, num_classes), channel 0 background.

    Args:
        label_map: int array (H, W). Class ids in 0 .. num_classes - 1.
        num_classes: int. Number of classes including background.

    Returns:
        uint8 array (H, W, num_classes) with exactly one 1 per pixel.
    """
    return np.eye(num_classes, dtype=np.uint8)[label_map]


def to_via2(images: Sequence[ImageEntry], class_attribute: str = DEFAULT_CLASS_ATTRIBUTE) -> dict:
    """A VIA 2.x project (as VIA 2.0 saves it) holding polygon regions with a class attribute.

    Args:
        images: list of ImageEntry. Regions must be `Polygon`s; class ids are written as strings,
            as the book's annotations store them.
        class_attribute: str. Name of the region attribute holding the class. Defaults to "Name".

    Returns:
        A JSON-serialisable dict with `_via_settings`, `_via_img_metadata`, `_via_attributes`
        and `_via_image_id_list`.

    Raises:
        ValueError: a region is not a polygon.
    """
    metadata = {}
    for image in images:
        regions = []
        for region in image.regions:
            if not isinstance(region.shape, Polygon):
                raise ValueError(f"to_via2 writes polygons only; {image.filename} has a {region.shape_name}")
            regions.append(
                {
                    "shape_attributes": {
                        "name": "polygon",
                        "all_points_x": [_via_coordinate(value) for value in region.shape.points_x],
                        "all_points_y": [_via_coordinate(value) for value in region.shape.points_y],
                    },
                    "region_attributes": {class_attribute: str(region.class_id)},
                }
            )
        metadata[f"{image.filename}{image.size}"] = {
            "filename": image.filename,
            "size": image.size,
            "regions": regions,
            "file_attributes": {},
        }
    return {
        "_via_settings": {
            "ui": {
                "annotation_editor_height": 25,
                "annotation_editor_fontsize": 0.8,
                "leftsidebar_width": 18,
                "image_grid": {
                    "img_height": 80,
                    "rshape_fill": "none",
                    "rshape_fill_opacity": 0.3,
                    "rshape_stroke": "yellow",
                    "rshape_stroke_width": 2,
                    "show_region_shape": True,
                    "show_image_policy": "all",
                },
                "image": {
                    "region_label": class_attribute,
                    "region_label_font": "10px Sans",
                    "on_image_annotation_editor_placement": "NEAR_REGION",
                },
            },
            "core": {"buffer_size": 18, "filepath": {}, "default_filepath": ""},
            "project": {"name": "segmentation"},
        },
        VIA2_METADATA_KEY: metadata,
        "_via_attributes": {
            "region": {
                class_attribute: {"type": "text", "description": "class id", "default_value": ""},
            },
            "file": {},
        },
        "_via_image_id_list": list(metadata),
    }


def _via_coordinate(value: float) -> int | float:
    """Writes whole-number coordinates as JSON integers, as VIA does."""
    return int(value) if float(value).is_integer() else float(value)
