"""Figures 4 and 5, measured on child processes: app start-up to its first answer, and peak memory.

Every process started here leads a process group of its own and is always ended (SIGTERM, then SIGKILL).
Peak memory is the kernel's high-water mark of resident memory (``VmHWM`` in ``/proc/<pid>/status``), read
while the process lives; psutil's RSS is the fallback where /proc is missing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
STOP_SECONDS = 15.0
CHILD_ENVIRONMENT = {"GRADIO_ANALYTICS_ENABLED": "False", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


class AppUnavailable(RuntimeError):
    """app.py is missing or did not serve an answer; the message says why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), or its current RSS where /proc is missing."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return psutil.Process(pid).memory_info().rss


class PeakMemory:
    """Polls a process's peak resident memory in a thread until stopped; keeps the largest value seen."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.read()
            self._stop.wait(self.interval)

    def read(self) -> int:
        try:
            self.peak = max(self.peak, peak_rss_bytes(self.pid))
        except (OSError, psutil.Error):
            pass  # The process has ended; keep the last reading.
        return self.peak

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def start_process(command: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``command`` in the repository root, in a new session, logging to ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=ROOT, env={**os.environ, **CHILD_ENVIRONMENT}, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def stop_process(process: subprocess.Popen) -> None:
    """End a process started by ``start_process`` and its group: SIGTERM, then SIGKILL after a grace time."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_SECONDS)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------------------------------------------
# Figure 4 and 5a: the app.


def ask_app(url: str, photo_path: Path, checkpoint: str):
    """One real request to the app's named "predict" endpoint, as an API user makes it."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    return client.predict(handle_file(str(photo_path)), checkpoint, api_name="/predict")


def app_start_and_memory(weights_dir: Path, runs_dir: Path, photo_path: Path, checkpoints: list[str],
                         log_path: Path, timeout: float = 180.0) -> dict:
    """Start ``python app.py``, time it to its first served answer, then use every checkpoint and read its peak RSS.

    Returns seconds to the first answer, seconds to the app's ready line (at most one poll late; the two come
    within a fraction of a second, since the app serves only once it is warm), and peak RSS in bytes.
    """
    app = ROOT / "app.py"
    if not app.is_file():
        raise AppUnavailable("app.py is not in the repository yet")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    started = time.perf_counter()
    process = start_process([sys.executable, str(app), "--port", str(port), "--weights-dir", str(weights_dir),
                             "--runs-dir", str(runs_dir), "--no-allow-training"], log_path)
    memory = PeakMemory(process.pid)
    ready_seconds = None
    last_error: Exception | None = None
    try:
        while True:
            if process.poll() is not None:
                raise AppUnavailable(f"app.py exited with {process.returncode}: "
                                     f"{log_path.read_text(errors='replace')[-2000:]}")
            if ready_seconds is None and "ready" in log_path.read_text(errors="replace").lower():
                ready_seconds = time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise AppUnavailable(f"app.py gave no answer within {timeout:.0f} s (last error: {last_error!r})")
            try:
                ask_app(url, photo_path, checkpoints[0])
                break
            except Exception as error:  # Refused connections and errors while it starts: try again shortly.
                last_error = error
                time.sleep(0.1)
        answer_seconds = time.perf_counter() - started
        if ready_seconds is None:  # The ready line and the answer came within one poll.
            ready_seconds = answer_seconds
        for checkpoint in checkpoints[1:]:
            ask_app(url, photo_path, checkpoint)
        ask_app(url, photo_path, checkpoints[0])
        peak = memory.read()
    finally:
        memory.stop()
        stop_process(process)
    return {"ready_seconds": ready_seconds, "answer_seconds": answer_seconds, "peak_rss": peak}


# ---------------------------------------------------------------------------------------------------------------
# Figure 5b: a training process.


def training_peak_memory(command: list[str], log_path: Path, timeout: float = 900.0) -> int:
    """Run a training command to its end and return its peak resident memory in bytes."""
    process = start_process(command, log_path)
    memory = PeakMemory(process.pid, interval=0.05)
    try:
        process.wait(timeout=timeout)
    finally:
        peak = memory.stop()
        stop_process(process)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed: {log_path.read_text(errors='replace')[-2000:]}")
    return peak


def our_training_command(data_dir: Path, output_dir: Path, image_size: int, batch_size: int) -> list[str]:
    """train.py for one epoch of the tutorial preset with a random encoder (what a user runs, validation too)."""
    return [sys.executable, str(ROOT / "train.py"), "--data-dir", str(data_dir), "--preset", "tutorial",
            "--epochs", "1", "--batch-size", str(batch_size), "--image-size", str(image_size),
            "--encoder-weights", "none", "--output-dir", str(output_dir), "--run-dir", str(output_dir / "run"),
            "--name", "memory", "--no-test"]


def seed_training_command(data_dir: Path, image_size: int, batch_size: int) -> list[str]:
    """The seed's pipeline and the same model for one epoch (``python -m bench.seed_way``)."""
    return [sys.executable, "-m", "bench.seed_way", "--data-dir", str(data_dir), "--epochs", "1",
            "--batch-size", str(batch_size), "--image-size", str(image_size)]
