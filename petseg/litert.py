"""TFLite flatbuffers of PetSeg models: made from Keras with TensorFlow, run with LiteRT (``ai_edge_litert``).

A flatbuffer takes float32 images in [0, 1], ``(batch, height, width, 3)`` (the model's square, or any multiples of
32 for a U-Net rebuilt with ``any_size=True``), and returns softmax probabilities; running one needs no TensorFlow.

>>> mask_agreement(np.eye(3)[[0, 1, 2, 2]], np.eye(3)[[0, 1, 2, 1]])
0.75
"""

from __future__ import annotations

import logging
import warnings
from typing import Callable

import numpy as np

QUANTIZATIONS = ("float32", "float16", "int8_decoder")
DECODER_LAYERS = ("/upsample_", "/skip_", "/logits")  # Graph names of a U-Net's decoder (``petseg.model``).
INPUT_NAME = "images"
THREADS = 2  # The CPU's cores; more threads than cores only wait for each other.
CHECK_PHOTOS = 8  # Synthetic photos every export is checked on against its Keras model.
CALIBRATION_PHOTOS = 16  # Synthetic photos that set an int8 decoder's activation ranges.
EXPORT_MAX_FLOAT32_BYTES = 16 * 2**20  # A served export over this in float32 keeps float16 weights.
MIN_AGREEMENT = 0.99  # The least fraction of mask pixels on which an export and its model must agree.

ImagesFunction = Callable[[np.ndarray], np.ndarray]

# The converter calls this path deprecated at every save, but the one it recommends (``trackable_obj``) drops
# Keras 3's weights: keep that one warning out of training logs.
logging.getLogger("absl").addFilter(lambda record: "trackable_obj" not in record.getMessage())


def convert_to_tflite(model, quantize: str = "float32", image_size: int | tuple[int, int] | None = None) -> bytes:
    """Convert the model as it is to a TFLite flatbuffer. ``float16``: half-precision weights. ``int8_decoder``: a
    U-Net's decoder in int8 (weights and activations, ranges calibrated on synthetic photos of ``image_size``), its
    encoder and softmax in float32: MobileNetV2's depthwise layers lose accuracy in int8, the decoder does not
    (docs/performance.md). Batch norms are folded. Give it a model rebuilt by ``model_with_dtype(model, "float32",
    subpixel=True)``: its transposed convolutions then compute the same numbers as sub-pixel convolutions, which
    XNNPACK runs on every core."""
    import tensorflow as tf

    function = tf.function(lambda images: tf.nn.softmax(model(images, training=False), axis=-1))
    traced = function.get_concrete_function(tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=INPUT_NAME))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([traced])
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    if quantize != "int8_decoder":
        return converter.convert()
    if not is_unet(model):
        raise ValueError("this model has no U-Net decoder for int8_decoder to quantize (use float32 or float16)")
    from ai_edge_litert.interpreter import Interpreter

    images = synthetic_images(CALIBRATION_PHOTOS, image_size or model.input_shape[1:3], seed=1)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[np.newaxis]] for image in images)
    with warnings.catch_warnings():  # The debugger's own tf.lite.Interpreter is deprecated, and says so.
        warnings.simplefilter("ignore", UserWarning)
        # The debugger calibrates once; the layers outside the decoder are then left in float32 by their graph names.
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                             debug_dataset=converter.representative_dataset)
        names = {detail["name"] for detail in Interpreter(model_content=debugger.calibrated_model).get_tensor_details()}
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=sorted(name for name in names if not any(part in name for part in DECODER_LAYERS)))
        return debugger.get_nondebug_quantized_model()


def is_unet(model) -> bool:
    """Whether a Keras model is ``petseg.model``'s U-Net (its last layer is named "logits"), not DeepLab."""
    return model.layers[-1].name == "logits"


def synthetic_images(count: int, image_size: int | tuple[int, int], seed: int = 0) -> np.ndarray:
    """``count`` synthetic pet photos of random sizes, resized as the app resizes them to ``image_size`` (a side, or
    height and width): float32 (count, height, width, 3) in [0, 1]."""
    import tensorflow as tf

    from petseg.resize import resize_image
    from petseg.synthetic import make_synthetic_pet

    rng = np.random.default_rng(seed)
    photos = [make_synthetic_pet(rng, *map(int, rng.integers(96, 201, size=2)))[0] for _ in range(count)]
    return np.stack([resize_image(tf.convert_to_tensor(np.asarray(photo)), image_size).numpy() for photo in photos])


