"""The U-Net (a MobileNetV2 encoder and a decoder of pix2pix upsample blocks), ``build_model`` for every preset's
architecture, and the dtype and sub-pixel rewrites that checkpoints and exports use.

>>> build_model("tutorial", image_size=128, encoder_weights=None).output_shape
(None, 128, 128, 3)
"""

from __future__ import annotations

import os

import keras
from keras import layers

from petseg.classes import NUM_CLASSES
from petseg.deeplab import EncoderWeightsError, build_deeplab
from petseg.presets import Preset, get_preset

# The encoder's skip outputs, from the finest (64x64 at 128 px input) to the bottleneck (4x4).
SKIP_LAYER_NAMES = ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu",
                    "block_16_project")
WEIGHTS_OPTIONS = ("Options: 'imagenet' (downloads from the Keras servers, needs internet), a local Keras weights file "
                   "for MobileNetV2(alpha=1.0, include_top=False), or 'none' for random weights.")


def upsample_block(filters: int, size: int = 3, dropout: float = 0.0, batchnorm_momentum: float = 0.99,
                   name: str | None = None) -> keras.Sequential:
    """pix2pix's upsample block (its package is not on PyPI): Conv2DTranspose, BatchNorm, optional Dropout, ReLU."""
    return keras.Sequential([
        layers.Conv2DTranspose(filters, size, strides=2, padding="same", use_bias=False,
                               kernel_initializer=keras.initializers.RandomNormal(mean=0.0, stddev=0.02)),
        layers.BatchNormalization(momentum=batchnorm_momentum),
        *([layers.Dropout(dropout)] if dropout > 0 else []),
        layers.ReLU()], name=name)


