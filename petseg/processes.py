"""Child processes (``app.py``, ``train.py``) for the launcher, benchmarks and tests: each runs in the repository
root, its output in a log file, leading a process group of its own, so ending it ends whatever it started too.

>>> process_alive(os.getpid())
True
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP_SECONDS = 15.0
# Quiet, unbuffered children that never report analytics; the caller's environment wins where it sets these.
CHILD_DEFAULTS = {"GRADIO_ANALYTICS_ENABLED": "False", "TF_CPP_MIN_LOG_LEVEL": "2"}


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
