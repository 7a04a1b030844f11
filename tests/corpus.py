"""A generated corpus of awkward and broken uploads, for any test that reads photos.

Nothing is downloaded: every file is drawn with Pillow when `bad_inputs` runs (about 0.3 s in all,
most of it for ``huge.png``). The API is stable; other test modules reuse it:

    from tests.corpus import EXPECTED, bad_inputs

    def test_every_bad_input(tmp_path):
        for name, path in bad_inputs(tmp_path).items():
            expected = EXPECTED[name]
            if expected[0] == "error":
                ...  # loading must raise PhotoError and expected[1] must be in str(error).lower()
            else:
                ...  # loading must return an RGB uint8 array of shape expected

`bad_inputs(tmp_dir)` returns ``{name: path}``; every name is also a key of `EXPECTED`, whose value is either
the ``(height, width, 3)`` shape `petseg.photos.load_photo` returns, or ``("error", word)`` where ``word``
is lower case and must appear in the lower-cased `PhotoError` message. ``missing.png`` is the one path
that is deliberately not written.

The files, and what a correct loader makes of them:

- ``not_an_image.txt``: a line of text.
- ``zero_bytes.jpg``: an empty file.
- ``truncated.jpg``: the first half of a 300x200 noise JPEG; Pillow refuses it on load.
- ``one_pixel.png``: a 1x1 RGB image.
- ``huge.png``: a blank 10000x10000 bilevel PNG (12 kB on disk, 100 megapixels decoded).
- ``sixteen_bit.png``: a 64x48 16-bit grayscale ramp, 0 in the top-left pixel, 65535 in the bottom-right.
- ``grayscale.jpg``: a 64x48 grayscale ramp.
- ``cmyk.jpg``: a 64x48 CMYK JPEG, pure cyan (C=255); it loads as roughly (0, 255, 255).
- ``rgba_transparent.png``: 64x48, the left half fully transparent red, the right half opaque blue.
- ``palette.png``: a 64x48 palette image with four colour bands, no transparency.
- ``palette_transparent.png``: the same bands, the first one (left) transparent.
- ``exif_rotated.jpg``: stored 60 wide and 40 high with EXIF Orientation=6 (rotate 90 degrees clockwise
  to display), a red block in the stored top-left corner; upright it is 40 wide and 60 high with the red
  block in the top-right corner.
- ``animated.gif`` and ``animated.webp``: 64x48, a red frame, then a blue frame.
- ``missing.png``: not written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

Shape = tuple[int, int, int]
ExpectedError = tuple[str, str]

WIDTH, HEIGHT = 64, 48
RED = (255, 0, 0)
BLUE = (0, 0, 255)

# The EXIF test image as stored; upright it is EXIF_HEIGHT wide and EXIF_WIDTH high.
EXIF_WIDTH, EXIF_HEIGHT = 60, 40
EXIF_BLOCK = 16

EXPECTED: dict[str, Shape | ExpectedError] = {
    "not_an_image.txt": ("error", "not an image"),
    "zero_bytes.jpg": ("error", "empty"),
    "truncated.jpg": ("error", "truncated"),
    "one_pixel.png": ("error", "too small"),
    "huge.png": ("error", "too large"),
    "sixteen_bit.png": (HEIGHT, WIDTH, 3),
    "grayscale.jpg": (HEIGHT, WIDTH, 3),
    "cmyk.jpg": (HEIGHT, WIDTH, 3),
    "rgba_transparent.png": (HEIGHT, WIDTH, 3),
    "palette.png": (HEIGHT, WIDTH, 3),
    "palette_transparent.png": (HEIGHT, WIDTH, 3),
    "exif_rotated.jpg": (EXIF_WIDTH, EXIF_HEIGHT, 3),
    "animated.gif": (HEIGHT, WIDTH, 3),
    "animated.webp": (HEIGHT, WIDTH, 3),
    "missing.png": ("error", "not found"),
}


def bad_inputs(tmp_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the corpus into ``tmp_dir`` (created if needed) and return ``{name: path}`` for every `EXPECTED` name."""
    folder = Path(tmp_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in EXPECTED}

    paths["not_an_image.txt"].write_text("This is a text file, not a photo.\n")
    paths["zero_bytes.jpg"].write_bytes(b"")
    _write_truncated_jpeg(paths["truncated.jpg"])
    Image.new("RGB", (1, 1), RED).save(paths["one_pixel.png"])
    # Bilevel and blank, so the PNG stays tiny on disk however many pixels it claims.
    Image.new("1", (10_000, 10_000)).save(paths["huge.png"], optimize=True)

    ramp = np.linspace(0, 65535, WIDTH * HEIGHT).round().astype(np.uint16).reshape(HEIGHT, WIDTH)
    Image.fromarray(ramp).save(paths["sixteen_bit.png"])
    Image.fromarray((ramp // 257).astype(np.uint8)).save(paths["grayscale.jpg"], quality=95)
    Image.new("CMYK", (WIDTH, HEIGHT), (255, 0, 0, 0)).save(paths["cmyk.jpg"], quality=95)

    rgba = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
    rgba[:, : WIDTH // 2] = (*RED, 0)
    rgba[:, WIDTH // 2 :] = (*BLUE, 255)
    Image.fromarray(rgba).save(paths["rgba_transparent.png"])

    palette_image = _palette_bands()
    palette_image.save(paths["palette.png"])
    palette_image.save(paths["palette_transparent.png"], transparency=0)

    _write_exif_rotated_jpeg(paths["exif_rotated.jpg"])

    frames = [Image.new("RGB", (WIDTH, HEIGHT), colour) for colour in (RED, BLUE)]
    for name in ("animated.gif", "animated.webp"):
        frames[0].save(paths[name], save_all=True, append_images=frames[1:], duration=100, loop=0)

    # "missing.png" is deliberately left unwritten.
    return paths


def _write_truncated_jpeg(path: Path) -> None:
    """Write the first half of a noisy 300x200 JPEG: the header is intact, the scan data stops early."""
    noise = np.random.default_rng(0).integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _palette_bands() -> Image.Image:
    """Return a palette ("P") image with four vertical bands using palette entries 0 to 3."""
    indices = np.repeat(np.arange(4, dtype=np.uint8), WIDTH // 4)[None, :].repeat(HEIGHT, axis=0)
    image = Image.frombytes("P", (WIDTH, HEIGHT), indices.tobytes())
    colours = [RED, (0, 255, 0), BLUE, (255, 255, 0)]
    image.putpalette([channel for colour in colours for channel in colour])
    return image


def _write_exif_rotated_jpeg(path: Path) -> None:
    """Write a grey JPEG with a red block in the stored top-left corner and EXIF Orientation=6."""
    image = Image.new("RGB", (EXIF_WIDTH, EXIF_HEIGHT), (128, 128, 128))
    image.paste(RED, (0, 0, EXIF_BLOCK, EXIF_BLOCK))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    image.save(path, quality=95, exif=exif)
