"""Segmentation metrics from a confusion matrix (pixel accuracy, per-class IoU, mean IoU, binary pet IoU), and a
checkpoint scored over a whole split at each photo's original resolution through the app's request path.

>>> import numpy as np
>>> truth = np.array([[0, 0], [1, 2]])
>>> prediction = np.array([[0, 1], [1, 2]])
>>> scores = compute_metrics(confusion_matrix(truth, prediction))
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
    truth = np.asarray(truth).reshape(-1).astype(np.int64)
    prediction = np.asarray(prediction).reshape(-1).astype(np.int64)
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
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
    total = confusion.sum()

    foreground = [index for index in range(len(confusion)) if index != BACKGROUND]
    binary = np.zeros((2, 2))
    binary[0, 0] = confusion[np.ix_(foreground, foreground)].sum()
    binary[0, 1] = confusion[np.ix_(foreground, [BACKGROUND])].sum()
    binary[1, 0] = confusion[np.ix_([BACKGROUND], foreground)].sum()
    binary_union = binary[0, 0] + binary[0, 1] + binary[1, 0]
    return {
        "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "mean_iou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "iou": {name: float(value) for name, value in zip(CLASS_NAMES, iou)},
        "binary_pet_iou": float(binary[0, 0] / binary_union) if binary_union else float("nan"),
        "pixels": int(total),
    }


def metrics_key(data_dir: str | os.PathLike | None, split: str) -> str:
    """Where a split's metrics live in a sidecar: "test" for tfds, "<folder name>/test" for a local folder."""
    return split if data_dir is None else f"{Path(data_dir).resolve().name}/{split}"


def evaluate_checkpoint(checkpoint: CheckpointInfo, data_dir: str | os.PathLike | None, split: str = "test",
                        limit: int | None = None, tfds_data_dir: str | None = None) -> dict:
    """Score a servable entry (its export runs) on every readable photo of ``split`` (or the first ``limit``) of
    ``data_dir`` (official layout; None: tfds, from ``tfds_data_dir`` if given)."""
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    skipped: list = []
    count = 0
    started = time.perf_counter()
    for example in iterate_split(data_dir, split, skipped, tfds_data_dir):
        prediction = predict_probabilities(example.image, checkpoint).argmax(axis=-1)
        confusion += confusion_matrix(example.mask, prediction)
        count += 1
        if limit is not None and count >= limit:
            break
    metrics = compute_metrics(confusion)
    metrics.update(
        data=describe_source(data_dir), split=split, photos=count, skipped=len(skipped),
        resolution="original", seconds=round(time.perf_counter() - started, 1),
    )
    return metrics
