"""Decode user uploads into upright RGB photos, safely: `load_photo`, or `decode_photo` when a screen-sized photo
will do.

>>> import numpy as np
>>> photo = load_photo(np.zeros((375, 500), dtype=np.uint8))
>>> photo.shape, photo.dtype
((375, 500, 3), dtype('uint8'))
"""

from __future__ import annotations

import io
import math
import os
import struct
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # Larger photos are refused before decoding: 40 megapixels is about 120 MB as RGB.
MIN_SIDE = 8  # Smaller photos hold too little to segment.

PhotoSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

DAMAGED_MESSAGE = "The image data is truncated or damaged; please upload the file again."

# How to turn a photo upright for each EXIF orientation (1, as stored, needs nothing); as ImageOps.exif_transpose.
ORIENTATION_TRANSPOSES = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                          6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}

DECODING_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)  # Pillow's, on broken data.


class PhotoError(ValueError):
    """A photo that cannot be used; the message is a short sentence fit to show to a user."""


def load_photo(source: PhotoSource, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``source`` (a path, file bytes, a PIL image, or an HxW, HxWx1, HxWx3 or HxWx4 array of uint8, uint16, bool
    or floats in [0, 1]) as an upright, C-contiguous RGB ``uint8`` array; ``decode_photo``'s photo at full size.
    What is converted (EXIF, 16 bits, CMYK, transparency...) or refused (``PhotoError``): docs/limits-and-safety.md.

    >>> try:
    ...     load_photo(b"hello")
    ... except PhotoError as error:
    ...     print(error)
    This file is not an image PetSeg can read; please upload a JPEG, PNG, WebP, GIF, BMP or TIFF photo.
    """
    return decode_photo(source, max_pixels)[0]


def decode_photo(source: PhotoSource, max_pixels: int = MAX_PIXELS, max_side: int | None = None
                 ) -> tuple[np.ndarray, tuple[int, int]]:
    """``load_photo``'s photo shrunk to at most ``max_side`` on its longer side, and its full upright (width, height).
    A large JPEG is decoded smaller by its own decoder first (``draft``; docs/performance.md, "Phone photos").

    >>> photo, size = decode_photo(np.zeros((3000, 4000), np.uint8), max_side=1600)
    >>> photo.shape, size
    ((1200, 1600, 3), (4000, 3000))
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < MIN_SIDE * MIN_SIDE:
        raise ValueError(f"max_pixels must be an integer of at least {MIN_SIDE * MIN_SIDE}, got {max_pixels!r}.")
    if source is None or (isinstance(source, str) and not source.strip()):
        raise PhotoError("No photo was given; please upload one.")
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, max_pixels, max_side)
    if isinstance(source, Image.Image):
        return _image_to_rgb(source, max_pixels, max_side)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(source), max_pixels, max_side)
    if not isinstance(source, (str, os.PathLike)):
        raise PhotoError(f"Cannot read a photo from a {type(source).__name__}.")
    path = Path(source)
    name = path.name if len(path.name) <= 60 else path.name[:57] + "..."  # Messages never quote the folder.
    try:
        if path.is_dir():
            raise PhotoError(f"{name} is a folder, not a photo.")
        if not path.is_file():
            raise PhotoError(f"File not found: {name}. Please upload the photo again.")
        with path.open("rb") as file:
            return _decode(file, max_pixels, max_side)
    except OSError as error:
        raise PhotoError(f"The file {name} could not be read.") from error


