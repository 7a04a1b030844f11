"""Resizing photos and masks: one function each, so training, evaluation, export and the app see the same pixels.

>>> import numpy as np
>>> resize_image(np.zeros((30, 40, 3), np.uint8), 16).shape
TensorShape([16, 16, 3])
"""

from __future__ import annotations

import tensorflow as tf


def resize_image(image: tf.Tensor, size: int | tuple[int, int]) -> tf.Tensor:
    """Resize a uint8 or [0, 1] float image (or batch) to ``size`` with antialiased bilinear; return float [0, 1]."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    return tf.clip_by_value(tf.image.resize(image, size, method="bilinear", antialias=True), 0.0, 1.0)


def resize_mask(mask: tf.Tensor, size: int | tuple[int, int]) -> tf.Tensor:
    """Resize a mask of class ids (height, width, 1) with nearest neighbour, so no new label values appear."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    return tf.cast(tf.image.resize(mask, size, method="nearest"), mask.dtype)
