"""Reading and checking the images: 8-bit RGB (grey and palette converted), of the size the network takes."""

import numpy as np
import PIL.Image
import skimage.io

from segmentation.errors import DatasetError

# Pillow image modes read as they are, and those converted to RGB on reading (grey repeated,
# palette looked up, alpha dropped). Any other mode (16-bit or float grey, CMYK, ...) is refused.
RGB_MODES = ("RGB",)
CONVERTED_MODES = ("L", "LA", "1", "P", "PA", "RGBA", "RGBa", "La")
# The image files a folder of images is made of (`--predict-dir`, a mask folder's images).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

def check_image(path: str, height: int, width: int) -> str:
    """Checks an image file's header without decoding its pixels.

    Args:
        path: str. Image file.
        height: int. Required height.
        width: int. Required width.

    Returns:
        The Pillow mode, `"RGB"` or one of `CONVERTED_MODES` that `read_image` converts.

    Raises:
        DatasetError: if the file is not a readable image, its data is cut short (PNG, whose
            chunk checksums are verified), it is 16-bit, float or CMYK, or it is not
            `height` x `width`.
    """
    mode, size = image_header(path)
    if size != (width, height):
        raise DatasetError(
            f"{path}: image is {size[0]}x{size[1]}, expected {width}x{height} "
            "(--width x --height). Resize it, give the matching --height/--width, or --fit-size resize or crop."
        )
    return mode


def image_header(path: str) -> tuple[str, tuple[int, int]]:
    """Checks an image file of any size as `check_image` does, and returns its mode and size.

    Args:
        path: str. Image file.

    Returns:
        `(mode, (width, height))`, the mode `"RGB"` or one of `CONVERTED_MODES`.

    Raises:
        DatasetError: if the file is not a readable image, its data is cut short, or it is
            16-bit, float or CMYK.
    """
    try:
        with PIL.Image.open(path) as image:
            mode, size = image.mode, image.size
            image.verify()
    except Exception as error:  # Pillow raises many types for a bad file
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DatasetError(
            f"{path}: not a readable image ({reason}). Replace the file, or remove it and its entry "
            "in the labels."
        ) from None
    if mode not in RGB_MODES + CONVERTED_MODES:
        raise DatasetError(
            f"{path}: image mode {mode} is not supported (16-bit, float and CMYK images are refused). "
            "Convert it to 8-bit RGB, e.g. with Pillow's Image.convert('RGB')."
        )
    return mode, size


def decode_image(path: str) -> np.ndarray:
    """Decodes an image of any size as 8-bit RGB.

    Grey images are repeated into three channels and an alpha channel is
    dropped; 16-bit, float and CMYK images are refused.

    Args:
        path: str. Image file.

    Returns:
        uint8 array `(H, W, 3)`.

    Raises:
        DatasetError: if the file cannot be decoded or is not 8-bit.
    """
    try:
        image = skimage.io.imread(path)
    except Exception as error:  # decoders raise many types for a bad file
        raise DatasetError(f"{path}: cannot read the image ({type(error).__name__}: {error}).") from None
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 3 and image.shape[-1] in (2, 4):
        image = image[..., :-1]
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 1):
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise DatasetError(
            f"{path}: expected an 8-bit RGB image, found shape {image.shape} dtype {image.dtype}. "
            "Convert it to 8-bit RGB."
        )
    return image


def image_to_float(image: np.ndarray) -> np.ndarray:
    """An 8-bit image as the network takes it: float32 in [0, 1] (the book's `img_as_float`).

    Args:
        image: uint8 array `(H, W, 3)`.

    Returns:
        float32 array of the same shape, `image / 255`.
    """
    return image.astype(np.float32) / 255.0


def read_image(path: str, height: int, width: int) -> np.ndarray:
    """Reads an RGB image as float32 in [0, 1] (the book's `img_as_float`).

    Grey images are repeated into three channels and an alpha channel is
    dropped (`load_labels` warns about them once); 16-bit images are refused.

    Args:
        path: str. Image file.
        height: int. Required height.
        width: int. Required width.

    Returns:
        float32 array `(height, width, 3)`.

    Raises:
        DatasetError: if the file cannot be decoded, is not 8-bit RGB, or is
            not `height` x `width`.
    """
    image = decode_image(path)
    if image.shape[:2] != (height, width):
        raise DatasetError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]}, expected {width}x{height} "
            "(--width x --height). Resize it or give the matching --height/--width."
        )
    return image_to_float(image)
