"""Figures 4 and 5, measured on child processes: app start-up to its first answer, and peak memory.

Every process started here leads a process group of its own and is always ended (``petseg.runs.start_process``).
``start_app`` (python app.py on a free loopback port, ready to answer) serves the tests and the load test too.
Peak memory is the kernel's high-water mark of resident memory (``VmHWM`` in ``/proc/<pid>/status``), read
while the process lives; psutil's RSS is the fallback where /proc is missing.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import psutil

from petseg.runs import ROOT, start_process, stop_process

READY_LINE = "PetSeg is ready at"  # What app.py prints once it serves.


class AppUnavailable(RuntimeError):
    """app.py is missing or did not serve an answer; the message says why."""


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


# ---------------------------------------------------------------------------------------------------------------
# The app as a child process.


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    """Whether ``url`` answers HTTP 200 within five seconds."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclasses.dataclass
class AppProcess:
    """``python app.py`` on a loopback port: its address, process and log."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_app(arguments: list[str], log_path: Path, timeout: float,
              environment: Mapping[str, str | None] | None = None) -> tuple[AppProcess, float]:
    """Start ``python app.py`` on a free 127.0.0.1 port (never as a Space); return it once it answers, and the
    seconds that took. ``RuntimeError`` with the end of its log (and the app stopped) if it exits or times out."""
    port = free_port()
    command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port), *arguments]
    started = time.monotonic()
    process = start_process(command, log_path, {"SPACE_ID": None, **(environment or {})})
    app = AppProcess(f"http://127.0.0.1:{port}/", process, log_path)
    try:
        while time.monotonic() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode}:\n{app.log()[-4000:]}")
            if READY_LINE in app.log() and answers(app.url):
                return app, time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"app.py did not answer within {timeout:.0f} s:\n{app.log()[-4000:]}")
    except BaseException:
        stop_process(process)
        raise


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

    Returns seconds to the app's ready line (once it also answers HTTP), seconds to its first answer, and peak RSS
    in bytes.
    """
    if not (ROOT / "app.py").is_file():
        raise AppUnavailable("app.py is not in the repository yet")
    try:
        app, ready_seconds = start_app(["--weights-dir", str(weights_dir), "--runs-dir", str(runs_dir),
                                        "--no-allow-training"], log_path, timeout)
    except RuntimeError as error:
        raise AppUnavailable(str(error)) from error
    memory = PeakMemory(app.process.pid)  # The kernel's high-water mark covers the start-up too.
    try:
        asked = time.monotonic()
        ask_app(app.url, photo_path, checkpoints[0])
        answer_seconds = ready_seconds + time.monotonic() - asked
        for checkpoint in checkpoints[1:]:
            ask_app(app.url, photo_path, checkpoint)
        ask_app(app.url, photo_path, checkpoints[0])
        peak = memory.read()
    finally:
        memory.stop()
        stop_process(app.process)
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
