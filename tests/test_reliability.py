"""Crash safety: a killed or stopped training run, and damaged files in the weights folder, never break a reader.

The subprocess tests run the real ``python train.py`` on the synthetic pets at 64 px with a random encoder; each
takes about as long as TensorFlow needs to start and train an epoch or two. The stopped run also trains with
``--strategy mirrored`` on one CPU split into two logical devices (docs/scaling.md), so the suite starts one
TensorFlow process fewer.
"""

import io
import json
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from petseg.checkpoints import CheckpointError, list_checkpoints, load_checkpoint, load_checkpoint_file, read_sidecar
from petseg.distribute import LOGICAL_CPUS_VARIABLE
from petseg.runs import read_metrics, read_run, request_stop, start_process, stop_process

from conftest import assert_predicts, copy_checkpoint, tiny_train_command

STARTUP_TIMEOUT = 400.0  # Seconds for TensorFlow to start and finish a first epoch on a busy machine.


# ---------------------------------------------------------------------------------------------------------------
# Helpers.


def start_training(data_dir: Path, folder: Path, name: str, *options: str, mirrored: bool = False
                   ) -> subprocess.Popen:
    """Start ``python train.py`` writing ``folder/weights/<name>.keras`` and the run folder ``folder/run``; a
    ``mirrored`` run has two replicas on one CPU split into two logical devices."""
    command = tiny_train_command(data_dir, folder, name, "--epochs", "500", "--batch-size", "2", *options)
    environment = {"CUDA_VISIBLE_DEVICES": ""}
    if mirrored:
        command += ["--strategy", "mirrored"]
        environment[LOGICAL_CPUS_VARIABLE] = "2"
    return start_process(command, folder / "train.log", environment)


def wait_until(condition, process: subprocess.Popen | None, folder: Path, timeout: float = STARTUP_TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail with the training log if ``process`` ends or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"train.py ended early with {process.returncode}:\n{log_tail(folder)}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for train.py:\n{log_tail(folder)}")
        time.sleep(0.1)


def log_tail(folder: Path, characters: int = 3000) -> str:
    try:
        return (folder / "train.log").read_text(errors="replace")[-characters:]
    except OSError:
        return "(no log)"


def first_epoch_saved(folder: Path, name: str):
    """True once the first checkpoint and the first metrics line exist."""
    return lambda: (folder / "weights" / f"{name}.keras").exists() and bool(read_metrics(folder / "run"))


@pytest.fixture(scope="module")
def ended_runs(synthetic_data, tmp_path_factory):
    """Three runs started at once, so their TensorFlow start-ups and first epochs overlap, each ended as soon as its
    first checkpoint and metrics line exist: "crash" by SIGKILL, "stopped" by a stop request, "terminated" by
    SIGTERM. Maps each name to its ended process and its folder; the tests below read what each left."""
    runs = {}
    # SIGTERM lands inside a fit, where the handler only sets a flag. A signal during a trace or between two phases
    # (a fine-tuning run), which once crashed or was lost, is tested without the 30 s wait for a second phase's
    # trace in tests/test_training.py.
    # The stopped run is mirrored. A quarter of the 12 trainval photos for validation gives 9 and 3, both odd, so
    # neither splits evenly over the two replicas without help.
    for name in ("crash", "stopped", "terminated"):
        folder = tmp_path_factory.mktemp(name)
        options = ("--validation-fraction", "0.25") if name == "stopped" else ()
        runs[name] = start_training(synthetic_data, folder, name, *options, mirrored=name == "stopped"), folder
    try:
        for name, (process, folder) in runs.items():
            wait_until(first_epoch_saved(folder, name), process, folder)
            if name == "crash":
                assert read_run(folder / "run").state == "running"
                time.sleep(0.5)  # Into the next epochs, which are short: the kill may land in a step or in a save.
                process.send_signal(signal.SIGKILL)
                # Until it is reaped the killed process is a zombie; a reader must already see the run as failed.
                wait_until(lambda: read_run(folder / "run").state == "failed", None, folder, timeout=10)
            elif name == "stopped":
                request_stop(folder / "run")
            else:
                process.send_signal(signal.SIGTERM)
        for process, _ in runs.values():
            process.wait(timeout=STARTUP_TIMEOUT)
        yield runs
    finally:
        for process, _ in runs.values():
            stop_process(process)


