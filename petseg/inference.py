"""The request path: a photo and a checkpoint in, class probabilities at the photo's own size out.

The app, its API, the evaluator and the benchmarks all call ``predict_probabilities``. It runs the checkpoint's
LiteRT export (``<name>.tflite``, made when the checkpoint was saved and checked against its sha256 in the
sidecar) in one interpreter per checkpoint, loaded once, whose input is fixed at the model's size: a new photo size
never converts, traces or reallocates anything. Around it, Pillow resizes the photo in with antialiased bilinear
(the resize training and evaluation use, ``petseg.resize.resize_image``, to float rounding) and the probabilities,
not the argmax, back to the photo's size with bilinear (antialiased when the photo is smaller than the model's
input). Neither TensorFlow nor Keras is imported here.

>>> import numpy as np
>>> from petseg.synthetic import make_synthetic_pet
>>> photo = np.asarray(make_synthetic_pet(np.random.default_rng(0), 500, 375)[0])
>>> probabilities = predict_probabilities(photo, "finetune")  # The shipped checkpoint in weights/.
>>> probabilities.shape, bool(np.allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4))
((375, 500, 3), True)
"""

from __future__ import annotations

import os
import threading

import numpy as np
from PIL import Image

from petseg.checkpoints import CheckpointError, CheckpointInfo, read_export, servable_entry
from petseg.litert import make_interpreter


def resize_planes(planes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a float32 (rows, columns) array with Pillow's antialiased bilinear ("F" images keep floats)."""
    if planes.shape == (height, width):
        return planes
    return np.asarray(Image.fromarray(planes).resize((width, height), Image.Resampling.BILINEAR))


def resize_photo(photo: np.ndarray, size: int) -> np.ndarray:
    """An RGB uint8 photo as the model's float32 (size, size, 3) input in [0, 1]: antialiased bilinear.

    Rows first, with the channels side by side in one float image, then columns with each channel's rows one under
    another: two Pillow calls, each resizing one axis only.

    >>> model_input = resize_photo(np.full((3, 5, 3), 255, np.uint8), 4)
    >>> model_input.shape, model_input.dtype, float(model_input.min())
    ((4, 4, 3), dtype('float32'), 1.0)
    """
    height, width, channels = photo.shape
    rows = resize_planes(photo.reshape(height, width * channels).astype(np.float32), width * channels, size)
    planes = np.ascontiguousarray(rows.reshape(size, width, channels).transpose(0, 2, 1))
    columns = resize_planes(planes.reshape(size * channels, width), size, size * channels)
    model_input = np.ascontiguousarray(columns.reshape(size, channels, size).transpose(0, 2, 1))
    return np.clip(model_input * np.float32(1 / 255), 0.0, 1.0)


def resize_probabilities(probabilities: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per-class probabilities (size, size, classes) to (height, width, classes): columns, then rows, bilinear.

    The result may be read-only (Pillow's buffer, not copied again): nothing in the request path writes to it.
    """
    size, _, classes = probabilities.shape
    planes = np.ascontiguousarray(probabilities.transpose(0, 2, 1)).reshape(size * classes, size)
    planes = resize_planes(planes, width, size * classes)
    rows = np.ascontiguousarray(planes.reshape(size, classes, width).transpose(0, 2, 1))
    return resize_planes(rows.reshape(size, width * classes), width * classes, height).reshape(height, width, classes)


class Predictor:
    """One checkpoint's LiteRT interpreter, fixed at the model's input size, and the request path around it."""

    def __init__(self, checkpoint: CheckpointInfo, flatbuffer: bytes):
        self.checkpoint = checkpoint
        self.image_size = int(checkpoint.sidecar["image_size"])
        try:
            self.interpreter = make_interpreter(flatbuffer)
        except ValueError as error:
            raise CheckpointError(f"Checkpoint {checkpoint.name} is unavailable: corrupt export ({error}).") from None
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.lock = threading.Lock()  # An interpreter runs one request at a time; the resizes run in parallel.
        expected = (1, self.image_size, self.image_size, 3)
        shapes = [tuple(detail["shape"]) for detail in (*self.interpreter.get_input_details(),
                                                         *self.interpreter.get_output_details())]
        if shapes != [expected, expected]:
            raise CheckpointError(f"Checkpoint {checkpoint.name} is unavailable: its export takes and returns "
                                  f"{shapes}, not what its sidecar describes.")
        self.run(np.zeros(expected[1:], np.float32))  # The first run plans the graph; users never wait for it.

    def run(self, model_input: np.ndarray) -> np.ndarray:
        """The model's probabilities (size, size, 3) for one resized photo (size, size, 3) float32 in [0, 1]."""
        with self.lock:
            self.interpreter.set_tensor(self.input_index, model_input[np.newaxis])
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output_index)[0]  # get_tensor returns a copy.

    def predict(self, photo: np.ndarray) -> np.ndarray:
        """Class probabilities (height, width, 3) float32 at the photo's size for an RGB uint8 photo."""
        probabilities = self.run(resize_photo(photo, self.image_size))
        return resize_probabilities(probabilities, photo.shape[0], photo.shape[1])


_predictors: dict[str, Predictor] = {}
_predictors_lock = threading.Lock()


def get_predictor(checkpoint, weights_dir: str | os.PathLike | None = None) -> Predictor:
    """The cached ``Predictor`` of a checkpoint name in the weights folder, or of anything with a ``.path``.

    Each call checks the entry against its sidecar (cheap: hashes are kept per file version), so an export that
    drifted since it was loaded is refused, and a rebuilt one is loaded afresh. Raises ``CheckpointError``.
    """
    if not isinstance(checkpoint, str):  # A LoadedCheckpoint or CheckpointInfo: its own folder.
        checkpoint, weights_dir = checkpoint.path.stem, checkpoint.path.parent
    entry = servable_entry(checkpoint, weights_dir)
    key = str(entry.path)
    with _predictors_lock:
        cached = _predictors.get(key)
        if cached is None or cached.checkpoint.sidecar["serving"] != entry.sidecar["serving"]:
            _predictors[key] = Predictor(entry, read_export(entry))  # Replaces an older version's interpreter.
        return _predictors[key]


def predict_probabilities(image: np.ndarray, checkpoint, weights_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Class probabilities (height, width, 3) float32 at the photo's size for an RGB uint8 photo (maybe read-only).

    ``checkpoint`` is a name in the weights folder or a loaded checkpoint. Decode uploads with
    ``petseg.photos.load_photo`` first; it turns any supported file (grayscale, CMYK, ...) into such an array.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 photo of shape (height, width, 3), got {image.shape} {image.dtype}.")
    return get_predictor(checkpoint, weights_dir).predict(image)
