"""Training: fit a preset on a data source in phases (``training_phases``); ``petseg.callbacks`` reports each epoch.
``train.py`` is the command line; in Python: ``train(TrainConfig(data_dir="data", encoder_weights="none"))``."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import petseg
from petseg.callbacks import FITTING, STOP_SIGNALLED, TENSORBOARD_FOLDER, EpochReporter, raise_if_signalled
from petseg.checkpoints import CheckpointError, load_checkpoint_file, read_sidecar, servable_entry, store_metrics
from petseg.classes import BORDER, CLASS_NAMES, NUM_CLASSES
from petseg.data import (IGNORE, DataError, TrainingData, make_training_data, read_folder_example, read_name_list,
                         resize_example)
from petseg.distribute import cpu_name, is_chief, make_strategy, split_batches_evenly
from petseg.metrics import evaluate_checkpoint, metrics_key
from petseg.model import build_model, set_encoder_trainable
from petseg.photos import load_photo
from petseg.presets import Preset, apply_overrides, get_preset
from petseg.resize import resize_image
from petseg.runs import DEFAULT_RUNS_DIR, RunWriter, new_run_id, now_iso, read_resume_state


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; None means "the preset's default"."""

    data_dir: str | None = None  # None: tfds oxford_iiit_pet.
    preset: str = "tutorial"
    overrides: dict[str, str] | None = None  # Preset fields to change, e.g. {"image_size": "160"}.
    epochs: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    learning_rate: float | None = None
    encoder_weights: str | None = "imagenet"
    output_dir: str = "weights"
    run_dir: str | None = None  # Default: runs/<timestamp>-<pid>.
    name: str | None = None  # Default: <preset>-<run id>.
    seed: int = 0
    validation_fraction: float = 0.1
    validation_list: str | None = None  # A file of trainval names to validate on instead of a seeded fraction.
    unlabelled_dirs: list[str] | None = None  # Pseudo-labelled photos (scripts/pseudo_label.py), to train on only.
    keep_last: bool = False  # Keep the last epoch's checkpoint, not the best validation epoch's.
    init_checkpoint: str | None = None  # Start from this checkpoint's weights (same preset and size), not an encoder's.
    strategy: str = "default"
    evaluate_test: bool = True
    tfds_data_dir: str | None = None
    verbose: int | str = "auto"
    sample_photos: list[str] | None = None  # Shown each epoch instead of validation photos a shipped run may not show.


@dataclasses.dataclass
class TrainResult:
    checkpoint_path: Path
    sidecar: dict[str, Any]
    run_dir: Path
    state: str


