"""The checkpoint registry: one entry = ``<name>.keras``, its LiteRT export ``<name>.tflite`` and ``<name>.json``.

``save_checkpoint`` writes the model (float16 weights, no optimizer state), its checked export, then the sidecar
with both files' sha256. Files that no longer match it, and corrupt or incompatible files, make the entry
unavailable with the reason, never served and never a crash. Reads stay inside the weights folder; writes are atomic.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import threading
import zipfile
from pathlib import Path
from typing import Any

from petseg.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from petseg.classes import CLASS_NAMES

DEFAULT_WEIGHTS_DIR = Path(os.environ.get("PETSEG_WEIGHTS_DIR", Path(__file__).resolve().parent.parent / "weights"))
CHECKPOINT_SUFFIX = ".keras"
SIDECAR_SUFFIX = ".json"
EXPORT_SUFFIX = ".tflite"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
REQUIRED_SIDECAR_KEYS = ("preset", "image_size", "classes")
REBUILD_HINT = "rebuild it with: python -m petseg.export --checkpoint {} --format serving"


class CheckpointError(ValueError):
    """A checkpoint is missing, outside the weights folder, corrupt or incompatible; the message says which."""


@dataclasses.dataclass
class CheckpointInfo:
    """What the registry knows about one checkpoint without loading it."""

    name: str
    path: Path
    sidecar: dict[str, Any]
    available: bool
    reason: str = ""

    @property
    def image_size(self) -> int:
        return int(self.sidecar["image_size"])

    def describe(self) -> str:
        """One line for dropdowns and logs, e.g. "finetune: finetune, 40 epochs, 160 px, mIoU 0.771 on pets/test"."""
        if not self.available:
            return f"{self.name}: unavailable ({self.reason})"
        details = [str(self.sidecar["preset"]), epochs_trained(self.sidecar), f"{self.sidecar['image_size']} px"]
        if headline := headline_metrics(self.sidecar):
            details.append(f"mIoU {headline[1]['mean_iou']:.3f} on {headline[0]}")
        return f"{self.name}: " + ", ".join(details)


@dataclasses.dataclass
class LoadedCheckpoint(CheckpointInfo):
    """A checkpoint with its float32 Keras model, ready for inference."""

    model: Any = None  # keras.Model


def epochs_trained(sidecar: dict) -> str:
    """How long a checkpoint trained: "best at epoch 31 of 40" (``epochs`` saved of ``epochs_done``) or "40 epochs"."""
    best, done = sidecar.get("epochs", "?"), sidecar.get("epochs_done")
    if isinstance(best, int) and isinstance(done, int) and done > best:
        return f"best at epoch {best} of {done}"
    return f"{best} epoch" if best == 1 else f"{best} epochs"


def headline_metrics(sidecar: dict) -> tuple[str, dict] | None:
    """The metrics to show for a checkpoint: a test split if it was evaluated on one, else validation."""
    metrics = sidecar.get("metrics") or {}
    for split in sorted(metrics, key=lambda key: (not key.endswith("test"), key)):
        if isinstance(metrics[split], dict) and "mean_iou" in metrics[split]:
            return split, metrics[split]
    return None


def checkpoint_path(name: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """The path of checkpoint ``name``, refusing separators, "..", absolute paths and symlinks out of the folder."""
    if not isinstance(name, str):
        raise CheckpointError(f"Refused checkpoint name {name!r}: a name is a string.")
    weights_dir = Path(weights_dir or DEFAULT_WEIGHTS_DIR).resolve()
    name = name.removesuffix(CHECKPOINT_SUFFIX)
    # fullmatch, not match: "$" alone would accept a trailing newline.
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise CheckpointError(f"Refused checkpoint name {name!r}: use letters, digits, '.', '_' and '-' only.")
    path = weights_dir / f"{name}{CHECKPOINT_SUFFIX}"
    if not _resolves_inside(path, weights_dir):
        raise CheckpointError(f"Refused checkpoint {name!r}: it points outside the weights folder "
                              "(or is a symlink loop).")
    return path


def _resolves_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (after following symlinks) lies directly in ``folder``; a symlink loop does not."""
    try:
        return path.resolve().parent == folder.resolve()
    except (OSError, RuntimeError):  # Python 3.11 raises RuntimeError for a symlink loop.
        return False


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """Read the JSON sidecar beside a checkpoint file (``x.keras`` -> ``x.json``)."""
    sidecar_path = Path(path).with_suffix(SIDECAR_SUFFIX)
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except FileNotFoundError as error:
        raise CheckpointError(f"sidecar {sidecar_path.name} is missing") from error
    except (OSError, ValueError) as error:
        raise CheckpointError(f"sidecar {sidecar_path.name} is not valid JSON") from error
    if not isinstance(sidecar, dict):
        raise CheckpointError(f"sidecar {sidecar_path.name} is not a JSON object")
    return sidecar


