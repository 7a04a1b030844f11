import numpy as np
import pytest

from petseg.metrics import compute_metrics, confusion_matrix


def test_known_iou_values_on_a_hand_made_prediction():
    truth = np.array([[0, 0, 0, 1],
                      [0, 2, 1, 1],
                      [1, 1, 1, 1]])
    prediction = np.array([[0, 0, 1, 1],
                           [2, 2, 1, 1],
                           [1, 1, 1, 0]])
    metrics = compute_metrics(confusion_matrix(truth, prediction))
    # pet: 2 hits, 2 missed, 1 false -> 2/5; background: 6 hits, 1 missed, 1 false -> 6/8; border: 1/2.
    assert metrics["iou"] == pytest.approx({"pet": 0.4, "background": 0.75, "border": 0.5})
    assert metrics["mean_iou"] == pytest.approx((0.4 + 0.75 + 0.5) / 3)
    assert metrics["pixel_accuracy"] == pytest.approx(9 / 12)
    # Binary: foreground (pet+border) truth 5 px, predicted 5 px, overlap 4 -> 4/6.
    assert metrics["binary_pet_iou"] == pytest.approx(4 / 6)


def test_absent_class_is_left_out_of_the_mean():
    metrics = compute_metrics(confusion_matrix(np.array([0, 1]), np.array([0, 1])))
    assert np.isnan(metrics["iou"]["border"]) and metrics["mean_iou"] == 1.0


def test_invalid_labels_are_refused():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]))
