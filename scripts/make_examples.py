"""Write the example photos of the app into examples/: a real cat and two drawn pets.

- ``chelsea.jpg``: scikit-image's "chelsea" cat photo (``skimage.data.chelsea()``), 451x300; the script needs
  ``pip install scikit-image``, which no requirements file lists (the app only reads the JPEGs).
- ``cartoon_cat.jpg`` and ``cartoon_dog.jpg``: pets drawn with Pillow on textured backgrounds, 500x375.

The drawings use a fixed random seed, so running the script again gives the same pictures.

    python scripts/make_examples.py            # writes into examples/
    python scripts/make_examples.py --out /tmp/examples
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 500, 375
QUALITY = 90


def wooden_floor(rng: np.random.Generator) -> Image.Image:
    """A pale wall over a floor of wooden planks with grain, as an RGB image."""
    rows = np.arange(HEIGHT)[:, None]
    columns = np.arange(WIDTH)[None, :]
    wall = np.array([226, 214, 190], dtype=np.float32) + rng.normal(0, 3, (HEIGHT, WIDTH, 1))
    plank = (rows // 34 + 3 * (columns // 160 + rows // 34)) % 4
    grain = 12 * np.sin(columns / 7.0 + rng.normal(0, 0.6, (HEIGHT, 1)) * 8) + rng.normal(0, 6, (HEIGHT, WIDTH))
    wood = np.array([150, 98, 55], dtype=np.float32) + (plank * 9 + grain)[..., None] * np.array([1.0, 0.75, 0.5])
    floor_starts = 205
    pixels = np.where(rows[..., None] < floor_starts, wall, wood)
    pixels[floor_starts : floor_starts + 4] = (92, 60, 36)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def grassy_meadow(rng: np.random.Generator) -> Image.Image:
    """A blue sky with soft clouds over a meadow of noisy grass, as an RGB image."""
    rows = np.arange(HEIGHT)[:, None, None]
    sky = np.array([120, 175, 235], dtype=np.float32) + rows * np.array([0.5, 0.35, 0.1])
    sky = np.broadcast_to(sky, (HEIGHT, WIDTH, 3)).copy()
    clouds = np.asarray(
        Image.fromarray(rng.integers(0, 256, (HEIGHT // 25, WIDTH // 25), dtype=np.uint8)).resize(
            (WIDTH, HEIGHT), Image.Resampling.BICUBIC
        ),
        dtype=np.float32,
    )
    sky += np.clip(clouds - 150, 0, None)[..., None] * 0.9
    blades = rng.normal(0, 18, (HEIGHT, WIDTH))
    blades = np.asarray(Image.fromarray(np.clip(blades + 128, 0, 255).astype(np.uint8)).filter(
        ImageFilter.BoxBlur(1)), dtype=np.float32) - 128
    grass = np.array([70, 140, 50], dtype=np.float32) + blades[..., None] * np.array([0.6, 1.4, 0.5])
    pixels = np.where(rows < 150, sky, grass)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def draw_cat(image: Image.Image) -> Image.Image:
    """A grey tabby cat sitting on the floor, seen from the front."""
    draw = ImageDraw.Draw(image)
    fur, belly, stripe = (110, 110, 118), (185, 182, 178), (70, 70, 78)
    draw.ellipse((205, 300, 330, 342), fill=(60, 42, 28))  # The shadow on the floor.
    draw.arc((250, 200, 390, 330), start=270, end=60, fill=fur, width=16)  # The tail curling up.
    draw.ellipse((185, 170, 315, 330), fill=fur)  # The body.
    draw.ellipse((215, 215, 285, 325), fill=belly)
    for top in (200, 225, 250):
        draw.line((192, top, 214, top + 8), fill=stripe, width=6)  # The stripes on the flanks.
        draw.line((308, top, 286, top + 8), fill=stripe, width=6)
    draw.polygon([(190, 95), (205, 40), (240, 80)], fill=fur)  # The ears.
    draw.polygon([(310, 95), (295, 40), (260, 80)], fill=fur)
    draw.polygon([(200, 85), (207, 55), (228, 80)], fill=(215, 150, 150))
    draw.polygon([(300, 85), (293, 55), (272, 80)], fill=(215, 150, 150))
    draw.ellipse((180, 60, 320, 190), fill=fur)  # The head.
    for offset in (-14, 0, 14):
        draw.line((250 + offset, 64, 250 + offset, 90), fill=stripe, width=5)
    for centre in (220, 280):
        draw.ellipse((centre - 17, 105, centre + 17, 132), fill=(160, 200, 70))
        draw.ellipse((centre - 5, 106, centre + 5, 131), fill=(20, 20, 20))
    draw.polygon([(240, 142), (260, 142), (250, 154)], fill=(225, 120, 130))
    for side in (-1, 1):
        for slope in (-8, 0, 8):
            draw.line((250 + side * 22, 155, 250 + side * 80, 155 + slope), fill=(235, 235, 235), width=2)
    draw.ellipse((200, 305, 240, 330), fill=belly)  # The front paws.
    draw.ellipse((260, 305, 300, 330), fill=belly)
    return image


def draw_dog(image: Image.Image) -> Image.Image:
    """A brown dog with floppy ears standing in a meadow, seen from the side."""
    draw = ImageDraw.Draw(image)
    coat, dark, muzzle = (160, 105, 60), (95, 60, 35), (215, 180, 140)
    draw.ellipse((120, 300, 380, 335), fill=(45, 95, 35))  # The shadow on the grass.
    draw.line((345, 205, 395, 150), fill=coat, width=14)  # The tail.
    for left in (150, 185, 300, 330):
        draw.rounded_rectangle((left, 240, left + 28, 320), radius=12, fill=coat)  # The legs.
        draw.ellipse((left - 4, 305, left + 34, 325), fill=dark)
    draw.ellipse((130, 170, 365, 275), fill=coat)  # The body.
    draw.ellipse((200, 240, 320, 274), fill=muzzle)  # The pale belly.
    draw.rounded_rectangle((110, 150, 175, 230), radius=25, fill=coat)  # The neck.
    draw.ellipse((70, 90, 180, 200), fill=coat)  # The head.
    draw.ellipse((30, 140, 110, 190), fill=muzzle)  # The snout.
    draw.ellipse((22, 145, 44, 163), fill=(25, 20, 20))  # The nose.
    draw.line((40, 178, 85, 182), fill=dark, width=3)
    draw.ellipse((100, 118, 116, 134), fill=(30, 25, 20))  # The eye.
    draw.ellipse((105, 121, 109, 125), fill=(240, 240, 240))
    draw.ellipse((135, 95, 185, 185), fill=dark)  # The floppy ear.
    return image


def write_examples(folder: Path) -> list[Path]:
    """Write the three examples into ``folder`` and return their paths."""
    try:
        from skimage import data
    except ImportError:
        raise SystemExit("chelsea.jpg comes from scikit-image, which the app does not need: "
                         "pip install scikit-image") from None

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2024)
    pictures = {
        "chelsea.jpg": Image.fromarray(data.chelsea()),
        "cartoon_cat.jpg": draw_cat(wooden_floor(rng)).filter(ImageFilter.SMOOTH),
        "cartoon_dog.jpg": draw_dog(grassy_meadow(rng)).filter(ImageFilter.SMOOTH),
    }
    paths = []
    for name, picture in pictures.items():
        path = folder / name
        picture.save(path, quality=QUALITY)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples",
                        help="folder to write into (default: examples/ in the repository)")
    for path in write_examples(parser.parse_args().out):
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