def check_checkpoint_file(path: Path, with_export: bool = False) -> dict[str, Any]:
    """Validate a checkpoint without building its model; return its sidecar. ``with_export``: also check that its
    export exists and that both files match the sidecar's sha256, else say what drifted."""
    if not path.is_file():
        raise CheckpointError("file not found")
    if not _resolves_inside(path.with_suffix(SIDECAR_SUFFIX), path.resolve().parent):
        raise CheckpointError("its sidecar points outside the weights folder")
    sidecar = read_sidecar(path)
    if missing := [key for key in REQUIRED_SIDECAR_KEYS if key not in sidecar]:
        raise CheckpointError(f"sidecar lacks {', '.join(missing)}")
    if list(sidecar["classes"]) != list(CLASS_NAMES):
        raise CheckpointError(f"incompatible classes {sidecar['classes']} (this app uses {list(CLASS_NAMES)})")
    if problem := _archive_problem(*_file_version(path)):
        raise CheckpointError(problem)
    if not with_export:
        return sidecar
    export_path, serving, hint = path.with_suffix(EXPORT_SUFFIX), sidecar.get("serving"), REBUILD_HINT.format(path.stem)
    if not isinstance(serving, dict) or not {"sha256", "keras_sha256"} <= serving.keys():
        raise CheckpointError(f"its sidecar records no LiteRT export; {hint}")
    if file_sha256(path) != serving["keras_sha256"]:
        raise CheckpointError(f"{path.name} changed after its LiteRT export was made (its sha256 is not the one "
                              f"in its sidecar); {hint}")
    if not export_path.is_file():
        raise CheckpointError(f"its LiteRT export {export_path.name} is missing; {hint}")
    if not _resolves_inside(export_path, path.resolve().parent):
        raise CheckpointError("its LiteRT export points outside the weights folder")
    if file_sha256(export_path) != serving["sha256"]:
        raise CheckpointError(f"corrupt export ({export_path.name} is not the file its sidecar records: replaced "
                              f"or damaged); {hint}")
    return sidecar


def _file_version(path: Path) -> tuple:
    """What changes when a file is rewritten: the key of the caches below."""
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=1024)
def _archive_problem(path: str, *version) -> str:
    """What is wrong with the archive (CRC-checked, its model description parsed) once per version of the file."""
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is not None or "config.json" not in archive.namelist():
                return "corrupt file (damaged archive)"
            # A readable archive can still hold a damaged model description; it is small, so parse it here.
            if not isinstance(json.loads(archive.read("config.json")), dict):
                return "corrupt file (config.json is not a model description)"
    except ValueError:  # JSON and Unicode decoding errors.
        return "corrupt file (config.json is not valid JSON)"
    except (zipfile.BadZipFile, OSError, EOFError):
        return "corrupt file (not a Keras archive)"
    return ""


def file_sha256(path: Path) -> str:
    """The sha256 of a file, computed once per version of it (size and mtime)."""
    return _sha256(*_file_version(path))


@functools.lru_cache(maxsize=1024)
def _sha256(path: str, *version) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def servable_entry(name: str, weights_dir: str | os.PathLike | None = None) -> CheckpointInfo:
    """Checkpoint ``name``'s entry if it can be served, else ``CheckpointError``."""
    path = checkpoint_path(name, weights_dir)
    return CheckpointInfo(path.stem, path, _check_or_raise(path, with_export=True), True)


def read_export(entry: CheckpointInfo) -> bytes:
    """The bytes of a servable entry's export, checked against the sha256 in its sidecar as they are read."""
    flatbuffer = entry.path.with_suffix(EXPORT_SUFFIX).read_bytes()
    if hashlib.sha256(flatbuffer).hexdigest() != entry.sidecar["serving"]["sha256"]:
        raise CheckpointError(f"Checkpoint {entry.name} is unavailable: corrupt export ({entry.name}{EXPORT_SUFFIX} "
                              "changed while it was read).")
    return flatbuffer


def list_checkpoints(weights_dir: str | os.PathLike | None = None) -> list[CheckpointInfo]:
    """Every ``*.keras`` in the weights folder, best test mIoU first; unservable ones last, with the reason."""
    weights_dir = Path(weights_dir or DEFAULT_WEIGHTS_DIR)
    checkpoints = []
    for path in sorted(weights_dir.glob(f"[!.]*{CHECKPOINT_SUFFIX}")):  # ".*": a write in progress.
        try:
            checkpoint_path(path.stem, weights_dir)
            checkpoints.append(CheckpointInfo(path.stem, path, check_checkpoint_file(path, with_export=True), True))
        except CheckpointError as error:
            checkpoints.append(CheckpointInfo(path.stem, path, {}, False, str(error)))

    def rank(info: CheckpointInfo) -> tuple:
        headline = headline_metrics(info.sidecar)
        return not info.available, -headline[1]["mean_iou"] if headline else 1.0, info.name

    return sorted(checkpoints, key=rank)


