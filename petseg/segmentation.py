"""One photo through one checkpoint, ready to show: ``Segmenter`` makes the files and numbers of the Predict, Compare
and Batch tabs in one call per step (no gradio here). The page gets pictures at most ``SCREEN_SIDE`` pixels on the
longer side; only the downloadable cutout is made at full resolution, once per photo and checkpoint. A batch (files,
or .zip files of them) is one .zip of such cutouts and a CSV of class shares: a photo that cannot be used is a CSV row
with its error; only the limits on count and total size refuse a whole batch.

>>> import numpy as np
>>> [name for _, name in class_layers(np.array([[0, 1], [1, 2]], np.uint8))]
['pet', 'background', 'border']
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from petseg import matting
from petseg.checkpoints import CheckpointInfo, epochs_trained, headline_metrics, list_checkpoints
from petseg.classes import CLASS_NAMES, PALETTE
from petseg.inference import class_ids, get_predictor, predict_probabilities
from petseg.photos import PhotoError, PhotoSource, decode_photo, load_photo
from petseg.visuals import class_areas, confidence_map

KEEP_OUTPUTS = 256  # Recent images the output folder keeps (a /predict call writes six); older ones are deleted.
LAYER_OPACITY = 0.6  # How strongly a class colour covers the photo in the class map (gradio shows layers at 85 %).
SCREEN_SIDE = 1600  # Pictures the page shows are at most this many pixels on their longer side.
KEEP_CUTOUTS = 32  # Full-resolution cutouts remembered per photo and checkpoint (their files are the output folder's).
MAX_PHOTOS = 50  # In a batch.
MAX_TOTAL_BYTES = 200 * 2**20  # Of a batch's photos, zipped ones counted unpacked.
PREVIEW_SIDE = 320  # The batch gallery's pictures, in pixels on the longer side.


@dataclasses.dataclass
class Pictures:
    """What the model says about one photo, at screen size: the first pictures the Predict tab shows, as files."""

    photo: np.ndarray  # (height, width, 3) uint8, upright, at most SCREEN_SIDE on the longer side.
    mask: np.ndarray  # (height, width) uint8 class ids at the same size.
    class_map: tuple[str, list[tuple[str, str]]]  # The photo's JPEG and a (layer PNG, class name) per class.
    confidence: str  # A JPEG, bright where the model is sure.
    areas: dict[str, float]  # Percent of pixels per class name.
    size: str  # The photo's full size, "<width>x<height> px".
    seconds: float  # Model time, decoding excluded.
    name: str | None  # The upload's name, for file names.
    key: tuple | None  # What its full-resolution cutout is remembered by, if the photo is shown at its own size.


@dataclasses.dataclass
class Cutout:
    """The pet cut out of one photo at full resolution: a transparent PNG and the class shares it was cut along."""

    path: str
    areas: dict[str, float]  # Percent of pixels per class name, at full size.


class Segmenter:
    """Photos through checkpoints, written as files into an ``OutputFolder``; one method per step of a request."""

    def __init__(self, weights_dir: str | os.PathLike, outputs: OutputFolder):
        self.weights_dir, self.outputs = weights_dir, outputs
        self._cutouts: collections.OrderedDict[tuple, Cutout] = collections.OrderedDict()
        self._cutouts_lock = threading.Lock()

    def pictures(self, upload: PhotoSource, checkpoint: str, name: str | None = None) -> Pictures:
        """Decode ``upload`` at screen size, predict it, write the class map and confidence; ``PhotoError`` or
        ``CheckpointError`` for an unusable photo or checkpoint."""
        photo, (width, height) = decode_photo(upload, max_side=SCREEN_SIDE)
        probabilities, seconds = self._predict(photo, checkpoint)
        mask = class_ids(probabilities)
        photo_file = self.outputs.write(photo, name, "photo.jpg")
        layers = [(self.outputs.write(layer, name, f"{label}.png"), label) for layer, label in class_layers(mask)]
        return Pictures(photo=photo, mask=mask, class_map=(photo_file, layers),
                        confidence=self.outputs.write(confidence_map(probabilities), name, "confidence.jpg"),
                        areas=class_areas(mask), size=f"{width}x{height} px", seconds=seconds, name=name,
                        key=self._cutout_key(upload, checkpoint, name) if photo.shape[:2] == (height, width) else None)

    def screen_cutout(self, pictures: Pictures) -> tuple[str, float]:
        """The matted cutout at screen size (a PNG) and its seconds; also the full-size one for a photo shown whole."""
        started = time.perf_counter()
        path = self.outputs.write(matting.cutout(pictures.photo, pictures.mask), pictures.name, "cutout.png")
        if pictures.key is not None:
            self._remember(pictures.key, Cutout(path, pictures.areas))
        return path, time.perf_counter() - started

    def full_cutout(self, upload: PhotoSource, checkpoint: str, name: str | None = None) -> Cutout:
        """The matted cutout at full resolution, made once per photo and checkpoint, along the class map's mask (the
        model sees the same screen-sized photo; its probabilities go straight to full size)."""
        key = self._cutout_key(upload, checkpoint, name)
        with self._cutouts_lock:
            known = self._cutouts.get(key)
        if known is not None and Path(known.path).is_file():
            return known
        photo = load_photo(upload)
        screen_photo, _ = decode_photo(upload, max_side=SCREEN_SIDE)
        mask = class_ids(self._predict(screen_photo, checkpoint, size=photo.shape[:2])[0])
        result = Cutout(self.outputs.write(matting.cutout(photo, mask), name, "cutout.png"), class_areas(mask))
        self._remember(key, result)
        return result

    def _cutout_key(self, upload: PhotoSource, checkpoint: str, name: str | None) -> tuple:
        """What a cutout is remembered by: the SHA-256 of the photo, its name, the checkpoint and its sidecar."""
        if isinstance(upload, (str, os.PathLike)):
            try:
                upload = Path(upload).read_bytes()
            except OSError:
                upload = f"unreadable:{upload}".encode()  # load_photo will explain.
        data = upload if isinstance(upload, (bytes, bytearray)) else np.asarray(upload).tobytes()
        sidecar = get_predictor(checkpoint, self.weights_dir).checkpoint.sidecar
        return hashlib.sha256(data).hexdigest(), name, checkpoint, repr(sidecar)

    def _remember(self, key: tuple, cutout: Cutout) -> None:
        """Keep ``cutout`` for ``key``, forgetting the oldest beyond ``KEEP_CUTOUTS``."""
        with self._cutouts_lock:
            self._cutouts[key] = cutout
            while len(self._cutouts) > KEEP_CUTOUTS:
                self._cutouts.popitem(last=False)

    def _predict(self, photo: np.ndarray, checkpoint: str, size: tuple[int, int] | None = None
                 ) -> tuple[np.ndarray, float]:
        """The checkpoint's probabilities for ``photo`` (at ``size``, default the photo's) and the model's seconds."""
        get_predictor(checkpoint, self.weights_dir)  # Loads and runs the export on first use: not the photo's time.
        started = time.perf_counter()
        probabilities = predict_probabilities(photo, checkpoint, self.weights_dir, size)
        return probabilities, time.perf_counter() - started


