"""The request path: a photo and a checkpoint in, class probabilities at the photo's own size out.

The app, its API, the evaluator and the benchmarks all call ``predict_probabilities``: the checkpoint's checked
LiteRT export, one interpreter per checkpoint, sees the photo at its aspect ratio (a U-Net) or square (DeepLab),
resized in by Pillow as training resizes (antialiased bilinear) and out with bilinear. No TensorFlow or Keras here.

>>> import numpy as np
>>> from petseg.synthetic import make_synthetic_pet
>>> photo = np.asarray(make_synthetic_pet(np.random.default_rng(0), 500, 375)[0])
>>> probabilities = predict_probabilities(photo, "finetune")  # The shipped checkpoint in weights/.
>>> probabilities.shape, bool(np.allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4))
((375, 500, 3), True)
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy as np
from PIL import Image

from petseg.checkpoints import CheckpointError, CheckpointInfo, read_export, servable_entry
from petseg.litert import THREADS, ImagesRunner

STRIDE = 32  # A U-Net's input sides are multiples of this.
MAX_ASPECT = 3.0  # The longest input side, in shorter sides.


def resize_channels(image: np.ndarray, rows: int, columns: int, channels: int | None = None) -> np.ndarray:
    """A (height, width, channels) uint8 or float32 array as float32 (rows, columns, channels): Pillow's antialiased
    bilinear, one call per channel (the first ``channels`` only, if given), no transposes, no float copy of a photo.
    The channels are resized on every core at once: Pillow lets go of Python's lock while it resizes."""
    resized = np.empty((rows, columns, image.shape[2]), np.float32)

    def resize(channel: int) -> None:
        plane = image[..., channel]
        if plane.shape != (rows, columns):
            plane = Image.fromarray(np.ascontiguousarray(plane))
            plane = plane if plane.mode == "F" else plane.convert("F")  # "F" images keep floats.
            plane = plane.resize((columns, rows), Image.Resampling.BILINEAR)
        resized[..., channel] = plane

    list(_resize_pool.map(resize, range(image.shape[2] if channels is None else channels)))
    return resized


_resize_pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="petseg-resize")