def default_checkpoint(weights_dir: str | os.PathLike | None = None) -> str | None:
    """The name of the best available checkpoint, or None when there is none."""
    return next((info.name for info in list_checkpoints(weights_dir) if info.available), None)


_cache: dict[tuple, LoadedCheckpoint] = {}
_cache_lock = threading.Lock()


def load_checkpoint(name: str, weights_dir: str | os.PathLike | None = None) -> LoadedCheckpoint:
    """Load checkpoint ``name`` as a float32 model, once per version of its file; ``CheckpointError`` says why not."""
    path = checkpoint_path(name, weights_dir)
    try:
        key = _file_version(path)
    except OSError:
        raise CheckpointError(f"Checkpoint {path.stem} is unavailable: file not found.") from None
    with _cache_lock:
        if key not in _cache:
            # A rewritten checkpoint (a run saving a better epoch) replaces its older versions.
            for stale in [cached for cached in _cache if cached[0] == key[0]]:
                del _cache[stale]
            sidecar = _check_or_raise(path)
            _cache[key] = LoadedCheckpoint(path.stem, path, sidecar, True, model=_load_float32_model(path, sidecar))
        return _cache[key]


def load_checkpoint_file(path: str | os.PathLike) -> LoadedCheckpoint:
    """Load a checkpoint given by file path (for CLIs); the same rules apply inside its folder."""
    return load_checkpoint(Path(path).name, Path(path).parent)


def _check_or_raise(path: Path, with_export: bool = False) -> dict:
    """``check_checkpoint_file`` with a ``CheckpointError`` that names the entry."""
    try:
        return check_checkpoint_file(path, with_export)
    except CheckpointError as error:
        raise CheckpointError(f"Checkpoint {path.stem} is unavailable: {error}.") from None


def _load_float32_model(path: Path, sidecar: dict):
    import keras

    from petseg.model import model_with_dtype

    try:
        stored = keras.saving.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a damaged or foreign file.
        raise CheckpointError(f"Checkpoint {path.stem} is unavailable: Keras could not load it "
                              f"({type(error).__name__}).") from error
    size = int(sidecar["image_size"])
    if tuple(stored.input_shape[1:]) != (size, size, 3) or stored.output_shape[-1] != len(CLASS_NAMES):
        raise CheckpointError(f"Checkpoint {path.stem} is unavailable: its model takes {stored.input_shape} and "
                              f"returns {stored.output_shape}, not what its sidecar describes.")
    return model_with_dtype(stored, "float32") if stored.weights and stored.weights[0].dtype != "float32" else stored


def write_sidecar(path: str | os.PathLike, sidecar: dict) -> None:
    atomic_write_json(Path(path).with_suffix(SIDECAR_SUFFIX), sidecar)


def save_checkpoint(model, path: str | os.PathLike, sidecar: dict) -> Path:
    """Save ``model`` at ``path`` (.keras), its export and its sidecar (see above); a torn entry fails its sha256."""
    from petseg.litert import make_export
    from petseg.model import model_with_dtype

    path, stored = Path(path), model_with_dtype(model, "float16")
    try:
        flatbuffer, serving = make_export(stored, sidecar)
    except ValueError as error:
        raise CheckpointError(f"Checkpoint {path.stem} was not saved: {error}.") from error
    with atomic_path(path, suffix=CHECKPOINT_SUFFIX) as temporary:
        stored.save(temporary)
    write_export(path, {**sidecar, "size_bytes": path.stat().st_size}, flatbuffer, serving)
    return path


def write_export(path: Path, sidecar: dict, flatbuffer: bytes, serving: dict[str, Any]) -> dict:
    """Write the export beside checkpoint ``path``, then the sidecar recording both files' sha256 (atomically)."""
    export_path = path.with_suffix(EXPORT_SUFFIX)
    atomic_write_bytes(export_path, flatbuffer)
    record = {"file": export_path.name, "sha256": hashlib.sha256(flatbuffer).hexdigest(),
              "size_bytes": len(flatbuffer), "keras_sha256": file_sha256(path), **serving}
    write_sidecar(path, sidecar := {**sidecar, "serving": record})
    return sidecar


def store_metrics(path: str | os.PathLike, split: str, metrics: dict) -> dict:
    """Merge ``metrics`` for ``split`` into the checkpoint's sidecar (atomically) and return the new sidecar."""
    sidecar = read_sidecar(path)
    sidecar.setdefault("metrics", {})[split] = metrics
    write_sidecar(path, sidecar)
    return sidecar
