"""Export a checkpoint for serving outside PetSeg (a TensorFlow SavedModel or a TFLite flatbuffer), or rebuild its own.

``--format serving`` remakes the LiteRT export the app serves beside the checkpoint, recorded in its sidecar. The
other formats take float32 images in [0, 1], ``(batch, size, size, 3)`` (``petseg.resize.resize_image``), and return
softmax probabilities over the classes; each is checked against the Keras model on synthetic photos, then written
atomically with a JSON description beside it.

Usage:
    python -m petseg.export --checkpoint finetune --format saved_model
    python -m petseg.export --checkpoint weights/finetune.keras --format tflite --quantize float16
    python -m petseg.export --checkpoint student --format tflite --quantize int8_decoder
    python -m petseg.export --checkpoint finetune --format tflite --output /tmp/finetune.tflite
    python -m petseg.export --checkpoint finetune --format serving
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import petseg
from petseg.atomic import atomic_write_bytes, atomic_write_json
from petseg.checkpoints import (EXPORT_SUFFIX, CheckpointError, LoadedCheckpoint, headline_metrics, list_checkpoints,
                                load_checkpoint, load_checkpoint_file, write_export)
from petseg.classes import CLASS_NAMES
from petseg.litert import (CHECK_PHOTOS, INPUT_NAME, QUANTIZATIONS, ImagesFunction, convert_to_tflite, make_export,
                           parity, takes_any_size)
from petseg.runs import now_iso

FORMATS = ("saved_model", "tflite", "serving")
DEFAULT_EXPORTS_DIR = Path(os.environ.get("PETSEG_EXPORTS_DIR", Path(__file__).resolve().parent.parent / "exports"))
SAVED_MODEL_DESCRIPTION = "petseg.json"  # Inside the SavedModel folder, so the folder stays self-contained.
ENDPOINT_NAME = "serve"


class ExportError(ValueError):
    """An export cannot be made as asked (bad format, bad destination, or a failed check); the message says why."""


@dataclasses.dataclass
class ExportResult:
    """Where an export went and what it holds (``description``: what is written beside it, its mask agreement too)."""

    path: Path
    input_shape: str
    size_bytes: int
    seconds: float
    description: dict[str, Any]


def resolve_checkpoint(checkpoint: str | os.PathLike, weights_dir: str | os.PathLike | None = None) -> LoadedCheckpoint:
    """Load a checkpoint by path (with a path separator) or by name, through the registry's guards."""
    text = os.fspath(checkpoint)
    if os.sep in text or (os.altsep and os.altsep in text):
        return load_checkpoint_file(text)
    return load_checkpoint(text, weights_dir)


def check_options(export_format: str, quantize: str) -> None:
    """Raise ``ExportError`` for an unknown format or quantization, or a combination that cannot be made."""
    if export_format not in FORMATS:
        raise ExportError(f"Unknown export format {export_format!r}; choose one of: {', '.join(FORMATS)}.")
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"Unknown quantization {quantize!r}; choose one of: {', '.join(QUANTIZATIONS)}.")
    if export_format != "tflite" and quantize != "float32":
        raise ExportError(f"A {export_format} export's precision is fixed; use --format tflite for float16 or "
                          "int8_decoder.")


def write_saved_model(model, directory: str | os.PathLike) -> None:
    """Write a SavedModel with one ``serve`` endpoint (also ``serving_default``) taking the model's input shape."""
    import keras
    import tensorflow as tf

    # No archive.track(model): the endpoint tracks its variables, and tracking the model too stores them twice.
    archive = keras.export.ExportArchive()
    archive.add_endpoint(ENDPOINT_NAME, lambda images: tf.nn.softmax(model(images, training=False), axis=-1),
                         [tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=INPUT_NAME)])
    archive.write_out(os.fspath(directory), verbose=False)


