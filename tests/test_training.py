import json
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tensorflow.compat.v1.train import summary_iterator

import train as train_script
from petseg import callbacks, evaluate
from petseg.checkpoints import load_checkpoint_file, read_sidecar
from petseg.classes import CLASS_NAMES
from petseg.inference import predict_probabilities
from petseg.runs import read_run

from conftest import copy_checkpoint


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
    # TensorBoard logs in the run folder: losses and metrics per epoch, and the epoch's sample image.
    assert {"epoch_loss", "epoch_mean_iou"} <= tensorboard_tags(result.run_dir / "tensorboard" / "train")
    assert {"epoch_loss", "epoch_mean_iou"} <= tensorboard_tags(result.run_dir / "tensorboard" / "validation")
    assert tensorboard_tags(result.run_dir / "tensorboard" / "samples") == {"input / truth / prediction"}

    # Float16 storage keeps the file small; it loads back as a float32 model that predicts valid masks.
    checkpoint = load_checkpoint_file(result.checkpoint_path)
    assert checkpoint.model.weights[0].dtype == "float32"
    assert result.checkpoint_path.stat().st_size < 16 * 2**20
    photo = np.random.default_rng(0).integers(0, 255, size=(75, 101, 3), dtype=np.uint8)
    probabilities = predict_probabilities(photo, checkpoint)
    assert probabilities.shape == (75, 101, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-4)


def tensorboard_tags(folder: Path) -> set[str]:
    """The tags of every summary in the TensorBoard event files of ``folder``."""
    events = [event for path in folder.glob("events.out.tfevents.*") for event in summary_iterator(str(path))]
    return {value.tag for event in events for value in event.summary.value}


