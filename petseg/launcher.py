"""Start, stop and describe training runs for the app (no gradio here): validated requests, readable progress.

A run is ``python train.py ... --run-dir runs/<id>`` in a process of its own (output in ``runs/<id>/train.log``).
Watching only reads the run folder (``petseg.runs``), so a run started from a terminal is watched the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from petseg.atomic import atomic_write_json
from petseg.checkpoints import CHECKPOINT_SUFFIX, NAME_PATTERN, CheckpointError, checkpoint_path
from petseg.presets import PRESETS
from petseg.runs import (ROOT, RunState, RunWriter, new_run_id, now_iso, read_run, request_stop, start_process,
                         stop_process)

DATA_SOURCES: dict[str, str] = {"synthetic": "Synthetic demo data",
                                "folder": "A local folder (official Oxford-IIIT Pet layout)",
                                "tfds": "TensorFlow Datasets (downloads about 800 MB)"}
ENCODER_WEIGHTS = ("imagenet", "none")
EPOCH_LIMITS, BATCH_SIZE_LIMITS, IMAGE_SIZE_LIMITS = (1, 200), (1, 256), (32, 512)  # Inclusive.
IMAGE_SIZE_STEP = 32  # The U-Net halves the input five times.
SYNTHETIC_TRAINVAL, SYNTHETIC_TEST = 24, 6  # The demo set: an epoch takes seconds on a laptop CPU.
STOP_GRACE_SECONDS = 10.0
NUMBERS = (int, float)  # What an epoch record's figures are (JSON numbers).


class TrainingRequestError(ValueError):
    """A training request the app refuses; the message says what to change."""


def training_allowed(allow_training: bool | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether this app may start runs: ``allow_training`` if given, else ``PETSEG_ALLOW_TRAINING`` (1/0, true/false,
    yes/no, on/off), else yes except on a Hugging Face Space (``SPACE_ID``), where a run takes everyone's CPU."""
    if allow_training is not None:
        return bool(allow_training)
    environ = os.environ if environ is None else environ
    answers = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(("0", "false", "no", "off"), False)
    return answers.get(environ.get("PETSEG_ALLOW_TRAINING", "").strip().lower(), not environ.get("SPACE_ID"))


@dataclasses.dataclass(frozen=True)
class TrainingRequest:
    """A validated request for one training run."""

    preset: str
    epochs: int
    batch_size: int
    image_size: int
    data_source: str  # A key of DATA_SOURCES.
    data_dir: str | None  # Only for the "folder" source.
    encoder_weights: str  # "imagenet", "none" or a weights file.
    name: str | None  # None: "<preset>-<run id>".