def cross_entropy_dice_loss(dice_weight: float, border_weight: float = 1.0):
    """Sparse cross-entropy from logits plus ``dice_weight`` times the soft Dice loss (mean over classes);
    ``border_weight`` weighs cross-entropy within 2 px of the border ring: a contour 1 px off costs most of its IoU."""
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)
    if dice_weight == 0 and border_weight == 1:
        return cross_entropy

    def loss(true_mask, logits):
        labels = tf.cast(tf.squeeze(true_mask, -1), tf.int32)
        known = tf.cast(labels != IGNORE, logits.dtype)  # Pixels marked IGNORE (an unsure teacher's) count nowhere:
        labels = tf.where(labels == IGNORE, 0, labels)  # class 0 stands in, then weight 0.
        pixel_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits) * known
        if border_weight != 1:
            ring = tf.cast(labels == BORDER, logits.dtype)[..., tf.newaxis] * known[..., tf.newaxis]
            near_ring = tf.squeeze(tf.nn.max_pool2d(ring, 5, 1, "SAME"), -1)
            pixel_loss *= 1.0 + (border_weight - 1.0) * near_ring
        total = tf.reduce_sum(pixel_loss) / tf.maximum(tf.reduce_sum(known), 1.0)
        if dice_weight == 0:
            return total
        probabilities = tf.nn.softmax(logits, axis=-1) * known[..., tf.newaxis]
        one_hot = tf.one_hot(labels, NUM_CLASSES, dtype=probabilities.dtype) * known[..., tf.newaxis]
        intersection = tf.reduce_sum(probabilities * one_hot, axis=[0, 1, 2])
        sums = tf.reduce_sum(probabilities + one_hot, axis=[0, 1, 2])
        dice = tf.reduce_mean((2.0 * intersection + 1.0) / (sums + 1.0))
        return total + dice_weight * (1.0 - dice)

    return loss


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train ``config.preset`` and return where its best checkpoint went; ``resume`` continues ``config.run_dir``."""
    preset = apply_overrides(get_preset(config.preset), config.overrides)
    run_id = Path(config.run_dir).name if resume else new_run_id()
    config = dataclasses.replace(  # The preset's defaults where the config leaves a value open.
        config, epochs=config.epochs or preset.epochs, batch_size=config.batch_size or preset.batch_size,
        image_size=config.image_size or preset.image_size, learning_rate=config.learning_rate or preset.learning_rate,
        name=config.name or f"{preset.name}-{run_id}", run_dir=config.run_dir or str(DEFAULT_RUNS_DIR / run_id))
    strategy = make_strategy(config.strategy)  # First, before anything else starts TensorFlow.
    run_dir = shared_run_dir = Path(config.run_dir)
    checkpoint_path, scratch = Path(config.output_dir) / f"{config.name}.keras", None
    if not is_chief(strategy):  # A non-chief worker writes into a scratch folder of its own (dropped at the end).
        scratch = Path(tempfile.mkdtemp(prefix=f"petseg-worker-{strategy.cluster_resolver.task_id}-"))
        run_dir, checkpoint_path = scratch / "run", scratch / "weights" / checkpoint_path.name
    state, weights, optimizer_values = read_resume_state(run_dir) if resume else ({"epoch": 0}, None, None)
    keras.utils.set_random_seed(config.seed + state["epoch"])  # A resumed run draws anew from the seed and epoch.
    writer = RunWriter(run_dir, {"preset": preset.name, "epochs": config.epochs, "batch_size": config.batch_size,
                                 "image_size": config.image_size, "name": config.name,
                                 "data": config.data_dir or "tfds"})
    started, reporter = time.perf_counter(), None
    try:
        data, used = load_training_data(config, preset, strategy, scratch)
        if weights is None and config.init_checkpoint:
            weights = checkpoint_weights(config.init_checkpoint, preset.name, config.image_size)
        with strategy.scope():  # Started from weights, it needs no encoder weights.
            model = build_model(preset, config.image_size, config.encoder_weights if weights is None else None)
            if weights is not None:
                model.set_weights(weights)
        sidecar = describe_run(config, preset, model, data, strategy.num_replicas_in_sync, used, shared_run_dir)
        reporter = EpochReporter(writer, data, checkpoint_path, sidecar, dataclasses.asdict(config),
                                 resumed=state if resume else None)
        fit_phases(model, preset, config, data, strategy, reporter, state["epoch"], optimizer_values)
        train_seconds = round(time.perf_counter() - started, 1)
        sidecar = reporter.finish(train_seconds)
        evaluate = config.evaluate_test and not reporter.stopped and scratch is None
        sidecar, test_note = evaluate_test_split(checkpoint_path, config) if evaluate else (sidecar, "")
        outcome = "stopped" if reporter.stopped else "done"
        writer.finish(outcome, f"best validation mIoU {reporter.best_mean_iou:.3f}{test_note}",
                      checkpoint=str(checkpoint_path), train_seconds=train_seconds)
    except KeyboardInterrupt:
        if reporter is not None:
            reporter.save_curves()
        writer.finish("stopped", "interrupted")
        raise
    except BaseException as error:
        writer.finish("failed", f"{type(error).__name__}: {error}")
        raise
    finally:
        FITTING.clear()  # Keras skips on_train_end when fit raises.
        STOP_SIGNALLED.clear()  # The signal ended this run; a later run in this process starts afresh.
    if scratch is not None:  # A non-chief worker's copies are redundant once it finished; report the chief's.
        shutil.rmtree(scratch, ignore_errors=True)
        checkpoint_path, run_dir = Path(config.output_dir) / checkpoint_path.name, shared_run_dir
    return TrainResult(checkpoint_path, sidecar, run_dir, outcome)


def fit_phases(model: keras.Model, preset: Preset, config: TrainConfig, data: TrainingData,
               strategy: tf.distribute.Strategy, reporter: "EpochReporter", epochs_done: int = 0,
               optimizer_values: list[np.ndarray] | None = None) -> None:
    """Fit each phase not yet done; a resumed phase gets its optimizer state (and so its cosine schedule) back."""
    callbacks = [reporter, keras.callbacks.TensorBoard(str(reporter.writer.run_dir / TENSORBOARD_FOLDER),
                                                       write_graph=False)]
    phases = training_phases(preset, config.epochs, config.learning_rate)
    for first_epoch, last_epoch, fine_tune, learning_rate in [phase for phase in phases if phase[1] > epochs_done]:
        if fine_tune:
            print(f"Epoch {first_epoch + 1}: unfreezing the encoder (BatchNorm stays frozen), learning rate "
                  f"{learning_rate} with cosine decay.", flush=True)
            learning_rate = keras.optimizers.schedules.CosineDecay(
                learning_rate, decay_steps=data.steps_per_epoch * (last_epoch - first_epoch), alpha=0.1)
        with strategy.scope():
            set_encoder_trainable(model, fine_tune)
            mean_iou = keras.metrics.MeanIoU(NUM_CLASSES, sparse_y_pred=False, ignore_class=IGNORE, name="mean_iou")
            model.compile(optimizer=keras.optimizers.Adam(learning_rate), metrics=["accuracy", mean_iou],
                          loss=cross_entropy_dice_loss(preset.dice_weight, preset.border_weight))
            raise_if_signalled()  # A stop signal that came meanwhile: compiling frees functions, ``__del__`` drops it.
            if optimizer_values is not None and first_epoch < epochs_done:
                model.optimizer.build(model.trainable_variables)
                if len(model.optimizer.variables) != len(optimizer_values):
                    raise ValueError("The saved optimizer state does not fit this model: start a new run.")
                for variable, value in zip(model.optimizer.variables, optimizer_values):
                    variable.assign(value)
        model.fit(data.train, validation_data=data.validation, initial_epoch=max(first_epoch, epochs_done),
                  epochs=last_epoch, callbacks=callbacks, verbose=config.verbose)
        if reporter.stopped:
            break


def resume_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The config of a run that saved a resume state, to continue it with ``train(config, resume=True)``."""
    return TrainConfig(**{**read_resume_state(run_dir)[0]["config"], "run_dir": str(run_dir)})