def resize_photo(photo: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """An RGB uint8 photo as the model's float32 (rows, columns, 3) input in [0, 1]: antialiased bilinear.

    >>> model_input = resize_photo(np.full((3, 5, 3), 255, np.uint8), 4, 6)
    >>> model_input.shape, model_input.dtype, float(model_input.min())
    ((4, 6, 3), dtype('float32'), 1.0)
    """
    model_input = resize_channels(photo, rows, columns)
    model_input *= np.float32(1 / 255)
    return np.clip(model_input, 0.0, 1.0, out=model_input)


def resize_probabilities(probabilities: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per-class probabilities (rows, columns, classes) to (height, width, classes) with bilinear. Its weights sum
    to one, so the last class is one minus the others: one resize fewer."""
    resized = resize_channels(probabilities, height, width, channels=probabilities.shape[2] - 1)
    last = np.subtract(1.0, resized[..., 0], out=resized[..., -1])
    for channel in range(1, probabilities.shape[2] - 1):
        last -= resized[..., channel]
    np.maximum(last, 0.0, out=last)
    return resized


def smooth_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Blur (rows, columns, classes) probabilities by [1, 2, 1] / 4 along rows and columns, edges repeated: it
    removes the 2-pixel checkerboard of a U-Net's last stride-2 layer, keeps sums at one and masks as they were
    (validation at full size: mIoU 0.7870 against 0.7866 for ``finetune``).

    >>> checkerboard = np.indices((4, 4)).sum(axis=0) % 2 * 0.5 + 0.25  # 0.25 and 0.75 in turn.
    >>> probabilities = np.stack([checkerboard, 1 - checkerboard], axis=-1).astype(np.float32)
    >>> smooth_probabilities(probabilities)[1:3, 1:3, 0]
    array([[0.5, 0.5],
           [0.5, 0.5]], dtype=float32)
    """
    padded = np.pad(probabilities, ((1, 1), (1, 1), (0, 0)), mode="edge")
    rows = padded[:-2] + padded[2:] + 2 * padded[1:-1]
    return (rows[:, :-2] + rows[:, 2:] + 2 * rows[:, 1:-1]) * np.float32(1 / 16)


def input_shape(height: int, width: int, image_size: int, any_size: bool) -> tuple[int, int]:
    """The (rows, columns) a photo is resized to: the model's square, or for an export that takes any size, the
    shorter side at ``image_size`` and the longer in proportion (at most ``MAX_ASPECT`` times), a multiple of 32.

    >>> input_shape(375, 500, 160, any_size=True), input_shape(500, 375, 160, any_size=True)
    ((160, 224), (224, 160))
    >>> input_shape(375, 500, 160, any_size=False)
    (160, 160)
    """
    if not any_size:
        return image_size, image_size
    ratio = min(max(height, width) / min(height, width), MAX_ASPECT)
    longer = max(image_size, round(image_size * ratio / STRIDE) * STRIDE)
    return (image_size, longer) if height <= width else (longer, image_size)


class Predictor(ImagesRunner):
    """One checkpoint's LiteRT interpreter and the request path around it."""

    def __init__(self, checkpoint: CheckpointInfo, flatbuffer: bytes):
        self.checkpoint, self.image_size = checkpoint, checkpoint.image_size
        try:
            super().__init__(flatbuffer)  # The square below is a shape like any other.
        except ValueError as error:
            raise CheckpointError(f"Checkpoint {checkpoint.name} is unavailable: corrupt export ({error}).") from None
        self.lock = threading.Lock()
        square = (self.image_size, self.image_size, 3)
        try:  # The first run plans the graph; users never wait for it.
            shape = self(np.zeros((1, *square), np.float32)).shape[1:]
        except ValueError:
            shape = None
        if shape != square:
            raise CheckpointError(f"Checkpoint {checkpoint.name} is unavailable: its export does not take and return "
                                  f"{square} as its sidecar describes.")

    def predict(self, photo: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """Class probabilities (height, width, 3) float32 of an RGB uint8 photo, at ``size`` or the photo's own."""
        rows, columns = input_shape(*photo.shape[:2], self.image_size, self.any_size)
        model_input = resize_photo(photo, rows, columns)[np.newaxis]
        with self.lock:  # An interpreter runs one request at a time; the resizes run in parallel.
            probabilities = self(model_input)[0]
        return resize_probabilities(smooth_probabilities(probabilities), *(size or photo.shape[:2]))


def class_ids(probabilities: np.ndarray) -> np.ndarray:
    """The most likely class of each pixel as uint8, like ``argmax`` over the last axis (the first class on a tie)
    but one pass per class plane: 1.8 ms against argmax's 2.8 ms for a 500x375 photo.

    >>> class_ids(np.array([[[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]]], np.float32))
    array([[1, 0]], dtype=uint8)
    """
    ids = np.zeros(probabilities.shape[:-1], np.uint8)
    best = probabilities[..., 0]
    for class_id in range(1, probabilities.shape[-1]):
        better = probabilities[..., class_id] > best
        best = np.where(better, probabilities[..., class_id], best)
        ids += better.view(np.uint8) * (np.uint8(class_id) - ids)  # uint8 arithmetic: class_id where better.
    return ids


MAX_PREDICTORS = 4  # Checkpoints kept loaded (an interpreter each); the least recently used one goes first.
_predictors: dict[str, Predictor] = {}  # In order of use, the most recent last.
_predictors_lock = threading.Lock()


def get_predictor(checkpoint, weights_dir: str | os.PathLike | None = None) -> Predictor:
    """The cached ``Predictor`` of a checkpoint name in the weights folder, or of anything with a ``.path``. Each call
    checks the entry against its sidecar: a drifted export is refused (``CheckpointError``), a rebuilt one reloaded."""
    if not isinstance(checkpoint, str):  # A LoadedCheckpoint or CheckpointInfo: its own folder.
        checkpoint, weights_dir = checkpoint.path.stem, checkpoint.path.parent
    entry = servable_entry(checkpoint, weights_dir)
    key = str(entry.path)
    with _predictors_lock:
        cached = _predictors.pop(key, None)
        if cached is None or cached.checkpoint.sidecar["serving"] != entry.sidecar["serving"]:
            cached = Predictor(entry, read_export(entry))  # Replaces an older version's interpreter.
        _predictors[key] = cached
        while len(_predictors) > MAX_PREDICTORS:
            del _predictors[next(iter(_predictors))]
        return cached


def predict_probabilities(image: np.ndarray, checkpoint, weights_dir: str | os.PathLike | None = None,
                          size: tuple[int, int] | None = None) -> np.ndarray:
    """Class probabilities (height, width, 3) float32 for an RGB uint8 photo (decoded by ``petseg.photos``), at
    its size or at ``size`` (height, width); ``checkpoint`` is a name in the weights folder or a loaded checkpoint."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 photo of shape (height, width, 3), got {image.shape} {image.dtype}.")
    return get_predictor(checkpoint, weights_dir).predict(image, size)