class ImagesRunner:
    """A flatbuffer's interpreter as a function (one call at a time) from float images (batch, height, width, 3) to
    probabilities, tensors reallocated only for a new shape; ``ValueError`` for a refused shape or flatbuffer."""

    def __init__(self, flatbuffer: bytes):
        from ai_edge_litert.interpreter import Interpreter

        try:  # Allocated here (at 32 px if it takes any size), so that a damaged flatbuffer fails now.
            self.interpreter = Interpreter(model_content=bytes(flatbuffer), num_threads=THREADS)
            details = self.interpreter.get_input_details()[0]
            if -1 in details["shape_signature"][1:3]:
                self.interpreter.resize_tensor_input(details["index"], (1, 32, 32, 3), strict=True)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError, IndexError) as error:
            raise ValueError(f"LiteRT could not load it ({str(error).splitlines()[0][:120]})") from error
        self.input_index, self.output_index = details["index"], self.interpreter.get_output_details()[0]["index"]
        self.any_size = tuple(details["shape_signature"][1:3]) == (-1, -1)
        self.shape = tuple(self.interpreter.get_input_details()[0]["shape"])  # What the tensors are allocated for.

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        try:
            if images.shape != self.shape:
                self.interpreter.resize_tensor_input(self.input_index, images.shape, strict=True)
                self.interpreter.allocate_tensors()
                self.shape = images.shape
            self.interpreter.set_tensor(self.input_index, images)
            self.interpreter.invoke()
        except RuntimeError as error:  # A fixed-size export, or a size the model cannot take.
            self.shape = None  # Reallocate on the next call, whatever its shape.
            raise ValueError(f"the export does not take {images.shape[1:]}: {error}") from None
        return self.interpreter.get_tensor(self.output_index)  # get_tensor returns a copy.


def keras_probabilities(model, images: np.ndarray) -> np.ndarray:
    """Softmax probabilities of the Keras model itself: the reference every export is checked against."""
    import keras

    logits = model(np.asarray(images, np.float32), training=False)
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))


def mask_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The fraction of pixels whose most likely class is the same in two probability arrays."""
    if reference.shape != candidate.shape:
        raise ValueError(f"The export returns shape {candidate.shape}, the Keras model {reference.shape}.")
    return float(np.mean(reference.argmax(axis=-1) == candidate.argmax(axis=-1)))


def parity(model, exported: bytes | ImagesFunction, image_size: int | tuple[int, int]) -> dict[str, float]:
    """How closely an export (a flatbuffer or a function) reproduces the Keras model on synthetic photos: mask
    agreement and largest difference; ``ValueError`` below ``MIN_AGREEMENT``. The photos are resized as the app
    resizes them to ``image_size`` (a side, or height and width)."""
    images = synthetic_images(CHECK_PHOTOS, image_size)
    expected = keras_probabilities(model, images)
    actual = (exported if callable(exported) else ImagesRunner(exported))(images)
    agreement = mask_agreement(expected, actual)
    if agreement < MIN_AGREEMENT:
        raise ValueError(f"its export agrees with the Keras model on only {agreement:.2%} of mask pixels "
                         f"(at least {MIN_AGREEMENT:.0%} expected)")
    return {"mask_agreement": agreement, "max_probability_difference": float(np.max(np.abs(expected - actual)))}


def takes_any_size(sidecar: dict) -> bool:
    """Whether a checkpoint is served at each photo's aspect ratio, not squashed: a U-Net trained on random crops
    gains from it, one trained on squashed photos loses, DeepLab cannot (docs/experiments.md).

    >>> [takes_any_size({"preset": name}) for name in ("finetune", "tutorial", "voc")]
    [True, False, False]
    """
    from petseg.presets import apply_overrides, get_preset

    preset = apply_overrides(get_preset(sidecar["preset"]), sidecar.get("overrides"))
    return preset.architecture == "unet" and preset.augmentation == "strong"


def make_export(model, sidecar: dict) -> tuple[bytes, dict]:
    """The flatbuffer a checkpoint is served with (any height and width if ``takes_any_size``, checked on landscape
    photos) and its record for the sidecar; ``ValueError`` if it is off."""
    import ai_edge_litert

    from petseg.model import model_with_dtype

    image_size, any_size = int(sidecar["image_size"]), takes_any_size(sidecar)
    size = (image_size, image_size + 64) if any_size else image_size
    # One rebuild is both what is converted and the float32 reference it is checked against.
    model = model_with_dtype(model, "float32", any_size=any_size, subpixel=True)
    floats = "float32" if 4 * model.count_params() <= EXPORT_MAX_FLOAT32_BYTES else "float16"
    # A U-Net's decoder in int8 where it keeps the masks (a model that is still guessing may not): floats otherwise.
    for quantize in ("int8_decoder", floats) if is_unet(model) else (floats,):
        flatbuffer = convert_to_tflite(model, quantize, size)
        try:
            check = parity(model, flatbuffer, size)
            break
        except ValueError:
            if quantize == floats:
                raise
    return flatbuffer, {"quantize": quantize, "litert_version": getattr(ai_edge_litert, "__version__", "unknown"),
                        **check}
