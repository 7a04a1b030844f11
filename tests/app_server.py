"""Run ``python app.py`` for the API and browser tests: two tiny checkpoints, a free loopback port, bounded waits.

``conftest.app_server`` starts one app per test session; ``stop_app`` always ends it and any training process it
started (each runs in a process group of its own).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180.0
STOP_TIMEOUT = 15.0

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


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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

    weights_dir.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".json", ".tflite"):
        shutil.copy(trained_checkpoint_path.with_suffix(suffix), weights_dir / f"{FIRST_CHECKPOINT}{suffix}")
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
        for suffix in (".keras", ".json", ".tflite"):
            shutil.copy(Path(shipped_weights_dir) / f"{shipped}{suffix}", weights_dir / f"{shipped}{suffix}")
    return weights_dir


def start_app(weights_dir: Path, runs_dir: Path, log_path: Path, timeout: float = START_TIMEOUT) -> AppServer:
    """Start ``python app.py`` on a free port and wait until it answers; raise with its log if it does not."""
    port = free_port()
    environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TF_CPP_MIN_LOG_LEVEL": "2",
                   "PYTHONUNBUFFERED": "1"}
    environment.pop("SPACE_ID", None)
    environment.pop("PETSEG_ALLOW_TRAINING", None)
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--weights-dir", str(weights_dir),
               "--runs-dir", str(runs_dir)]
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = AppServer(f"http://127.0.0.1:{port}/", process, weights_dir, runs_dir, log_path, 0.0)
    try:
        while time.monotonic() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode}:\n{server.log()[-4000:]}")
            if "PetSeg is ready at" in server.log() and answers(server.url):
                server.start_seconds = time.monotonic() - started
                return server
            time.sleep(0.5)
        raise TimeoutError(f"app.py did not answer within {timeout:.0f} s:\n{server.log()[-4000:]}")
    except BaseException:
        stop_app(server)
        raise


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop_app(server: AppServer) -> None:
    """End the app and every training process it started, politely first."""
    for pid in training_pids(server.runs_dir) + [server.process.pid]:
        _signal_group(pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _signal_group(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=STOP_TIMEOUT)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and any(_alive(pid) for pid in training_pids(server.runs_dir)):
        time.sleep(0.2)
    for pid in training_pids(server.runs_dir):
        _signal_group(pid, signal.SIGKILL)


def training_pids(runs_dir: Path) -> list[int]:
    """The process ids recorded by the runs in ``runs_dir`` that are still alive."""
    pids = []
    for status_path in Path(runs_dir).glob("*/status.json"):
        try:
            pid = int(json.loads(status_path.read_text()).get("pid") or 0)
        except (OSError, ValueError, TypeError):
            continue
        if pid and _alive(pid):
            pids.append(pid)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal_group(pid: int, sent: signal.Signals) -> None:
    """Signal the process group led by ``pid`` (app and training processes each lead their own)."""
    try:
        os.killpg(pid, sent)
    except (ProcessLookupError, PermissionError):
        pass
