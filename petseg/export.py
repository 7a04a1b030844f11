"""Export a checkpoint for serving outside PetSeg (a TensorFlow SavedModel or a TFLite flatbuffer), or rebuild its own.

``--format serving`` remakes the LiteRT export the app serves, beside the checkpoint in the weights folder, and
records it in the sidecar (``petseg.checkpoints``; needed when the entry is refused as stale or its export missing).
The other formats take a batch of float32 images in [0, 1] of the checkpoint's square size, shaped
``(batch, size, size, 3)``, and return softmax probabilities over the classes (0 pet, 1 background, 2 border),
shaped ``(batch, size, size, 3)``. Resize photos with ``petseg.resize.resize_image`` (antialiased bilinear) to get the
same pixels the app sees. Each export is written atomically (a temporary file or folder beside the destination,
then a rename) with a JSON description beside it, and is checked against the Keras model on synthetic photos before
it is renamed into place.

Usage:
    python -m petseg.export --checkpoint finetune --format saved_model
    python -m petseg.export --checkpoint weights/finetune.keras --format tflite --quantize float16
    python -m petseg.export --checkpoint finetune --format tflite --output /tmp/finetune.tflite
    python -m petseg.export --checkpoint finetune --format serving

>>> result = export_checkpoint("finetune", "tflite", quantize="float16")  # doctest: +SKIP
>>> result.path.name, result.mask_agreement > 0.99  # doctest: +SKIP
('finetune.float16.tflite', True)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import petseg
from petseg.atomic import atomic_write_bytes
from petseg.checkpoints import (EXPORT_SUFFIX, CheckpointError, LoadedCheckpoint, headline_metrics, load_checkpoint,
                                load_checkpoint_file, write_export)
from petseg.classes import CLASS_NAMES
from petseg.litert import (CHECK_PHOTOS, INPUT_NAME, QUANTIZATIONS, ImagesFunction, check_images, convert_to_tflite,
                           images_function, keras_probabilities, make_export, takes_any_size)

FORMATS = ("saved_model", "tflite", "serving")
DEFAULT_EXPORTS_DIR = Path(os.environ.get("PETSEG_EXPORTS_DIR", Path(__file__).resolve().parent.parent / "exports"))
# The SavedModel folder keeps its description inside, so the folder stays one self-contained unit.
SAVED_MODEL_DESCRIPTION = "petseg.json"
ENDPOINT_NAME = "serve"



class ExportError(ValueError):
    """An export cannot be made as asked (bad format, bad destination, or a failed check); the message says why."""


@dataclasses.dataclass
class ExportResult:
    """Where an export went and what it holds."""

    path: Path
    export_format: str
    quantize: str
    input_shape: str
    size_bytes: int
    mask_agreement: float | None
    seconds: float
    description: dict[str, Any]


# ---------------------------------------------------------------------------------------------------------------
# Finding the checkpoint and the destination.


def resolve_checkpoint(name_or_path: str | os.PathLike, weights_dir: str | os.PathLike | None = None
                       ) -> LoadedCheckpoint:
    """Load a checkpoint given by name (from the weights folder) or by a path to its ``.keras`` file.

    A value with a path separator is a path; anything else is a name. Both go through the registry's guards, so a
    refused name, a symlink out of its folder, or a corrupt file raises ``CheckpointError``.
    """
    text = os.fspath(name_or_path)
    if os.sep in text or (os.altsep and os.altsep in text):
        return load_checkpoint_file(text)
    return load_checkpoint(text, weights_dir)


def default_output_path(checkpoint_name: str, export_format: str, quantize: str = "float32",
                        exports_dir: str | os.PathLike | None = None) -> Path:
    """``exports/<name>.saved_model`` or ``exports/<name>.<quantize>.tflite``."""
    exports_dir = Path(exports_dir or DEFAULT_EXPORTS_DIR)
    if export_format == "saved_model":
        return exports_dir / f"{checkpoint_name}.saved_model"
    return exports_dir / f"{checkpoint_name}.{quantize}.tflite"


def description_path(export_path: str | os.PathLike) -> Path:
    """Where an export's JSON description lives: inside a SavedModel folder, beside a ``.tflite`` file."""
    export_path = Path(export_path)
    if export_path.is_dir():
        return export_path / SAVED_MODEL_DESCRIPTION
    return export_path.with_suffix(".json")