def class_layers(mask: np.ndarray) -> list[tuple[Image.Image, str]]:
    """One picture per class (its colour where the mask has that class, clear elsewhere) and its name, for
    ``gr.AnnotatedImage``: two-colour palette images with a clear entry, ten times faster to encode than RGBA."""
    layers = []
    for class_id, (name, colour) in enumerate(zip(CLASS_NAMES, PALETTE)):
        layer = Image.fromarray((mask == class_id).astype(np.uint8))
        layer.putpalette([0, 0, 0, *colour])  # Entry 0 clear, entry 1 the class colour: a "P" image.
        layer.info["transparency"] = bytes([0, round(255 * LAYER_OPACITY)])
        layers.append((layer, name))
    return layers


def area_fractions(areas: dict[str, float]) -> dict[str, float]:
    """Percentages as fractions of 1, in class order, the form a ``gr.Label`` shows as bars.

    >>> area_fractions({"pet": 25.0, "background": 75.0, "border": 0.0})
    {'pet': 0.25, 'background': 0.75, 'border': 0.0}
    """
    return {name: areas.get(name, 0.0) / 100.0 for name in CLASS_NAMES}


def mask_agreement(first: np.ndarray, second: np.ndarray) -> float:
    """The percentage of pixels where two masks of the same photo give the same class.

    >>> mask_agreement(np.array([[0, 1]]), np.array([[0, 2]]))
    50.0
    """
    if first.shape != second.shape:
        raise ValueError(f"The masks are shaped {first.shape} and {second.shape}; they must match.")
    return 100.0 * float(np.mean(first == second))