def build_model(preset: str | Preset, image_size: int | None = None, encoder_weights: str | None = None
                ) -> keras.Model:
    """Build ``preset``'s architecture with a frozen encoder, [0, 1] images in and per-pixel logits for the 3 classes
    out: the U-Net, or DeepLabV3+ on VOC (``petseg.deeplab``).

    >>> build_model("tutorial", image_size=64).output_shape
    (None, 64, 64, 3)
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    image_size = image_size or preset.image_size
    if preset.architecture == "deeplab":
        return build_deeplab(preset, image_size, encoder_weights)
    if image_size % 32 != 0 or image_size < 32:
        raise ValueError(f"image_size must be a multiple of 32 (at least 32), got {image_size}.")
    weights = None if encoder_weights is None or str(encoder_weights).lower() == "none" else os.fspath(encoder_weights)
    if weights not in (None, "imagenet") and not os.path.isfile(weights):
        raise EncoderWeightsError(f"Encoder weights file not found: {weights}. {WEIGHTS_OPTIONS}")
    try:  # MobileNetV2 (alpha 1.0) as the encoder, returning the five skip outputs.
        base = keras.applications.MobileNetV2((image_size, image_size, 3), include_top=False, weights=weights)
    except Exception as error:  # Keras raises several types for a failed download or a mismatched file.
        raise EncoderWeightsError(f"Could not load MobileNetV2 encoder weights {encoder_weights!r}: {error}. "
                                  f"{WEIGHTS_OPTIONS}") from error
    encoder = keras.Model(base.inputs, [base.get_layer(name).output for name in SKIP_LAYER_NAMES], name="encoder")
    encoder.trainable = False
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    features = layers.Rescaling(2.0, offset=-1.0, name="scale_to_mobilenet")(inputs) if preset.scale_inputs else inputs
    *skips, x = encoder(features)
    for filters, skip, index in zip(preset.decoder_filters, reversed(skips), range(4)):
        x = upsample_block(filters, dropout=preset.decoder_dropout, batchnorm_momentum=preset.batchnorm_momentum,
                           name=f"upsample_{index}")(x)
        x = layers.Concatenate(name=f"skip_{index}")([x, skip])
    # The last layer doubles 64x64 back to the input size and emits one logit per class.
    logits = layers.Conv2DTranspose(NUM_CLASSES, 3, strides=2, padding="same", name="logits")(x)
    return keras.Model(inputs=inputs, outputs=logits, name=f"unet_{preset.name}")


def set_encoder_trainable(model: keras.Model, trainable: bool) -> None:
    """Freeze or unfreeze the encoder's weights; its BatchNorm layers never train (the shipped ImageNet statistics
    are not the originals, see the encoder README)."""
    encoder = model.get_layer("encoder")
    encoder.trainable = trainable
    for layer in encoder.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False


class SubPixelConv2DTranspose(layers.Conv2DTranspose):
    """A stride-2, 3x3, "same" Conv2DTranspose computed as small convolutions and a depth-to-space, which LiteRT
    runs in XNNPACK on every core (a TRANSPOSE_CONV of run-time shape falls back to one slow thread).

    >>> tuple(SubPixelConv2DTranspose(4, 3, strides=2, padding="same")(keras.ops.zeros((1, 5, 7, 2))).shape)
    (1, 10, 14, 4)
    """

    FUSED_MAX_FILTERS = 16  # Up to this many filters, one convolution of all four phases runs faster.

    def call(self, inputs):
        import tensorflow as tf

        # Output row 2i sums input rows i-1 and i times kernel rows 2 and 0; row 2i+1 is input row i times kernel
        # row 1 (columns alike). So each of the four output phases is a small valid convolution of the input
        # padded by a row and a column in front, and depth-to-space interleaves them.
        kernel = tf.transpose(self.kernel, [0, 1, 3, 2])  # (3, 3, channels, filters), as tf.nn.conv2d takes it.
        padded = tf.pad(inputs, [[0, 0], [1, 0], [1, 0], [0, 0]])
        if self.filters <= self.FUSED_MAX_FILTERS:
            # One 2x2 convolution yields all four phases: each phase's taps picked from the kernel with a zero row
            # and column appended (index 3) where a phase has one tap only. It computes 16 taps where 9 are non-zero,
            # but four convolutions of a few filters each cost more (the logits layer: about 1 ms of `student`'s 12).
            padded_kernel = tf.pad(kernel, [[0, 1], [0, 1], [0, 0], [0, 0]])
            taps = ([2, 0], [3, 1])  # Kernel rows (or columns) at padded offsets 0 and 1, for even and odd outputs.
            outputs = tf.nn.conv2d(padded, tf.concat([tf.gather(tf.gather(padded_kernel, rows, axis=0), columns, axis=1)
                                                      for rows in taps for columns in taps], axis=-1), 1, "VALID")
        else:
            taps = (([2, 0], 0), ([1], 1))  # (kernel rows, first padded row) for even and odd output rows.
            outputs = tf.concat([tf.nn.conv2d(padded[:, row_start:, column_start:],
                                              tf.gather(tf.gather(kernel, rows, axis=0), columns, axis=1), 1, "VALID")
                                 for rows, row_start in taps for columns, column_start in taps], axis=-1)
        outputs = tf.nn.depth_to_space(outputs, 2)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)  # Keras makes a missing activation the identity.


def model_with_dtype(model, dtype: str, any_size: bool = False, subpixel: bool = False):
    """Rebuild a functional Keras model with every layer's dtype policy set to ``dtype`` and its weights cast;
    with ``any_size``, its inputs take any height and width (a U-Net is fully convolutional: multiples of 32);
    with ``subpixel``, its stride-2 transposed convolutions become ``SubPixelConv2DTranspose`` (for exports)."""

    def rewrite(node):
        if isinstance(node, dict):
            config = node.get("config", {})  # Only the 3x3, stride-2, "same" kind is computed sub-pixel:
            if subpixel and node.get("class_name") == "Conv2DTranspose" and (
                    tuple(config["kernel_size"]), tuple(config["strides"]), config["padding"],
                    tuple(config.get("dilation_rate", (1, 1)))) == ((3, 3), (2, 2), "same", (1, 1)):
                node = {**node, "class_name": "SubPixelConv2DTranspose", "module": None,
                        "registered_name": "SubPixelConv2DTranspose"}
            if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
                return {**node, "config": {**config, "name": dtype}}
            if any_size and node.get("class_name") == "InputLayer":
                batch, *_, channels = config["batch_shape"]
                return {**node, "config": {**config, "batch_shape": [batch, None, None, channels]}}
            return {key: rewrite(value) for key, value in node.items()}
        if isinstance(node, list):
            return [rewrite(value) for value in node]
        return node

    rebuilt = keras.Model.from_config(rewrite(model.get_config()),
                                      custom_objects={"SubPixelConv2DTranspose": SubPixelConv2DTranspose})
    rebuilt.set_weights([weight.astype(dtype) for weight in model.get_weights()])
    return rebuilt

