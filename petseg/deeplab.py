"""DeepLabV3-MobileNetV2 trained on PASCAL VOC, rebuilt in Keras 3 from its TFLite file, and the ``voc`` model.

The file (TensorFlow Lite's segmentation example, 2.8 MB) holds a MobileNetV2 (alpha 0.5) encoder dilated to output
stride 8, an ASPP of a 1x1 branch and image pooling, and a 21-class head, BatchNorm folded into the biases; it is
rebuilt from standard Keras layers, so checkpoints load without custom objects.

>>> build_voc_deeplab(65).output_shape
(None, 65, 65, 21)
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
from keras import layers

from petseg.classes import BACKGROUND, BORDER, NUM_CLASSES, PET
from petseg.synthetic import make_synthetic_pet

VOC_URL = "https://raw.githubusercontent.com/shaqian/flutter_tflite/master/example/assets/deeplabv3_257_mv_gpu.tflite"
VOC_SHA256 = "68a539782c2c6a72f8aac3724600124a85ed977162b44e84cbae5db717c933c6"
VOC_CLASSES = 21
VOC_BACKGROUND, VOC_CAT, VOC_DOG = 0, 8, 12
# bird, cat, cow, dog, horse, sheep: "pet" for the zero-shot model.
VOC_ANIMALS = (3, 8, 10, 12, 13, 17)
# (expansion, output channels, stride, dilation rate) of each inverted residual block, alpha 0.5, output stride 8.
BLOCKS = (
    (1, 8, 1, 1), (6, 12, 2, 1), (6, 12, 1, 1), (6, 16, 2, 1), (6, 16, 1, 1), (6, 16, 1, 1), (6, 32, 1, 1),
    (6, 32, 1, 2), (6, 32, 1, 2), (6, 32, 1, 2), (6, 48, 1, 2), (6, 48, 1, 2), (6, 48, 1, 2), (6, 80, 1, 2),
    (6, 80, 1, 4), (6, 80, 1, 4), (6, 160, 1, 4),
)
# The decoder's fine features: block 2's depthwise output at 1/4 of the input size, block 1's expansion at 1/2.
LOW_LEVEL_LAYER = "MobilenetV2_expanded_conv_2_depthwise_relu6"
HALF_LEVEL_LAYER = "MobilenetV2_expanded_conv_1_expand_relu6"


class EncoderWeightsError(ValueError):
    """The encoder weights could not be loaded; the message lists the options."""


def upsample_aligned(tensor, factor: int, name: str):
    """Bilinear upsampling with align_corners=True from n to (n - 1) * factor + 1 pixels: nearest-neighbour
    upsampling, then a ``factor`` wide box mean gives (1 - r / factor) * x[k] + (r / factor) * x[k + 1] at
    k * factor + r."""
    tensor = layers.UpSampling2D(factor, interpolation="nearest", name=f"{name}_nearest")(tensor)
    return layers.AveragePooling2D(factor, strides=1, padding="valid", name=f"{name}_mean")(tensor)


def voc_encoder(image_size: int) -> keras.Model:
    """MobileNetV2 + ASPP of the VOC model: [-1, 1] input to features at 1/2 and 1/4, and 256 channels at 1/8."""
    if image_size < 17 or (image_size - 1) % 8:  # Align-corners resizes: 1/4 and 1/8 features align at 8k+1 only.
        raise ValueError(f"image_size must be 8k+1 (e.g. 65, 257, 321) for DeepLab presets, got {image_size}.")
    inputs = keras.Input((image_size, image_size, 3), name="scaled_image")
    tensor = layers.Conv2D(16, 3, strides=2, padding="same", name="MobilenetV2_Conv")(inputs)
    tensor = layers.ReLU(6.0, name="MobilenetV2_Conv_relu6")(tensor)
    for index, (expansion, filters, stride, rate) in enumerate(BLOCKS):  # Inverted residuals named as in the file.
        scope, block_input = "MobilenetV2_expanded_conv" + (f"_{index}" if index else ""), tensor
        if expansion != 1:
            tensor = layers.Conv2D(tensor.shape[-1] * expansion, 1, name=f"{scope}_expand")(tensor)
            tensor = layers.ReLU(6.0, name=f"{scope}_expand_relu6")(tensor)
        tensor = layers.DepthwiseConv2D(3, strides=stride, dilation_rate=rate, padding="same",
                                        name=f"{scope}_depthwise")(tensor)
        tensor = layers.ReLU(6.0, name=f"{scope}_depthwise_relu6")(tensor)
        tensor = layers.Conv2D(filters, 1, name=f"{scope}_project")(tensor)
        if stride == 1 and block_input.shape[-1] == filters:
            tensor = layers.Add(name=f"{scope}_add")([block_input, tensor])
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="image_pooling_mean")(tensor)
    pooled = layers.Conv2D(256, 1, activation="relu", name="image_pooling")(pooled)
    pooled = layers.UpSampling2D(tensor.shape[1], name="image_pooling_broadcast")(pooled)
    branch = layers.Conv2D(256, 1, activation="relu", name="aspp0")(tensor)
    features = layers.Concatenate(name="concat")([pooled, branch])
    features = layers.Conv2D(256, 1, activation="relu", name="concat_projection")(features)
    whole = keras.Model(inputs, features)
    skips = [whole.get_layer(name).output for name in (HALF_LEVEL_LAYER, LOW_LEVEL_LAYER)]
    return keras.Model(inputs, [*skips, features], name="encoder")


def build_voc_deeplab(image_size: int = 257) -> keras.Model:
    """The VOC model as in its TFLite file: [-1, 1] input, 21 logits at the input size (random weights)."""
    encoder = voc_encoder(image_size)
    inputs = keras.Input((image_size, image_size, 3), name="scaled_image")
    features = encoder(inputs)[-1]
    logits = layers.Conv2D(VOC_CLASSES, 1, name="logits_semantic")(features)
    logits = upsample_aligned(logits, 8, "logits_upsample")
    return keras.Model(inputs, logits, name="voc_deeplab")


def all_layers(model: keras.Model) -> dict[str, layers.Layer]:
    """Every layer by name, nested models included."""
    found = {}
    for layer in model.layers:
        found[layer.name] = layer
        if isinstance(layer, keras.Model):
            found.update(all_layers(layer))
    return found


def tflite_interpreter(path: str | os.PathLike):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(path))
    interpreter.allocate_tensors()
    return interpreter


def assign_tflite_weights(model: keras.Model, tensors: dict[str, np.ndarray]) -> int:
    """Copy named TFLite tensors into the layers of the same scope ("a/b/weights" into layer "a_b"); return how
    many layers were set. Kernels (out, kh, kw, in) and depthwise kernels (1, kh, kw, channels) take the same
    transpose to Keras' layout. A tensor without a layer, or a layer without its tensors, raises ``ValueError``."""
    kernels = {name.rsplit("/", 1)[0]: value for name, value in tensors.items() if name.endswith("weights")}
    biases = {name.rsplit("/", 1)[0]: value for name, value in tensors.items() if name.endswith("_bias")}
    by_name = all_layers(model)
    convolutions = {name for name, layer in by_name.items()
                    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)) and layer.weights}
    loaded = set()
    for scope, kernel in kernels.items():
        name = scope.replace("/", "_")
        if name not in by_name:
            raise ValueError(f"TFLite tensor {scope}/weights has no Keras layer {name!r}.")
        bias_scope = next((key for key in biases if key == scope or key.startswith(scope + "/")), None)
        if bias_scope is None:
            raise ValueError(f"TFLite tensor {scope}/weights has no bias.")
        by_name[name].set_weights([kernel.transpose(1, 2, 3, 0), biases[bias_scope]])
        loaded.add(name)
    if missing := sorted(convolutions - loaded):
        raise ValueError(f"No TFLite weights for Keras layers: {', '.join(missing)}.")
    return len(loaded)