def load_saved_model_function(directory: str | os.PathLike) -> ImagesFunction:
    """Load an exported SavedModel as a function from float images (batch, size, size, 3) to probabilities."""
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(os.fspath(directory))  # The closure keeps it, and its variables, alive.
    return lambda images: getattr(loaded, ENDPOINT_NAME)(tf.convert_to_tensor(np.asarray(images, np.float32))).numpy()


def export_checkpoint(checkpoint: str | os.PathLike | LoadedCheckpoint, export_format: str,
                      quantize: str = "float32", output: str | os.PathLike | None = None,
                      weights_dir: str | os.PathLike | None = None, verify: bool = True) -> ExportResult:
    """Export ``checkpoint`` (a name, a ``.keras`` path or a loaded checkpoint) to ``output`` (default: in exports/;
    an older export there is replaced, anything else refused), checked first if ``verify``; ``serving`` remakes its
    own export beside it, recorded in its sidecar (always checked). ``ExportError`` for bad options, a bad destination
    or a failed check, ``CheckpointError`` for a bad checkpoint."""
    check_options(export_format, quantize)
    if export_format == "serving" and output is not None:
        raise ExportError("A serving export always goes beside its checkpoint; leave out --output.")
    if not isinstance(checkpoint, LoadedCheckpoint):
        checkpoint = resolve_checkpoint(checkpoint, weights_dir)
    started, size = time.perf_counter(), checkpoint.image_size
    if export_format == "serving":
        flatbuffer, serving = checked(make_export, checkpoint.model, checkpoint.sidecar)
        sidecar = write_export(checkpoint.path, checkpoint.sidecar, flatbuffer, serving)
        shape = (f"(batch, height, width, 3) in multiples of 32 (shorter side {size} in the app)"
                 if takes_any_size(checkpoint.sidecar) else f"(batch, {size}, {size}, 3)")
        return ExportResult(checkpoint.path.with_suffix(EXPORT_SUFFIX), shape, len(flatbuffer),
                            round(time.perf_counter() - started, 1), sidecar["serving"])
    suffix = "saved_model" if export_format == "saved_model" else f"{quantize}.tflite"
    path = Path(output) if output is not None else DEFAULT_EXPORTS_DIR / f"{checkpoint.name}.{suffix}"
    if export_format == "tflite" and path.is_dir():
        raise ExportError(f"{path} is a folder; give a file path for a TFLite export.")
    if export_format == "tflite" and path.suffix != ".tflite":
        raise ExportError(f"A TFLite export's file name must end in .tflite, got {path.name}.")
    if export_format == "saved_model" and path.exists() and not (path / "saved_model.pb").is_file():
        raise ExportError(f"{path} exists and is not a SavedModel export; choose another --output.")
    description = describe_export(checkpoint, export_format, quantize)
    path.parent.mkdir(parents=True, exist_ok=True)
    if export_format == "tflite":
        from petseg.model import model_with_dtype

        flatbuffer = checked(convert_to_tflite, model_with_dtype(checkpoint.model, "float32", subpixel=True), quantize)
        agreement = checked(parity, checkpoint.model, flatbuffer, size) if verify else {}
        description.update(mask_agreement=agreement.get("mask_agreement"), size_bytes=len(flatbuffer))
        atomic_write_bytes(path, flatbuffer)
        atomic_write_json(path.with_suffix(".json"), description)
    else:
        temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            write_saved_model(checkpoint.model, temporary)
            agreement = checked(parity, checkpoint.model, load_saved_model_function(temporary), size) if verify else {}
            description.update(mask_agreement=agreement.get("mask_agreement"), size_bytes=folder_size(temporary))
            atomic_write_json(temporary / SAVED_MODEL_DESCRIPTION, description)
            temporary.chmod(0o755)  # mkdtemp makes it private; exports are for everyone to read.
            replace_folder(temporary, path)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    size_bytes = folder_size(path) if path.is_dir() else path.stat().st_size
    return ExportResult(path, f"(batch, {size}, {size}, 3)", size_bytes, round(time.perf_counter() - started, 1),
                        description)