def check_options(export_format: str, quantize: str) -> None:
    """Raise ``ExportError`` for an unknown format or quantization, or a combination this exporter cannot make."""
    if export_format not in FORMATS:
        raise ExportError(f"Unknown export format {export_format!r}; choose one of: {', '.join(FORMATS)}.")
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"Unknown quantization {quantize!r}; choose one of: {', '.join(QUANTIZATIONS)}.")
    if export_format != "tflite" and quantize != "float32":
        raise ExportError(f"A {export_format} export's precision is fixed; use --format tflite for float16 "
                          "quantization.")


# ---------------------------------------------------------------------------------------------------------------
# Writing and running a SavedModel; ``petseg.litert`` converts and runs TFLite flatbuffers.


def write_saved_model(model, directory: str | os.PathLike) -> None:
    """Write a SavedModel with one ``serve`` endpoint (also its ``serving_default`` signature) into ``directory``;
    its input takes the model's own input shape."""
    import keras
    import tensorflow as tf

    # No archive.track(model): add_endpoint tracks the variables the endpoint uses, and tracking the model as
    # well stores every weight twice (Keras 3.15).
    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        name=ENDPOINT_NAME,
        fn=lambda images: tf.nn.softmax(model(images, training=False), axis=-1),
        input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(os.fspath(directory), verbose=False)


def load_saved_model_function(directory: str | os.PathLike) -> ImagesFunction:
    """Load an exported SavedModel; return a function from float images (batch, size, size, 3) to probabilities."""
    import tensorflow as tf

    loaded = tf.saved_model.load(os.fspath(directory))

    def run(images: np.ndarray) -> np.ndarray:
        # The loaded object owns the variables; the closure keeps it alive.
        return getattr(loaded, ENDPOINT_NAME)(tf.convert_to_tensor(np.asarray(images, np.float32))).numpy()

    return run


