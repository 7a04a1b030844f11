"""Tests for petseg.export: SavedModel and TFLite exports agree with the Keras model, and the CLI fails clearly."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from petseg import export, litert
from petseg.checkpoints import CheckpointError, load_checkpoint_file
from petseg.data import iterate_split
from petseg.resize import resize_image
from petseg.synthetic import make_synthetic_pet

SCALING_GUIDE = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint):
    return load_checkpoint_file(trained_checkpoint.checkpoint_path)


@pytest.fixture(scope="module")
def exports(checkpoint, tmp_path_factory):
    """The tiny checkpoint exported three ways, each to its default path: SavedModel, TFLite float32 and float16."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "DEFAULT_EXPORTS_DIR", tmp_path_factory.mktemp("exports"))
        return {
            "saved_model": export.export_checkpoint(checkpoint, "saved_model"),
            "float32": export.export_checkpoint(checkpoint, "tflite", "float32"),
            "float16": export.export_checkpoint(checkpoint, "tflite", "float16"),
        }


@pytest.fixture(scope="module")
def test_photos(synthetic_data, checkpoint):
    """The synthetic test split resized to the model's input, as the app resizes photos."""
    photos = [example.image for example in iterate_split(str(synthetic_data), "test")]
    return np.stack([resize_image(tf.convert_to_tensor(photo), checkpoint.image_size).numpy() for photo in photos])


# Checkpoints already hold float16 weights, so even the float16 TFLite file stays close to the Keras model.
@pytest.mark.parametrize("variant, tolerance", [("saved_model", 1e-5), ("float32", 1e-5), ("float16", 1e-3)])
def test_exported_masks_match_the_keras_model(exports, checkpoint, test_photos, variant, tolerance):
    result = exports[variant]
    run = (export.load_saved_model_function(result.path) if variant == "saved_model"
           else litert.ImagesRunner(result.path.read_bytes()))
    reference = litert.keras_probabilities(checkpoint.model, test_photos)
    probabilities = run(test_photos)
    assert probabilities.shape == reference.shape == (len(test_photos), 64, 64, 3)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-3)
    assert litert.mask_agreement(reference, probabilities) >= 0.99
    np.testing.assert_allclose(probabilities, reference, atol=tolerance)
    # The export's own check on synthetic photos ran and is recorded beside it.
    assert result.description["mask_agreement"] >= 0.99
    description = result.path / "petseg.json" if variant == "saved_model" else result.path.with_suffix(".json")
    assert json.loads(description.read_text())["mask_agreement"] == result.description["mask_agreement"]


def test_exports_describe_how_to_call_them(exports):
    description = json.loads(exports["float16"].path.with_suffix(".json").read_text())
    assert description["checkpoint"] == "tiny"
    assert description["classes"] == ["pet", "background", "border"]
    assert description["input"]["shape"] == [None, 64, 64, 3]
    assert description["quantize"] == "float16"
    saved_model = tf.saved_model.load(str(exports["saved_model"].path))
    assert "serving_default" in saved_model.signatures


def test_the_scaling_guides_tflite_snippet_runs_on_an_export(exports, tmp_path):
    """docs/scaling.md shows how to run a TFLite export by hand; it must keep working as the code changes."""
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", SCALING_GUIDE.read_text(), re.DOTALL)
                   if "Interpreter(model_path=" in block)
    photo_path = tmp_path / "cat.jpg"
    make_synthetic_pet(np.random.default_rng(4), 120, 90)[0].save(photo_path)
    snippet = snippet.replace("exports/finetune.float16.tflite", str(exports["float16"].path))
    namespace = {}
    exec(snippet.replace('"cat.jpg"', repr(str(photo_path))), namespace)
    assert namespace["mask"].shape == (90, 120) and set(np.unique(namespace["mask"])) <= {0, 1, 2}


def test_float16_halves_the_tflite_file(exports):
    float32_size = exports["float32"].path.stat().st_size
    assert exports["float16"].path.stat().st_size < 0.6 * float32_size
    assert exports["float32"].size_bytes == float32_size