def describe_run(config: TrainConfig, preset: Preset, model: keras.Model, data: TrainingData,
                 replicas: int, used: dict[str, int], run_dir: Path) -> dict[str, Any]:
    """The checkpoint's sidecar as training starts: what was trained, on what, how, and where (on which machine)."""
    weights = config.encoder_weights
    devices = [device.device_type for device in tf.config.list_physical_devices() if device.device_type != "CPU"]
    hardware = f"{cpu_name()}, {os.cpu_count()} cores" + (f", {len(devices)} {devices[0]}" if devices else "")
    return {"name": config.name, "preset": preset.name, "description": preset.description,
            "image_size": config.image_size, "overrides": config.overrides or {}, "classes": list(CLASS_NAMES),
            "epochs_planned": config.epochs, "batch_size": config.batch_size, "learning_rate": config.learning_rate,
            "encoder_weights": str(weights) if weights in (None, "none", "imagenet") else f"file:{Path(weights).name}",
            **({"init_checkpoint": Path(config.init_checkpoint).name} if config.init_checkpoint else {}),
            "data": {"source": data.source, **data.counts}, "seed": config.seed, "strategy": config.strategy,
            "replicas": replicas, **({"photos_per_epoch": used} if used else {}),
            "parameters": int(model.count_params()), "hardware": hardware, "created": now_iso(),
            "petseg_version": petseg.__version__, "tensorflow_version": tf.__version__, "run": run_dir.name}


