"""Segmentation metrics from a confusion matrix: pixel accuracy, per-class IoU, mean IoU, binary pet IoU.

>>> import numpy as np
>>> truth = np.array([[0, 0], [1, 2]])
>>> prediction = np.array([[0, 1], [1, 2]])
>>> scores = compute_metrics(confusion_matrix(truth, prediction))
>>> scores["pixel_accuracy"], scores["iou"]["pet"], scores["iou"]["background"]
(0.75, 0.5, 0.5)
"""

from __future__ import annotations

import numpy as np

from petseg.classes import BACKGROUND, CLASS_NAMES, NUM_CLASSES


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
    """Turn a confusion matrix into the metrics that sidecars, the README and the app report.

    Binary pet IoU treats pet and border as "pet" against background, as foreground/background benchmarks do.
    A class absent from both truth and prediction gets IoU NaN and is left out of the mean.
    """
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
