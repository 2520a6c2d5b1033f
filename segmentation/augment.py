"""Training-time augmentation that moves an image and its mask together (`--augment`).

Geometric changes (horizontal flip, scale jitter with a random crop or
reflected padding back to the network's size) are applied identically to the
image and to its class-index map, the map with nearest-neighbour sampling so
it keeps whole class indices. Photometric changes (brightness, contrast,
saturation) touch the image only.

`--augment` alone (`full`) draws all of them; `--augment flip` only the
mirror image, which costs nothing per step.
"""

import dataclasses

import numpy as np
import skimage.transform

# `--augment`'s values: none (the book's), every change, the horizontal flip alone.
NO_AUGMENTATION = "none"
FULL_AUGMENTATION = "full"
FLIP_AUGMENTATION = "flip"
AUGMENTATIONS = (NO_AUGMENTATION, FULL_AUGMENTATION, FLIP_AUGMENTATION)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Ranges of the random changes.

    Attributes:
        flip: bool. Mirror left-right with probability 1/2.
        scale: tuple of float. Range of the zoom factor (log-uniform).
        brightness: float. Largest brightness shift, in [0, 1] intensity units.
        contrast: float. Largest relative contrast change.
        saturation: float. Largest relative saturation change.
    """

    flip: bool = True
    scale: tuple[float, float] = (0.75, 1.5)
    brightness: float = 0.15
    contrast: float = 0.25
    saturation: float = 0.25

    def __call__(
        self, image: np.ndarray, class_map: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """One random draw applied to one image and its class map.

        Args:
            image: float32 array `(H, W, 3)` in [0, 1].
            class_map: uint8 array `(H, W)`.
            rng: numpy Generator. Source of the random draw.

        Returns:
            The augmented image (float32 in [0, 1]) and class map (uint8), of
            the input's size.
        """
        if self.flip and rng.random() < 0.5:
            image, class_map = image[:, ::-1], class_map[:, ::-1]
        if self.scale != (1.0, 1.0):
            low, high = np.log(self.scale)
            zoom = float(np.exp(rng.uniform(low, high)))
            if abs(zoom - 1.0) > 1e-3:
                image, class_map = zoom_and_crop(image, class_map, zoom, rng)
        if self.brightness or self.contrast or self.saturation:
            image = jitter_colours(image, rng, self.brightness, self.contrast, self.saturation)
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(class_map, dtype=np.uint8)


def build_augmentation(kind: str) -> Augmentation | None:
    """The augmentation `--augment KIND` names: None for `none`, all changes for `full`, the flip alone for `flip`.

    Raises:
        ValueError: for a kind not in `AUGMENTATIONS`.
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}. Received: {kind!r}")
    if kind == NO_AUGMENTATION:
        return None
    if kind == FLIP_AUGMENTATION:
        return Augmentation(flip=True, scale=(1.0, 1.0), brightness=0.0, contrast=0.0, saturation=0.0)
    return Augmentation()


def zoom_and_crop(
    image: np.ndarray, class_map: np.ndarray, zoom: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rescales image and map by `zoom`, then crops (zoom in) or pads (zoom out) back to size.

    The crop window is random; padding reflects the rescaled image and map
    alike, so every padded pixel keeps the class of the pixel it copies.
    """
    height, width = class_map.shape
    size = (max(1, round(height * zoom)), max(1, round(width * zoom)))
    image = skimage.transform.resize(image, size, order=1, mode="edge", anti_aliasing=zoom < 1)
    class_map = skimage.transform.resize(
        class_map, size, order=0, mode="edge", preserve_range=True, anti_aliasing=False
    ).astype(np.uint8)
    if zoom < 1:
        pad_y, pad_x = height - size[0], width - size[1]
        top, left = int(rng.integers(0, pad_y + 1)), int(rng.integers(0, pad_x + 1))
        padding = ((top, pad_y - top), (left, pad_x - left))
        return np.pad(image, padding + ((0, 0),), mode="reflect"), np.pad(class_map, padding, mode="reflect")
    top, left = int(rng.integers(0, size[0] - height + 1)), int(rng.integers(0, size[1] - width + 1))
    return image[top : top + height, left : left + width], class_map[top : top + height, left : left + width]


def jitter_colours(
    image: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float, saturation: float
) -> np.ndarray:
    """Random brightness shift, contrast and saturation scaling, clipped to [0, 1]."""
    grey = image.mean(axis=-1, keepdims=True)
    image = grey + (image - grey) * rng.uniform(1 - saturation, 1 + saturation)
    mean = image.mean()
    image = mean + (image - mean) * rng.uniform(1 - contrast, 1 + contrast)
    image = image + rng.uniform(-brightness, brightness)
    return np.clip(image, 0.0, 1.0)
