"""Tests for the request path (LiteRT) and the registry entry it serves: .keras, export and sidecar together."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from petseg import export, litert
from petseg.checkpoints import (CheckpointError, CheckpointInfo, list_checkpoints, load_checkpoint_file,
                                read_sidecar)
from petseg.resize import resize_image
from petseg.inference import Predictor, get_predictor, input_shape, predict_probabilities, resize_photo, resize_probabilities
from petseg.model import model_with_dtype
from petseg.photos import load_photo

PHOTO_SIZES = [(375, 500), (500, 375), (33, 47), (64, 64), (101, 77), (999, 13), (8, 8)]


def copy_entry(source: Path, weights_dir: Path, name: str) -> Path:
    """Copy a registry entry (.keras, .tflite, .json) into ``weights_dir`` under ``name``; return the .keras path."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".tflite", ".json"):
        shutil.copy(source.with_suffix(suffix), weights_dir / f"{name}{suffix}")
    return weights_dir / f"{name}.keras"


def any_size_model(checkpoint):
    """The checkpoint's U-Net open to any input size, as its export is made."""
    return model_with_dtype(checkpoint.model, "float32", any_size=True)


def reference(probabilities_of, image_size: int, photo: np.ndarray) -> np.ndarray:
    """What the request path must compute, with TensorFlow around ``probabilities_of`` (an export's interpreter, or the
    Keras model): resize in at the photo's aspect ratio, probabilities, a 3x3 binomial blur with the edges repeated,
    resize back."""
    rows, columns = input_shape(*photo.shape[:2], image_size, any_size=True)
    model_input = resize_image(tf.convert_to_tensor(photo), (rows, columns)).numpy()[np.newaxis]
    probabilities = probabilities_of(model_input)
    binomial = np.outer([1, 2, 1], [1, 2, 1]).astype(np.float32) / 16
    padded = tf.pad(probabilities, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")  # Repeats the edge pixels.
    smoothed = tf.nn.depthwise_conv2d(padded, np.tile(binomial[:, :, None, None], (1, 1, 3, 1)), [1, 1, 1, 1], "VALID")
    return tf.image.resize(smoothed, photo.shape[:2], method="bilinear", antialias=True).numpy()[0]


def export_of(checkpoint) -> litert.ImagesRunner:
    """The checkpoint's own LiteRT export as a function (an int8 decoder or floats: ``make_export`` decides)."""
    return litert.ImagesRunner(checkpoint.path.with_suffix(".tflite").read_bytes())


def keras_of(checkpoint):
    """The checkpoint's Keras model, open to any input size, as a function of float images."""
    return lambda images: litert.keras_probabilities(any_size_model(checkpoint), images)


@pytest.fixture()
def entry(trained_checkpoint, tmp_path) -> Path:
    return copy_entry(trained_checkpoint.checkpoint_path, tmp_path / "weights", "tiny")


def listed(weights_dir: Path) -> dict:
    return {info.name: info for info in list_checkpoints(weights_dir)}


@pytest.mark.parametrize("rows, columns", [(64, 64), (64, 96)])
@pytest.mark.parametrize("height, width", PHOTO_SIZES)
def test_pillow_resizes_equal_tensorflows_antialiased_bilinear(height, width, rows, columns):
    rng = np.random.default_rng(height * width)
    photo = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    expected = resize_image(tf.convert_to_tensor(photo), (rows, columns)).numpy()
    np.testing.assert_allclose(resize_photo(photo, rows, columns), expected, atol=1e-5)
    probabilities = rng.dirichlet(np.ones(3), size=(rows, columns)).astype(np.float32)
    expected = tf.image.resize(probabilities, (height, width), antialias=True).numpy()
    np.testing.assert_allclose(resize_probabilities(probabilities, height, width), expected, atol=1e-4)


def test_request_path_equals_tensorflow_around_its_export_on_photos_of_several_sizes(trained_checkpoint):
    # How closely the export follows the Keras model is its own check (parity, recorded in the sidecar).
    checkpoint = load_checkpoint_file(trained_checkpoint.checkpoint_path)
    export = export_of(checkpoint)
    rng = np.random.default_rng(3)
    for height, width in PHOTO_SIZES:
        photo = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        probabilities = predict_probabilities(photo, checkpoint)
        assert probabilities.shape == (height, width, 3) and probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities, reference(export, checkpoint.image_size, photo), atol=1e-4)


def test_grayscale_uploads_are_made_rgb_before_the_request_path(trained_checkpoint):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (45, 70), dtype=np.uint8), "L").save(buffer, "PNG")
    photo = load_photo(buffer.getvalue())
    assert photo.shape == (45, 70, 3) and photo.dtype == np.uint8
    checkpoint = load_checkpoint_file(trained_checkpoint.checkpoint_path)
    np.testing.assert_allclose(predict_probabilities(photo, checkpoint),
                               reference(export_of(checkpoint), checkpoint.image_size, photo), atol=1e-4)
    with pytest.raises(ValueError, match="expected an RGB uint8 photo"):
        predict_probabilities(photo[..., 0], checkpoint)


