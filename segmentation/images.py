"""Reading and checking the images: one check for training, evaluation and prediction.

Every image the programs read goes through Pillow here, in the same way: the header is checked (the
format, the mode, the pixel count, and for PNG the chunk checksums) without decoding the pixels
(`image_header`, `check_image`), and decoding (`decode_image`) checks the header again, refuses data
cut short (Pillow's `load` raises on it: `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` keeps its default,
False) and converts the modes of `CONVERTED_MODES` to 8-bit RGB with Pillow's own conversions (grey
repeated, palette looked up, alpha dropped, CMYK to RGB). Whatever is wrong ends in a `DatasetError`
whose one line names the file, the problem and the fix.
"""

import contextlib
import errno
import os
import warnings
from collections.abc import Iterator

import numpy as np
import PIL.Image

from segmentation.errors import DatasetError

# Pillow image modes read as they are, and those converted to RGB on reading (grey repeated,
# palette looked up, alpha dropped, CMYK converted). Any other mode (16-bit or float grey, ...) is refused.
RGB_MODES = ("RGB",)
CONVERTED_MODES = ("L", "LA", "1", "P", "PA", "RGBA", "RGBa", "La", "CMYK")
# The image files a folder of images is made of (`--predict-dir`, a mask folder's images).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# The most pixels an image may have, checked from its header before its pixels are decoded. Segmenting
# an image whole (`--predict-dir`) takes up to about 65 bytes a pixel at its peak (measured with 4 classes:
# the float copies of resizing it, or with --fit-size crop of its tiles' probabilities), so the cap bounds
# that at about 1.6 GB. A 6000x4000 (24 Mpx) photo passes; a 6000x6000 image is refused.
MAX_PIXELS = 25_000_000
PEAK_BYTES_PER_PIXEL = 65
# What to do with a file that is no image the programs can read.
REPLACE = "Replace the file or remove it"


