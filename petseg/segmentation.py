"""One photo through one checkpoint, ready to show: the pictures and numbers the app's Predict and Compare tabs need.

Nothing here imports gradio: ``petseg.ui`` turns these results into components, and tests call them directly.
Photos are decoded by ``petseg.photos.load_photo`` and predicted by ``petseg.inference.predict_probabilities``;
this module only arranges their results with ``petseg.visuals``.

>>> import numpy as np
>>> segmentation = Segmentation(np.zeros((2, 2, 3), np.uint8), np.array([[0, 1], [1, 2]], np.uint8), "tiny")
>>> int(segmentation.overlay(0.0).max())
0
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from petseg.checkpoints import CheckpointInfo, headline_metrics, list_checkpoints
from petseg.classes import CLASS_NAMES, PET
from petseg.inference import get_predictor, predict_probabilities
from petseg.visuals import class_areas, colorize_mask, confidence_map, cutout_pet, overlay_mask

# The cutout folder keeps this many recent downloads; older ones are deleted.
KEEP_CUTOUTS = 64


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """A photo and its predicted class ids: all the opacity slider needs to redraw the overlay.

    The class ids (one byte per pixel) are kept rather than the probabilities (twelve bytes per pixel), since the
    overlay only needs the ids; a 12-megapixel phone photo would otherwise hold 144 MB per browser session.
    """

    photo: np.ndarray  # (height, width, 3) uint8, upright.
    mask: np.ndarray  # (height, width) uint8 class ids.
    checkpoint: str

    def overlay(self, opacity: float) -> np.ndarray:
        """The photo with the class colours blended over it at ``opacity`` (clipped to 0..1)."""
        return overlay_mask(self.photo, self.mask, float(np.clip(opacity, 0.0, 1.0)))


@dataclasses.dataclass
class SegmentationResult:
    """Everything the Predict tab shows for one photo and one checkpoint."""

    segmentation: Segmentation
    colored_mask: np.ndarray  # (height, width, 3) uint8 in the class palette.
    overlay: np.ndarray  # (height, width, 3) uint8.
    confidence: np.ndarray  # (height, width, 3) uint8, bright where the model is sure.
    cutout: np.ndarray  # (height, width, 4) uint8, alpha from the pet probability.
    areas: dict[str, float]  # Percent of pixels per class name.
    seconds: float  # Model time, decoding excluded.


def segment(photo: np.ndarray, checkpoint: str, weights_dir: str | os.PathLike | None = None,
            opacity: float = 0.5) -> SegmentationResult:
    """Predict ``photo`` (an upright RGB uint8 array from ``load_photo``) with ``checkpoint`` at its own size.

    Raises ``petseg.checkpoints.CheckpointError`` when the checkpoint cannot be loaded.
    """
    get_predictor(checkpoint, weights_dir)  # Loads and runs the export on first use: the time below is the photo's.
    started = time.perf_counter()
    probabilities = predict_probabilities(photo, checkpoint, weights_dir)
    seconds = time.perf_counter() - started
    mask = probabilities.argmax(axis=-1).astype(np.uint8)
    segmentation = Segmentation(photo, mask, checkpoint)
    return SegmentationResult(
        segmentation=segmentation,
        colored_mask=colorize_mask(mask),
        overlay=segmentation.overlay(opacity),
        confidence=confidence_map(probabilities),
        cutout=cutout_pet(photo, probabilities),
        areas=class_areas(mask),
        seconds=seconds,
    )


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


def pet_area_change(first: np.ndarray, second: np.ndarray) -> float:
    """The second mask's pet area minus the first's, in percentage points."""
    return 100.0 * (float(np.mean(second == PET)) - float(np.mean(first == PET)))


class CutoutFolder:
    """A private temporary folder for cutout PNGs offered as downloads; it keeps only the most recent ones."""

    def __init__(self, root: str | os.PathLike | None = None, keep: int = KEEP_CUTOUTS):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="petseg-cutouts-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep

    def write(self, cutout: np.ndarray, photo_name: str | None) -> Path:
        """Write ``cutout`` as ``<photo stem>-cutout.png`` in a folder of its own, so names never collide.

        The file is new and private until this returns, so it needs none of ``save_png``'s atomic rename and
        fsync; the fastest zlib level makes it about five times faster for a fifth more bytes.
        """
        self._prune()
        folder = Path(tempfile.mkdtemp(dir=self.root))
        path = folder / f"{safe_stem(photo_name)}-cutout.png"
        Image.fromarray(cutout).save(path, format="PNG", compress_level=1)
        return path

    def _prune(self) -> None:
        folders = sorted((path for path in self.root.iterdir() if path.is_dir()), key=lambda path: path.stat().st_mtime)
        for folder in folders[: max(len(folders) - self.keep + 1, 0)]:
            shutil.rmtree(folder, ignore_errors=True)


def safe_stem(photo_name: str | None) -> str:
    """A file-name stem made of the upload's name: letters, digits, '-' and '_' only, at most 60 characters.

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


def find_checkpoint(name: str | None, weights_dir: str | os.PathLike | None = None) -> CheckpointInfo | None:
    """The registry entry called ``name``, or None."""
    return next((info for info in list_checkpoints(weights_dir) if info.name == name), None)


def checkpoint_markdown(info: CheckpointInfo | None) -> str:
    """A short Markdown card for one checkpoint: what it is, what it was trained on, how well it scores."""
    if info is None:
        return "No checkpoint selected."
    if not info.available:
        return f"**{info.name}** is unavailable: {info.reason}."
    sidecar = info.sidecar
    data = sidecar.get("data") or {}
    lines = [
        f"**{info.name}**: {sidecar.get('preset', '?')} preset, {sidecar.get('image_size', '?')} px input, "
        f"{sidecar.get('epochs', '?')} epochs on {data.get('source', 'unknown data')}"
        + (f" ({data['train']} training photos)" if "train" in data else "") + ".",
    ]
    headline = headline_metrics(sidecar)
    if headline:
        split, metrics = headline
        scores = [f"mIoU **{metrics['mean_iou']:.3f}**"]
        if metrics.get("pixel_accuracy") is not None:
            scores.append(f"pixel accuracy {metrics['pixel_accuracy']:.3f}")
        if metrics.get("binary_pet_iou") is not None:
            scores.append(f"pet IoU {metrics['binary_pet_iou']:.3f}")
        lines.append(f"On {split}: " + ", ".join(scores) + ".")
    else:
        lines.append("Not evaluated yet.")
    return "  \n".join(lines)