class OutputFolder:
    """A private folder for every image the app sends, each a new file never rewritten; it keeps the newest ``keep``.
    Hand gradio a path from ``write``, never an array: gradio rewrites an array's file in place, truncating a
    download in progress (docs/limits-and-safety.md, "The request queue")."""

    def __init__(self, parent: str | os.PathLike | None = None, keep: int = KEEP_OUTPUTS):
        Path(parent or tempfile.gettempdir()).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="petseg-outputs-", dir=parent))
        self.keep = keep
        self._prune_lock = threading.Lock()

    def write(self, image: np.ndarray | Image.Image, photo_name: str | None, suffix: str) -> str:
        """Write ``image`` as ``<photo stem>-<suffix>`` in a new folder, a PNG at the fastest zlib level (five times
        faster, a fifth more bytes) or a JPEG; the file is private until this returns, so it needs no atomic rename.

        >>> folder = OutputFolder(tempfile.mkdtemp())
        >>> Path(folder.write(np.zeros((4, 4, 3), np.uint8), "My cat.jpg", "mask.png")).name
        'My_cat-mask.png'
        """
        with self._prune_lock:  # All but the newest keep - 1 folders go, one request thread at a time.
            folders = sorted(self.root.iterdir(), key=lambda path: path.stat().st_mtime)
            for folder in folders[: max(len(folders) - self.keep + 1, 0)]:
                shutil.rmtree(folder, ignore_errors=True)
        path = Path(tempfile.mkdtemp(dir=self.root)) / f"{safe_stem(photo_name)}-{suffix}"
        picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
        picture.save(path, compress_level=1)  # JPEG ignores the PNG level.
        return str(path)


def safe_stem(photo_name: str | None) -> str:
    """A file-name stem from the upload's name: letters, digits, '-' and '_', at most 60 characters.

    >>> safe_stem("/tmp/gradio/abc/My cat (1).JPG")
    'My_cat_1'
    >>> safe_stem(None)
    'pet'
    """
    stem = Path(photo_name).stem if photo_name else ""
    cleaned = "".join(character if character.isalnum() or character in "-_" else "_" for character in stem)
    cleaned = "_".join(part for part in cleaned.split("_") if part)[:60]
    return cleaned or "pet"


def checkpoint_choices(weights_dir: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """Dropdown choices ``(label, name)`` for every checkpoint, best first; unavailable ones say why in the label."""
    return [(info.describe(), info.name) for info in list_checkpoints(weights_dir)]


def checkpoint_markdown(info: CheckpointInfo) -> str:
    """A short Markdown card for one checkpoint: what it is, what it was trained on, its scores."""
    if not info.available:
        return f"**{info.name}** is unavailable: {info.reason}."
    sidecar, data = info.sidecar, info.sidecar.get("data") or {}
    summary = (f"**{info.name}**: {sidecar.get('preset', '?')} preset, {sidecar.get('image_size', '?')} px input, "
               f"{epochs_trained(sidecar)} on {data.get('source', 'unknown data')}"
               + (f" ({data['train']} training photos)" if "train" in data else "") + ".  \n")
    if not (headline := headline_metrics(sidecar)):
        return summary + "Not evaluated yet."
    split, metrics = headline
    scores = [f"mIoU **{metrics['mean_iou']:.3f}**"] + [f"{label} {metrics[key]:.3f}" for key, label in (
        ("pixel_accuracy", "pixel accuracy"), ("binary_pet_iou", "pet IoU")) if metrics.get(key) is not None]
    return summary + f"On {split}: " + ", ".join(scores) + "."


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
    """Each photo's cutout name: its own stem with ``.png``, and ``-2``, ``-3``... where names clash.

    >>> unique_names(["cat.jpg", "cat.png", "dog.jpg", "Cat.JPG"])
    ['cat.png', 'cat-2.png', 'dog.png', 'Cat-3.png']
    """
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

