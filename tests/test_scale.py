"""Scale: multi-worker training from TF_CONFIG, and the helpers the strategies rely on.

TensorFlow's multi-worker collectives can only be set up before it starts, so the integration tests run in fresh
processes: two local ``train.py`` workers on loopback ports stand in for two machines (opt-in, over a minute:
``scripts/test.sh -m slow``). The mirrored strategy on two logical CPUs trains in test_reliability's stopped run.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import tensorflow as tf

from petseg.checkpoints import list_checkpoints, load_checkpoint_file, read_sidecar
from petseg.distribute import (LOGICAL_CPUS_VARIABLE, is_chief, make_strategy, reduce_structures_one_by_one,
                               split_batches_evenly)
from petseg.runs import read_run

from conftest import ROOT, assert_predicts, tiny_train_command

TIMEOUT = 400  # Seconds; two TensorFlow processes share a busy machine.


def train_command(data_dir: Path, folder: Path, name: str, strategy: str) -> list[str]:
    # 12 trainval photos with a quarter for validation: 9 train and 3 validation, both odd, so neither splits
    # evenly over two replicas without help.
    return tiny_train_command(data_dir, folder, name, "--epochs", "1", "--batch-size", "4", "--validation-fraction",
                              "0.25", "--strategy", strategy)


def clean_environment(**extra: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TF_CONFIG", LOGICAL_CPUS_VARIABLE)}
    return {**environment, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **extra}


def free_loopback_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for item in sockets:
            item.bind(("127.0.0.1", 0))
        return [item.getsockname()[1] for item in sockets]
    finally:
        for item in sockets:
            item.close()


# ---------------------------------------------------------------------------------------------------------------
# Integration: real training processes.


def test_multiworker_without_tf_config_is_a_single_worker():
    script = ("from petseg.distribute import make_strategy, is_chief; strategy = make_strategy('multiworker'); "
              "print(strategy.num_replicas_in_sync, is_chief(strategy))")
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=clean_environment(),
                               capture_output=True, text=True, timeout=TIMEOUT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.split() == ["1", "True"]


@pytest.mark.slow  # 68 s alone and 90 s beside the suite on 2026-12-01: two TensorFlow processes on two cores.
def test_two_workers_from_tf_config_train_one_checkpoint(synthetic_data, tmp_path):
    # Both workers share the output and run folders, as on shared storage; only the chief (worker 0) writes there.
    ports = free_loopback_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(train_command(synthetic_data, tmp_path, "workers", "multiworker"), cwd=ROOT,
                                        env=clean_environment(TF_CONFIG=config), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=TIMEOUT)[0])
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    assert "Strategy: multiworker, 2 replica(s)." in outputs[0]
    assert "a non-chief worker writing into" in outputs[1]

    assert [info.name for info in list_checkpoints(tmp_path / "weights")] == ["workers"]
    assert read_sidecar(tmp_path / "weights" / "workers.keras")["replicas"] == 2
    run = read_run(tmp_path / "run")
    assert run.state == "done" and len(run.epochs) == 1  # One metrics line, not one per worker.
    assert_predicts(load_checkpoint_file(tmp_path / "weights" / "workers.keras"))


# ---------------------------------------------------------------------------------------------------------------
# Units: the pieces the strategies rely on.


def cluster_strategy(cluster: dict, task_type: str, task_id: int) -> SimpleNamespace:
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    return SimpleNamespace(cluster_resolver=resolver)


def test_only_the_chief_writes():
    workers = {"worker": ["a:1", "b:1"]}
    assert is_chief(SimpleNamespace())  # The default and mirrored strategies have no cluster.
    assert is_chief(cluster_strategy(workers, "worker", 0))
    assert not is_chief(cluster_strategy(workers, "worker", 1))
    with_chief = {"chief": ["c:1"], **workers}
    assert is_chief(cluster_strategy(with_chief, "chief", 0))
    assert not is_chief(cluster_strategy(with_chief, "worker", 0))


def fake_data(train: int, validation: int, batch_size: int) -> SimpleNamespace:
    def batches(count):
        return tf.data.Dataset.range(count).batch(batch_size)

    return SimpleNamespace(train=batches(train), validation=batches(validation),
                           counts={"train": train, "validation": validation}, steps_per_epoch=0)


def batch_sizes(dataset: tf.data.Dataset) -> list[int]:
    return [int(batch.shape[0]) for batch in dataset]


def test_batches_split_evenly_over_replicas(capsys):
    data = fake_data(train=9, validation=3, batch_size=4)
    used = split_batches_evenly(data, batch_size=4, replicas=2)
    assert used == {"train": 8, "validation": 2}
    assert "Each epoch uses 8 train and 2 validation photos" in capsys.readouterr().out
    assert batch_sizes(data.train) == [4, 4] and batch_sizes(data.validation) == [2]
    assert data.steps_per_epoch == 2

    data = fake_data(train=10, validation=6, batch_size=4)
    assert split_batches_evenly(data, batch_size=4, replicas=2) == {"train": 10, "validation": 6}
    assert batch_sizes(data.train) == [4, 4, 2] and data.steps_per_epoch == 3


def test_unlabelled_photos_count_in_the_photos_that_split_evenly(capsys):
    data = fake_data(train=9 + 9, validation=4, batch_size=4)  # 9 labelled and 9 unlabelled photos an epoch.
    data.counts = {"train": 9, "unlabelled_per_epoch": 9, "validation": 4}
    assert split_batches_evenly(data, batch_size=4, replicas=2) == {"train": 18, "validation": 4}
    assert batch_sizes(data.train) == [4, 4, 4, 4, 2] and data.steps_per_epoch == 5
    assert capsys.readouterr().out == ""  # Nothing left out, nothing said.


def test_batches_that_cannot_split_evenly_are_refused():
    with pytest.raises(ValueError, match="batch size 3 does not split evenly over 2 replicas"):
        split_batches_evenly(fake_data(9, 3, 3), batch_size=3, replicas=2)
    with pytest.raises(ValueError, match="1 validation photo"):
        split_batches_evenly(fake_data(9, 1, 4), batch_size=4, replicas=2)


def test_reduce_takes_structures_and_scalars():
    calls = []

    def reduce(reduce_op, value, axis=None):
        calls.append((reduce_op, int(value.shape.rank), axis))
        return value

    strategy = SimpleNamespace(reduce=reduce, experimental_local_results=lambda value: (value,))
    reduce_structures_one_by_one(strategy)
    images, loss = tf.zeros((2, 8, 8, 3)), tf.constant(0.5)
    result = strategy.reduce("MEAN", (images, {"loss": loss}), axis=0)
    assert result[0] is images and result[1]["loss"] is loss
    assert calls == [("MEAN", 4, 0), ("MEAN", 0, None)]


@pytest.mark.parametrize("value, message", [("two", "whole number"), ("0", "at least 1")])
def test_bad_logical_cpu_counts_are_refused(monkeypatch, value, message):
    monkeypatch.setenv(LOGICAL_CPUS_VARIABLE, value)
    with pytest.raises(ValueError, match=message):
        make_strategy("mirrored")


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="Unknown strategy 'horovod'"):
        make_strategy("horovod")
