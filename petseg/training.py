"""Training: fit a preset on a data source, report each epoch into a run folder, keep the best checkpoint.

Each epoch appends one metrics line and writes a sample PNG (input / truth / prediction) into the run folder; the
checkpoint with the best validation mean IoU is saved atomically into the output folder with its sidecar. Presets
with ``fine_tune_after`` train the decoder on a frozen encoder first, then unfreeze the encoder's convolutions
(BatchNorm stays in inference mode) at a lower learning rate.

>>> from petseg.synthetic import make_synthetic_pets
>>> import tempfile
>>> root = make_synthetic_pets(tempfile.mkdtemp(), 8, 2)
>>> result = train(TrainConfig(data_dir=str(root), epochs=1, image_size=64, batch_size=4,
...                            encoder_weights="none", output_dir=tempfile.mkdtemp(), verbose=0))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import petseg
from petseg.checkpoints import load_checkpoint_file, read_sidecar, save_checkpoint, store_metrics, write_sidecar
from petseg.classes import CLASS_NAMES, NUM_CLASSES
from petseg.data import DataError, make_training_data
from petseg.model import apply_overrides, build_unet, get_preset, set_encoder_trainable
from petseg.runs import DEFAULT_RUNS_DIR, RunWriter, new_run_id
from petseg.visuals import plot_curves, sample_grid, save_png

STRATEGIES = ("default", "mirrored", "multiworker")


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
    strategy: str = "default"
    evaluate_test: bool = True
    tfds_data_dir: str | None = None
    verbose: int | str = "auto"


@dataclasses.dataclass
class TrainResult:
    checkpoint_path: Path
    sidecar: dict[str, Any]
    run_dir: Path
    state: str


def cross_entropy_dice_loss(dice_weight: float):
    """Sparse cross-entropy from logits plus ``dice_weight`` times the soft Dice loss averaged over classes."""
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if dice_weight == 0:
        return cross_entropy

    def loss(true_mask, logits):
        probabilities = tf.nn.softmax(logits, axis=-1)
        one_hot = tf.one_hot(tf.cast(tf.squeeze(true_mask, -1), tf.int32), NUM_CLASSES, dtype=probabilities.dtype)
        intersection = tf.reduce_sum(probabilities * one_hot, axis=[0, 1, 2])
        total = tf.reduce_sum(probabilities + one_hot, axis=[0, 1, 2])
        dice = tf.reduce_mean((2.0 * intersection + 1.0) / (total + 1.0))
        return cross_entropy(true_mask, logits) + dice_weight * (1.0 - dice)

    return loss


# A testing aid: split the CPU into this many logical devices, so MirroredStrategy has several replicas on a
# machine without GPUs. TensorFlow accepts it only before it starts, so set it in the environment of a new process.
LOGICAL_CPUS_VARIABLE = "PETSEG_LOGICAL_CPUS"


def split_cpu(count: int) -> None:
    """Split the first CPU into ``count`` logical devices; must run before TensorFlow initialises its devices.

    >>> split_cpu(1)  # One device is what TensorFlow has anyway.
    """
    if count < 1:
        raise ValueError(f"{LOGICAL_CPUS_VARIABLE} must be a whole number of at least 1, got {count}.")
    if count == 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:
        raise ValueError(f"{LOGICAL_CPUS_VARIABLE}={count} came too late: TensorFlow had already started. Set it "
                         "in the environment of a new training process.") from error


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy: one device, all local devices (mirrored), or workers from TF_CONFIG.

    "mirrored" uses every local GPU, or every logical CPU when there is no GPU (one, unless ``PETSEG_LOGICAL_CPUS``
    splits it). "multiworker" reads the cluster from the ``TF_CONFIG`` environment variable; without it, it is a
    single worker. Create the strategy before anything else touches TensorFlow: multi-worker collectives and
    logical devices can only be configured at startup.

    >>> make_strategy("default").num_replicas_in_sync
    1
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}.")
    logical_cpus = os.environ.get(LOGICAL_CPUS_VARIABLE, "").strip()
    if logical_cpus:
        try:
            count = int(logical_cpus)
        except ValueError:
            raise ValueError(f"{LOGICAL_CPUS_VARIABLE} must be a whole number, got {logical_cpus!r}.") from None
        split_cpu(count)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        # Without GPUs MirroredStrategy would take only the first CPU; name every logical CPU instead.
        return tf.distribute.MirroredStrategy([device.name for device in tf.config.list_logical_devices("CPU")])
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    _reduce_structures_one_by_one(strategy)
    return strategy


def _reduce_structures_one_by_one(strategy: tf.distribute.Strategy) -> None:
    """Work around two Keras 3 bugs that stop ``fit`` on more than one worker, by wrapping ``strategy.reduce``.

    Keras reduces the first (image, mask) batch as one nested structure to learn its shapes, which the multi-worker
    reduce does not accept; and it reduces scalar losses and metrics along axis 0, which a scalar lacks. The
    wrapper reduces each value on its own, and scalars across replicas without an axis, as on one machine.
    """
    reduce = strategy.reduce

    def reduce_one(reduce_op, item, axis):
        local = strategy.experimental_local_results(item)
        rank = getattr(getattr(local[0], "shape", None), "rank", None) if local else None
        return reduce(reduce_op, item, axis=None if rank == 0 else axis)

    def reduce_each(reduce_op, value, axis=None):
        return tf.nest.map_structure(lambda item: reduce_one(reduce_op, item, axis), value)

    strategy.reduce = reduce_each


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the checkpoint and the run folder: always, except on a non-chief worker.

    The chief is the "chief" task of TF_CONFIG, or worker 0 when the cluster has no "chief".
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def split_batches_evenly(data, batch_size: int, replicas: int) -> dict[str, int]:
    """Make every batch split into equal, non-empty parts, one per replica; return how many photos each split uses.

    Keras 3 fails when a first batch splits unevenly and when a replica receives no examples. So the batch size
    must be a multiple of the number of replicas, and each split leaves out its last ``count % replicas`` photos
    (fewer than one per replica): after the shuffle for training, so different ones each epoch; the same ones for
    validation.
    """
    if batch_size % replicas:
        raise ValueError(f"The batch size {batch_size} does not split evenly over {replicas} replicas; use a "
                         f"multiple of {replicas} (the batch size is global: each replica gets an equal share).")
    used = {}
    for split in ("train", "validation"):
        count = data.counts[split]
        used[split] = count - count % replicas
        if used[split] == 0:
            raise ValueError(f"{count} {split} photo(s) cannot be shared among {replicas} replicas; "
                             f"each replica needs at least one.")
        dataset = getattr(data, split).unbatch().take(used[split]).batch(batch_size).prefetch(tf.data.AUTOTUNE)
        setattr(data, split, dataset)
    data.steps_per_epoch = -(-used["train"] // batch_size)
    return used


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_description() -> str:
    """The CPU, its cores and any accelerators, for the sidecar."""
    cpu = cpu_name()
    devices = [device.device_type for device in tf.config.list_physical_devices() if device.device_type != "CPU"]
    return f"{cpu}, {os.cpu_count()} cores" + (f", {len(devices)} {devices[0]}" if devices else "")


class EpochReporter(keras.callbacks.Callback):
    """Writes the run folder each epoch, keeps the best checkpoint, and honours a stop request."""

    def __init__(self, writer: RunWriter, data, checkpoint_path: Path, sidecar: dict):
        super().__init__()
        self.writer = writer
        self.data = data
        self.checkpoint_path = checkpoint_path
        self.sidecar = sidecar
        self.history: list[dict] = []
        self.best_mean_iou = -1.0
        self.epoch_started = 0.0
        self.stopped = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.writer.stop_requested():
            self.stopped = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.epoch_started
        record = {"epoch": epoch + 1, **{key: float(value) for key, value in (logs or {}).items()},
                  "seconds": round(seconds, 2),
                  "images_per_second": round(self.data.counts["train"] / max(seconds, 1e-9), 1),
                  "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))}
        predictions = np.argmax(self.model(self.data.sample_images, training=False), axis=-1)
        grid = sample_grid(np.round(self.data.sample_images * 255).astype(np.uint8), self.data.sample_masks, predictions,
                           title=f"epoch {epoch + 1}: val mIoU {record.get('val_mean_iou', float('nan')):.3f}")
        save_png(grid, self.writer.sample_path(epoch + 1))
        mean_iou = record.get("val_mean_iou", -1.0)
        if mean_iou > self.best_mean_iou:
            self.best_mean_iou = mean_iou
            record["saved_checkpoint"] = True
            self.sidecar.update(epochs=epoch + 1, best_epoch=epoch + 1,
                                metrics={"validation": {"mean_iou": mean_iou,
                                                        "pixel_accuracy": record.get("val_accuracy")}})
            save_checkpoint(self.model, self.checkpoint_path, self.sidecar)
            self.writer.update(checkpoint=str(self.checkpoint_path))
        self.history.append(record)
        self.writer.log_epoch(record)
        print(json.dumps({"metrics": record}), flush=True)


def train(config: TrainConfig) -> TrainResult:
    """Train ``config.preset`` and return where its best checkpoint went; see ``train.py`` for the CLI."""
    preset = apply_overrides(get_preset(config.preset), config.overrides)
    epochs = config.epochs or preset.epochs
    batch_size = config.batch_size or preset.batch_size
    image_size = config.image_size or preset.image_size
    learning_rate = config.learning_rate or preset.learning_rate
    # First, before anything else starts TensorFlow (see make_strategy).
    strategy = make_strategy(config.strategy)
    run_id = new_run_id()
    run_dir = Path(config.run_dir) if config.run_dir else DEFAULT_RUNS_DIR / run_id
    name = config.name or f"{preset.name}-{run_id}"
    output_dir = Path(config.output_dir)
    chief = is_chief(strategy)
    scratch = None
    if not chief:
        # Every worker runs the same callbacks; only the chief writes where the app and users look.
        scratch = Path(tempfile.mkdtemp(prefix=f"petseg-worker-{strategy.cluster_resolver.task_id}-"))
        run_dir, output_dir = scratch / "run", scratch / "weights"
    checkpoint_path = output_dir / f"{name}.keras"
    keras.utils.set_random_seed(config.seed)

    writer = RunWriter(run_dir, {"preset": preset.name, "epochs": epochs, "batch_size": batch_size,
                                 "image_size": image_size, "name": name, "data": config.data_dir or "tfds"})
    started = time.perf_counter()
    reporter = None
    try:
        data = make_training_data(config.data_dir, image_size, batch_size, preset.augmentation,
                                  config.validation_fraction, config.seed, tfds_data_dir=config.tfds_data_dir)
        print(f"Data: {data.source}, {data.counts['train']} train / {data.counts['validation']} validation photos, "
              f"{data.counts['skipped']} skipped; {data.steps_per_epoch} steps per epoch.", flush=True)
        replicas = strategy.num_replicas_in_sync
        used = split_batches_evenly(data, batch_size, replicas) if replicas > 1 else {}
        if any(used[split] < data.counts[split] for split in used):
            print(f"Each epoch uses {used['train']} train and {used['validation']} validation photos, so that every "
                  f"batch splits evenly over {replicas} replicas.", flush=True)
        print(f"Strategy: {config.strategy}, {replicas} replica(s)"
              + ("" if chief else f"; a non-chief worker writing into {run_dir.parent}") + ".", flush=True)
        with strategy.scope():
            model = build_unet(preset, image_size, config.encoder_weights)
        sidecar = {
            "name": name, "preset": preset.name, "description": preset.description, "image_size": image_size,
            "overrides": config.overrides or {},
            "classes": list(CLASS_NAMES), "epochs_planned": epochs, "batch_size": batch_size,
            "learning_rate": learning_rate, "encoder_weights": _describe_weights(config.encoder_weights),
            "data": {"source": data.source, **data.counts}, "seed": config.seed, "strategy": config.strategy,
            "replicas": replicas, **({"photos_per_epoch": used} if used else {}),
            "parameters": int(model.count_params()), "hardware": hardware_description(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "petseg_version": petseg.__version__, "tensorflow_version": tf.__version__, "run": run_dir.name,
        }
        reporter = EpochReporter(writer, data, checkpoint_path, sidecar)
        phases = [(0, min(epochs, preset.fine_tune_after or epochs), False, learning_rate)]
        if preset.fine_tune_after is not None and preset.fine_tune_after < epochs:
            phases.append((preset.fine_tune_after, epochs, True, preset.fine_tune_learning_rate))
        for first_epoch, last_epoch, fine_tune, phase_rate in phases:
            with strategy.scope():
                set_encoder_trainable(model, fine_tune)
                if fine_tune:
                    # The fine-tuning phase decays its rate along a cosine to a tenth, to settle at the end.
                    phase_rate = keras.optimizers.schedules.CosineDecay(
                        phase_rate, decay_steps=data.steps_per_epoch * (last_epoch - first_epoch), alpha=0.1)
                model.compile(
                    optimizer=keras.optimizers.Adam(phase_rate),
                    loss=cross_entropy_dice_loss(preset.dice_weight),
                    metrics=["accuracy", keras.metrics.MeanIoU(NUM_CLASSES, sparse_y_pred=False, name="mean_iou")],
                )
            if fine_tune:
                print(f"Epoch {first_epoch + 1}: unfreezing the encoder (BatchNorm stays frozen), learning rate "
                      f"{preset.fine_tune_learning_rate} with cosine decay.", flush=True)
            model.fit(data.train, validation_data=data.validation, epochs=last_epoch, initial_epoch=first_epoch,
                      callbacks=[reporter], verbose=config.verbose)
            if reporter.stopped:
                break
        train_seconds = round(time.perf_counter() - started, 1)
        save_png(plot_curves(reporter.history), run_dir / "curves.png")
        if not checkpoint_path.exists():
            raise RuntimeError("no epoch finished, so no checkpoint was written")
        sidecar = store_metrics(checkpoint_path, "validation", reporter.sidecar["metrics"]["validation"])
        sidecar.update(train_seconds=train_seconds, epochs_done=len(reporter.history),
                       stopped_early=reporter.stopped)
        write_sidecar(checkpoint_path, sidecar)
        test_note = ""
        if config.evaluate_test and not reporter.stopped and chief:
            sidecar, test_note = evaluate_test_split(checkpoint_path, config)
        state = "stopped" if reporter.stopped else "done"
        writer.finish(state, f"best validation mIoU {reporter.best_mean_iou:.3f}{test_note}",
                      checkpoint=str(checkpoint_path), train_seconds=train_seconds)
        if scratch is not None:
            # A non-chief worker's copies are redundant once it finished; report where the chief wrote.
            shutil.rmtree(scratch, ignore_errors=True)
            checkpoint_path = Path(config.output_dir) / checkpoint_path.name
            run_dir = Path(config.run_dir) if config.run_dir else DEFAULT_RUNS_DIR / run_id
        return TrainResult(checkpoint_path, sidecar, run_dir, state)
    except KeyboardInterrupt:
        if reporter is not None and reporter.history:
            save_png(plot_curves(reporter.history), run_dir / "curves.png")
        writer.finish("stopped", "interrupted")
        raise
    except BaseException as error:
        writer.finish("failed", f"{type(error).__name__}: {error}")
        raise


def evaluate_test_split(checkpoint_path: Path, config: TrainConfig) -> tuple[dict, str]:
    """Evaluate the best checkpoint on the test split at original resolution and store it in the sidecar.

    Returns the sidecar and a note for the run's last message. A test split that cannot be read (a folder
    without ``annotations/test.txt``, tfds offline) skips the evaluation with that note: the run still succeeded.
    """
    from petseg.evaluate import evaluate_checkpoint, metrics_key

    checkpoint = load_checkpoint_file(checkpoint_path)
    try:
        metrics = evaluate_checkpoint(checkpoint, config.data_dir, tfds_data_dir=config.tfds_data_dir)
    except DataError as error:
        print(f"No test evaluation: {error} The checkpoint is saved: {checkpoint_path}", flush=True)
        return read_sidecar(checkpoint_path), f"; no test evaluation: {error}"
    print(json.dumps({"test_metrics": metrics}), flush=True)
    return store_metrics(checkpoint_path, metrics_key(config.data_dir, "test"), metrics), ""


def _describe_weights(encoder_weights: str | None) -> str:
    if encoder_weights in (None, "none", "imagenet"):
        return str(encoder_weights)
    return f"file:{Path(encoder_weights).name}"