def test_evaluate_cli_prints_whole_split_metrics_and_stores_them(trained_checkpoint, synthetic_data, tmp_path,
                                                                  capsys):
    checkpoint = copy_checkpoint(trained_checkpoint.checkpoint_path, tmp_path / "copy.keras")
    code = evaluate.main(["--checkpoint", str(checkpoint), "--data-dir", str(synthetic_data), "--split", "test",
                          "--write-sidecar"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["photos"] == 4 and 0 <= metrics["mean_iou"] <= 1 and set(metrics["iou"]) == set(CLASS_NAMES)
    stored = read_sidecar(checkpoint)["metrics"][f"{synthetic_data.name}/test"]
    assert stored["mean_iou"] == metrics["mean_iou"]
    # It reproduces what training stored for the same checkpoint and split.
    trained = read_sidecar(trained_checkpoint.checkpoint_path)["metrics"][f"{synthetic_data.name}/test"]
    assert abs(trained["mean_iou"] - metrics["mean_iou"]) < 1e-6


def test_cli_errors_are_clear(tmp_path, capsys):
    assert evaluate.main(["--checkpoint", str(tmp_path / "no.keras")]) == 2
    assert "unavailable" in capsys.readouterr().err
    sigterm_handler = signal.getsignal(signal.SIGTERM)  # train.py turns SIGTERM into a clean stop; undo that here.
    try:
        code = train_script.main(["--data-dir", str(tmp_path / "nowhere"), "--epochs", "1", "--encoder-weights",
                                  "none", "--output-dir", str(tmp_path), "--run-dir", str(tmp_path / "run")])
    finally:
        signal.signal(signal.SIGTERM, sigterm_handler)
    assert code == 2 and "not found" in capsys.readouterr().err


def test_sigterm_while_fitting_interrupts_at_the_batch_end_not_in_the_handler():
    reporter = callbacks.EpochReporter.__new__(callbacks.EpochReporter)
    reporter.writer = SimpleNamespace(stop_requested=lambda: False)  # No stop file.
    callbacks.FITTING.set()
    try:
        reporter.on_train_batch_end(0)  # No signal yet: the batch ends normally.
        callbacks.stop_on_signal(signal.SIGTERM, None)  # Inside model.fit: only a flag, no exception here.
        with pytest.raises(KeyboardInterrupt):
            reporter.on_train_batch_end(1)
        with pytest.raises(KeyboardInterrupt):
            reporter.on_test_batch_end(0)
    finally:
        callbacks.FITTING.clear()
        callbacks.STOP_SIGNALLED.clear()


def test_sigterm_between_phases_survives_an_interrupt_python_drops():
    """Outside model.fit the handler raises at once, as Ctrl-C. When that lands in a ``__del__`` (TensorFlow frees
    traced functions between phases), Python prints and drops the interrupt; the run must still stop at its next
    check, where once it trained on until killed."""
    class FreedBetweenPhases:
        def __del__(self):
            callbacks.stop_on_signal(signal.SIGTERM, None)

    try:
        with pytest.raises(KeyboardInterrupt):
            callbacks.stop_on_signal(signal.SIGTERM, None)
        callbacks.STOP_SIGNALLED.clear()
        FreedBetweenPhases()  # Freed at once: the handler raises inside __del__, and Python drops it.
        with pytest.raises(KeyboardInterrupt):
            callbacks.raise_if_signalled()  # What fit_phases calls after compiling, and the reporter at each batch end.
    finally:
        callbacks.STOP_SIGNALLED.clear()


def test_a_run_that_raises_clears_the_fitting_and_signal_flags(tmp_path):
    from petseg import training
    from petseg.data import DataError

    callbacks.FITTING.set()  # What a fit that raised would leave: Keras skips on_train_end then.
    callbacks.STOP_SIGNALLED.set()  # What a SIGTERM during that fit would leave.
    with pytest.raises(DataError, match="not found"):
        training.train(training.TrainConfig(data_dir=str(tmp_path / "nowhere"), epochs=1, encoder_weights="none",
                                            output_dir=str(tmp_path), run_dir=str(tmp_path / "run")))
    assert not callbacks.FITTING.is_set() and not callbacks.STOP_SIGNALLED.is_set()


def test_the_loss_skips_ignored_pixels():
    """A batch whose right halves are IGNORE scores as the left halves alone, cross-entropy and Dice alike."""
    import tensorflow as tf

    from petseg.data import IGNORE
    from petseg.training import cross_entropy_dice_loss

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(2, 8, 8, 1))
    logits = tf.constant(rng.normal(size=(2, 8, 8, 3)), tf.float32)
    ignored = labels.copy()
    ignored[:, :, 4:] = IGNORE
    for loss in (cross_entropy_dice_loss(1.0), cross_entropy_dice_loss(0.0, border_weight=2.0),
                 cross_entropy_dice_loss(0.0)):
        expected = float(loss(tf.constant(labels[:, :, :4]), logits[:, :, :4]))
        assert float(loss(tf.constant(ignored), logits)) == pytest.approx(expected, rel=1e-5)


def test_resume_without_a_saved_state_is_a_clear_error(tmp_path, capsys):
    assert train_script.main(["--resume", str(tmp_path)]) == 2
    assert "cannot be resumed: it has no resume.npz" in capsys.readouterr().err


def test_sample_photos_show_their_trimaps_where_the_data_folder_has_them(synthetic_data, tmp_path):
    import shutil

    from petseg.training import load_sample_photos

    named = synthetic_data / "images" / "Synthetic_cat_1.jpg"  # A labelled photo, given by a path outside the folder.
    stranger = tmp_path / "stranger.jpg"
    shutil.copy(named, tmp_path / "Synthetic_cat_1.jpg")
    shutil.copy(named, stranger)
    images, masks = load_sample_photos([str(tmp_path / "Synthetic_cat_1.jpg"), str(stranger)], 64, str(synthetic_data))
    assert images.shape == (2, 64, 64, 3) and masks[1] is None
    assert masks[0].shape == (64, 64) and set(np.unique(masks[0])) <= {0, 1, 2} and (masks[0] == 0).any()
    assert load_sample_photos([str(stranger)], 64)[1] == [None]