def test_one_interpreter_takes_each_photo_at_its_aspect_ratio_without_converting(entry, monkeypatch):
    predictor = get_predictor("tiny", entry.parent)
    assert predictor.any_size  # A U-Net's export takes any input size.

    def refuse(*args, **kwargs):
        raise AssertionError("the request path converted the model")

    allocations = []
    allocate = predictor.interpreter.allocate_tensors
    monkeypatch.setattr(litert, "convert_to_tflite", refuse)
    monkeypatch.setattr(predictor.interpreter, "allocate_tensors", lambda: allocations.append(1) or allocate())
    rng = np.random.default_rng(5)
    shapes = []
    for height, width in [*PHOTO_SIZES, *PHOTO_SIZES]:
        predict_probabilities(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "tiny", entry.parent)
        assert get_predictor("tiny", entry.parent) is predictor
        shapes.append(tuple(predictor.interpreter.get_input_details()[0]["shape"]))
    # Shorter side at the model's 64 px, longer side in proportion to a multiple of 32, at most 3 times as long.
    assert shapes[:len(PHOTO_SIZES)] == [(1, 64, 96, 3), (1, 96, 64, 3), (1, 64, 96, 3), (1, 64, 64, 3),
                                         (1, 96, 64, 3), (1, 192, 64, 3), (1, 64, 64, 3)]
    # Tensors are reallocated only when the input shape changes from one request to the next.
    assert len(allocations) == sum(1 for before, after in zip([(1, 64, 64, 3), *shapes], shapes) if before != after)


def test_an_export_that_cannot_take_the_sidecars_size_is_refused(entry):
    # 48 px is no multiple of 32: the U-Net's skip connections cannot line up, whatever the export takes.
    sidecar = {**read_sidecar(entry), "image_size": 48}
    with pytest.raises(CheckpointError, match="does not take and return \\(48, 48, 3\\)"):
        Predictor(CheckpointInfo("tiny", entry, sidecar, True), entry.with_suffix(".tflite").read_bytes())


def test_save_checkpoint_writes_one_entry_whose_sidecar_pins_both_files(trained_checkpoint):
    path = trained_checkpoint.checkpoint_path
    serving = read_sidecar(path)["serving"]
    # An int8 decoder where it keeps 99% of mask pixels, which this 1-epoch model's near-even probabilities may not;
    # else floats: the tutorial preset's 6.5M weights would make a 26 MB float32 export, over the limit, so float16.
    assert serving["file"] == "tiny.tflite" and serving["quantize"] in ("int8_decoder", "float16")
    assert serving["sha256"] == hashlib.sha256(path.with_suffix(".tflite").read_bytes()).hexdigest()
    assert serving["keras_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert serving["mask_agreement"] >= 0.99 and serving["max_probability_difference"] < 2e-3
    assert not [item.name for item in path.parent.iterdir() if item.name.startswith(".")]  # No temporary files.


def test_a_unet_whose_masks_survive_is_served_with_its_decoder_in_int8_and_the_rest_in_float(trained_checkpoint,
                                                                                              monkeypatch):
    checkpoint = load_checkpoint_file(trained_checkpoint.checkpoint_path)
    monkeypatch.setattr(litert, "MIN_AGREEMENT", 0.9)  # The 1-epoch model's masks flip on 1-2% of pixels (above).
    flatbuffer, serving = litert.make_export(checkpoint.model, checkpoint.sidecar)
    assert serving["quantize"] == "int8_decoder" and serving["mask_agreement"] >= 0.9
    interpreter = Interpreter(model_content=flatbuffer)
    dtypes = {detail["index"]: detail["dtype"] for detail in interpreter.get_tensor_details()}
    names = {detail["index"]: detail["name"] for detail in interpreter.get_tensor_details()}
    # What each operation outputs: int8 in the decoder, float32 everywhere else (encoder, input scaling, softmax);
    # the QUANTIZE operations in between feed the decoder.
    computes = {}
    for operation in interpreter._get_ops_details():
        name, output = names[operation["outputs"][0]], dtypes[operation["outputs"][0]]
        if operation["op_name"] != "QUANTIZE":
            part = "decoder" if any(part in name for part in litert.DECODER_LAYERS) else "rest"
            computes.setdefault(part, set()).add(np.dtype(output).name)
    assert computes == {"decoder": {"int8"}, "rest": {"float32"}}, computes
    # Float images in, float probabilities out, close to the Keras model's at any size.
    images = litert.synthetic_images(3, (64, 128))
    probabilities = litert.ImagesRunner(flatbuffer)(images)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, keras_of(checkpoint)(images), atol=0.02)