def training_phases(preset: Preset, epochs: int, learning_rate: float) -> list[tuple[int, int, bool, float]]:
    """The phases as (first epoch, 0-based; last epoch; fine-tune; learning rate): a frozen-encoder phase, then, for
    presets with ``fine_tune_after``, a fine-tuning phase (alone if it is 0: for a model started from a checkpoint).

    >>> from petseg.presets import get_preset
    >>> training_phases(get_preset("tutorial"), 20, 1e-3)
    [(0, 20, False, 0.001)]
    """
    frozen = epochs if preset.fine_tune_after is None else min(preset.fine_tune_after, epochs)
    phases = [(0, frozen, False, learning_rate), (frozen, epochs, True, preset.fine_tune_learning_rate)]
    return [phase for phase in phases if phase[0] < phase[1]]  # Without an empty phase.


def evaluate_test_split(checkpoint_path: Path, config: TrainConfig) -> tuple[dict, str]:
    """Evaluate the best checkpoint on the test split at original resolution; return its sidecar and any skip note."""
    try:
        metrics = evaluate_checkpoint(servable_entry(checkpoint_path.name, checkpoint_path.parent), config.data_dir,
                                      tfds_data_dir=config.tfds_data_dir)
    except DataError as error:
        print(f"No test evaluation: {error} The checkpoint is saved: {checkpoint_path}", flush=True)
        return read_sidecar(checkpoint_path), f"; no test evaluation: {error}"
    print(json.dumps({"test_metrics": metrics}), flush=True)
    return store_metrics(checkpoint_path, metrics_key(config.data_dir, "test"), metrics), ""


def load_training_data(config: TrainConfig, preset: Preset, strategy: tf.distribute.Strategy,
                       scratch: Path | None) -> tuple[TrainingData, dict[str, int]]:
    """The run's data and, with several replicas, the photos each split uses (``split_batches_evenly``); print both."""
    validation_names = read_name_list(config.validation_list) if config.validation_list else None
    data = make_training_data(config.data_dir, config.image_size, config.batch_size, preset.augmentation,
                              config.validation_fraction, config.seed, tfds_data_dir=config.tfds_data_dir,
                              validation_names=validation_names, unlabelled_dirs=config.unlabelled_dirs,
                              min_confidence=preset.min_confidence, unlabelled_share=preset.unlabelled_share)
    if config.sample_photos:
        data.sample_images, data.sample_masks = load_sample_photos(config.sample_photos, config.image_size,
                                                                   config.data_dir)
    print(f"Data: {data.source}, {data.counts['train']} train / {data.counts['validation']} validation photos, "
          f"{data.counts['skipped']} skipped; {data.steps_per_epoch} steps per epoch.", flush=True)
    replicas = strategy.num_replicas_in_sync
    used = split_batches_evenly(data, config.batch_size, replicas) if replicas > 1 else {}
    print(f"Strategy: {config.strategy}, {replicas} replica(s)"
          + ("" if scratch is None else f"; a non-chief worker writing into {scratch}") + ".", flush=True)
    return data, used


def checkpoint_weights(path: str, preset: str, image_size: int) -> list[np.ndarray]:
    """The weights of a trained checkpoint of the same preset and size to start from (``CheckpointError`` else)."""
    loaded = load_checkpoint_file(path)
    found = (loaded.sidecar.get("preset"), int(loaded.sidecar.get("image_size", 0)))
    if found != (preset, image_size):
        raise CheckpointError(f"Cannot start from {path}: it is {found[0]} at {found[1]} px, this run {preset} at "
                              f"{image_size} px.")
    return loaded.model.get_weights()


def load_sample_photos(paths: list[str], image_size: int, data_dir: str | None = None
                       ) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Photos at the model's input size in [0, 1], resized as training resizes, with their true masks (else None)."""
    images, masks = [], []
    for path in map(Path, paths):
        trimap = Path(data_dir or "") / "annotations" / "trimaps" / f"{path.stem}.png"
        if data_dir and trimap.is_file() and (Path(data_dir) / "images" / path.name).is_file():
            image, mask = resize_example(read_folder_example(data_dir, path.stem), image_size)
            images.append(image.astype(np.float32) / 255.0)
            masks.append(mask[..., 0])
        else:
            images.append(resize_image(tf.convert_to_tensor(load_photo(path)), image_size).numpy())
            masks.append(None)
    return np.stack(images), masks

