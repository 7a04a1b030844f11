"""The Keras callback of a training run: each epoch it writes the run folder (metrics line, sample PNG, TensorBoard
and the resume state), keeps the best checkpoint, and ends the run cleanly on a stop request or a signal."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from petseg.checkpoints import read_sidecar, save_checkpoint, store_metrics, write_sidecar
from petseg.data import TrainingData
from petseg.runs import RunWriter
from petseg.visuals import plot_curves, sample_grid, save_png

TENSORBOARD_FOLDER = "tensorboard"  # In each run folder: losses and metrics (train/, validation/), samples/.

FITTING = threading.Event()  # Set while model.fit runs (it traces TensorFlow functions).
STOP_SIGNALLED = threading.Event()


def stop_on_signal(signum, frame) -> None:
    """train.py's SIGTERM handler: end the run as Ctrl-C does, but while fitting (raising inside TensorFlow's tracing
    can crash it) only at the next batch end; the flag stays set (see docs/limits-and-safety.md)."""
    STOP_SIGNALLED.set()
    if not FITTING.is_set():
        raise KeyboardInterrupt


def raise_if_signalled() -> None:
    """Raise the interrupt ``stop_on_signal`` deferred or Python dropped: before each phase's fit, at each batch end."""
    if STOP_SIGNALLED.is_set():
        raise KeyboardInterrupt


class EpochReporter(keras.callbacks.Callback):
    """Writes the run folder each epoch, keeps the best checkpoint, and honours a stop request."""

    def __init__(self, writer: RunWriter, data: TrainingData, checkpoint_path: Path, sidecar: dict, config: dict,
                 resumed: dict | None = None):
        super().__init__()
        self.config = config  # The run's ``TrainConfig``, saved with each epoch's resume state.
        self.writer, self.data, self.checkpoint_path, self.sidecar = writer, data, checkpoint_path, sidecar
        self.history, self.best_mean_iou, self.epoch_started, self.stopped = [], -1.0, 0.0, False
        if resumed:  # The epochs so far, the best metric, and the best checkpoint's sidecar come back.
            self.history, self.best_mean_iou = writer.keep_epochs(resumed["epoch"]), resumed["best_mean_iou"]
            if checkpoint_path.exists():
                self.sidecar = read_sidecar(checkpoint_path)
        self.samples_log = tf.summary.create_file_writer(str(writer.run_dir / TENSORBOARD_FOLDER / "samples"))

    def on_train_begin(self, logs=None):
        FITTING.set()

    def on_train_end(self, logs=None):
        FITTING.clear()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        raise_if_signalled()
        if self.writer.stop_requested():
            self.stopped = True
            self.model.stop_training = True

    def on_test_batch_end(self, batch, logs=None):
        raise_if_signalled()

    def on_epoch_end(self, epoch, logs=None):
        epoch, seconds = epoch + 1, time.perf_counter() - self.epoch_started  # Keras counts epochs from 0.
        record = {"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()},
                  "seconds": round(seconds, 2),
                  "images_per_second": round(self.data.counts["train"] / max(seconds, 1e-9), 1),
                  "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))}
        predictions = np.argmax(self.model(self.data.sample_images, training=False), axis=-1)
        grid = sample_grid(np.round(self.data.sample_images * 255).astype(np.uint8), self.data.sample_masks,
                           predictions, title=f"epoch {epoch}: val mIoU {record.get('val_mean_iou', float('nan')):.3f}")
        save_png(grid, self.writer.sample_path(epoch))
        with self.samples_log.as_default():
            tf.summary.image("input / truth / prediction", grid[np.newaxis], step=epoch)
        self.samples_log.flush()
        mean_iou = record.get("val_mean_iou", -1.0)
        improved, self.best_mean_iou = mean_iou > self.best_mean_iou, max(mean_iou, self.best_mean_iou)
        if improved or self.config["keep_last"]:
            record["saved_checkpoint"] = True
            self.sidecar.update(epochs=epoch, **({"best_epoch": epoch} if improved else {}), metrics={
                "validation": {"mean_iou": mean_iou, "pixel_accuracy": record.get("val_accuracy")}})
            save_checkpoint(self.model, self.checkpoint_path, self.sidecar)
            self.writer.update(checkpoint=str(self.checkpoint_path))
        self.history.append(record)
        self.writer.log_epoch(record)
        self.writer.save_resume_state({"epoch": epoch, "best_mean_iou": self.best_mean_iou, "config": self.config},
                                      self.model.get_weights(),
                                      [keras.ops.convert_to_numpy(v) for v in self.model.optimizer.variables])
        print(json.dumps({"metrics": record}), flush=True)

    def finish(self, train_seconds: float) -> dict:
        """Draw the curves; store the best metrics, the time and the epochs done in the best checkpoint's sidecar."""
        self.save_curves()
        if not self.checkpoint_path.exists():
            raise RuntimeError("no epoch finished, so no checkpoint was written")
        sidecar = store_metrics(self.checkpoint_path, "validation", self.sidecar["metrics"]["validation"])
        sidecar.update(train_seconds=train_seconds, epochs_done=len(self.history), stopped_early=self.stopped)
        write_sidecar(self.checkpoint_path, sidecar)
        return sidecar

    def save_curves(self) -> None:
        """Draw the loss and metric curves of the epochs so far into ``curves.png``."""
        if self.history:
            save_png(plot_curves(self.history), self.writer.run_dir / "curves.png")
