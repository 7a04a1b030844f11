"""Data: Oxford-IIIT Pet from tfds or from a local folder in the official layout, as ``tf.data`` pipelines.

Both sources yield a uint8 RGB photo and a uint8 mask of class ids. Training decodes and resizes every photo once;
each epoch then only augments, batches and prefetches the arrays kept in memory.

>>> from petseg.synthetic import make_synthetic_pets
>>> import tempfile
>>> data = make_training_data(make_synthetic_pets(tempfile.mkdtemp(), 6, 2), image_size=64, batch_size=2)
>>> data.counts["train"], data.counts["validation"]
(5, 1)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf
from PIL import Image

from petseg.classes import BORDER, NUM_CLASSES
from petseg.photos import exif_orientation, load_photo, turn
from petseg.resize import augment, resize_image, resize_mask

TFDS_SPLITS = {"trainval": "train", "test": "test"}  # The official splits, as the tfds builder names them.
TFDS_DOWNLOAD_HOST = "thor.robots.ox.ac.uk"  # Where the tfds builder (4.9) downloads the images and trimaps from.
LOGGER = logging.getLogger(__name__)
IGNORE = 255  # A mask value the loss and the metrics skip: pseudo-label pixels whose teacher was not sure enough.


class DataError(ValueError):
    """The data source is missing or not in the expected layout; the message says what to fix."""


@dataclasses.dataclass
class Example:
    """One photo at its original size with its mask of class ids."""

    name: str
    image: np.ndarray  # (height, width, 3) uint8
    mask: np.ndarray  # (height, width) uint8, values 0..NUM_CLASSES-1


@dataclasses.dataclass
class ResizedExamples:
    """Photos and masks resized to one square size, stacked for ``tf.data.Dataset.from_tensor_slices``."""

    names: list[str]
    images: np.ndarray  # (count, size, size, 3) uint8
    masks: np.ndarray  # (count, size, size, 1) uint8
    skipped: list[tuple[str, str]]  # (name, reason) for each example that could not be read

    def take(self, indices: np.ndarray) -> ResizedExamples:
        return ResizedExamples([self.names[i] for i in indices], self.images[indices], self.masks[indices], [])


@dataclasses.dataclass
class TrainingData:
    """What training needs: batched train and validation datasets, a few fixed samples, and counts."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    sample_images: np.ndarray  # (samples, size, size, 3) float32 in [0, 1]
    sample_masks: np.ndarray  # (samples, size, size) uint8
    counts: dict[str, int]
    source: str
    steps_per_epoch: int


def trimap_to_classes(trimap: np.ndarray) -> np.ndarray:
    """Map trimap values 1 pet, 2 background, 3 border to class ids 0, 1, 2; any other value (tfds' mock
    data draws 0..255) becomes border, so masks stay valid.

    >>> trimap_to_classes(np.array([[1, 2, 3], [0, 4, 255]], np.uint8)).tolist()
    [[0, 1, 2], [2, 2, 2]]
    """
    trimap = np.asarray(trimap).astype(np.int32)
    return np.where((trimap >= 1) & (trimap <= NUM_CLASSES), trimap - 1, BORDER).astype(np.uint8)


def read_name_list(path: str | os.PathLike) -> list[str]:
    """The first word of each line of a split list (``annotations/test.txt``'s format), less blank and "#" lines."""
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines()]
    except OSError as error:
        raise DataError(f"Cannot read the list {path}: {error.strerror}.") from None
    return [line.split()[0] for line in lines if line and not line.startswith("#")]


def read_split_names(data_dir: str | os.PathLike, split: str) -> list[str]:
    """Read the photo names of ``split`` ("trainval" or "test") from ``annotations/<split>.txt``."""
    root, list_path = Path(data_dir), Path(data_dir) / "annotations" / f"{split}.txt"
    if not root.is_dir():
        raise DataError(f"Data folder not found: {root}. Give a folder in the Oxford-IIIT Pet layout, or omit it "
                        "to use tfds.")
    if not list_path.is_file():
        raise DataError(f"{list_path} is missing: a data folder needs images/*.jpg, annotations/trimaps/*.png, "
                        "annotations/trainval.txt and annotations/test.txt (the official Oxford-IIIT Pet layout).")
    return read_name_list(list_path)