def mask_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The fraction of pixels whose most likely class is the same in two probability arrays of equal shape.

    >>> mask_agreement(np.eye(3)[[0, 1, 2, 2]], np.eye(3)[[0, 1, 2, 1]])
    0.75
    """
    if reference.shape != candidate.shape:
        raise ExportError(f"Exported model returns shape {candidate.shape}, expected {reference.shape}.")
    return float(np.mean(reference.argmax(axis=-1) == candidate.argmax(axis=-1)))


# ---------------------------------------------------------------------------------------------------------------
# The export itself.


def export_checkpoint(checkpoint: str | os.PathLike | LoadedCheckpoint, export_format: str,
                      quantize: str = "float32", output: str | os.PathLike | None = None,
                      weights_dir: str | os.PathLike | None = None, verify: bool = True,
                      min_agreement: float = 0.99) -> ExportResult:
    """Export ``checkpoint`` as a SavedModel folder or a TFLite file and return where it went.

    Args:
        checkpoint: A checkpoint name in the weights folder, a path to a ``.keras`` file, or a loaded checkpoint.
        export_format: "saved_model" or "tflite".
        quantize: "float32", or "float16" (TFLite only) for half-size weights.
        output: Destination path (default: ``exports/<name>.saved_model`` or ``exports/<name>.<quantize>.tflite``).
            An existing export there is replaced; anything else there is left alone and refused.
        weights_dir: Where checkpoint names are looked up (default: ``weights/``).
        verify: Compare masks of the export and the Keras model on synthetic photos before publishing it.
        min_agreement: The least fraction of agreeing mask pixels the check accepts.

    Raises:
        ExportError: Bad options or destination, or the check failed. ``CheckpointError`` for a bad checkpoint.

    >>> export_checkpoint("tiny", "saved_model", output="/tmp/tiny.saved_model")  # doctest: +SKIP
    """
    check_options(export_format, quantize)
    if not isinstance(checkpoint, LoadedCheckpoint):
        checkpoint = resolve_checkpoint(checkpoint, weights_dir)
    if export_format == "serving":
        return rebuild_serving_export(checkpoint, output)
    path = Path(output) if output is not None else default_output_path(checkpoint.name, export_format, quantize)
    check_destination(path, export_format)
    started = time.perf_counter()
    input_shape = f"(batch, {checkpoint.image_size}, {checkpoint.image_size}, 3)"
    description = describe_export(checkpoint, export_format, quantize)
    path.parent.mkdir(parents=True, exist_ok=True)

    if export_format == "tflite":
        flatbuffer = convert_to_tflite(checkpoint.model, quantize)
        agreement = verify_export(checkpoint, images_function(flatbuffer), min_agreement) if verify else None
        description.update(mask_agreement=agreement, size_bytes=len(flatbuffer))
        atomic_write_bytes(path, flatbuffer)
        atomic_write_bytes(description_path(path), (json.dumps(description, indent=2) + "\n").encode())
        make_shareable(path)
        make_shareable(description_path(path))
    else:
        temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            write_saved_model(checkpoint.model, temporary)
            agreement = (verify_export(checkpoint, load_saved_model_function(temporary), min_agreement)
                         if verify else None)
            description.update(mask_agreement=agreement, size_bytes=folder_size(temporary))
            (temporary / SAVED_MODEL_DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
            make_shareable(temporary)
            replace_folder(temporary, path)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    size_bytes = folder_size(path) if path.is_dir() else path.stat().st_size
    return ExportResult(path, export_format, quantize, input_shape, size_bytes, agreement,
                        round(time.perf_counter() - started, 1), description)


def rebuild_serving_export(checkpoint: LoadedCheckpoint, output: str | os.PathLike | None = None) -> ExportResult:
    """Remake the checkpoint's own LiteRT export beside it and record it in its sidecar (always checked)."""
    if output is not None:
        raise ExportError("A serving export always goes beside its checkpoint; leave out --output.")
    started = time.perf_counter()
    try:
        flatbuffer, serving = make_export(checkpoint.model, checkpoint.sidecar)
    except ValueError as error:
        raise ExportError(f"{str(error)[0].upper()}{str(error)[1:]}; nothing was written.") from error
    sidecar = write_export(checkpoint.path, checkpoint.sidecar, flatbuffer, serving)
    return ExportResult(checkpoint.path.with_suffix(EXPORT_SUFFIX), "serving", serving["quantize"],
                        serving_input_shape(checkpoint.sidecar), len(flatbuffer), serving["mask_agreement"],
                        round(time.perf_counter() - started, 1), sidecar["serving"])


def serving_input_shape(sidecar: dict) -> str:
    """The input a checkpoint's serving export takes, in words."""
    size = int(sidecar["image_size"])
    if takes_any_size(sidecar):
        return f"(batch, height, width, 3) in multiples of 32 (shorter side {size} in the app)"
    return f"(batch, {size}, {size}, 3)"


def verify_export(checkpoint: LoadedCheckpoint, exported: ImagesFunction, min_agreement: float = 0.99) -> float:
    """Return the mask agreement of ``exported`` with the Keras model; raise ``ExportError`` below the minimum."""
    images = check_images(checkpoint.image_size)
    agreement = mask_agreement(keras_probabilities(checkpoint.model, images), exported(images))
    if agreement < min_agreement:
        raise ExportError(f"The export's masks agree with the Keras model's on only {agreement:.2%} of pixels "
                          f"(at least {min_agreement:.0%} expected); nothing was written.")
    return agreement


