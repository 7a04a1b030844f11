"""Many photos (files, or .zip files of them) at once: each one's full-resolution cutout (``Segmenter.full_cutout``)
in one .zip, and a CSV of its class shares. A photo that cannot be used is a CSV row with its error; only the limits
on count and total size refuse a whole batch. No gradio here.

>>> unique_names(["cat.jpg", "cat.png", "dog.jpg", "Cat.JPG"])
['cat.png', 'cat-2.png', 'dog.png', 'Cat-3.png']
"""

from __future__ import annotations

import csv
import dataclasses
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from petseg.classes import CLASS_NAMES
from petseg.photos import PhotoError
from petseg.segmentation import Segmenter

MAX_PHOTOS = 50
MAX_TOTAL_BYTES = 200 * 2**20  # Of photos, zipped ones counted unpacked.
PREVIEW_SIDE = 320  # The gallery's pictures, in pixels on the longer side.


class BatchError(ValueError):
    """A batch refused as a whole (too many photos, too many bytes); the message can be shown as is."""


@dataclasses.dataclass
class BatchResult:
    """A finished batch: a captioned preview per photo cut out, the .zip of cutouts, the CSV, how many photos."""

    gallery: list[tuple[str, str]]
    zip_path: str
    csv_path: str
    photos: int


def collect_photos(paths: list[str | os.PathLike]) -> list[tuple[str, bytes | str]]:
    """``(name, file or bytes)`` for every uploaded photo, .zip members unpacked in order; ``BatchError`` past the
    limits, before any photo is decoded."""
    photos, total = [], 0
    for path in map(Path, paths):
        if not zipfile.is_zipfile(path):
            photos.append((path.name, str(path)))
            total += path.stat().st_size
            continue
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()
                       and not Path(info.filename).name.startswith(".") and "__MACOSX" not in info.filename]
            total += sum(info.file_size for info in members)  # Checked before anything is unpacked.
            check_limits(len(photos) + len(members), total)
            photos += [(Path(info.filename).name, archive.read(info)) for info in members]
    check_limits(len(photos), total)
    return photos


def check_limits(count: int, total_bytes: int) -> None:
    """Refuse a batch of more than ``MAX_PHOTOS`` photos or ``MAX_TOTAL_BYTES`` bytes with a readable message."""
    if count > MAX_PHOTOS:
        raise BatchError(f"A batch takes at most {MAX_PHOTOS} photos; this one has {count}. Please split it.")
    if total_bytes > MAX_TOTAL_BYTES:
        raise BatchError(f"A batch takes at most {MAX_TOTAL_BYTES // 2**20} MB of photos; this one has "
                         f"{total_bytes / 2**20:.0f} MB. Please split it.")


def unique_names(names: list[str]) -> list[str]:
    """Each photo's cutout name: its own stem with ``.png``, and ``-2``, ``-3``... where names clash."""
    seen, result = set(), []
    for name in names:
        stem = Path(name).stem or "photo"
        candidate, number = f"{stem}.png", 1
        while candidate.lower() in seen:
            number += 1
            candidate = f"{stem}-{number}.png"
        seen.add(candidate.lower())
        result.append(candidate)
    return result


def cut_out_batch(segmenter: Segmenter, paths: list[str | os.PathLike], checkpoint: str,
                  progress: Callable[[int, int, str], None] = lambda done, total, name: None) -> BatchResult:
    """Cut out every photo of ``paths`` with ``checkpoint``, calling ``progress(done, total, name)`` before each;
    ``BatchError`` for a batch over the limits, ``CheckpointError`` for an unusable checkpoint."""
    photos = collect_photos(paths)
    if not photos:
        raise BatchError("The batch holds no photos; upload photos or a .zip of photos.")
    folder = Path(tempfile.mkdtemp(dir=segmenter.outputs.root))
    rows, gallery = [], []
    with zipfile.ZipFile(folder / "cutouts.zip", "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed.
        for index, ((name, photo), cutout_name) in enumerate(zip(photos, unique_names([n for n, _ in photos]))):
            progress(index, len(photos), name)
            try:
                cutout = segmenter.full_cutout(photo, checkpoint, name)
            except PhotoError as error:
                rows.append({"file": name, "cutout": "", "error": str(error)})
                continue
            archive.write(cutout.path, cutout_name)
            rows.append({"file": name, "cutout": cutout_name, "error": "",
                         **{f"{label} %": f"{cutout.areas[label]:.2f}" for label in CLASS_NAMES}})
            with Image.open(cutout.path) as image:
                image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
                gallery.append((segmenter.outputs.write(image, name, "preview.png"), name))
    csv_path = folder / "class-shares.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, ["file", "cutout", *(f"{label} %" for label in CLASS_NAMES), "error"])
        writer.writeheader()
        writer.writerows(rows)
    progress(len(photos), len(photos), "")
    return BatchResult(gallery, str(folder / "cutouts.zip"), str(csv_path), len(photos))

