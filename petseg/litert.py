"""TFLite flatbuffers of PetSeg models: made from Keras with TensorFlow, run with LiteRT (``ai_edge_litert``).

A flatbuffer takes float32 images in [0, 1], ``(batch, height, width, 3)``, and returns softmax probabilities over
the classes (0 pet, 1 background, 2 border) of the same size. Height and width are the model's own input shape:
the model's square size, or any multiples of 32 for a U-Net rebuilt with ``model_with_dtype(..., any_size=True)``.
The request path (``petseg.inference``) runs the one beside each checkpoint; ``petseg.export`` writes them for
users. Running one needs only ``ai_edge_litert`` and numpy; making one needs TensorFlow, imported only then.

>>> interpreter = make_interpreter(convert_to_tflite(tiny_model()))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

QUANTIZATIONS = ("float32", "float16")
INPUT_NAME = "images"
THREADS = 2  # The CPU's cores; more threads than cores only wait for each other.
CHECK_PHOTOS = 8  # Synthetic photos every export is checked on against its Keras model.
# The registry's exports keep float32 weights (equal to the Keras model to float rounding) unless that makes them
# bigger than this; then float16 (the .keras file's own precision, though rounded after batch-norm folding).
EXPORT_MAX_FLOAT32_BYTES = 16 * 2**20
EXPORT_MIN_AGREEMENT = 0.99  # The least fraction of mask pixels on which an export and its model must agree.

ImagesFunction = Callable[[np.ndarray], np.ndarray]

# The converter calls this path deprecated at every save, but the one it recommends (``trackable_obj``) drops
# Keras 3's weights (see ``convert_to_tflite``): keep that one warning out of training logs.
logging.getLogger("absl").addFilter(lambda record: "trackable_obj" not in record.getMessage())


def convert_to_tflite(model, quantize: str = "float32") -> bytes:
    """Convert the model to a TFLite flatbuffer; ``float16`` stores the weights in half precision.

    The model's transposed convolutions are converted as sub-pixel convolutions
    (``petseg.model.SubPixelConv2DTranspose``, the same numbers): LiteRT runs a TRANSPOSE_CONV whose output shape
    depends on the batch outside XNNPACK, on one core, which made a U-Net 3x slower. The converter freezes the
    traced function's variables into constants itself (freezing them first only made it freeze twice; passing
    ``trackable_obj`` gives a flatbuffer without weights), which is three times faster than going through a
    SavedModel for the same flatbuffer. It also folds each BatchNormalization into the convolution before it.
    """
    import tensorflow as tf

    from petseg.model import model_with_dtype

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantization {quantize!r}; choose one of: {', '.join(QUANTIZATIONS)}.")
    model = model_with_dtype(model, "float32", subpixel=True)
    function = tf.function(lambda images: tf.nn.softmax(model(images, training=False), axis=-1))
    traced = function.get_concrete_function(tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=INPUT_NAME))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([traced])
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def make_interpreter(flatbuffer: bytes, threads: int = THREADS, shape: tuple[int, ...] = (1, 32, 32, 3)):
    """A LiteRT interpreter for a flatbuffer, tensors allocated; raises ``ValueError`` if LiteRT refuses it.

    An export that takes any input size is allocated for ``shape`` (a 1x1 photo, its default, is too small for a
    U-Net's five stride-2 steps); a fixed-size one for its own shape.
    """
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=bytes(flatbuffer), num_threads=threads)
        details = interpreter.get_input_details()[0]
        if -1 in details["shape_signature"][1:3]:
            interpreter.resize_tensor_input(details["index"], shape, strict=True)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError, IndexError) as error:
        raise ValueError(f"LiteRT could not load it ({str(error).splitlines()[0][:120]})") from error
    return interpreter


def images_function(flatbuffer: bytes, threads: int = THREADS) -> ImagesFunction:
    """A function from float images (batch, size, size, 3) to probabilities, for checks and the export CLI.

    The interpreter is not thread-safe; the returned function is meant for one thread.
    """
    interpreter = make_interpreter(flatbuffer, threads)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]

    def run(images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        interpreter.resize_tensor_input(input_index, images.shape, strict=True)
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, images)
        interpreter.invoke()
        return interpreter.get_tensor(output_index).copy()

    return run


def keras_probabilities(model, images: np.ndarray) -> np.ndarray:
    """Softmax probabilities of the Keras model itself: the reference every flatbuffer is checked against."""
    import keras

    logits = model(np.asarray(images, np.float32), training=False)
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))


def check_images(image_size: int | tuple[int, int], count: int = CHECK_PHOTOS, seed: int = 0) -> np.ndarray:
    """Synthetic pet photos resized to ``image_size`` (a side, or height and width) as the app resizes them:
    float32 (count, height, width, 3)."""
    import tensorflow as tf

    from petseg.resize import resize_image
    from petseg.synthetic import make_synthetic_pet

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        width, height = (int(value) for value in rng.integers(96, 201, size=2))
        photo, _trimap = make_synthetic_pet(rng, width, height)
        images.append(resize_image(tf.convert_to_tensor(np.asarray(photo)), image_size).numpy())
    return np.stack(images).astype(np.float32)


def parity(model, flatbuffer: bytes, image_size: int | tuple[int, int], count: int = CHECK_PHOTOS
           ) -> dict[str, float]:
    """How closely a flatbuffer reproduces the Keras model on synthetic photos: mask agreement, largest difference.

    >>> parity(model, convert_to_tflite(model), 64)  # doctest: +SKIP
    {'mask_agreement': 1.0, 'max_probability_difference': 3e-06}
    """
    images = check_images(image_size, count)
    expected = keras_probabilities(model, images)
    actual = images_function(flatbuffer)(images)
    if actual.shape != expected.shape:
        raise ValueError(f"The flatbuffer returns shape {actual.shape}, the Keras model {expected.shape}.")
    return {"mask_agreement": float(np.mean(expected.argmax(axis=-1) == actual.argmax(axis=-1))),
            "max_probability_difference": float(np.max(np.abs(expected - actual)))}


def export_quantization(model) -> str:
    """float32 for a model whose weights fit in ``EXPORT_MAX_FLOAT32_BYTES`` as float32, else float16."""
    return "float32" if 4 * model.count_params() <= EXPORT_MAX_FLOAT32_BYTES else "float16"


def takes_any_size(sidecar: dict) -> bool:
    """Whether a checkpoint is served at each photo's aspect ratio rather than squashed to its square size.

    Measured on the validation split (README's experiment table): a U-Net trained on random crops and scales
    ("strong" augmentation) gains from it, one trained on squashed photos only (the tutorial's flips) loses, and
    DeepLab's fixed resizes inside cannot take other sizes.

    >>> [takes_any_size({"preset": name}) for name in ("finetune", "tutorial", "voc")]
    [True, False, False]
    """
    from petseg.presets import apply_overrides, get_preset

    preset = apply_overrides(get_preset(sidecar["preset"]), sidecar.get("overrides"))
    return preset.architecture == "unet" and preset.augmentation == "strong"


def make_export(model, sidecar: dict) -> tuple[bytes, dict]:
    """The flatbuffer a checkpoint is served with, and its record for the sidecar; ``ValueError`` if it is off.

    ``model`` is the checkpoint's model, ``sidecar`` its description (preset, image size). If ``takes_any_size``,
    the export takes any input height and width, so the app predicts at a photo's own aspect ratio
    (``petseg.inference``); otherwise it is fixed at the square size. The export is checked against the float32
    model on synthetic photos, landscape ones when it takes any size.
    """
    import ai_edge_litert

    from petseg.model import model_with_dtype

    image_size = int(sidecar["image_size"])
    any_size = takes_any_size(sidecar)
    model = model_with_dtype(model, "float32", any_size=any_size)
    quantize = export_quantization(model)
    flatbuffer = convert_to_tflite(model, quantize)
    check = parity(model, flatbuffer, (image_size, image_size + 64) if any_size else image_size)
    if check["mask_agreement"] < EXPORT_MIN_AGREEMENT:
        raise ValueError(f"its LiteRT export agrees with the Keras model on only {check['mask_agreement']:.2%} of "
                         f"mask pixels (at least {EXPORT_MIN_AGREEMENT:.0%} expected)")
    version = getattr(ai_edge_litert, "__version__", "unknown")
    return flatbuffer, {"quantize": quantize, "litert_version": version, **check}