def _decode(file: BinaryIO, max_pixels: int, max_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an open image file; Pillow only reads the header until `_image_to_rgb` checks the size."""
    try:
        image = Image.open(file)
    except UnidentifiedImageError as error:
        if not file.seek(0, os.SEEK_END):  # Not a byte: say it is empty.
            raise PhotoError("The file is empty (0 bytes); please upload the photo again.") from error
        raise PhotoError("This file is not an image PetSeg can read; please upload a JPEG, PNG, WebP, GIF, BMP or "
                         "TIFF photo.") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own limit; the warning only arrives here when warnings are turned into errors.
        raise PhotoError(f"The photo is too large to process safely; the limit is {max_pixels:,} pixels.") from error
    except DECODING_ERRORS as error:
        raise PhotoError(DAMAGED_MESSAGE) from error
    with image:
        return _image_to_rgb(image, max_pixels, max_side)


def _image_to_rgb(image: Image.Image, max_pixels: int, max_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """Check the size, decode (a JPEG drafted smaller where that suffices), turn upright, RGB; and the upright size."""
    _check_size(*image.size, max_pixels)
    orientation = exif_orientation(image)
    size = image.size if orientation < 5 else image.size[::-1]  # Orientations 5 to 8 swap the sides.
    if max_side and max(image.size) > 2 * max_side:
        scale = max_side / max(image.size)
        image.draft(None, (math.ceil(image.size[0] * scale), math.ceil(image.size[1] * scale)))
    try:
        image.load()
    except DECODING_ERRORS as error:
        raise PhotoError(DAMAGED_MESSAGE) from error
    image = turn(image, orientation)
    if image.mode.startswith("I"):  # 16 bits ("I;16" and friends, or "I" as older Pillow decodes PNG): 0..65535.
        array = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    elif image.mode == "F":
        array = np.asarray(image)
    else:
        try:
            # An alpha band or a transparent colour (as Image.has_transparency_data): composited onto white below.
            transparent = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
            array = np.asarray(image.convert("RGBA" if transparent else "RGB"))
        except ValueError as error:
            raise PhotoError(f"Photos in the {image.mode} colour mode are not supported.") from error
    return _array_to_rgb(array, max_pixels, max_side)[0], size


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8) of an image; 1, "as stored", where it has none or it is broken."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (*DECODING_ERRORS, KeyError, TypeError):  # Broken EXIF says nothing reliable: keep the pixels as stored.
        return 1
    return orientation if orientation in ORIENTATION_TRANSPOSES else 1


def turn(image: Image.Image, orientation: int) -> Image.Image:
    """Turn and mirror ``image`` as EXIF ``orientation`` says, as ``ImageOps.exif_transpose`` does."""
    transpose = ORIENTATION_TRANSPOSES.get(orientation)
    return image if transpose is None else image.transpose(transpose)


def _check_size(width: int, height: int, max_pixels: int) -> None:
    """Refuse photos with too many pixels or a side shorter than `MIN_SIDE`."""
    if width * height > max_pixels:
        raise PhotoError(f"The photo is {width}x{height} px ({width * height:,} pixels), which is too large; "
                         f"the limit is {max_pixels:,} pixels.")
    if min(width, height) < MIN_SIDE:
        raise PhotoError(f"The photo is {width}x{height} px, which is too small; it must be at least {MIN_SIDE} px "
                         "on each side.")


def _array_to_rgb(array: np.ndarray, max_pixels: int, max_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """An HxW, HxWx1, HxWx3 or HxWx4 array of bools, uint8, uint16, floats in [0, 1] or small integers as a new RGB
    ``uint8`` array, shrunk (antialiased bilinear) to at most ``max_side`` on its longer side; and its own size."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise PhotoError(f"Expected an image shaped HxW, HxWx1, HxWx3 or HxWx4, got an array shaped {array.shape}.")
    height, width = array.shape[:2]
    _check_size(width, height, max_pixels)
    if array.dtype == np.bool_:
        pixels = array.astype(np.uint8) * 255
    elif array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.uint16:  # Rounded to nearest: 65535 -> 255, 257 -> 1.
        pixels = ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise PhotoError("The image contains invalid (NaN or infinite) values.")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise PhotoError(f"Float images must hold values between 0 and 1, got values from {low:g} to {high:g}.")
        pixels = np.rint(array.astype(np.float32) * 255.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise PhotoError(f"Integer images must hold values between 0 and 255, got values from {low} to {high}.")
        pixels = array.astype(np.uint8)
    else:
        raise PhotoError(f"Images of data type {array.dtype} are not supported.")
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    elif pixels.shape[2] == 4:  # Composited onto white.
        alpha = pixels[:, :, 3:4].astype(np.float32) / 255.0
        pixels = np.rint(pixels[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if max_side and max(height, width) > max_side:
        scale = max_side / max(height, width)
        size = max(1, round(width * scale)), max(1, round(height * scale))
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
    # Always a fresh array: callers may modify it without touching the source.
    return np.array(pixels, dtype=np.uint8, order="C", copy=True), (width, height)