def checked(check, *args):
    """``check(*args)`` (a parity check), its ``ValueError`` raised as an ``ExportError``: nothing was written."""
    try:
        return check(*args)
    except ValueError as error:
        raise ExportError(f"{str(error)[0].upper()}{str(error)[1:]}; nothing was written.") from error


def describe_export(checkpoint: LoadedCheckpoint, export_format: str, quantize: str) -> dict[str, Any]:
    """The JSON written beside an export: where it came from and how to call it."""
    import tensorflow as tf

    size = checkpoint.image_size
    headline = headline_metrics(checkpoint.sidecar)
    return {"checkpoint": checkpoint.name, "preset": checkpoint.sidecar.get("preset"), "format": export_format,
            "quantize": quantize, "image_size": size, "classes": list(CLASS_NAMES),
            "input": {"name": INPUT_NAME, "shape": [None, size, size, 3], "dtype": "float32", "range": [0.0, 1.0],
                      "resize": "bilinear with antialiasing (petseg.resize.resize_image)"},
            "output": {"shape": [None, size, size, len(CLASS_NAMES)], "dtype": "float32",
                       "meaning": "softmax probabilities per pixel over classes"},
            "endpoint": ENDPOINT_NAME if export_format == "saved_model" else None,
            "checkpoint_metrics": {headline[0]: headline[1]} if headline else {},
            "created": now_iso(), "petseg_version": petseg.__version__, "tensorflow_version": tf.__version__}


def replace_folder(source: Path, destination: Path) -> None:
    """Move folder ``source`` to ``destination``, an older export there renamed aside first and removed last: a
    reader sees the old export, briefly nothing, or the new one, never a mix."""
    aside = None
    if destination.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{destination.name}.old.", suffix=".tmp", dir=destination.parent))
        os.replace(destination, aside / destination.name)
    os.replace(source, destination)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def folder_size(folder: Path) -> int:
    """The bytes of every file under ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m petseg.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a name in the weights folder, or a path to a .keras file")
    parser.add_argument("--format", required=True, choices=FORMATS, dest="export_format")
    parser.add_argument("--quantize", default="float32", choices=QUANTIZATIONS,
                        help="precision: float16 weights halve a TFLite file; int8_decoder (a U-Net's decoder in int8, "
                             "its encoder in float32) is what the app serves (default: float32)")
    parser.add_argument("--output", help="destination (default: exports/<name>.saved_model or "
                                         "exports/<name>.<quantize>.tflite)")
    parser.add_argument("--weights-dir", help="where checkpoint names are looked up (default: weights/)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip comparing the export's masks with the Keras model's on synthetic photos")
    args = parser.parse_args(argv)
    try:
        result = export_checkpoint(args.checkpoint, args.export_format, args.quantize, args.output,
                                   args.weights_dir, verify=not args.no_verify)
    except CheckpointError as error:
        names = [info.name for info in list_checkpoints(args.weights_dir) if info.available]
        available = ("" if os.sep in args.checkpoint else f" Available in the weights folder: {', '.join(names)}."
                     if names else " The weights folder has none.")
        print(f"error: {error}{available}", file=sys.stderr)
        return 2
    except (ExportError, OSError) as error:
        print(f"error: {'could not write the export: ' if isinstance(error, OSError) else ''}{error}", file=sys.stderr)
        return 2
    agreement = "not checked" if (share := result.description["mask_agreement"]) is None else (
        f"masks agree with the Keras model on {share:.2%} of pixels ({CHECK_PHOTOS} synthetic photos)")
    name = result.description.get("checkpoint", result.path.stem)
    print(f"Exported {name} as {args.export_format} ({result.description['quantize']}) to {result.path}: "
          f"{result.size_bytes / 1e6:.1f} MB, input {result.input_shape} float [0, 1]; {agreement}; "
          f"{result.seconds} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
