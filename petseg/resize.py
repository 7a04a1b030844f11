"""Resizing photos and masks, one function each, so training, evaluation, export and the app see the same pixels;
and the training augmentation, which moves a photo and its mask together.

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


def augment(image: tf.Tensor, mask: tf.Tensor, image_size: int, augmentation: str) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment one cached example; return a float [0, 1] image and an int32 mask, both ``image_size`` square.
    "flip" is the tutorial's: one random draw flips image and mask together. "strong" adds a random scaled crop
    (one box for both), the flip, and colour jitter on the photo alone."""
    if augmentation not in ("none", "flip", "strong"):
        raise ValueError(f"Unknown augmentation {augmentation!r}; choose none, flip or strong.")
    if augmentation == "strong":
        cached_size = tf.shape(image)[0]
        scale, aspect = tf.random.uniform((), 0.6, 1.0), tf.random.uniform((), 0.8, 1.25)
        height = tf.cast(tf.minimum(1.0, scale * tf.sqrt(aspect)) * tf.cast(cached_size, tf.float32), tf.int32)
        width = tf.cast(tf.minimum(1.0, scale / tf.sqrt(aspect)) * tf.cast(cached_size, tf.float32), tf.int32)
        top = tf.random.uniform((), 0, cached_size - height + 1, dtype=tf.int32)
        left = tf.random.uniform((), 0, cached_size - width + 1, dtype=tf.int32)
        image, mask = (tf.image.crop_to_bounding_box(part, top, left, height, width) for part in (image, mask))
    if augmentation == "strong" or tuple(image.shape[:2]) != (image_size, image_size):
        image, mask = resize_image(image, image_size), resize_mask(mask, image_size)
    elif image.dtype == tf.uint8:  # Cached at the model's size already: only convert (a resize would copy it twice).
        image = tf.cast(image, tf.float32) / 255.0
    if augmentation != "none" and tf.random.uniform(()) > 0.5:  # One draw for both (a tf.cond under AutoGraph).
        image, mask = tf.image.flip_left_right(image), tf.image.flip_left_right(mask)
    if augmentation == "strong":
        image = tf.image.random_brightness(image, 0.15)
        image = tf.image.random_contrast(image, 0.75, 1.25)
        image = tf.image.random_saturation(image, 0.7, 1.3)
        image = tf.image.random_hue(image, 0.04)
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image, tf.cast(mask, tf.int32)
