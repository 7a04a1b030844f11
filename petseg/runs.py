"""The run folder: how a training process reports progress and how the app watches it; and the child processes
(``train.py`` from the app, ``app.py`` for tests and benchmarks), each started in the repository root, its output in
a log file, leading a process group of its own, so ending it ends whatever it started too.

``runs/<id>/`` holds ``status.json`` (replaced atomically), ``metrics.jsonl`` (a line per finished epoch; a reader
skips a torn last line), ``epoch_<NNN>.png`` samples, ``curves.png``, ``train.log`` when the app started the run,
and ``resume.npz`` (what ``train.py --resume`` needs; a finished run drops it). A ``stop`` file asks the run to end
cleanly; a "running" run whose process is gone reads as failed. A checkpoint may ship its run record read-only
beside it (``weights/<name>.run/``).

>>> import tempfile
>>> writer = RunWriter(Path(tempfile.mkdtemp()) / "demo", {"preset": "tutorial", "epochs": 1})
>>> writer.log_epoch({"epoch": 1, "loss": 0.5})
>>> read_run(writer.run_dir).state, len(read_run(writer.run_dir).epochs)
('running', 1)
>>> process_alive(os.getpid())
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from petseg.atomic import atomic_path, atomic_write_bytes, atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUNS_DIR = Path(os.environ.get("PETSEG_RUNS_DIR", ROOT / "runs"))
RESUME_FILE = "resume.npz"
SHIPPED_RUN_SUFFIX = ".run"
STOP_SECONDS = 15.0
# Quiet, unbuffered children that never report analytics; the caller's environment wins where it sets these.
CHILD_DEFAULTS = {"GRADIO_ANALYTICS_ENABLED": "False", "TF_CPP_MIN_LOG_LEVEL": "2"}


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """A sortable, unique-enough run id: the local time plus the process id."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"


class RunWriter:
    """Writes one run folder from the training process."""

    def __init__(self, run_dir: str | os.PathLike, config: dict[str, Any]):
        self.run_dir = Path(run_dir)  # Its first status write makes it.
        self.status: dict[str, Any] = {"state": "running", "pid": os.getpid(), "host": socket.gethostname(),
                                       "started": now_iso(), "epochs_done": 0, "checkpoint": None, "message": "",
                                       **config}
        (self.run_dir / "stop").unlink(missing_ok=True)
        self.update()  # Writes status.json, with the time it was updated.

    def update(self, **fields: Any) -> None:
        self.status.update(fields, updated=now_iso())
        atomic_write_json(self.run_dir / "status.json", self.status)

    def log_epoch(self, metrics: dict[str, Any]) -> None:
        """Append one epoch's metrics as a single line, then mark the epoch done in the status."""
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.update(epochs_done=int(metrics.get("epoch", self.status["epochs_done"] + 1)))

    def keep_epochs(self, epochs: int) -> list[dict[str, Any]]:
        """Keep the first ``epochs`` metrics lines (a resumed run drops any epoch logged after its state was saved)."""
        kept = [record for record in read_metrics(self.run_dir) if record.get("epoch", 0) <= epochs]
        atomic_write_bytes(self.run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in kept).encode())
        self.update(epochs_done=epochs)
        return kept

    def save_resume_state(self, state: dict[str, Any], weights: list, optimizer: list) -> None:
        """Write ``resume.npz`` in one atomic step: ``state`` (JSON) with the model's and the optimizer's arrays."""
        arrays = {f"weight_{index}": value for index, value in enumerate(weights)}
        arrays.update({f"optimizer_{index}": value for index, value in enumerate(optimizer)})
        state = {**state, "weights": len(weights), "optimizer": len(optimizer)}
        with atomic_path(self.run_dir / RESUME_FILE, suffix=".npz") as temporary, open(temporary, "wb") as handle:
            np.savez(handle, state=np.array(json.dumps(state)), **arrays)

    def sample_path(self, epoch: int) -> Path:
        return self.run_dir / f"epoch_{epoch:03d}.png"

    def finish(self, state: str, message: str = "", **fields: Any) -> None:
        """End the run as "done", "failed" or "stopped"."""
        self.update(state=state, message=message, finished=now_iso(), **fields)
        if state == "done":  # Nothing left to resume: the run folder's largest file goes.
            (self.run_dir / RESUME_FILE).unlink(missing_ok=True)

    def stop_requested(self) -> bool:
        return (self.run_dir / "stop").exists()


@dataclasses.dataclass
class RunState:
    """What a reader sees of a run folder."""

    run_dir: Path
    status: dict[str, Any]
    epochs: list[dict[str, Any]]
    samples: list[Path]
    curves: Path | None

    @property
    def state(self) -> str:
        return self.status.get("state", "failed")

    @property
    def run_id(self) -> str:
        return self.run_dir.name


