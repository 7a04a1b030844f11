"""Child processes (``app.py``, ``train.py``) for the launcher, benchmarks and tests: each runs in the repository
root, its output in a log file, leading a process group of its own, so ending it ends whatever it started too.

>>> free_port() > 0
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "PetSeg is ready at"  # What app.py prints once it serves.
STOP_SECONDS = 15.0
# Quiet, unbuffered children that never report analytics; the caller's environment wins where it sets these.
CHILD_DEFAULTS = {"GRADIO_ANALYTICS_ENABLED": "False", "TF_CPP_MIN_LOG_LEVEL": "2"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_process(command: list[str], log_path: Path, environment: Mapping[str, str | None] | None = None
                  ) -> subprocess.Popen:
    """Start ``command`` as the leader of a new process group, its output in ``log_path``; ``environment`` changes
    the inherited one (a value replaces, None removes)."""
    child_environment = {**CHILD_DEFAULTS, **os.environ, "PYTHONUNBUFFERED": "1"}
    for key, value in (environment or {}).items():
        if value is None:
            child_environment.pop(key, None)
        else:
            child_environment[key] = value
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