def read_folder_example(data_dir: str | os.PathLike, name: str, min_confidence: float | None = None) -> Example:
    """Read one photo (decoded as the app decodes uploads) and its trimap, turned by the photo's EXIF orientation;
    ``OSError``/``ValueError`` if unreadable. With ``min_confidence`` the folder holds pseudo-labels
    (``scripts/pseudo_label.py``): pixels whose ``annotations/confidence/`` value is lower become ``IGNORE``."""
    root, photo_path = Path(data_dir), Path(data_dir) / "images" / f"{name}.jpg"
    image = load_photo(photo_path)
    with Image.open(photo_path) as stored, Image.open(root / "annotations" / "trimaps" / f"{name}.png") as label:
        trimap = np.asarray(turn(label, exif_orientation(stored)))
    if trimap.ndim != 2 or trimap.shape != image.shape[:2]:
        raise ValueError(f"trimap shape {trimap.shape} does not match photo shape {image.shape[:2]}")
    mask = trimap_to_classes(trimap)
    if min_confidence is not None:
        with Image.open(root / "annotations" / "confidence" / f"{name}.png") as confidence:
            if confidence.size[::-1] != mask.shape:
                raise ValueError(f"confidence size {confidence.size} does not match photo size {image.shape[1::-1]}")
            mask[np.asarray(confidence) < round(min_confidence * 255)] = IGNORE
    return Example(name, image, mask)


def load_tfds_split(split: str, tfds_data_dir: str | None = None) -> tf.data.Dataset:
    """Load Oxford-IIIT Pet from tfds as feature dicts: prepared data in ``tfds_data_dir`` without the network,
    else a download (about 800 MB) once its host answers (offline, tfds would retry for minutes)."""
    import tensorflow_datasets as tfds  # Imported here: it is slow to import and only this source needs it.

    arguments = {"split": TFDS_SPLITS[split], "data_dir": tfds_data_dir, "shuffle_files": False}
    with contextlib.suppress(Exception):  # Not prepared there yet (tfds raises an AssertionError): download it below.
        return tfds.load("oxford_iiit_pet", download=False, **arguments)
    require_download_host()
    try:
        return tfds.load("oxford_iiit_pet", download=True, **arguments)
    except Exception as error:  # tfds raises many types for a failed download; all mean the same to a user.
        raise DataError(f"Could not load oxford_iiit_pet from tfds ({type(error).__name__}: {error}). tfds needs "
                        "internet on first use; offline, pass --data-dir with a folder in the official Oxford-IIIT "
                        "Pet layout.") from error


def require_download_host(host: str = TFDS_DOWNLOAD_HOST, timeout: float = 10.0) -> None:
    """Raise a ``DataError`` within ``timeout`` seconds unless ``host`` resolves and accepts an HTTPS connection."""
    errors: list[OSError] = []

    def connect() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
        except OSError as error:
            errors.append(error)

    probe = threading.Thread(target=connect, daemon=True)  # Name resolution has no timeout of its own: wait for this.
    probe.start()
    probe.join(timeout)
    if errors or probe.is_alive():
        reason = f"{type(errors[0]).__name__}: {errors[0]}" if errors else f"no answer in {timeout:g} s"
        raise DataError(f"Cannot reach {host}, where tfds downloads Oxford-IIIT Pet ({reason}); this machine seems "
                        "to be offline. Pass --data-dir with a folder in the official Oxford-IIIT Pet layout, or "
                        "--tfds-data-dir with a folder where tfds has prepared it already.")


def iterate_tfds_split(split: str, tfds_data_dir: str | None = None) -> Iterator[Example]:
    """Yield every example of a tfds split at its original size (its features fix 3 photo and 1 mask channel)."""
    for index, features in enumerate(load_tfds_split(split, tfds_data_dir).as_numpy_iterator()):
        name = Path(features.get("file_name", f"{split}_{index}".encode()).decode()).stem
        image, mask = np.asarray(features["image"], dtype=np.uint8), np.asarray(features["segmentation_mask"])
        if mask.shape[:2] != image.shape[:2]:  # Only in tfds' mock data (independent shapes): fit it to the photo.
            mask = resize_mask(tf.convert_to_tensor(mask), image.shape[:2]).numpy()
        yield Example(name, image, trimap_to_classes(mask[..., 0]))


def split_reader(data_dir: str | os.PathLike | None, split: str, skipped: list, tfds_data_dir: str | None = None,
                 min_confidence: float | None = None) -> tuple[Iterable, Callable[..., Example | None]]:
    """The items of ``split`` (tfds' examples, or a folder's names: read now, a bad folder fails at once) and a function
    that reads one into an ``Example``, or logs why not, appends ``(name, reason)`` to ``skipped`` and returns None."""
    if split not in TFDS_SPLITS:
        raise DataError(f"Unknown split {split!r}; choose one of: {', '.join(TFDS_SPLITS)}.")

    def read(item) -> Example | None:
        try:
            return item if data_dir is None else read_folder_example(data_dir, item, min_confidence)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            LOGGER.warning("Skipping %s: %s", item, error)
            skipped.append((item, str(error)))
            return None

    return iterate_tfds_split(split, tfds_data_dir) if data_dir is None else read_split_names(data_dir, split), read


