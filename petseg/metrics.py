"""Segmentation metrics from a confusion matrix, and a checkpoint scored over a whole split at each photo's
original resolution through the app's request path.

>>> import numpy as np
>>> scores = compute_metrics(confusion_matrix(np.array([[0, 0], [1, 2]]), np.array([[0, 1], [1, 2]])))
>>> scores["pixel_accuracy"], scores["iou"]["pet"], scores["iou"]["background"]
(0.75, 0.5, 0.5)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from petseg.checkpoints import CheckpointInfo
from petseg.classes import BACKGROUND, CLASS_NAMES, NUM_CLASSES
from petseg.data import describe_source, iterate_split
from petseg.inference import predict_probabilities


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Count pixels by (true class, predicted class); rows are the truth."""
    truth, prediction = (np.asarray(values).reshape(-1).astype(np.int64) for values in (truth, prediction))
    if truth.shape != prediction.shape:
        raise ValueError(f"truth has {truth.size} pixels but prediction has {prediction.size}.")
    for label, values in (("truth", truth), ("prediction", prediction)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{label} holds class ids outside 0..{num_classes - 1}.")
    return np.bincount(truth * num_classes + prediction, minlength=num_classes**2).reshape(num_classes, num_classes)


def compute_metrics(confusion: np.ndarray) -> dict:
    """The metrics sidecars and the app report; binary pet IoU is pet + border against background, and a class
    absent from both truth and prediction gets IoU NaN, left out of the mean."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    iou = np.divide(true_positive, union, out=np.full(len(union), np.nan), where=union > 0)
    total = confusion.sum()
    pet_pet = np.delete(np.delete(confusion, BACKGROUND, 0), BACKGROUND, 1).sum()
    binary_union = total - confusion[BACKGROUND, BACKGROUND]
    return {"pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
            "mean_iou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
            "iou": {name: float(value) for name, value in zip(CLASS_NAMES, iou)},
            "binary_pet_iou": float(pet_pet / binary_union) if binary_union else float("nan"), "pixels": int(total)}


def metrics_key(data_dir: str | os.PathLike | None, split: str) -> str:
    """Where a split's metrics live in a sidecar: "test" for tfds, "<folder name>/test" for a local folder."""
    return split if data_dir is None else f"{Path(data_dir).resolve().name}/{split}"


def evaluate_checkpoint(checkpoint: CheckpointInfo, data_dir: str | os.PathLike | None, split: str = "test",
                        limit: int | None = None, tfds_data_dir: str | None = None) -> dict:
    """Score a servable entry (its export runs) on every readable photo of ``split`` (or the first ``limit``) of
    ``data_dir`` (official layout; None: tfds, from ``tfds_data_dir`` if given)."""
    confusion, skipped, count, started = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64), [], 0, time.perf_counter()
    for count, example in enumerate(iterate_split(data_dir, split, skipped, tfds_data_dir), 1):
        confusion += confusion_matrix(example.mask, predict_probabilities(example.image, checkpoint).argmax(axis=-1))
        if limit is not None and count >= limit:
            break
    return {**compute_metrics(confusion), "data": describe_source(data_dir), "split": split, "photos": count,
            "skipped": len(skipped), "resolution": "original", "seconds": round(time.perf_counter() - started, 1)}