@contextlib.contextmanager
def _opened(path: str) -> Iterator[PIL.Image.Image]:
    """Opens an image with Pillow (its header only), turning every failure into a `DatasetError`."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 Mpx up; MAX_PIXELS, far below, refuses such images in one line instead.
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(path)
    except PIL.Image.DecompressionBombError:
        raise DatasetError(
            f"{path}: the image has more than {2 * PIL.Image.MAX_IMAGE_PIXELS:,} pixels, beyond the "
            f"{MAX_PIXELS:,} pixels an image may have ({_cap_text()}). Scale it down and run again."
        ) from None
    except Exception as error:  # Pillow raises many types for a bad file
        raise DatasetError(f"{path}: cannot read the image ({_reason(path, error)}). {REPLACE}.") from None
    with image:
        yield image


def _cap_text() -> str:
    bound = PEAK_BYTES_PER_PIXEL * MAX_PIXELS / 1e9
    return f"the cap that bounds the memory segmenting an image takes, about {bound:.1f} GB"


def _reason(path: str, error: Exception) -> str:
    """Why `path` could not be read, in a few words: a broken symbolic link said as such."""
    if isinstance(error, OSError) and error.errno == errno.ELOOP:
        return "a symbolic link loop"
    if os.path.islink(path) and not os.path.exists(path):
        return f"a symbolic link to {os.readlink(path)}, which does not exist"
    return " ".join(str(error).split()) or type(error).__name__


def _check_header(path: str, image: PIL.Image.Image) -> None:
    """Refuses an opened image whose mode cannot be converted to 8-bit RGB, or that has too many pixels."""
    if image.mode not in RGB_MODES + CONVERTED_MODES:
        raise DatasetError(
            f"{path}: image mode {image.mode} is not supported: expected an 8-bit RGB image (grey, palette, "
            "alpha and CMYK are converted; 16-bit and float images are refused). Convert it to 8-bit RGB, e.g. "
            "with Pillow's Image.convert('RGB')."
        )
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise DatasetError(
            f"{path}: the image is {width}x{height} ({width * height:,} pixels), more than the {MAX_PIXELS:,} "
            f"pixels an image may have ({_cap_text()}). Scale it down and run again."
        )


def check_image(path: str, height: int, width: int) -> str:
    """Checks an image file's header without decoding its pixels.

    Args:
        path: str. Image file.
        height: int. Required height.
        width: int. Required width.

    Returns:
        The Pillow mode, `"RGB"` or one of `CONVERTED_MODES` that `read_image` converts.

    Raises:
        DatasetError: if `image_header` refuses the file, or it is not `height` x `width`.
    """
    mode, size = image_header(path)
    if size != (width, height):
        raise DatasetError(
            f"{path}: image is {size[0]}x{size[1]}, expected {width}x{height} "
            "(--width x --height). Resize it, give the matching --height/--width, or --fit-size resize or crop."
        )
    return mode


def image_header(path: str) -> tuple[str, tuple[int, int]]:
    """Checks an image file of any size from its header, and returns its mode and size.

    The pixels are not decoded: a JPEG whose data is cut short after a sound header passes, and is
    refused by `decode_image` (PNG chunks carry checksums, so a cut PNG is refused here).

    Args:
        path: str. Image file.

    Returns:
        `(mode, (width, height))`, the mode `"RGB"` or one of `CONVERTED_MODES`.

    Raises:
        DatasetError: if the file is not a readable image (a broken symbolic link included), its PNG
            data is cut short, its mode is 16-bit or float, or it has more than `MAX_PIXELS` pixels.
    """
    with _opened(path) as image:
        _check_header(path, image)
        mode, size = image.mode, image.size
        try:
            image.verify()
        except Exception as error:  # Pillow raises many types for a bad file
            raise DatasetError(f"{path}: cannot read the image ({_reason(path, error)}). {REPLACE}.") from None
    return mode, size


def decode_image(path: str) -> np.ndarray:
    """Decodes an image of any size as 8-bit RGB, after the checks of `image_header`.

    Grey images are repeated into three channels, palettes looked up, an alpha
    channel dropped and CMYK converted to RGB (Pillow's `convert("RGB")`);
    16-bit and float images, and images of more than `MAX_PIXELS` pixels, are
    refused before their pixels are decoded.

    Args:
        path: str. Image file.

    Returns:
        uint8 array `(H, W, 3)`.

    Raises:
        DatasetError: if `image_header` would refuse the file, or its data is cut short or damaged.
    """
    with _opened(path) as image:
        _check_header(path, image)
        try:
            image.load()  # raises on data cut short: LOAD_TRUNCATED_IMAGES is False
            if image.mode == "La":  # premultiplied grey + alpha: Pillow converts it to RGB through LA
                image = image.convert("LA")
            rgb = image if image.mode == "RGB" else image.convert("RGB")
        except Exception as error:  # decoders raise many types for bad data
            raise DatasetError(f"{path}: cannot read the image ({_reason(path, error)}). {REPLACE}.") from None
        return np.array(rgb, dtype=np.uint8)


def image_to_float(image: np.ndarray) -> np.ndarray:
    """An 8-bit image as the network takes it: float32 in [0, 1] (the book's `img_as_float`).

    Args:
        image: uint8 array `(H, W, 3)`.

    Returns:
        float32 array of the same shape, `image / 255`.
    """
    scaled = image.astype(np.float32)
    scaled /= 255.0  # in place: one float copy of a large image, not two
    return scaled


def read_image(path: str, height: int, width: int) -> np.ndarray:
    """Reads an RGB image as float32 in [0, 1] (the book's `img_as_float`).

    Other modes are converted as `decode_image` converts them (`load_labels` warns
    about them once); 16-bit and float images are refused.

    Args:
        path: str. Image file.
        height: int. Required height.
        width: int. Required width.

    Returns:
        float32 array `(height, width, 3)`.

    Raises:
        DatasetError: if `decode_image` refuses the file, or it is not `height` x `width`.
    """
    image = decode_image(path)
    if image.shape[:2] != (height, width):
        raise DatasetError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]}, expected {width}x{height} "
            "(--width x --height). Resize it or give the matching --height/--width."
        )
    return image_to_float(image)