def iterate_split(data_dir: str | os.PathLike | None, split: str, skipped: list | None = None,
                  tfds_data_dir: str | None = None) -> Iterator[Example]:
    """Yield the readable examples of ``split`` from a folder (tfds if None); the rest go to ``skipped``."""
    items, read = split_reader(data_dir, split, [] if skipped is None else skipped, tfds_data_dir)
    return (example for example in map(read, items) if example is not None)


def describe_source(data_dir: str | os.PathLike | None) -> str:
    """A short label for the sidecar: "tfds:oxford_iiit_pet" or "folder:<name>"."""
    return "tfds:oxford_iiit_pet" if data_dir is None else f"folder:{Path(data_dir).resolve().name}"


@functools.lru_cache(maxsize=None)
def compiled_resize(size: int):
    """One compiled function per ``size`` that resizes a photo and its mask in one call, as the app resizes."""
    specs = [tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, None, 1], tf.uint8)]
    return tf.function(lambda image, mask: (resize_image(image, size), resize_mask(mask, size)), input_signature=specs)


def resize_example(example: Example, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize one example to a square ``size``: the photo antialiased bilinear, the mask nearest neighbour."""
    image, mask = compiled_resize(int(size))(example.image, example.mask[..., None])
    return np.round(image.numpy() * 255).astype(np.uint8), mask.numpy()


def load_resized(data_dir: str | os.PathLike | None, split: str, size: int, tfds_data_dir: str | None = None,
                 min_confidence: float | None = None) -> ResizedExamples:
    """Decode every example of ``split`` once and resize it to ``size`` in a thread pool (Pillow and TensorFlow
    release the GIL). With ``min_confidence``, ``data_dir`` holds pseudo-labels (see ``read_folder_example``)."""
    skipped: list[tuple[str, str]] = []
    items, read = split_reader(data_dir, split, skipped, tfds_data_dir, min_confidence)

    def prepare(item) -> tuple[str, np.ndarray, np.ndarray] | None:
        example = read(item)
        return None if example is None else (example.name, *resize_example(example, size))

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        pending, prepared = [], []
        for item in items:  # At most 16 ahead: ``pool.map`` would hold every tfds photo at once.
            pending.append(pool.submit(prepare, item))
            if len(pending) >= 16:
                prepared.append(pending.pop(0).result())
        prepared = [result for result in prepared + [future.result() for future in pending] if result is not None]
    if not prepared:
        raise DataError(f"No readable examples in the {split} split of {describe_source(data_dir)} "
                        f"({len(skipped)} skipped).")
    names, images, masks = zip(*prepared)
    return ResizedExamples(list(names), np.stack(images), np.stack(masks), skipped)


def validation_indices(names: list[str], fraction: float, seed: int) -> np.ndarray:
    """Pick ``ceil(fraction * count)`` (at least one) validation examples by a seeded hash of their names."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, got {fraction}.")
    if len(names) < 2:
        raise DataError(f"Need at least 2 trainval examples to carve a validation split, got {len(names)}.")
    keys = [hashlib.sha256(f"{seed}:{name}".encode()).hexdigest() for name in names]
    count = min(len(names) - 1, max(1, int(np.ceil(fraction * len(names)))))
    return np.sort(np.argsort(keys)[:count])


