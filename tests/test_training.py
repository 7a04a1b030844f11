import json
import subprocess
import sys

import numpy as np

from petseg.checkpoints import load_checkpoint_file, read_sidecar
from petseg.classes import CLASS_NAMES
from petseg.inference import get_predictor, predict_mask, predict_probabilities
from petseg.runs import read_run

from conftest import ROOT


def test_one_epoch_writes_checkpoint_sidecar_sample_and_metrics(trained_checkpoint):
    result = trained_checkpoint
    assert result.state == "done" and result.checkpoint_path.name == "tiny.keras"
    sidecar = read_sidecar(result.checkpoint_path)
    assert sidecar["preset"] == "tutorial" and sidecar["image_size"] == 64
    assert sidecar["classes"] == list(CLASS_NAMES) and sidecar["epochs"] == 1
    assert sidecar["data"]["source"].startswith("folder:") and sidecar["data"]["train"] > 0
    assert sidecar["petseg_version"] and sidecar["created"] and sidecar["train_seconds"] > 0
    test_key = next(key for key in sidecar["metrics"] if key.endswith("/test"))
    assert set(sidecar["metrics"][test_key]["iou"]) == set(CLASS_NAMES) and sidecar["metrics"][test_key]["photos"] == 4

    run = read_run(result.run_dir)
    assert run.state == "done" and len(run.epochs) == 1 and len(run.samples) == 1
    assert run.samples[0].name == "epoch_001.png" and run.curves is not None
    assert {"loss", "val_loss", "val_mean_iou", "seconds"} <= set(run.epochs[0])

    # Float16 storage keeps the file small; it loads back as a float32 model that predicts valid masks.
    checkpoint = load_checkpoint_file(result.checkpoint_path)
    assert checkpoint.model.weights[0].dtype == "float32"
    assert result.checkpoint_path.stat().st_size < 16 * 2**20
    photo = np.random.default_rng(0).integers(0, 255, size=(75, 101, 3), dtype=np.uint8)
    probabilities = predict_probabilities(photo, checkpoint)
    assert probabilities.shape == (75, 101, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-4)
    assert set(np.unique(predict_mask(photo, checkpoint))) <= {0, 1, 2}


def test_request_path_does_not_retrace_for_new_photo_sizes(trained_checkpoint):
    checkpoint = load_checkpoint_file(trained_checkpoint.checkpoint_path)
    predictor = get_predictor(checkpoint)
    predictor.warm_up()
    traced = predictor.trace_count()
    rng = np.random.default_rng(1)
    for height, width in [(375, 500), (500, 375), (33, 47), (64, 64), (1024, 768)]:
        predict_probabilities(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8), checkpoint)
    assert predictor.trace_count() == traced == 1


def test_evaluate_cli_prints_whole_split_metrics_and_stores_them(trained_checkpoint, synthetic_data, tmp_path):
    checkpoint = tmp_path / "copy.keras"
    checkpoint.write_bytes(trained_checkpoint.checkpoint_path.read_bytes())
    checkpoint.with_suffix(".json").write_text(trained_checkpoint.checkpoint_path.with_suffix(".json").read_text())
    completed = subprocess.run(
        [sys.executable, "-m", "petseg.evaluate", "--checkpoint", str(checkpoint), "--data-dir", str(synthetic_data),
         "--split", "test", "--write-sidecar"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    metrics = json.loads(completed.stdout)
    assert metrics["photos"] == 4 and 0 <= metrics["mean_iou"] <= 1 and set(metrics["iou"]) == set(CLASS_NAMES)
    stored = read_sidecar(checkpoint)["metrics"][f"{synthetic_data.name}/test"]
    assert stored["mean_iou"] == metrics["mean_iou"]
    # It reproduces what training stored for the same checkpoint and split.
    trained = read_sidecar(trained_checkpoint.checkpoint_path)["metrics"][f"{synthetic_data.name}/test"]
    assert abs(trained["mean_iou"] - metrics["mean_iou"]) < 1e-6


def test_cli_errors_are_clear(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "petseg.evaluate", "--checkpoint", str(tmp_path / "no.keras")],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and "unavailable" in completed.stderr and "Traceback" not in completed.stderr
    completed = subprocess.run([sys.executable, "train.py", "--data-dir", str(tmp_path / "nowhere"), "--epochs", "1",
                                "--encoder-weights", "none", "--output-dir", str(tmp_path), "--run-dir", str(tmp_path / "run")],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and "not found" in completed.stderr and "Traceback" not in completed.stderr
