"""Where training runs: the ``tf.distribute`` strategy, which worker writes, batches that split evenly, and the
CPU's name for the sidecar; so ``petseg.training`` reads as one plain loop. See docs/scaling.md.

>>> make_strategy("default").num_replicas_in_sync
1
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker")

# A testing aid: split the CPU into this many logical devices, so MirroredStrategy has several replicas without
# GPUs. TensorFlow accepts it only before it starts, so set it in the environment of a new process.
LOGICAL_CPUS_VARIABLE = "PETSEG_LOGICAL_CPUS"


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy: one device, every local GPU (else every logical CPU) for "mirrored", or the workers of
    ``TF_CONFIG`` for "multiworker". Make it before anything else touches TensorFlow."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}.")
    if value := os.environ.get(LOGICAL_CPUS_VARIABLE, "").strip():  # Split the first CPU into logical devices.
        if not value.isdigit() or (count := int(value)) < 1:
            raise ValueError(f"{LOGICAL_CPUS_VARIABLE} must be a whole number of at least 1, got {value!r}.")
        cpu = tf.config.list_physical_devices("CPU")[0]
        if count > 1 and len(tf.config.get_logical_device_configuration(cpu) or []) != count:
            try:
                tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
            except RuntimeError as error:
                raise ValueError(f"{LOGICAL_CPUS_VARIABLE}={count} came too late: TensorFlow had already started. "
                                 "Set it in the environment of a new training process.") from error
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":  # Every local GPU; without, every logical CPU (left alone, it takes only the first).
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(None if tf.config.list_logical_devices("GPU") else cpus)
    return reduce_structures_one_by_one(tf.distribute.MultiWorkerMirroredStrategy())


def reduce_structures_one_by_one(strategy: tf.distribute.Strategy) -> tf.distribute.Strategy:
    """Work around two Keras 3 bugs that stop multi-worker ``fit``: reduce a nested structure one value at a
    time, and scalars without an axis; return ``strategy``."""
    reduce = strategy.reduce

    def reduce_one(reduce_op, item, axis):
        local = strategy.experimental_local_results(item)
        rank = getattr(getattr(local[0], "shape", None), "rank", None) if local else None
        return reduce(reduce_op, item, axis=None if rank == 0 else axis)

    strategy.reduce = lambda reduce_op, value, axis=None: tf.nest.map_structure(
        lambda item: reduce_one(reduce_op, item, axis), value)
    return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the checkpoint and run folder: TF_CONFIG's "chief" task, else worker 0."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def split_batches_evenly(data, batch_size: int, replicas: int) -> dict[str, int]:
    """Make every batch split into equal, non-empty parts, one per replica (Keras 3 fails otherwise); return the
    photos each split uses (training's: labelled and unlabelled). Each leaves out its last ``count % replicas``
    photos (training's after the shuffle), and says so."""
    if batch_size % replicas:
        raise ValueError(f"The batch size {batch_size} does not split evenly over {replicas} replicas; use a "
                         f"multiple of {replicas} (the batch size is global: each replica gets an equal share).")
    photos = {"train": data.counts["train"] + data.counts.get("unlabelled_per_epoch", 0),
              "validation": data.counts["validation"]}
    used = {split: count - count % replicas for split, count in photos.items()}
    for split in used:
        if used[split] == 0:
            raise ValueError(f"{photos[split]} {split} photo(s) cannot be shared among {replicas} replicas; "
                             f"each replica needs at least one.")
        dataset = getattr(data, split).unbatch().take(used[split]).batch(batch_size).prefetch(tf.data.AUTOTUNE)
        setattr(data, split, dataset)
    data.steps_per_epoch = -(-used["train"] // batch_size)
    if used != photos:
        print(f"Each epoch uses {used['train']} train and {used['validation']} validation photos, so that every "
              f"batch splits evenly over {replicas} replicas.", flush=True)
    return used


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows (for the sidecar and the benchmarks)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
