"""Tiny synthetic pets (a blob with ears on a textured background) and trimaps in the official Oxford-IIIT Pet
layout: the app's demo data, and data for tests and benchmarks.

>>> import tempfile
>>> sorted(path.name for path in (make_synthetic_pets(tempfile.mkdtemp(), 4, 2) / "annotations").iterdir())
['test.txt', 'trainval.txt', 'trimaps']
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BREEDS = (("Synthetic_cat", 1), ("synthetic_dog", 2))  # Capitalised names are cats, as in the real set.


def make_synthetic_pet(rng: np.random.Generator, width: int, height: int) -> tuple[Image.Image, Image.Image]:
    """Draw one photo and its trimap (values 1 pet, 2 background, 3 border)."""
    background, noise = rng.integers(0, 255, size=3), rng.normal(0, 25, size=(height, width, 3))
    pixels = np.clip(background + noise + np.linspace(-30, 30, width)[None, :, None], 0, 255).astype(np.uint8)
    photo = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.5))
    pet_mask = Image.new("L", (width, height), 0)
    fur = tuple(int(value) for value in rng.integers(0, 255, size=3))
    centre_x, centre_y = rng.uniform(0.35, 0.65) * width, rng.uniform(0.4, 0.65) * height
    body_w, body_h = rng.uniform(0.2, 0.32) * width, rng.uniform(0.15, 0.25) * height
    head_r = min(width, height) * rng.uniform(0.09, 0.14)
    shapes = [(centre_x - body_w, centre_y - body_h, centre_x + body_w, centre_y + body_h),
              (centre_x - head_r * 0.8, centre_y - body_h - head_r * 1.6, centre_x + head_r * 1.2,
               centre_y - body_h + head_r * 0.4)]
    ear_y = centre_y - body_h - head_r * 1.5  # Ears make the silhouette less of an ellipse.
    ears = [[(ear_x - head_r * 0.4, ear_y + head_r * 0.3), (ear_x + head_r * 0.4, ear_y + head_r * 0.3),
             (ear_x, ear_y - head_r * 0.6)] for ear_x in (centre_x - head_r * 0.5, centre_x + head_r * 0.9)]
    for draw, fill in ((ImageDraw.Draw(pet_mask), 255), (ImageDraw.Draw(photo), fur)):
        for shape in shapes:
            draw.ellipse(shape, fill=fill)
        for ear in ears:
            draw.polygon(ear, fill=fill)
    inside, outer, inner = (np.asarray(mask) > 127 for mask in (
        pet_mask, pet_mask.filter(ImageFilter.MaxFilter(5)), pet_mask.filter(ImageFilter.MinFilter(5))))
    trimap = np.where(outer & ~inner, 3, np.where(inside, 1, 2)).astype(np.uint8)
    return photo, Image.fromarray(trimap)


def make_synthetic_pets(root: str | os.PathLike, trainval_count: int = 12, test_count: int = 4, seed: int = 0,
                        min_size: int = 96, max_size: int = 200) -> Path:
    """Write ``trainval_count + test_count`` pets of ``min_size`` to ``max_size`` px a side under ``root``."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for index in range(trainval_count + test_count):
        breed, species = BREEDS[index % len(BREEDS)]
        name = f"{breed}_{index + 1}"
        width, height = (int(value) for value in rng.integers(min_size, max_size + 1, size=2))
        photo, trimap = make_synthetic_pet(rng, width, height)
        photo.save(root / "images" / f"{name}.jpg", quality=90)
        trimap.save(root / "annotations" / "trimaps" / f"{name}.png")
        lines.append(f"{name} {species} {species} {species}")  # Name, class (1..37), species (1 cat, 2 dog), breed.
    for split, split_lines in (("trainval", lines[:trainval_count]), ("test", lines[trainval_count:])):
        (root / "annotations" / f"{split}.txt").write_text("\n".join(split_lines) + "\n")
    return root