def make_training_data(data_dir: str | os.PathLike | None, image_size: int = 128, batch_size: int = 64,
                       augmentation: str = "flip", validation_fraction: float = 0.1, seed: int = 0,
                       tfds_data_dir: str | None = None, validation_names: list[str] | None = None,
                       unlabelled_dirs: list[str] | None = None, min_confidence: float = 0.0,
                       unlabelled_share: float = 0.5) -> TrainingData:
    """Build the train and validation pipelines from the trainval split (a seeded fraction, or ``validation_names``).
    ``unlabelled_dirs`` hold pseudo-labelled photos (``scripts/pseudo_label.py``) that make up ``unlabelled_share``
    of every training batch, pixels under ``min_confidence`` ignored; an epoch is one pass over the labelled photos."""
    cache_size = round(image_size * 1.25) if augmentation == "strong" else image_size  # Strong's crops: a quarter more.
    examples = load_resized(data_dir, "trainval", cache_size, tfds_data_dir)
    if validation_names is None:
        validation_index = validation_indices(examples.names, validation_fraction, seed)
    else:
        validation_index = np.flatnonzero(np.isin(examples.names, list(validation_names)))
        if not 0 < len(validation_index) < len(examples.names):
            raise DataError(f"The validation list names {len(validation_index)} of the {len(examples.names)} "
                            "trainval photos; it must name at least one and leave at least one to train on.")
    train_index = np.setdiff1d(np.arange(len(examples.names)), validation_index)
    train, validation = examples.take(train_index), examples.take(validation_index)
    if cache_size != image_size:
        validation.images = np.round(resize_image(validation.images, image_size).numpy() * 255).astype(np.uint8)
        validation.masks = resize_mask(tf.convert_to_tensor(validation.masks), image_size).numpy()
    counts = {"train": len(train.names), "validation": len(validation.names), "skipped": len(examples.skipped)}
    source, unlabelled_batch = describe_source(data_dir), round(batch_size * unlabelled_share) if unlabelled_dirs else 0
    if unlabelled_dirs and not 0 < unlabelled_batch < batch_size:
        raise ValueError(f"An unlabelled share of {unlabelled_share} leaves no labelled or no unlabelled photo in a "
                         f"batch of {batch_size}.")
    labelled_batch = batch_size - unlabelled_batch
    train_dataset = cached_batches(train, image_size, augmentation, labelled_batch, seed)
    steps_per_epoch = int(np.ceil(len(train.names) / labelled_batch))
    if unlabelled_dirs:
        unlabelled = load_unlabelled(unlabelled_dirs, cache_size, min_confidence, data_dir, examples.names)
        train_dataset = tf.data.Dataset.zip(
            train_dataset, cached_batches(unlabelled, image_size, augmentation, unlabelled_batch, seed, repeat=True)
        ).map(lambda labelled, more: (tf.concat([labelled[0], more[0]], 0), tf.concat([labelled[1], more[1]], 0)))
        counts.update(unlabelled=len(unlabelled.names), unlabelled_skipped=len(unlabelled.skipped),
                      unlabelled_per_epoch=steps_per_epoch * unlabelled_batch)
        source += f" + unlabelled {', '.join(map(describe_source, unlabelled_dirs))} (confidence >= {min_confidence})"
    validation_dataset = cached_batches(validation, image_size, "none", batch_size).cache()  # Now at image_size.
    return TrainingData(train_dataset.prefetch(tf.data.AUTOTUNE), validation_dataset.prefetch(tf.data.AUTOTUNE),
                        validation.images[:3].astype(np.float32) / 255.0, validation.masks[:3, ..., 0],  # The samples.
                        counts, source, steps_per_epoch)


def cached_batches(examples: ResizedExamples, image_size: int, augmentation: str, batch_size: int,
                   seed: int | None = None, repeat: bool = False) -> tf.data.Dataset:
    """Batches of cached examples through ``augment``, shuffled each pass anew given a ``seed``; ``repeat``: endless."""
    dataset = tf.data.Dataset.from_tensor_slices((examples.images, examples.masks))
    if seed is not None:
        dataset = dataset.shuffle(len(examples.names), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.repeat() if repeat else dataset
    return dataset.map(lambda image, mask: augment(image, mask, image_size, augmentation),
                       num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)


def load_unlabelled(unlabelled_dirs: list[str], size: int, min_confidence: float, data_dir: str | os.PathLike | None,
                    labelled_names: list[str]) -> ResizedExamples:
    """The pseudo-labelled photos, less any the labelled data holds under the same name (trainval or test)."""
    if not 0 <= min_confidence < 1:
        raise ValueError(f"The confidence threshold must be in [0, 1), got {min_confidence}.")
    parts = [load_resized(folder, "trainval", size, min_confidence=min_confidence) for folder in unlabelled_dirs]
    held = set(labelled_names)
    if data_dir is not None and (Path(data_dir) / "annotations" / "test.txt").is_file():
        held.update(read_split_names(data_dir, "test"))
    names = [name for part in parts for name in part.names]
    keep = np.array([index for index, name in enumerate(names) if name not in held], int)
    if len(keep) == 0:
        raise DataError(f"No unlabelled photos left in {', '.join(unlabelled_dirs)}: each is a labelled photo too.")
    return ResizedExamples([names[index] for index in keep], np.concatenate([part.images for part in parts])[keep],
                           np.concatenate([part.masks for part in parts])[keep],
                           [item for part in parts for item in part.skipped])
