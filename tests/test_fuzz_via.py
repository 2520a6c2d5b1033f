"""Fuzzing the VIA converter: every mutated project converts or fails with `ViaError`, nothing else.

Hypothesis builds a plausible VIA 1.x or 2.x project (every shape, class given as a number, a name,
a checkbox or not at all), then damages it: values swapped for arbitrary JSON (NaN, infinities,
huge numbers, strings, nested lists and objects), keys deleted or added, and sometimes the JSON
text itself cut or overwritten. Each result goes through the converter's own path,
`via.load_project` then `ground_truth.convert` (which reads the images, rescales,
rasterises and one-hot encodes). 200 examples by default; `pytest --run-slow` runs 2,000.
"""

import copy
import json
import os

import matplotlib.image
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmentation.tools import ground_truth, via

FAST_EXAMPLES = 200
SLOW_EXAMPLES = 2000
IMAGES = {"a.png": (24, 32), "b.jpg": (16, 20)}
FILENAMES = (*IMAGES, *IMAGES, *IMAGES, *IMAGES, *IMAGES, "missing.png", "", "a.png ")

# Coordinates of the well-formed projects; the edits bring in the odd ones.
coordinates = st.integers(-10, 60) | st.floats(-10, 60)
sizes = st.integers(0, 30) | st.floats(0, 30)
numbers = coordinates | st.sampled_from(
    [0, -0.0, 1e7, -1e7, 1e7 + 1, 1e308, float("nan"), float("inf"), -float("inf")]
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.integers(), st.text(max_size=6)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=8,
)
valid_classes = st.sampled_from(["1", "2", "3", 1, 2.0, " 3 ", {"2": True}])
odd_classes = st.one_of(
    st.sampled_from(["0", "4", "1.5", "", "x", None, "water_bottle", "Soda_Can"]),
    st.dictionaries(st.sampled_from(["1", "2", "juice_can", "9"]), st.booleans(), max_size=3),
)


@st.composite
def region_attributes(draw):
    """Mostly a valid class: a project fails on its first bad region, so bad ones must be rare.

    Hypothesis favours the ends of a range, so the rare kinds sit in its middle.
    """
    kind = draw(st.integers(0, 29))
    if kind == 13:
        return {}
    return {"Name": draw(odd_classes if kind == 17 else valid_classes)}


@st.composite
def shape_attributes(draw):
    name = draw(st.sampled_from(via.SHAPE_NAMES))
    if name in ("polygon", "polyline"):
        count = draw(st.integers(1, 6))
        attributes = {"all_points_x": draw(st.lists(coordinates, min_size=count, max_size=count)),
                      "all_points_y": draw(st.lists(coordinates, min_size=count, max_size=count))}
    elif name == "rect":
        attributes = {"x": draw(coordinates), "y": draw(coordinates), "width": draw(sizes), "height": draw(sizes)}
    elif name == "circle":
        attributes = {"cx": draw(coordinates), "cy": draw(coordinates), "r": draw(sizes)}
    elif name == "ellipse":
        attributes = {"cx": draw(coordinates), "cy": draw(coordinates), "rx": draw(sizes), "ry": draw(sizes),
                      "theta": draw(coordinates)}
    else:
        attributes = {"cx": draw(coordinates), "cy": draw(coordinates)}
    return {"name": name, **attributes}


@st.composite
def projects(draw):
    """A VIA project as decoded JSON: mostly well formed, version 1 or 2."""
    entries = {}
    for index in range(draw(st.sampled_from([1, 1, 2, 3, 0]))):
        filename = draw(st.sampled_from(FILENAMES))
        regions = [
            {"shape_attributes": draw(shape_attributes()),
             "region_attributes": draw(region_attributes())}
            for _ in range(draw(st.integers(0, 4)))
        ]
        entries[f"{filename}{index}"] = {"filename": filename, "size": draw(st.integers(-1, 10**6)),
                                         "regions": regions, "file_attributes": {}}
    if draw(st.booleans()):
        return {"_via_settings": {}, "_via_img_metadata": entries, "_via_attributes": {}}
    for entry in entries.values():
        entry["regions"] = {str(i): region for i, region in enumerate(entry["regions"])}
    return entries


def containers(value, path=()):
    """Paths of every dict and list inside a decoded JSON value, the value itself first."""
    found = []
    if isinstance(value, dict | list):
        found.append(path)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            found.extend(containers(child, (*path, key)))
    return found


def mutate(draw, data):
    """Applies a few random edits (replace, delete, add) at random places in `data`."""
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 4]))):
        paths = containers(data)
        if not paths:
            return draw(json_values)
        path = draw(st.sampled_from(paths))
        target = data
        for key in path:
            target = target[key]
        keys = list(target.keys()) if isinstance(target, dict) else list(range(len(target)))
        operation = draw(st.sampled_from(["replace", "delete", "add"] if keys else ["add"]))
        if operation == "add":
            if isinstance(target, dict):
                target[draw(st.sampled_from(["filename", "regions", "name", "Name", "x", "all_points_x",
                                             "_via_img_metadata", "extra"]))] = draw(json_values)
            else:
                target.append(draw(json_values))
        elif operation == "delete":
            del target[draw(st.sampled_from(keys))]
        else:
            target[draw(st.sampled_from(keys))] = draw(json_values)
    return data


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_images")
    for name, (height, width) in IMAGES.items():
        matplotlib.image.imsave(folder / name, np.full((height, width, 3), 128, np.uint8))
    return folder


def test_mutated_via_projects_convert_or_raise_via_error(image_folder, tmp_path_factory, request, capsys):
    examples = SLOW_EXAMPLES if request.config.getoption("--run-slow") else FAST_EXAMPLES
    work = tmp_path_factory.mktemp("fuzz_work")
    project_path = work / "project.json"
    outcomes = {"converted": 0, "refused": 0}

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def check(data):
        # A copy: strategies hand out shared objects (sampled_from), which the edits must not change.
        project = mutate(data.draw, copy.deepcopy(data.draw(projects())))
        text = json.dumps(project)
        if data.draw(st.integers(0, 9)) == 0:
            # Damage the text itself: cut it, or overwrite a stretch with other characters.
            start = data.draw(st.integers(0, len(text)))
            text = text[:start] + data.draw(st.text(max_size=4)) + text[start + data.draw(st.integers(0, 4)):]
        project_path.write_text(text, encoding="utf-8")
        class_names = data.draw(st.sampled_from([None, None, ["water_bottle", "soda_can", "juice_can"], ["a"]]))
        num_classes = len(class_names) + 1 if class_names else data.draw(st.sampled_from([4] * 5 + [2, 6, 1]))
        resize = data.draw(st.sampled_from([None, None, None, (12, 40)]))
        try:
            parsed = via.load_project(
                project_path, num_classes=num_classes, class_names=class_names,
                default_class=data.draw(st.sampled_from([None] * 4 + ["1", "juice_can", "9"])),
            )
            masks = ground_truth.convert(
                parsed, str(image_folder), num_classes, resize=resize, resized_path=str(work / "resized"),
            )
        except via.ViaError as error:
            assert "\n" not in str(error)
            outcomes["refused"] += 1
            return
        for mask in masks.values():
            assert mask.dtype == np.uint8 and (mask.sum(axis=-1) == 1).all()
        outcomes["converted"] += 1

    check()
    capsys.readouterr()  # the converter's progress bars
    assert outcomes["converted"] > 0 and outcomes["refused"] > 0, outcomes
    print(f"fuzzed {sum(outcomes.values())} VIA projects: {outcomes}")
    assert os.path.isfile(project_path)
