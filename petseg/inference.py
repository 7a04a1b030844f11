"""The request path: a photo and a checkpoint in, class probabilities at the photo's own size out.

The app, its API, the evaluator, the benchmarks and the exporter's parity check all call ``predict_probabilities``
(or its batched twin). Each checkpoint gets one compiled ``tf.function`` whose input signature accepts any photo
size, so a new size never retraces: it resizes the photo, runs the model, and resizes the probabilities (not the
argmax) back to the photo's size. That function runs a copy of the model with its batch norms folded into the
convolutions (``petseg.folding``), 10-20% faster on CPU and equal to the model to float rounding (about 1e-5).

>>> import numpy as np
>>> from petseg.synthetic import make_synthetic_pet
>>> photo = np.asarray(make_synthetic_pet(np.random.default_rng(0), 500, 375)[0])
>>> probabilities = predict_probabilities(photo, "finetune")  # The shipped checkpoint in weights/.
>>> probabilities.shape, bool(np.allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4))
((375, 500, 3), True)
"""

from __future__ import annotations

import threading

import numpy as np
import tensorflow as tf

from petseg.checkpoints import LoadedCheckpoint, load_checkpoint
from petseg.data import resize_image
from petseg.folding import fold_batch_norms


class Predictor:
    """One checkpoint's compiled forward passes.

    ``predict_one`` (the request path) runs ``request_model``: the checkpoint's model with its batch norms folded,
    a snapshot of its weights when the predictor was made (checkpoints are never changed once loaded), or the
    model itself where folding does not apply. ``predict_resized`` (the batch path, which the exporter checks its
    files against) runs the checkpoint's model as is.
    """

    def __init__(self, checkpoint: LoadedCheckpoint):
        self.checkpoint = checkpoint
        model = checkpoint.model
        size = checkpoint.image_size
        self.request_model = fold_batch_norms(model) or model
        request_model = self.request_model

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        def predict_one(image):
            height, width = tf.shape(image)[0], tf.shape(image)[1]
            model_input = resize_image(image[tf.newaxis], size)
            probabilities = tf.nn.softmax(request_model(model_input, training=False), axis=-1)
            return tf.image.resize(probabilities, tf.stack([height, width]), method="bilinear")[0]

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def predict_resized(images):
            return tf.nn.softmax(model(images, training=False), axis=-1)

        self.predict_one = predict_one
        self.predict_resized = predict_resized

    def warm_up(self, batch: bool = False) -> None:
        """Trace and run the single-photo function once so the first user request is as fast as the rest.

        The batch function is left to trace on its first call (evaluation and export use it, the app does not):
        tracing it here cost the app about a second of start-up and 15-35 MB per checkpoint. ``batch=True``
        traces it now as well.
        """
        self.predict_one(tf.zeros((64, 80, 3), tf.uint8))
        if batch:
            self.predict_resized(tf.zeros((1, self.checkpoint.image_size, self.checkpoint.image_size, 3)))

    def trace_count(self) -> int:
        """How many graphs the single-photo function has traced (1 after any number of photo sizes)."""
        return self.predict_one.experimental_get_tracing_count()


_predictors: dict[int, Predictor] = {}
_predictors_lock = threading.Lock()


def get_predictor(checkpoint: str | LoadedCheckpoint, weights_dir=None) -> Predictor:
    """Return the cached ``Predictor`` for a checkpoint name (from the weights folder) or a loaded checkpoint."""
    if isinstance(checkpoint, str):
        checkpoint = load_checkpoint(checkpoint, weights_dir)
    with _predictors_lock:
        key = id(checkpoint.model)
        if key not in _predictors or _predictors[key].checkpoint is not checkpoint:
            # Keep one predictor per checkpoint file: a rewritten checkpoint drops its older version's graphs.
            for stale in [cached for cached, predictor in _predictors.items()
                          if predictor.checkpoint.path == checkpoint.path]:
                del _predictors[stale]
            _predictors[key] = Predictor(checkpoint)
        return _predictors[key]


def predict_probabilities(image: np.ndarray, checkpoint: str | LoadedCheckpoint, weights_dir=None) -> np.ndarray:
    """Class probabilities (height, width, 3) float32 at the photo's size for an RGB uint8 photo.

    Decode uploads with ``petseg.photos.load_photo`` first; it turns any supported file into such an array.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 photo of shape (height, width, 3), got {image.shape} {image.dtype}.")
    return get_predictor(checkpoint, weights_dir).predict_one(image).numpy()


def predict_probabilities_batch(images: list[np.ndarray], checkpoint: str | LoadedCheckpoint, weights_dir=None,
                                batch_size: int = 16) -> list[np.ndarray]:
    """Like ``predict_probabilities`` for many photos of any sizes, running the model on batches of them."""
    predictor = get_predictor(checkpoint, weights_dir)
    size = predictor.checkpoint.image_size
    results: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        model_inputs = tf.stack([resize_image(tf.convert_to_tensor(image), size) for image in chunk])
        probabilities = predictor.predict_resized(model_inputs)
        for image, probability in zip(chunk, tf.unstack(probabilities)):
            results.append(tf.image.resize(probability, image.shape[:2], method="bilinear").numpy())
    return results


def predict_mask(image: np.ndarray, checkpoint: str | LoadedCheckpoint, weights_dir=None) -> np.ndarray:
    """The most likely class id per pixel (height, width) uint8 at the photo's size."""
    return predict_probabilities(image, checkpoint, weights_dir).argmax(axis=-1).astype(np.uint8)