def test_a_unet_whose_masks_an_int8_decoder_would_change_is_served_in_floats(trained_checkpoint, monkeypatch):
    checkpoint = load_checkpoint_file(trained_checkpoint.checkpoint_path)
    tried, convert, parity = [], litert.convert_to_tflite, litert.parity

    def converted(model, quantize, image_size):
        tried.append(quantize)
        return convert(model, quantize, image_size)

    def int8_refused(model, flatbuffer, image_size):
        if tried[-1] == "int8_decoder":
            raise ValueError("its export agrees with the Keras model on only 90.00% of mask pixels")
        return parity(model, flatbuffer, image_size)

    monkeypatch.setattr(litert, "convert_to_tflite", converted)
    monkeypatch.setattr(litert, "parity", int8_refused)
    flatbuffer, serving = litert.make_export(checkpoint.model, checkpoint.sidecar)
    assert tried == ["int8_decoder", "float16"] and serving["quantize"] == "float16"
    assert serving["mask_agreement"] >= 0.99
    dtypes = {np.dtype(detail["dtype"]).name for detail in Interpreter(model_content=flatbuffer).get_tensor_details()}
    assert "int8" not in dtypes and "float16" in dtypes


def test_an_edited_keras_file_is_refused_until_its_export_is_rebuilt(entry, capsys):
    photo = np.random.default_rng(6).integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    before = predict_probabilities(photo, "tiny", entry.parent)
    model = keras.saving.load_model(entry, compile=False)
    model.set_weights([weight * 0.5 for weight in model.get_weights()])
    model.save(entry)  # Behind the registry's back: the export no longer matches.

    info = listed(entry.parent)["tiny"]
    assert not info.available and "tiny.keras changed after its LiteRT export was made" in info.reason
    assert "--format serving" in info.reason
    with pytest.raises(CheckpointError, match="Checkpoint tiny is unavailable: tiny.keras changed"):
        predict_probabilities(photo, "tiny", entry.parent)  # Even though its old interpreter is cached.

    assert export.main(["--checkpoint", str(entry), "--format", "serving"]) == 0, capsys.readouterr().err
    assert "input (batch, height, width, 3) in multiples of 32" in capsys.readouterr().out
    assert listed(entry.parent)["tiny"].available
    after = predict_probabilities(photo, "tiny", entry.parent)
    checkpoint = load_checkpoint_file(entry)
    np.testing.assert_allclose(after, reference(export_of(checkpoint), 64, photo), atol=1e-4)
    np.testing.assert_allclose(after, reference(keras_of(checkpoint), 64, photo), atol=0.02)  # Any precision.
    assert not np.allclose(after, before, atol=1e-3)


def test_a_deleted_export_is_refused_with_the_reason(entry):
    get_predictor("tiny", entry.parent)
    entry.with_suffix(".tflite").unlink()
    info = listed(entry.parent)["tiny"]
    assert not info.available and info.reason.startswith("its LiteRT export tiny.tflite is missing")
    with pytest.raises(CheckpointError, match="tiny.tflite is missing"):
        get_predictor("tiny", entry.parent)


def test_a_sidecar_without_an_export_record_is_refused(entry):
    sidecar = read_sidecar(entry)
    del sidecar["serving"]
    entry.with_suffix(".json").write_text(json.dumps(sidecar))
    info = listed(entry.parent)["tiny"]
    assert not info.available and "records no LiteRT export" in info.reason
    assert load_checkpoint_file(entry).model is not None  # The Keras model itself still loads (for a rebuild).


@pytest.mark.parametrize("kind", ["truncated", "flipped-bytes", "zero-bytes"])
def test_a_corrupt_export_is_unavailable_like_a_corrupt_checkpoint(entry, kind):
    export_path = entry.with_suffix(".tflite")
    data = export_path.read_bytes()
    middle = len(data) // 2
    damaged = {"truncated": data[:middle], "zero-bytes": b"",
               "flipped-bytes": data[:middle] + bytes(value ^ 0xFF for value in data[middle:middle + 64])
               + data[middle + 64:]}[kind]
    export_path.write_bytes(damaged)
    info = listed(entry.parent)["tiny"]
    assert not info.available and info.reason.startswith("corrupt export (tiny.tflite is not the file")
    assert "unavailable" in info.describe()
    with pytest.raises(CheckpointError, match="Checkpoint tiny is unavailable: corrupt export"):
        get_predictor("tiny", entry.parent)


def test_an_export_litert_cannot_load_is_refused_even_with_a_matching_sha256(entry):
    garbage = b"TFL3" + bytes(range(256)) * 8
    entry.with_suffix(".tflite").write_bytes(garbage)
    sidecar = read_sidecar(entry)
    sidecar["serving"]["sha256"] = hashlib.sha256(garbage).hexdigest()
    entry.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="Checkpoint tiny is unavailable: corrupt export \\(LiteRT could not"):
        get_predictor("tiny", entry.parent)