def test_a_run_killed_between_epochs_resumes_its_epoch_count_and_schedule(synthetic_data, tmp_path):
    """kill -9 after the second epoch's state is saved, then ``train.py --resume``: the run goes on from there."""
    import keras

    from petseg.runs import read_resume_state

    options = ("--preset", "finetune", "--set", "fine_tune_after=1", "--epochs", "5", "--batch-size", "2",
               "--keep-last")
    process = start_process(tiny_train_command(synthetic_data, tmp_path, "resumed", *options), tmp_path / "train.log",
                            {"CUDA_VISIBLE_DEVICES": ""})
    state_file = tmp_path / "run" / "resume.npz"
    try:
        wait_until(lambda: state_file.exists() and read_resume_state(tmp_path / "run")[0]["epoch"] >= 2, process,
                   tmp_path)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        stop_process(process)
    killed_at = read_resume_state(tmp_path / "run")[0]["epoch"]
    if killed_at == 5:
        pytest.skip("the run finished all its epochs before the kill landed")
    resumed = subprocess.run(tiny_train_command(synthetic_data, tmp_path, "ignored")[:2] + ["--resume",
                             str(tmp_path / "run")], capture_output=True, text=True, timeout=STARTUP_TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = read_run(tmp_path / "run")
    assert run.state == "done" and [record["epoch"] for record in run.epochs] == [1, 2, 3, 4, 5]
    sidecar = read_sidecar(tmp_path / "weights" / "resumed.keras")
    assert sidecar["epochs_done"] == 5 and sidecar["epochs"] == 5  # --keep-last, kept across the kill.
    # Epoch 1 trains the decoder at the preset's rate; epochs 2-5 fine-tune along one cosine decay of 4 epochs of
    # 5 steps (10 of the 12 photos train, 2 a step), also across the kill: the optimizer's step count came back.
    schedule = keras.optimizers.schedules.CosineDecay(3e-4, decay_steps=20, alpha=0.1)
    expected = [1e-3] + [float(schedule(5 * epoch)) for epoch in range(1, 5)]
    assert [record["learning_rate"] for record in run.epochs] == pytest.approx(expected, rel=1e-4)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# A killed run and a stopped run.


def test_sigkill_mid_epoch_leaves_a_loadable_checkpoint_and_a_failed_run(ended_runs):
    process, folder = ended_runs["crash"]
    assert process.returncode == -signal.SIGKILL

    run = read_run(folder / "run")
    assert run.state == "failed" and "ended without finishing" in run.status["message"]
    assert run.status["checkpoint"] == str(folder / "weights" / "crash.keras")
    epochs = read_metrics(folder / "run")
    assert [record["epoch"] for record in epochs] == list(range(1, len(epochs) + 1))
    assert all({"loss", "val_loss", "val_mean_iou"} <= set(record) for record in epochs)

    # A write interrupted by the kill would leave a temporary ".crash.*" file; plant one to be sure it is ignored.
    (folder / "weights" / ".crash.interrupted.keras").write_bytes(b"PK\x03\x04 half a zip")
    listed = list_checkpoints(folder / "weights")
    assert [(info.name, info.available) for info in listed] == [("crash", True)]
    checkpoint = load_checkpoint_file(folder / "weights" / "crash.keras")
    # A kill between saving a checkpoint and appending that epoch's metrics line leaves the sidecar one ahead.
    assert 1 <= checkpoint.sidecar["epochs"] <= len(epochs) + 1
    assert_predicts(checkpoint)


def test_stop_file_ends_a_mirrored_run_cleanly(ended_runs):
    process, folder = ended_runs["stopped"]
    assert process.returncode == 0, log_tail(folder)
    log = (folder / "train.log").read_text()
    assert "Strategy: mirrored, 2 replica(s)." in log and "Each epoch uses 8 train and 2 validation photos" in log
    assert "stopped: checkpoint" in log

    run = read_run(folder / "run")
    assert run.state == "stopped" and run.status["finished"]
    assert 1 <= len(run.epochs) < 500 and run.curves is not None
    sidecar = read_sidecar(folder / "weights" / "stopped.keras")
    assert sidecar["stopped_early"] is True and sidecar["epochs_done"] == len(run.epochs)
    assert sidecar["strategy"] == "mirrored" and sidecar["replicas"] == 2
    assert sidecar["photos_per_epoch"] == {"train": 8, "validation": 2}
    assert_predicts(load_checkpoint_file(folder / "weights" / "stopped.keras"))
    assert [path.name for path in (folder / "weights").iterdir() if path.name.startswith(".")] == []


def test_sigterm_marks_the_run_stopped_and_keeps_the_checkpoint(ended_runs):
    process, folder = ended_runs["terminated"]
    assert process.returncode == 130, log_tail(folder)
    assert "SystemError" not in log_tail(folder)
    run = read_run(folder / "run")
    assert run.state == "stopped" and run.status["message"] == "interrupted"
    assert_predicts(load_checkpoint_file(folder / "weights" / "terminated.keras"))


# ---------------------------------------------------------------------------------------------------------------
# Damaged checkpoints and sidecars.


def damage(data: bytes, kind: str) -> bytes:
    """Return a damaged copy of a good checkpoint's bytes."""
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "zero-bytes":
        return b""
    if kind == "random-bytes":
        return np.random.default_rng(0).integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    if kind == "flipped-bytes":
        middle = len(data) // 2
        return data[:middle] + bytes(value ^ 0xFF for value in data[middle:middle + 64]) + data[middle + 64:]
    if kind == "foreign-zip":
        return zip_bytes({"notes.txt": b"not a model"})
    if kind == "garbage-config":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {member: archive.read(member) for member in archive.namelist()}
        return zip_bytes({**members, "config.json": b"{this is not json"})
    raise ValueError(kind)


@pytest.mark.parametrize("kind, reason", [
    ("truncated", "not a Keras archive"), ("zero-bytes", "not a Keras archive"), ("random-bytes", "not a Keras archive"),
    ("flipped-bytes", "damaged archive"), ("foreign-zip", "damaged archive"), ("garbage-config", "not valid JSON"),
])
def test_damaged_checkpoint_is_unavailable_and_refuses_to_load(trained_checkpoint, tmp_path, kind, reason):
    copy_checkpoint(trained_checkpoint.checkpoint_path, tmp_path / "good.keras")
    damaged = copy_checkpoint(trained_checkpoint.checkpoint_path, tmp_path / "damaged.keras")
    damaged.write_bytes(damage(damaged.read_bytes(), kind))

    listed = {info.name: info for info in list_checkpoints(tmp_path)}
    assert listed["good"].available
    assert not listed["damaged"].available
    assert listed["damaged"].reason.startswith("corrupt file (") and reason in listed["damaged"].reason
    assert "unavailable" in listed["damaged"].describe()
    assert list_checkpoints(tmp_path)[-1].name == "damaged"  # Broken ones come last.
    with pytest.raises(CheckpointError, match="Checkpoint damaged is unavailable"):
        load_checkpoint("damaged", tmp_path)


@pytest.mark.parametrize("sidecar_text, reason", [
    (None, "sidecar damaged.json is missing"),
    ("{\"preset\": \"tutorial\", ", "not valid JSON"),
    ("[1, 2, 3]", "not a JSON object"),
    (json.dumps({"preset": "tutorial", "image_size": 64}), "sidecar lacks classes"),
    (json.dumps({"preset": "tutorial", "image_size": 64, "classes": ["cat", "dog"]}), "incompatible classes"),
    (json.dumps({"preset": "tutorial", "image_size": 64, "classes": ["background", "pet", "border"]}),
     "incompatible classes"),
])
def test_bad_sidecar_makes_a_checkpoint_unavailable(trained_checkpoint, tmp_path, sidecar_text, reason):
    damaged = copy_checkpoint(trained_checkpoint.checkpoint_path, tmp_path / "damaged.keras")
    if sidecar_text is None:
        damaged.with_suffix(".json").unlink()
    else:
        damaged.with_suffix(".json").write_text(sidecar_text)
    [info] = list_checkpoints(tmp_path)
    assert not info.available and reason in info.reason
    with pytest.raises(CheckpointError, match=reason):
        load_checkpoint("damaged", tmp_path)


def test_sidecar_describing_another_model_refuses_to_load(trained_checkpoint, tmp_path):
    damaged = copy_checkpoint(trained_checkpoint.checkpoint_path, tmp_path / "damaged.keras")
    sidecar = json.loads(damaged.with_suffix(".json").read_text())
    damaged.with_suffix(".json").write_text(json.dumps({**sidecar, "image_size": 128}))
    with pytest.raises(CheckpointError, match="not what its sidecar describes"):
        load_checkpoint("damaged", tmp_path)


def test_a_checkpoint_damaged_after_loading_is_not_served_from_the_cache(trained_checkpoint, tmp_path):
    path = copy_checkpoint(trained_checkpoint.checkpoint_path, tmp_path / "replaced.keras")
    assert_predicts(load_checkpoint("replaced", tmp_path))
    path.write_bytes(damage(path.read_bytes(), "truncated"))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint("replaced", tmp_path)


def test_torn_metrics_line_and_unreadable_status_still_read(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "lo')
    (run_dir / "status.json").write_text('{"state": "runn')
    run = read_run(run_dir)
    assert run.state == "failed" and "unreadable status.json" in run.status["message"]
    assert run.epochs == [{"epoch": 1, "loss": 0.5}]