def check_tflite_options(path: str | os.PathLike) -> None:
    """Check that the file's strides, dilation rates and resizes are those ``BLOCKS`` rebuilds: they live in the
    operators' options, not in the tensor shapes, so a different file would load and compute something else."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    graph = model.Subgraphs(0)
    expected = {f"MobilenetV2/expanded_conv{f'_{i}' if i else ''}/depthwise": (stride, rate)
                for i, (_, _, stride, rate) in enumerate(BLOCKS)}
    for index in range(graph.OperatorsLength()):
        operator = graph.Operators(index)
        code = model.OperatorCodes(operator.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        table = operator.BuiltinOptions()
        if builtin == schema.BuiltinOperator.DEPTHWISE_CONV_2D:
            options = schema.DepthwiseConv2DOptions()
            options.Init(table.Bytes, table.Pos)
            scope = graph.Tensors(operator.Inputs(1)).Name().decode().rsplit("/", 1)[0]
            found = (options.StrideH(), options.DilationHFactor())
            if expected.get(scope) != found:
                raise ValueError(f"{scope}: stride and dilation {found} in the file, {expected.get(scope)} rebuilt.")
        elif builtin == schema.BuiltinOperator.RESIZE_BILINEAR:
            options = schema.ResizeBilinearOptions()
            options.Init(table.Bytes, table.Pos)
            if not options.AlignCorners():
                raise ValueError("The file resizes without align_corners; the rebuilt model aligns corners.")


def resolve_voc_weights(encoder_weights: str | os.PathLike | None) -> Path | None:
    """None for random weights; for "voc" (or train.py's default "imagenet") the pinned file, downloaded once into
    Keras' cache with its sha256 checked; else a path."""
    if encoder_weights is None or str(encoder_weights).lower() == "none":
        return None
    options = ("Options: 'voc' (downloads the pinned file, needs internet), a local deeplabv3_257_mv_gpu.tflite, "
               "or 'none' for random weights.")
    if str(encoder_weights) in ("voc", "imagenet"):
        try:
            return Path(keras.utils.get_file("deeplabv3_257_mv_gpu.tflite", VOC_URL, file_hash=VOC_SHA256,
                                             hash_algorithm="sha256", cache_subdir="models"))
        except Exception as error:  # Keras raises several types for a failed download or a wrong hash.
            raise EncoderWeightsError(f"Could not download the VOC DeepLab weights: {error}. {options}") from error
    path = Path(encoder_weights)
    if not path.is_file() or path.suffix != ".tflite":
        raise EncoderWeightsError(f"VOC DeepLab weights file not found or not .tflite: {path}. {options}")
    return path


def check_parity(keras_model: keras.Model, path: str | os.PathLike, image: np.ndarray) -> dict[str, float]:
    """Run the rebuilt model and the TFLite interpreter on ``image`` ([-1, 1], 257 px); raise unless they agree."""
    interpreter = tflite_interpreter(path)
    batch = np.asarray(image, np.float32)[np.newaxis]
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
    interpreter.invoke()
    expected = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    found = keras.ops.convert_to_numpy(keras_model(batch, training=False))
    agreement = float(np.mean(expected.argmax(-1) == found.argmax(-1)))
    difference = float(np.abs(expected - found).max())
    if agreement < 0.999 or difference > 1e-3:
        raise ValueError(f"The Keras rebuild disagrees with {path}: argmax agreement {agreement:.4f} (needs 0.999), "
                         f"max logit difference {difference:.2g} (allowed 0.001).")
    return {"argmax_agreement": agreement, "max_logit_difference": difference}


def load_voc_deeplab(encoder_weights: str | os.PathLike | None) -> keras.Model:
    """The 21-class VOC model with its weights from the TFLite file, parity-checked; random weights for None."""
    model = build_voc_deeplab(257)
    if (path := resolve_voc_weights(encoder_weights)) is not None:
        check_tflite_options(path)
        interpreter = tflite_interpreter(path)  # Its weight tensors are named "scope/weights", "scope/..._bias".
        assign_tflite_weights(model, {detail["name"]: np.array(interpreter.get_tensor(detail["index"]))
                                      for detail in interpreter.get_tensor_details()
                                      if detail["name"].endswith(("weights", "_bias"))})
        photo, _ = make_synthetic_pet(np.random.default_rng(0), 257, 257)  # No real photo ships with the code.
        check_parity(model, path, np.asarray(photo, np.float32) / 127.5 - 1.0)
    return model


def voc_head_weights(voc_model: keras.Model) -> list[np.ndarray]:
    """A 3-class head from VOC's 21: pet = mean of cat and dog, background = background, border = their mean plus 1,
    so at the start border wins where pet and background are within 2 logits of each other: along the outline."""
    def head(weights: np.ndarray, border_offset: float) -> np.ndarray:
        rows = {PET: (weights[..., VOC_CAT] + weights[..., VOC_DOG]) / 2, BACKGROUND: weights[..., VOC_BACKGROUND]}
        rows[BORDER] = (rows[PET] + rows[BACKGROUND]) / 2 + border_offset
        return np.stack([rows[index] for index in range(NUM_CLASSES)], axis=-1).astype(np.float32)

    kernel, bias = voc_model.get_layer("logits_semantic").get_weights()
    return [head(kernel, 0.0), head(bias, 1.0)]


def conv_bn_relu(tensor, filters: int, kernel_size: int, momentum: float, name: str, separable: bool = False):
    """(Separable) convolution without bias, BatchNorm, ReLU: the DeepLabV3+ decoder's unit."""
    convolution = layers.SeparableConv2D if separable else layers.Conv2D
    tensor = convolution(filters, kernel_size, padding="same", use_bias=False, name=name)(tensor)
    tensor = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(tensor)
    return layers.ReLU(name=f"{name}_relu")(tensor)


def build_deeplab(preset, image_size: int, encoder_weights: str | os.PathLike | None) -> keras.Model:
    """DeepLabV3+ on the frozen VOC encoder for [0, 1] images of ``image_size`` (8k+1): the coarse head starts from
    VOC's rows, and decoder stages at 1/4 (and ``half_resolution_stage``, 1/2) add zero-initialised logits."""
    encoder = voc_encoder(image_size)  # It checks the size.
    encoder.trainable = False
    inputs = keras.Input((image_size, image_size, 3), name="image")
    half_level, low_level, features = encoder(layers.Rescaling(2.0, offset=-1.0, name="scale_to_mobilenet")(inputs))
    head = layers.Conv2D(NUM_CLASSES, 1, name="voc_head")
    coarse = upsample_aligned(head(features), 2, "coarse_upsample")
    low = conv_bn_relu(low_level, 48, 1, preset.batchnorm_momentum, "low_level_projection")
    fine = layers.Concatenate(name="decoder_concat")([upsample_aligned(features, 2, "features_upsample"), low])
    for index in range(2):
        fine = conv_bn_relu(fine, 96, 3, preset.batchnorm_momentum, f"decoder_{index}", separable=True)
    logits = layers.Add(name="logits_sum")([coarse, zero_logits(fine, "decoder_logits")])
    if preset.half_resolution_stage:
        half = conv_bn_relu(half_level, 24, 1, preset.batchnorm_momentum, "half_level_projection")
        refined = layers.Concatenate(name="half_concat")([upsample_aligned(fine, 2, "decoder_upsample"), half])
        refined = conv_bn_relu(refined, 48, 3, preset.batchnorm_momentum, "half_decoder", separable=True)
        logits = upsample_aligned(logits, 2, "logits_half")
        logits = layers.Add(name="half_logits_sum")([logits, zero_logits(refined, "half_logits")])
        logits = upsample_aligned(logits, 2, "logits")
    else:
        logits = upsample_aligned(logits, 4, "logits")
    model = keras.Model(inputs, logits, name=f"deeplab_{preset.name}")
    if resolve_voc_weights(encoder_weights) is not None:
        voc = load_voc_deeplab(encoder_weights)
        encoder.set_weights(voc.get_layer("encoder").get_weights())
        head.set_weights(voc_head_weights(voc))
    return model


def zero_logits(tensor, name: str):
    """A 1x1 convolution to the 3 classes that starts at zero, so a new decoder stage starts as a no-op."""
    return layers.Conv2D(NUM_CLASSES, 1, kernel_initializer="zeros", name=name)(tensor)


def build_zero_shot(encoder_weights: str | os.PathLike | None) -> keras.Model:
    """The VOC model as a PetSeg model of class probabilities: pet = its animal classes, else background."""
    voc = load_voc_deeplab(encoder_weights)
    inputs = keras.Input((257, 257, 3), name="image")
    probabilities = layers.Softmax(name="voc_probabilities")(voc(layers.Rescaling(2.0, offset=-1.0)(inputs)))
    merge = layers.Conv2D(NUM_CLASSES, 1, use_bias=False, trainable=False, name="merge_classes")
    outputs = merge(probabilities)
    kernel, animal = np.zeros((1, 1, VOC_CLASSES, NUM_CLASSES), np.float32), np.isin(range(VOC_CLASSES), VOC_ANIMALS)
    kernel[0, 0, :, PET], kernel[0, 0, :, BACKGROUND] = animal, ~animal
    merge.set_weights([kernel])
    return keras.Model(inputs, outputs, name="voc_zero_shot")
