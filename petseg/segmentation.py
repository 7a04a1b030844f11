"""One photo through one checkpoint, ready to show: the pictures and numbers the app's Predict and Compare tabs need.

Nothing here imports gradio: ``petseg.ui_predict`` turns these results into components, and tests call them
directly. Photos are decoded by ``petseg.photos.load_photo`` and predicted by
``petseg.inference.predict_probabilities``; the cutout is matted by ``petseg.matting``; this module only arranges
their results with ``petseg.visuals``.

>>> import numpy as np
>>> [name for _, name in class_layers(np.array([[0, 1], [1, 2]], np.uint8))]
['pet', 'background', 'border']
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from petseg import matting
from petseg.checkpoints import CheckpointInfo, epochs_trained, headline_metrics, list_checkpoints
from petseg.classes import CLASS_NAMES, PALETTE, PET
from petseg.inference import get_predictor, predict_probabilities
from petseg.visuals import class_areas, confidence_map

# The output folder keeps this many recent images (a /predict call writes four); older ones are deleted.
KEEP_OUTPUTS = 256
# How strongly each class colour covers the photo in the class map (gradio shows the layers at 85 % opacity).
LAYER_OPACITY = 0.6


@dataclasses.dataclass
class SegmentationResult:
    """What the model says about one photo: the first pictures the Predict tab shows, before the cutout."""

    photo: np.ndarray  # (height, width, 3) uint8, upright.
    mask: np.ndarray  # (height, width) uint8 class ids.
    confidence: np.ndarray  # (height, width, 3) uint8, bright where the model is sure.
    areas: dict[str, float]  # Percent of pixels per class name.
    seconds: float  # Model time, decoding excluded.


def segment(photo: np.ndarray, checkpoint: str, weights_dir: str | os.PathLike | None = None) -> SegmentationResult:
    """Predict ``photo`` (an upright RGB uint8 array from ``load_photo``) with ``checkpoint`` at its own size.

    Raises ``petseg.checkpoints.CheckpointError`` when the checkpoint cannot be loaded.
    """
    get_predictor(checkpoint, weights_dir)  # Loads and runs the export on first use: the time below is the photo's.
    started = time.perf_counter()
    probabilities = predict_probabilities(photo, checkpoint, weights_dir)
    seconds = time.perf_counter() - started
    mask = probabilities.argmax(axis=-1).astype(np.uint8)
    return SegmentationResult(photo=photo, mask=mask, confidence=confidence_map(probabilities),
                              areas=class_areas(mask), seconds=seconds)


def matted_cutout(photo: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The pet cut out of ``photo`` along ``mask`` with a real alpha matte (``petseg.matting``), and its seconds."""
    started = time.perf_counter()
    cutout = matting.cutout(photo, mask)
    return cutout, time.perf_counter() - started


def class_layers(mask: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """One RGBA picture per class, its colour where the mask has that class and clear elsewhere, with its name.

    ``gr.AnnotatedImage`` stacks these over the photo, draws the legend and highlights a class on hover.
    """
    layers = []
    for class_id, (name, colour) in enumerate(zip(CLASS_NAMES, PALETTE)):
        layer = np.zeros((*mask.shape, 4), np.uint8)
        layer[..., :3] = colour
        layer[..., 3] = np.where(mask == class_id, round(255 * LAYER_OPACITY), 0)
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


def pet_area_change(first: np.ndarray, second: np.ndarray) -> float:
    """The second mask's pet area minus the first's, in percentage points."""
    return 100.0 * (float(np.mean(second == PET)) - float(np.mean(first == PET)))


class OutputFolder:
    """A private temporary folder for every image the app sends: each one a new file that is never rewritten.

    Hand gradio a path from ``write``, never an array or a PIL image. Gradio (6.31) saves an array to its cache
    under a path named by the hash of the encoded bytes and rewrites that file in place
    (``processing_utils.save_pil_to_cache``: ``write_bytes`` truncates, then writes). Two identical requests at
    once make identical bytes, so the second truncates the very file that the first one's download is streaming:
    that download ends short ("Too little data for declared Content-Length") or arrives complete but empty. A
    path is copied into the cache under a temporary name and renamed into place, or reused when the cache holds
    it already (``save_file_to_cache``), so a file being served is never rewritten. Gradio copies the file while
    it postprocesses the event, right after the handler returns; the folder keeps the newest ``keep`` files.
    """

    def __init__(self, root: str | os.PathLike | None = None, keep: int = KEEP_OUTPUTS):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="petseg-outputs-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._prune_lock = threading.Lock()

    def write(self, image: np.ndarray, photo_name: str | None, suffix: str) -> str:
        """Write ``image`` as ``<photo stem>-<suffix>`` (e.g. ``mask.png``, ``overlay.jpg``) in a new folder.

        The extension picks the format: PNG at the fastest zlib level (about five times faster than the default
        for a fifth more bytes), else JPEG at Pillow's default quality, as gradio would have encoded it. The file
        is new and private until this returns, so it needs none of ``save_png``'s atomic rename and fsync.

        >>> folder = OutputFolder(tempfile.mkdtemp())
        >>> Path(folder.write(np.zeros((4, 4, 3), np.uint8), "My cat.jpg", "mask.png")).name
        'My_cat-mask.png'
        """
        image_format = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(suffix).suffix.lower())
        if image_format is None:
            raise ValueError(f"Cannot write an image called {suffix!r}: name a .png, .jpg or .jpeg file.")
        self._prune()
        path = Path(tempfile.mkdtemp(dir=self.root)) / f"{safe_stem(photo_name)}-{suffix}"
        options = {"compress_level": 1} if image_format == "PNG" else {}
        Image.fromarray(image).save(path, format=image_format, **options)
        return str(path)

    def _prune(self) -> None:
        """Delete all but the newest ``keep - 1`` folders, one request thread at a time."""
        with self._prune_lock:
            folders = sorted(self.root.iterdir(), key=lambda path: path.stat().st_mtime)
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
        f"{epochs_trained(sidecar)} on {data.get('source', 'unknown data')}"
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
