"""Run ``python app.py`` for the API and browser tests: two tiny checkpoints, a free loopback port, bounded waits.

``conftest.app_server`` starts one app per test session; ``stop_app`` always ends it and any training process it
started (each runs in a process group of its own).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from pathlib import Path

from bench.processes import start_app as start_app_process
from conftest import copy_checkpoint
from petseg import runs

START_TIMEOUT = 180.0

FIRST_CHECKPOINT = "tiny"
SECOND_CHECKPOINT = "tiny-pet"


@dataclasses.dataclass
class AppServer:
    """A running app and the folders it uses."""

    url: str
    process: subprocess.Popen
    weights_dir: Path
    runs_dir: Path
    log_path: Path
    start_seconds: float

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def make_app_weights(trained_checkpoint_path: Path, weights_dir: Path,
                     shipped_weights_dir: Path | None = None) -> Path:
    """Fill ``weights_dir`` with two checkpoints whose masks differ, and the best shipped one if there is one.

    ``tiny`` is the conftest checkpoint as trained. ``tiny-pet`` is the same model with its pet logit raised by
    the median margin on a synthetic photo, so about half of a photo turns "pet": a visibly different mask.
    The best available checkpoint of ``shipped_weights_dir`` (the project's ``weights/``) is copied too, so the
    screenshots show real masks; the tests pass without it.
    """
    import numpy as np

    from petseg.checkpoints import default_checkpoint, load_checkpoint_file, read_sidecar, save_checkpoint
    from petseg.classes import PET
    from petseg.inference import predict_probabilities
    from petseg.synthetic import make_synthetic_pet

    copy_checkpoint(trained_checkpoint_path, weights_dir / f"{FIRST_CHECKPOINT}.keras")
    checkpoint = load_checkpoint_file(weights_dir / f"{FIRST_CHECKPOINT}.keras")
    photo, _ = make_synthetic_pet(np.random.default_rng(0), 160, 120)
    logits = np.log(np.clip(predict_probabilities(np.asarray(photo), checkpoint), 1e-6, 1.0))
    margin = float(np.median(np.delete(logits, PET, axis=-1).max(axis=-1) - logits[..., PET]))
    model = checkpoint.model
    kernel, bias = model.layers[-1].get_weights()
    bias[PET] += margin
    model.layers[-1].set_weights([kernel, bias])
    sidecar = {**read_sidecar(checkpoint.path), "name": SECOND_CHECKPOINT, "description": "tiny with a pet bias"}
    sidecar.pop("metrics", None)
    save_checkpoint(model, weights_dir / f"{SECOND_CHECKPOINT}.keras", sidecar)
    shipped = default_checkpoint(shipped_weights_dir) if shipped_weights_dir else None
    if shipped and shipped not in (FIRST_CHECKPOINT, SECOND_CHECKPOINT):
        copy_checkpoint(Path(shipped_weights_dir) / f"{shipped}.keras", weights_dir / f"{shipped}.keras")
    return weights_dir


def start_app(weights_dir: Path, runs_dir: Path, log_path: Path, timeout: float = START_TIMEOUT) -> AppServer:
    """Start ``python app.py`` on a free port and wait until it answers; raise with its log if it does not."""
    app, seconds = start_app_process(["--weights-dir", str(weights_dir), "--runs-dir", str(runs_dir)], log_path,
                                       timeout, {"PETSEG_ALLOW_TRAINING": None})
    return AppServer(app.url, app.process, weights_dir, runs_dir, log_path, seconds)


def stop_app(server: AppServer) -> None:
    """End the app and every training process it started, politely first."""
    for pid in training_pids(server.runs_dir):
        runs.signal_group(pid, signal.SIGTERM)
    runs.stop_process(server.process)
    deadline = time.monotonic() + runs.STOP_SECONDS
    while time.monotonic() < deadline and training_pids(server.runs_dir):
        time.sleep(0.2)
    for pid in training_pids(server.runs_dir):
        runs.signal_group(pid, signal.SIGKILL)


def training_pids(runs_dir: Path) -> list[int]:
    """The process ids recorded by the runs in ``runs_dir`` that are still alive."""
    pids = []
    for status_path in Path(runs_dir).glob("*/status.json"):
        try:
            pid = int(json.loads(status_path.read_text()).get("pid") or 0)
        except (OSError, ValueError, TypeError):
            continue
        if pid and runs.process_alive(pid):
            pids.append(pid)
    return pids