def parse_request(preset: str, epochs: Any, batch_size: Any, image_size: Any, data_source: str,
                  data_dir: str | None = None, encoder_weights: str | None = "imagenet", name: str | None = None,
                  weights_dir: str | os.PathLike | None = None) -> TrainingRequest:
    """Check the Training tab's fields and return a request, or raise ``TrainingRequestError`` saying what is wrong."""
    if preset not in PRESETS:
        raise TrainingRequestError(f"Unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
    epochs = whole_number(epochs, "Epochs", *EPOCH_LIMITS)
    batch_size = whole_number(batch_size, "Batch size", *BATCH_SIZE_LIMITS)
    image_size = whole_number(image_size, "Image size", *IMAGE_SIZE_LIMITS)
    if image_size != (nearest := image_size_for(preset, image_size)):
        raise TrainingRequestError(f"Image size must be {image_size_rule(preset)} for the {preset} preset, got "
                                   f"{image_size}; the nearest it takes is {nearest}.")
    if data_source not in DATA_SOURCES:
        raise TrainingRequestError(f"Unknown data source {data_source!r}; choose one of: {', '.join(DATA_SOURCES)}.")
    folder = None
    if data_source == "folder":
        if not data_dir or not str(data_dir).strip():
            raise TrainingRequestError("Enter the path of a data folder holding images/ and annotations/.")
        folder = Path(str(data_dir).strip()).expanduser()
        if not folder.is_dir():
            raise TrainingRequestError(f"No folder at {folder}.")
        if missing := [part for part in ("images", "annotations/trainval.txt", "annotations/trimaps")
                       if not (folder / part).exists()]:
            raise TrainingRequestError(f"{folder} is not in the official Oxford-IIIT Pet layout: it lacks "
                                       f"{', '.join(missing)}.")
        folder = str(folder.resolve())
    encoder = (encoder_weights or "").strip()
    if data_source == "synthetic":
        encoder = "none"  # Synthetic runs never download: their encoder starts from random weights.
    elif encoder.lower() in ENCODER_WEIGHTS:
        encoder = encoder.lower()
    elif encoder and Path(encoder).expanduser().is_file():
        encoder = str(Path(encoder).expanduser().resolve())
    else:
        raise TrainingRequestError(f"Encoder weights must be 'imagenet', 'none' or the path of a Keras weights file; "
                                   f"no file at {encoder or '(empty)'}.")
    if name := (name or "").strip():  # Else the default name.
        try:
            path = checkpoint_path(name, weights_dir)
        except CheckpointError as error:
            raise TrainingRequestError(str(error)) from None
        if path.exists():
            raise TrainingRequestError(f"A checkpoint called {path.stem} already exists; choose another name.")
        name = path.stem
    return TrainingRequest(preset, epochs, batch_size, image_size, data_source, folder, encoder, name or None)


def image_size_rule(preset: str) -> str:
    """The image sizes a preset takes, in words: 8k+1 for DeepLab (its resizes align corners), else multiples of 32."""
    return "8k+1" if is_deeplab(preset) else f"a multiple of {IMAGE_SIZE_STEP}"


def is_deeplab(preset: str) -> bool:
    return preset in PRESETS and PRESETS[preset].architecture == "deeplab"


def image_size_for(preset: str, image_size: Any) -> Any:
    """The image size nearest ``image_size`` that ``preset`` takes; a value that is not a number comes back as is."""
    try:
        size = float(image_size)
    except (TypeError, ValueError):
        return image_size
    low, high = IMAGE_SIZE_LIMITS
    if is_deeplab(preset):
        return int(min(max(8 * round((size - 1) / 8) + 1, low + 1), high - 7))
    return int(min(max(IMAGE_SIZE_STEP * round(size / IMAGE_SIZE_STEP), low), high))


def whole_number(value: Any, label: str, low: int, high: int) -> int:
    """``value`` as an int between ``low`` and ``high``, or a ``TrainingRequestError`` naming the field."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise TrainingRequestError(f"{label} is empty; enter a whole number from {low} to {high}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")  # Not a whole number either.
    if not number.is_integer() or not low <= number <= high:
        shown = f"{value:g}" if isinstance(value, (int, float)) else repr(value)
        raise TrainingRequestError(f"{label} must be a whole number from {low} to {high}, got {shown}.")
    return int(number)


class TrainingLauncher:
    """Starts training processes, at most one at a time, and stops runs by their folder."""

    def __init__(self, weights_dir: str | os.PathLike, runs_dir: str | os.PathLike):
        self.weights_dir, self.runs_dir = Path(weights_dir).resolve(), Path(runs_dir).resolve()
        self._process: tuple[str, subprocess.Popen] | None = None  # The last run this app started, and its process.
        self._lock = threading.Lock()

    def active_run(self) -> str | None:
        """The id of the run this app started that is still training, if any."""
        return self._process[0] if self._process and self._process[1].poll() is None else None

    def start(self, request: TrainingRequest) -> Path:
        """Create a run folder, prepare its data, start ``train.py`` on it and return the folder."""
        from petseg.synthetic import make_synthetic_pets

        with self._lock:
            if active := self.active_run():
                raise TrainingRequestError(f"Run {active} is still training; stop it or wait for it to finish.")
            run_id = base = new_run_id()
            suffixes = itertools.count(2)
            while (self.runs_dir / run_id).exists():  # Two runs started within a second get folders of their own.
                run_id = f"{base}-{next(suffixes)}"
            run_dir, data_dir = self.runs_dir / run_id, request.data_dir
            name = request.name or f"{request.preset}-{run_id}"
            run_dir.mkdir(parents=True)
            if request.data_source == "synthetic":
                data_dir = str(make_synthetic_pets(run_dir / "synthetic-data", SYNTHETIC_TRAINVAL, SYNTHETIC_TEST))
            command = [sys.executable, str(ROOT / "train.py"), "--preset", request.preset,
                       "--epochs", str(request.epochs), "--batch-size", str(request.batch_size),
                       "--image-size", str(request.image_size), "--encoder-weights", request.encoder_weights,
                       "--run-dir", str(run_dir), "--output-dir", str(self.weights_dir), "--name", name,
                       *(["--data-dir", data_dir] if data_dir else [])]
            process = start_process(command, run_dir / "train.log")
            self._process = run_id, process
            # train.py writes its own status once TensorFlow has loaded; until then, this one says it is starting.
            if not (run_dir / "status.json").exists():
                RunWriter(run_dir, {"pid": process.pid, "preset": request.preset, "epochs": request.epochs,
                                    "batch_size": request.batch_size, "image_size": request.image_size, "name": name,
                                    "data": DATA_SOURCES[request.data_source], "launched_by": "app",
                                    "message": "starting: loading TensorFlow and the data"})
            return run_dir

    def stop(self, run_id: str) -> str:
        """Ask run ``run_id`` to stop after its current batch; return a sentence saying what happened."""
        run = read_run(run_dir := self.run_folder(run_id))
        if run.state != "running":
            return f"Run {run_id} is not running (it is {run.state})."
        request_stop(run_dir)
        if self.active_run() == run_id and run.status.get("launched_by") == "app":
            # train.py has not started its run yet, and would delete the stop file when it does: end it now.
            stop_process(self._process[1], STOP_GRACE_SECONDS)
            atomic_write_json(run_dir / "status.json", {**run.status, "state": "stopped", "updated": now_iso(),
                                                         "finished": now_iso(), "message": "stopped before training"})
            return f"Run {run_id} stopped before its first epoch."
        return f"Stop requested: run {run_id} ends after its current batch and keeps its best checkpoint."

    def run_folder(self, run_id: str) -> Path:
        """The folder of run ``run_id``, refusing names that would leave the runs folder."""
        if not run_id or not NAME_PATTERN.fullmatch(run_id) or ".." in run_id:
            raise TrainingRequestError(f"Unknown run {run_id!r}.")
        run_dir = self.runs_dir / run_id
        if not (run_dir / "status.json").is_file():
            raise TrainingRequestError(f"Unknown run {run_id!r}: it has no status.json.")
        return run_dir


def run_label(run: RunState) -> str:
    """One line for the run picker, e.g. "20260101-120000-42 · tutorial · running · epoch 1/5"."""
    total = run.status.get("epochs", "?")
    return f"{run.run_id} · {run.status.get('preset', '?')} · {run.state} · epoch {len(run.epochs)}/{total}"


def epoch_line(record: dict[str, Any], total_epochs: Any = None) -> str:
    """One log line per epoch.

    >>> epoch_line({"epoch": 2, "loss": 0.8123, "val_mean_iou": 0.41, "seconds": 3.14}, 5)
    'epoch 2/5: loss 0.812, val mIoU 0.410 (3.1 s)'
    """
    labels = {"loss": "loss", "val_loss": "val loss", "val_mean_iou": "val mIoU", "val_accuracy": "val accuracy"}
    parts = [f"{label} {record[key]:.3f}" for key, label in labels.items() if isinstance(record.get(key), NUMBERS)]
    seconds = f" ({record['seconds']:.1f} s)" if isinstance(record.get("seconds"), NUMBERS) else ""
    saved = ", best so far: checkpoint saved" if record.get("saved_checkpoint") else ""
    total = f"/{total_epochs}" if total_epochs else ""
    return f"epoch {record.get('epoch', '?')}{total}: " + ", ".join(parts) + saved + seconds


def progress_log(run: RunState) -> str:
    """The run's story so far: one line per finished epoch, then how it ended."""
    lines = [epoch_line(record, run.status.get("epochs")) for record in run.epochs]
    if run.state == "running" and not run.epochs:
        lines.append("preparing: loading TensorFlow, the data and the model…")
    elif run.state != "running":
        lines.append(run.state + (f": {message}" if (message := run.status.get("message")) else ""))
    return "\n".join(lines)


def status_markdown(run: RunState) -> str:
    """One line: the state, the epochs, the time taken and, while running, the time left."""
    status, done = run.status, len(run.epochs)
    total, message, started = status.get("epochs"), status.get("message") or "", _parse_time(status.get("started"))
    ended = _parse_time(now_iso() if run.state == "running" else status.get("finished") or status.get("updated"))
    elapsed = f"{(ended - started).total_seconds():.0f} s" if started and ended else "?"
    if run.state == "running":
        summary = f"**Running** · epoch {done} of {total or '?'} done · {elapsed} elapsed"
        seconds = [record["seconds"] for record in run.epochs if isinstance(record.get("seconds"), NUMBERS)]
        if seconds and isinstance(total, int) and total > done:
            summary += f" · about {sum(seconds) / len(seconds) * (total - done):.0f} s left"
        return summary
    summary = f"**{run.state.capitalize()}** after {done} of {total or '?'} epochs in {elapsed}"
    summary += f": {message}" if message else ""
    if status.get("checkpoint") and run.state in ("done", "stopped"):
        name = status.get("name") or Path(str(status["checkpoint"])).stem
        summary += f". Checkpoint **{name}** is in the checkpoint lists."
    return summary


def log_tail(run_dir: Path, max_lines: int = 60, max_bytes: int = 32_768) -> str:
    """The last lines of the run's ``train.log`` (empty for runs started from a terminal), progress bars redrawn."""
    try:
        with open(Path(run_dir) / "train.log", "rb") as handle:
            handle.seek(max(handle.seek(0, os.SEEK_END) - max_bytes, 0))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    # Split on newlines only: a progress bar redraws after "\r", and only its last drawing is kept.
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.rstrip("\n").split("\n")]
    return "\n".join(lines[-max_lines:])


def run_fingerprint(run: RunState) -> tuple:
    """What changes whenever a run makes progress: the app redraws a run only then."""
    log = run.run_dir / "train.log"
    return (run.run_id, run.state, len(run.epochs), run.status.get("updated"), len(run.samples),
            log.stat().st_size if log.exists() else 0)


def checkpoints_fingerprint(weights_dir: str | os.PathLike) -> tuple:
    """What changes whenever a checkpoint or sidecar is written, renamed or removed."""
    entries = []
    for path in Path(weights_dir).glob("[!.]*"):
        with contextlib.suppress(OSError):
            if path.suffix in (CHECKPOINT_SUFFIX, ".json"):
                entries.append((path.name, (stat := path.stat()).st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


def _parse_time(value: Any) -> datetime.datetime | None:
    try:
        parsed = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)