def read_resume_state(run_dir: str | os.PathLike) -> tuple[dict[str, Any], list[np.ndarray], list[np.ndarray]]:
    """The state, model weights and optimizer variables a run saved after its last finished epoch."""
    path = Path(run_dir) / RESUME_FILE
    try:
        with np.load(path) as stored:
            state = json.loads(str(stored["state"]))
            weights = [stored[f"weight_{index}"] for index in range(state["weights"])]
            return state, weights, [stored[f"optimizer_{index}"] for index in range(state["optimizer"])]
    except FileNotFoundError:
        raise ValueError(f"{run_dir} cannot be resumed: it has no {RESUME_FILE} (no epoch finished, or the run "
                         "predates resumable runs).") from None
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path} is unreadable ({type(error).__name__}): start a new run.") from None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Read metrics.jsonl, skipping a torn or invalid line (a run killed mid-write)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    epochs = []
    for line in lines:
        with contextlib.suppress(ValueError):
            epochs.append(json.loads(line))
    return [epoch for epoch in epochs if isinstance(epoch, dict)]


def read_run(run_dir: str | os.PathLike) -> RunState:
    """Read a run folder; a "running" run whose process is gone (on this host) reads as failed."""
    run_dir = Path(run_dir)
    try:
        if not isinstance(status := json.loads((run_dir / "status.json").read_text()), dict):
            raise ValueError("status is not an object")
    except (OSError, ValueError) as error:
        status = {"state": "failed", "message": f"unreadable status.json ({type(error).__name__})"}
    pid, host = status.get("pid"), status.get("host")
    if status.get("state") == "running" and (not host or host == socket.gethostname()) and not (
            pid and process_alive(pid)):
        status = {**status, "state": "failed", "message": "the training process ended without finishing"}
    curves = run_dir / "curves.png"
    return RunState(run_dir, status, read_metrics(run_dir), sorted(run_dir.glob("epoch_*.png")),
                    curves if curves.exists() else None)


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[RunState]:
    """All run folders, newest first."""
    folders = [path.parent for path in Path(runs_dir or DEFAULT_RUNS_DIR).glob("*/status.json")]
    return [read_run(path) for path in sorted(folders, key=lambda path: path.stat().st_mtime, reverse=True)]


def shipped_runs(weights_dir: str | os.PathLike, checkpoint: str | None) -> list[RunState]:
    """The run records shipped in the weights folder (``<name>.run/``), ``checkpoint``'s first, then by name."""
    folders = sorted(path.parent for path in Path(weights_dir).glob(f"*{SHIPPED_RUN_SUFFIX}/status.json"))
    folders.sort(key=lambda folder: folder.name != f"{checkpoint}{SHIPPED_RUN_SUFFIX}")
    return [read_run(folder) for folder in folders]


def copy_run_record(run_dir: str | os.PathLike, destination: str | os.PathLike, sample_every: int = 5) -> None:
    """Copy a finished run's status, metrics, curves and every ``sample_every``-th sample (plus the last) for
    shipping, without the process id and host (so it never reads as live) and with only the checkpoint's file name."""
    run = read_run(run_dir)
    if run.state not in ("done", "stopped"):
        raise ValueError(f"Only a finished or stopped run ships; {run_dir} is {run.state}.")
    destination = Path(destination)  # Its first atomic write makes it.
    status = {key: value for key, value in run.status.items() if key not in ("pid", "host")}
    if status.get("checkpoint"):
        status["checkpoint"] = Path(status["checkpoint"]).name
    atomic_write_json(destination / "status.json", status)
    atomic_write_bytes(destination / "metrics.jsonl", (run.run_dir / "metrics.jsonl").read_bytes())
    kept = [path for index, path in enumerate(run.samples, 1) if index % sample_every == 1 or index == len(run.samples)]
    for path in kept + ([run.curves] if run.curves else []):
        atomic_write_bytes(destination / path.name, path.read_bytes())


def request_stop(run_dir: str | os.PathLike) -> None:
    """Ask a run to stop after its current batch; works for runs started by the app or a terminal."""
    (Path(run_dir) / "stop").touch()


def start_process(command: list[str], log_path: Path, environment: Mapping[str, str | None] | None = None
                  ) -> subprocess.Popen:
    """Start ``command`` as the leader of a new process group, its output in ``log_path``; ``environment`` changes
    the inherited one (a value replaces, None removes)."""
    child_environment = {**CHILD_DEFAULTS, **os.environ, "PYTHONUNBUFFERED": "1", **(environment or {})}
    child_environment = {key: value for key, value in child_environment.items() if value is not None}
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=ROOT, env=child_environment, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def signal_group(pid: int, sent: signal.Signals) -> None:
    """Send ``sent`` to the process group led by ``pid``; a group that is gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sent)


def stop_process(process: subprocess.Popen, grace_seconds: float = STOP_SECONDS) -> None:
    """End a process started by ``start_process`` and its group: SIGTERM, then SIGKILL after ``grace_seconds``."""
    if process.poll() is not None:
        return
    signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_seconds)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine; a zombie (ended, not yet reaped) does not."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