def test_exports_leave_no_temporary_files(exports):
    folder = exports["float32"].path.parent
    assert sorted(path.name for path in folder.iterdir() if path.name.startswith(".")) == []


def test_replace_folder_swaps_an_older_export(tmp_path):
    new, destination = tmp_path / ".new.tmp", tmp_path / "model.saved_model"
    for folder, text in ((new, "new"), (destination, "old")):
        folder.mkdir()
        (folder / "saved_model.pb").write_text(text)
    export.replace_folder(new, destination)
    assert (destination / "saved_model.pb").read_text() == "new"
    assert [path.name for path in tmp_path.iterdir()] == ["model.saved_model"]


def test_export_refuses_to_overwrite_something_else(checkpoint, tmp_path):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(export.ExportError, match="not a SavedModel"):
        export.export_checkpoint(checkpoint, "saved_model", output=precious)
    with pytest.raises(export.ExportError, match="must end in .tflite"):
        export.export_checkpoint(checkpoint, "tflite", output=tmp_path / "model.bin")
    assert (precious / "notes.txt").read_text() == "keep me"


def test_bad_options_raise_export_error():
    with pytest.raises(export.ExportError, match="Unknown export format"):
        export.check_options("onnx", "float32")
    with pytest.raises(export.ExportError, match="Unknown quantization"):
        export.check_options("tflite", "int4")
    with pytest.raises(export.ExportError, match="float16"):
        export.check_options("saved_model", "float16")


def test_checkpoints_resolve_by_name_or_path(trained_checkpoint):
    path = trained_checkpoint.checkpoint_path
    assert export.resolve_checkpoint("tiny", path.parent).path == path
    assert export.resolve_checkpoint(str(path)).path == path
    with pytest.raises(CheckpointError):
        export.resolve_checkpoint("../tiny", path.parent)


def test_default_output_goes_into_exports(exports):
    folder = exports["saved_model"].path.parent
    assert folder.name.startswith("exports") and exports["saved_model"].path.name == "tiny.saved_model"
    assert exports["float32"].path == folder / "tiny.float32.tflite"
    assert exports["float16"].path == folder / "tiny.float16.tflite"


def test_cli_reports_an_unknown_checkpoint_with_exit_code_2(trained_checkpoint, tmp_path, capsys):
    weights_dir = str(trained_checkpoint.checkpoint_path.parent)
    code = export.main(["--checkpoint", "missing", "--weights-dir", weights_dir, "--format", "tflite",
                        "--output", str(tmp_path / "missing.tflite")])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("error: Checkpoint missing is unavailable") and "tiny" in error
    assert "Traceback" not in error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arguments, message", [
    (["--format", "onnx"], "invalid choice: 'onnx'"),
    (["--format", "tflite", "--quantize", "int8"], "invalid choice: 'int8'"),
])
def test_cli_refuses_a_bad_format_with_exit_code_2(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--checkpoint", "tiny", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_a_float16_saved_model(capsys):
    assert export.main(["--checkpoint", "tiny", "--format", "saved_model", "--quantize", "float16"]) == 2
    assert "use --format tflite" in capsys.readouterr().err


def test_cli_replaces_an_older_saved_model(trained_checkpoint, tmp_path, capsys):
    output = tmp_path / "cli.saved_model"
    output.mkdir()
    (output / "saved_model.pb").write_text("an older export")
    (output / "stale.txt").write_text("from the older export")
    code = export.main(["--checkpoint", str(trained_checkpoint.checkpoint_path), "--format", "saved_model",
                        "--output", str(output), "--no-verify"])
    assert code == 0, capsys.readouterr().err
    assert "Exported tiny as saved_model" in capsys.readouterr().out
    assert not (output / "stale.txt").exists()
    assert json.loads((output / "petseg.json").read_text())["mask_agreement"] is None
    assert export.load_saved_model_function(output)(np.zeros((1, 64, 64, 3), np.float32)).shape == (1, 64, 64, 3)
    assert [path.name for path in tmp_path.iterdir()] == ["cli.saved_model"]