def describe_export(checkpoint: LoadedCheckpoint, export_format: str, quantize: str) -> dict[str, Any]:
    """The JSON written beside an export: where it came from and how to call it."""
    import tensorflow as tf

    size = checkpoint.image_size
    headline = headline_metrics(checkpoint.sidecar)
    return {
        "checkpoint": checkpoint.name,
        "preset": checkpoint.sidecar.get("preset"),
        "format": export_format,
        "quantize": quantize,
        "image_size": size,
        "classes": list(CLASS_NAMES),
        "input": {"name": INPUT_NAME, "shape": [None, size, size, 3], "dtype": "float32", "range": [0.0, 1.0],
                  "resize": "bilinear with antialiasing (petseg.resize.resize_image)"},
        "output": {"shape": [None, size, size, len(CLASS_NAMES)], "dtype": "float32",
                   "meaning": "softmax probabilities per pixel over classes"},
        "endpoint": ENDPOINT_NAME if export_format == "saved_model" else None,
        "checkpoint_metrics": {headline[0]: headline[1]} if headline else {},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "petseg_version": petseg.__version__,
        "tensorflow_version": tf.__version__,
    }


def check_destination(path: Path, export_format: str) -> None:
    """Refuse a destination that holds something other than an export of the same format."""
    if export_format == "tflite":
        if path.is_dir():
            raise ExportError(f"{path} is a folder; give a file path for a TFLite export.")
        if path.suffix != ".tflite":
            raise ExportError(f"A TFLite export's file name must end in .tflite, got {path.name}.")
        return
    if path.exists() and not (path.is_dir() and (path / "saved_model.pb").is_file()):
        raise ExportError(f"{path} exists and is not a SavedModel export; choose another --output.")


def replace_folder(source: Path, destination: Path) -> None:
    """Move folder ``source`` to ``destination``, replacing an older export there.

    A folder cannot be swapped in one rename, so the old one is renamed aside first and removed last: a reader
    sees the old export, briefly nothing, or the new export, never a mix of the two.
    """
    aside = None
    if destination.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old.", suffix=".tmp", dir=destination.parent))
        os.replace(destination, aside / destination.name)
    os.replace(source, destination)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def make_shareable(path: Path) -> None:
    """Give a file or folder the permissions the umask allows; temporary files start private (0600 / 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def folder_size(folder: Path) -> int:
    """Total bytes of the files under ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


# ---------------------------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m petseg.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a name in the weights folder, or a path to a .keras file")
    parser.add_argument("--format", required=True, choices=FORMATS, dest="export_format")
    parser.add_argument("--quantize", default="float32", choices=QUANTIZATIONS,
                        help="weight precision; float16 halves a TFLite file (default: float32)")
    parser.add_argument("--output", help="destination (default: exports/<name>.saved_model or "
                                         "exports/<name>.<quantize>.tflite)")
    parser.add_argument("--weights-dir", help="where checkpoint names are looked up (default: weights/)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip comparing the export's masks with the Keras model's on synthetic photos")
    return parser.parse_args(argv)


def describe_available(name_or_path: str, weights_dir: str | None) -> str:
    """For an unknown checkpoint name, the names that do exist (" Available: a, b."), else ""."""
    from petseg.checkpoints import list_checkpoints

    if os.sep in name_or_path:
        return ""
    names = [info.name for info in list_checkpoints(weights_dir) if info.available]
    return f" Available in the weights folder: {', '.join(names)}." if names else " The weights folder has none."


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_options(args.export_format, args.quantize)
        result = export_checkpoint(args.checkpoint, args.export_format, args.quantize, args.output,
                                   args.weights_dir, verify=not args.no_verify)
    except CheckpointError as error:
        print(f"error: {error}{describe_available(args.checkpoint, args.weights_dir)}", file=sys.stderr)
        return 2
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: could not write the export: {error}", file=sys.stderr)
        return 2
    agreement = "not checked" if result.mask_agreement is None else (
        f"masks agree with the Keras model on {result.mask_agreement:.2%} of pixels ({CHECK_PHOTOS} synthetic photos)")
    name = result.description.get("checkpoint", result.path.stem)
    print(f"Exported {name} as {result.export_format} ({result.quantize}) to {result.path}: "
          f"{result.size_bytes / 1e6:.1f} MB, input {result.input_shape} float [0, 1]; {agreement}; "
          f"{result.seconds} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
