"""The seed's way: how the TensorFlow segmentation tutorial predicts and feeds training, as our baseline.

The tutorial (tensorflow.org/tutorials/images/segmentation) resizes photos with ``tf.image.resize`` inside a
``map`` over the decoded tfds records, caches the result, then shuffles, batches, repeats and flips whole batches
with two seeded ``RandomFlip`` layers. It predicts with ``model.predict(image[tf.newaxis, ...])`` and takes the
argmax at the model's 128 px. Here the tfds records are stood in for by the same photo and trimap files our
pipeline reads, decoded in the pipeline as tfds does. The model is always ours (same checkpoint or preset), so
every comparison measures the way, not the network.

Run it as a training process for the memory figure:
    python -m bench.seed_way --data-dir /tmp/pets --epochs 1 --batch-size 64 --image-size 128
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from petseg.data import read_split_names
from petseg.visuals import overlay_mask

BUFFER_SIZE = 1000  # The tutorial's shuffle buffer.


# ---------------------------------------------------------------------------------------------------------------
# Prediction.


def seed_predict_mask(image: tf.Tensor | np.ndarray, model: keras.Model, image_size: int) -> np.ndarray:
    """The tutorial's prediction: resize to the model's size, ``model.predict``, argmax, then nearest back up.

    The tutorial stops at the 128 px mask; scaling it to the photo's size with nearest neighbour is the least a
    user-facing app must add (and cheaper than resizing probabilities, as ours does).
    """
    image = tf.convert_to_tensor(image)
    model_input = tf.cast(tf.image.resize(image, (image_size, image_size)), tf.float32) / 255.0
    prediction = model.predict(model_input[tf.newaxis, ...], verbose=0)  # verbose=0 spares it the progress bar.
    mask = tf.math.argmax(prediction, axis=-1)[..., tf.newaxis][0]  # The tutorial's create_mask.
    mask = tf.image.resize(mask, tf.shape(image)[:2], method="nearest")
    return mask.numpy()[..., 0].astype(np.uint8)


def seed_request(jpeg_bytes: bytes, model: keras.Model, image_size: int) -> np.ndarray:
    """One upload to an overlay the seed's way: ``tf.image.decode_jpeg``, predict as above, then overlay."""
    image = tf.image.decode_jpeg(jpeg_bytes, channels=3)
    mask = seed_predict_mask(image, model, image_size)
    return overlay_mask(image.numpy(), mask)


# ---------------------------------------------------------------------------------------------------------------
# Training input pipeline.


def read_record(image_path: tf.Tensor, mask_path: tf.Tensor) -> dict[str, tf.Tensor]:
    """Decode one photo and its trimap into a tfds-style datapoint (tfds decodes inside its pipeline too)."""
    return {"image": tf.io.decode_jpeg(tf.io.read_file(image_path), channels=3),
            "segmentation_mask": tf.io.decode_png(tf.io.read_file(mask_path), channels=1)}


def normalize(input_image: tf.Tensor, input_mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    input_image = tf.cast(input_image, tf.float32) / 255.0
    input_mask -= 1
    return input_image, input_mask


def make_load_image(image_size: int):
    """The tutorial's ``load_image``: bilinear resize of the photo, nearest of the mask, then normalize."""

    def load_image(datapoint: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        input_image = tf.image.resize(datapoint["image"], (image_size, image_size))
        input_mask = tf.image.resize(datapoint["segmentation_mask"], (image_size, image_size),
                                     method=tf.image.ResizeMethod.NEAREST_NEIGHBOR)
        return normalize(input_image, input_mask)

    return load_image


class Augment(keras.layers.Layer):
    """The tutorial's batch augmentation: two ``RandomFlip`` layers with one seed, for photos and masks."""

    def __init__(self, seed: int = 42):
        super().__init__()
        self.augment_inputs = keras.layers.RandomFlip(mode="horizontal", seed=seed)
        self.augment_labels = keras.layers.RandomFlip(mode="horizontal", seed=seed)

    def call(self, inputs, labels):
        return self.augment_inputs(inputs), self.augment_labels(labels)


def seed_training_data(data_dir: str | Path, image_size: int = 128, batch_size: int = 64,
                       names: list[str] | None = None) -> tuple[tf.data.Dataset, int, int]:
    """The tutorial's training pipeline over a folder in the official layout (or the given photo names in it).

    Returns the endless dataset, the tutorial's ``STEPS_PER_EPOCH`` (photos // batch) and the photo count.
    """
    data_dir = Path(data_dir)
    names = names if names is not None else read_split_names(data_dir, "trainval")
    image_paths = [str(data_dir / "images" / f"{name}.jpg") for name in names]
    mask_paths = [str(data_dir / "annotations" / "trimaps" / f"{name}.png") for name in names]
    records = tf.data.Dataset.from_tensor_slices((image_paths, mask_paths)).map(
        read_record, num_parallel_calls=tf.data.AUTOTUNE)
    train_images = records.map(make_load_image(image_size), num_parallel_calls=tf.data.AUTOTUNE)
    train_batches = (
        train_images
        .cache()
        .shuffle(BUFFER_SIZE)
        .batch(batch_size)
        .repeat()
        .map(Augment())
        .prefetch(buffer_size=tf.data.AUTOTUNE)
    )
    return train_batches, max(1, len(names) // batch_size), len(names)


def compile_like_tutorial(model: keras.Model, run_eagerly: bool = False) -> keras.Model:
    """Adam, sparse cross-entropy from logits and accuracy, as the tutorial compiles its U-Net."""
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], run_eagerly=run_eagerly)
    return model


def main(argv=None) -> int:
    """Train the tutorial preset the seed's way for a few epochs (the training-memory figure runs this)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args(argv)
    from petseg.model import build_model

    dataset, steps, _ = seed_training_data(args.data_dir, args.image_size, args.batch_size)
    model = compile_like_tutorial(build_model("tutorial", args.image_size, encoder_weights=None))
    model.fit(dataset, epochs=args.epochs, steps_per_epoch=steps, verbose=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
