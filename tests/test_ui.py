"""Fast tests of the app's handlers and helpers, called directly: no server, no browser."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import petseg.launcher
import petseg.segmentation
from petseg.classes import CLASS_NAMES
from petseg.launcher import (TrainingLauncher, TrainingRequest, TrainingRequestError, image_size_for, log_tail,
                             parse_request, training_allowed)
from petseg.runs import RunWriter, read_run
from petseg.segmentation import OutputFolder, safe_stem
from petseg.ui import TrainingHandlers, build_app, image_size_field, launch_options
from petseg.ui_predict import PredictHandlers, uploaded_photo
from petseg.visuals import save_png
from conftest import copy_checkpoint
from tests.corpus import EXPECTED, bad_inputs

# Outputs of PredictHandlers.predict, in order.
CLASS_MAP, CONFIDENCE, SLIDER, AREAS, STATUS = range(5)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, trained_checkpoint) -> Path:
    """The tiny checkpoint, plus a corrupt one that the app must list as unavailable."""
    folder = tmp_path_factory.mktemp("ui-weights")
    copy_checkpoint(trained_checkpoint.checkpoint_path, folder / "tiny.keras")
    (folder / "broken.keras").write_bytes(b"not a zip archive")
    shutil.copy(folder / "tiny.json", folder / "broken.json")
    return folder


@pytest.fixture
def handlers(weights_dir, tmp_path) -> PredictHandlers:
    return PredictHandlers(weights_dir, OutputFolder(tmp_path / "outputs"))


@pytest.fixture
def training(weights_dir, tmp_path) -> TrainingHandlers:
    return TrainingHandlers(weights_dir, tmp_path / "runs", allow_training=True, outputs=OutputFolder(tmp_path / "out"))


def predict(handlers: PredictHandlers, *args) -> tuple:
    """What an API client receives from /predict: the final outputs of the page's generator."""
    return handlers.predict_once(*args)


def image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


@pytest.fixture
def model_calls(monkeypatch) -> list:
    """Counts the calls of the model through the segmentation module."""
    calls = []
    original = petseg.segmentation.predict_probabilities

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(petseg.segmentation, "predict_probabilities", counting)
    return calls


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "My cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (75, 100, 3), dtype=np.uint8)).save(path)
    return path


# -- Predict ---------------------------------------------------------------------------------------------------------


def test_predict_handles_every_corpus_file(handlers, tmp_path):
    for name, path in bad_inputs(tmp_path / "corpus").items():
        expected = EXPECTED[name]
        if expected[0] == "error":
            with pytest.raises(gr.Error) as raised:
                predict(handlers, str(path), "tiny")
            assert expected[1] in raised.value.message.lower(), name
            assert str(path.parent) not in raised.value.message, f"{name}: the message shows a server path"
        else:
            outputs = predict(handlers, str(path), "tiny")
            photo, layers = outputs[CLASS_MAP]
            assert image_size(photo) == expected[1::-1] and image_size(layers[0][0]) == expected[1::-1], name
            with Image.open(handlers.cutout(str(path), "tiny")) as cutout:
                assert cutout.mode == "RGBA" and cutout.size == expected[1::-1], name


def test_predict_shows_the_classes_before_the_matte(handlers, photo_path, model_calls):
    first, final = handlers.predict(str(photo_path), "tiny")
    assert len(model_calls) == 1
    # The first pictures go out without waiting for the matte; the cutout follows in the final value.
    assert first[CLASS_MAP] is not None and first[CONFIDENCE] is not None and first[AREAS] is not None
    assert first[SLIDER] is None and "matting the cutout" in first[STATUS]
    assert final[CLASS_MAP] == first[CLASS_MAP] and "cutout matted in" in final[STATUS]
    photo, cutout = final[SLIDER]
    assert photo == final[CLASS_MAP][0] and Image.open(cutout).mode == "RGBA"
    # Shown at its own size, the slider's cutout is the full-resolution one: not matted again.
    assert handlers.cutout(str(photo_path), "tiny") == cutout and len(model_calls) == 1


def test_a_large_photo_is_shown_at_screen_size_and_cut_out_at_full_size_once(handlers, tmp_path, model_calls):
    from petseg.synthetic import make_synthetic_pet

    path = tmp_path / "phone.jpg"
    make_synthetic_pet(np.random.default_rng(0), 2000, 1500)[0].save(path, quality=90)
    outputs = predict(handlers, str(path), "tiny")
    photo, layers = outputs[CLASS_MAP]
    assert image_size(photo) == image_size(layers[0][0]) == image_size(outputs[CONFIDENCE]) == (1600, 1200)
    assert Path(photo).suffix == Path(outputs[CONFIDENCE]).suffix == ".jpg"  # PNG only where alpha is needed.
    assert image_size(outputs[SLIDER][1]) == (1600, 1200) and "(2000x1500 px)" in outputs[STATUS]
    cutout = handlers.cutout(str(path), "tiny")
    with Image.open(cutout) as image:
        assert image.mode == "RGBA" and image.size == (2000, 1500)
        # Cut along the class map's mask: opaque on its pet, clear on its background, matted in its border band.
        alpha = np.asarray(image)[..., 3]
    pet, border = outputs[AREAS]["pet"], outputs[AREAS]["border"]
    assert np.mean(alpha == 255) >= pet - 0.01 and np.mean(alpha > 0) <= pet + border + 0.01
    calls = len(model_calls)
    assert handlers.cutout(str(path), "tiny") == cutout and len(model_calls) == calls  # Made once.


def test_predict_honours_exif_orientation(handlers, tmp_path):
    outputs = predict(handlers, str(bad_inputs(tmp_path)["exif_rotated.jpg"]), "tiny")
    assert image_size(outputs[CLASS_MAP][0]) == (40, 60)  # Stored 60 wide and 40 high; upright it is 40 wide.


def test_predict_outputs_keep_the_original_resolution(handlers, photo_path):
    outputs = predict(handlers, {"path": str(photo_path), "orig_name": "Rex at home.png"}, "tiny")
    photo, layers = outputs[CLASS_MAP]
    assert [label for _, label in layers] == list(CLASS_NAMES)
    for path in (photo, outputs[CONFIDENCE], *(path for path, _ in layers)):
        assert image_size(path) == (100, 75)
    # Each pixel is in exactly one class layer.
    coverage = sum(np.asarray(Image.open(path).convert("RGBA"))[..., 3] > 0 for path, _ in layers)
    assert np.all(coverage == 1)
    assert sum(outputs[AREAS].values()) == pytest.approx(1.0)
    assert "**Rex at home.png** (100x75 px) with **tiny**" in outputs[STATUS]
    cutout = Path(handlers.cutout({"path": str(photo_path), "orig_name": "Rex at home.png"}, "tiny"))
    assert cutout.name == "Rex_at_home-cutout.png"
    with Image.open(cutout) as image:
        assert image.mode == "RGBA" and image.size == (100, 75)


def test_empty_input_clears_the_outputs(handlers):
    (outputs,) = handlers.predict(None, "tiny")
    assert outputs[CLASS_MAP] is None and "Upload a photo" in outputs[STATUS]
    assert handlers.cutout(None, "tiny") is None


def test_pasted_data_url_is_decoded(handlers, photo_path):
    url = "data:image/png;base64," + base64.b64encode(photo_path.read_bytes()).decode()
    outputs = predict(handlers, {"path": None, "url": url}, "tiny")
    assert image_size(outputs[CLASS_MAP][0]) == (100, 75)
    with pytest.raises(gr.Error, match="pasted image"):
        uploaded_photo({"path": None, "url": "data:image/png;base64"})


def test_unavailable_checkpoint_is_explained_and_does_not_crash(handlers, photo_path):
    assert "unavailable" in handlers.describe_checkpoint("broken")
    with pytest.raises(gr.Error, match="broken is unavailable"):
        predict(handlers, str(photo_path), "broken")
    (outputs,) = handlers.repredict(str(photo_path), "broken")
    assert outputs[CLASS_MAP] is None and "unavailable" in outputs[STATUS]
    assert predict(handlers, str(photo_path), "tiny")[CLASS_MAP] is not None


def test_checkpoint_names_cannot_leave_the_weights_folder(handlers, photo_path):
    with pytest.raises(gr.Error, match="Refused checkpoint name"):
        predict(handlers, str(photo_path), "../weights/tiny")


def test_no_checkpoint_at_all_gives_a_readable_error(tmp_path, photo_path):
    empty = PredictHandlers(tmp_path / "no-weights", OutputFolder(tmp_path / "outputs"))
    with pytest.raises(gr.Error, match="no checkpoint"):
        predict(empty, str(photo_path), None)


def test_compare_reports_agreement(handlers, photo_path):
    verdict, first_card, first_map, second_card, second_map = handlers.compare(str(photo_path), "tiny", "tiny")
    assert "agree on **100.0 %**" in verdict and image_size(first_map[0]) == (100, 75)
    assert first_map[1][0][0] != second_map[1][0][0], "the two checkpoints' layers share a file"


def test_batch_cuts_out_photos_and_zips_and_keeps_bad_files_as_rows(handlers, photo_path, tmp_path):
    import csv
    import zipfile

    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    bundle = tmp_path / "more.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.write(photo_path, "folder/My cat.png")  # The same name as the first photo: renamed.
    gallery, zip_path, csv_path, status = handlers.batch([str(photo_path), str(bad), str(bundle)], "tiny")
    assert len(gallery) == 2 and "**2** of 3 photos" in status and "1 could not be used" in status
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == ["My cat.png", "My cat-2.png"]
        with archive.open("My cat.png") as member, Image.open(member) as cutout:
            assert cutout.mode == "RGBA" and cutout.size == (100, 75)
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["file"] for row in rows] == ["My cat.png", "notes.txt", "My cat.png"]
    assert "not an image" in rows[1]["error"] and rows[1]["cutout"] == ""
    shares = [float(rows[0][f"{name} %"]) for name in CLASS_NAMES]
    assert sum(shares) == pytest.approx(100.0, abs=0.05)


def test_batch_limits_give_readable_errors(handlers, photo_path, monkeypatch):
    import petseg.segmentation

    assert handlers.batch(None, "tiny")[-1].startswith("Drop up to")
    monkeypatch.setattr(petseg.segmentation, "MAX_PHOTOS", 2)
    with pytest.raises(gr.Error, match="at most 2 photos; this one has 3"):
        handlers.batch([str(photo_path)] * 3, "tiny")
    monkeypatch.setattr(petseg.segmentation, "MAX_TOTAL_BYTES", 10)
    with pytest.raises(gr.Error, match="at most 0 MB of photos"):
        handlers.batch([str(photo_path)], "tiny")


def test_list_checkpoints_endpoint(handlers):
    listed = {entry["name"]: entry for entry in handlers.list_checkpoints()}
    assert listed["tiny"]["available"] and not listed["broken"]["available"]
    assert listed["broken"]["reason"]


# -- Training --------------------------------------------------------------------------------------------------------


def test_training_allowed_follows_flag_then_environment_then_space():
    assert training_allowed(None, {}) is True
    assert training_allowed(None, {"SPACE_ID": "user/petseg"}) is False
    assert training_allowed(None, {"SPACE_ID": "user/petseg", "PETSEG_ALLOW_TRAINING": "1"}) is True
    assert training_allowed(None, {"PETSEG_ALLOW_TRAINING": "0"}) is False
    assert training_allowed(True, {"SPACE_ID": "user/petseg", "PETSEG_ALLOW_TRAINING": "0"}) is True
    assert training_allowed(False, {}) is False


def test_training_refused_when_not_allowed(weights_dir, tmp_path):
    training = TrainingHandlers(weights_dir, tmp_path / "runs", allow_training=False)
    with pytest.raises(gr.Error, match="turned off"):
        training.start_training("tutorial", "synthetic", "", "none", 2, 4, 64, "")
    with pytest.raises(gr.Error, match="turned off"):
        training.stop_training("anything")


@pytest.mark.parametrize("epochs, batch_size, image_size, message", [
    (0, 4, 64, "Epochs must be a whole number from 1 to 200"),
    (201, 4, 64, "Epochs must be a whole number from 1 to 200"),
    (2.5, 4, 64, "Epochs must be a whole number"),
    (None, 4, 64, "Epochs is empty"),
    (2, "many", 64, "Batch size must be a whole number"),
    (2, 4, 100, "multiple of 32"),
    (2, 4, 1024, "Image size must be a whole number from 32 to 512"),
])
def test_training_numbers_are_validated(training, epochs, batch_size, image_size, message):
    with pytest.raises(gr.Error, match=message):
        training.start_training("tutorial", "synthetic", "", "none", epochs, batch_size, image_size, "")


def test_training_sources_and_names_are_validated(weights_dir, tmp_path):
    with pytest.raises(TrainingRequestError, match="No folder"):
        parse_request("tutorial", 2, 4, 64, "folder", str(tmp_path / "missing"))
    with pytest.raises(TrainingRequestError, match="lacks images"):
        parse_request("tutorial", 2, 4, 64, "folder", str(tmp_path))
    with pytest.raises(TrainingRequestError, match="no file at"):
        parse_request("tutorial", 2, 4, 64, "tfds", None, str(tmp_path / "encoder.h5"))
    with pytest.raises(TrainingRequestError, match="already exists"):
        parse_request("tutorial", 2, 4, 64, "synthetic", name="tiny", weights_dir=weights_dir)
    with pytest.raises(TrainingRequestError, match="Refused checkpoint name"):
        parse_request("tutorial", 2, 4, 64, "synthetic", name="../escape", weights_dir=weights_dir)
    request = parse_request("tutorial", 2.0, 4, 64, "synthetic", encoder_weights="imagenet")
    assert request.encoder_weights == "none" and request.epochs == 2  # Synthetic runs never download.


def test_training_command_runs_train_py_with_the_run_folders(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(petseg.launcher, "start_process",
                        lambda command, log: commands.append(command) or SimpleNamespace(pid=0, poll=lambda: 0))
    request = TrainingRequest("tutorial", 2, 4, 64, "tfds", None, "imagenet", "demo")
    run_dir = TrainingLauncher(tmp_path / "weights", tmp_path / "runs").start(request)
    [command] = commands
    assert command[1].endswith("train.py") and "--data-dir" not in command
    assert command[command.index("--run-dir") + 1] == str(run_dir) and run_dir.parent == tmp_path / "runs"
    assert command[command.index("--output-dir") + 1] == str(tmp_path / "weights")
    assert command[command.index("--name") + 1] == "demo"


def test_run_ids_cannot_leave_the_runs_folder(tmp_path):
    launcher = TrainingLauncher(tmp_path / "weights", tmp_path / "runs")
    for run_id in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(TrainingRequestError, match="Unknown run"):
            launcher.run_folder(run_id)


def test_watch_streams_a_run_and_refreshes_the_checkpoints(training, tmp_path):
    writer = RunWriter(training.runs_dir / "terminal-run", {"preset": "tutorial", "epochs": 3, "name": "demo"})
    for epoch in (1, 2):
        save_png(np.zeros((16, 48, 3), np.uint8), writer.sample_path(epoch))
        writer.log_epoch({"epoch": epoch, "loss": 1.0 / epoch, "val_mean_iou": 0.2 * epoch, "seconds": 2.0})
    picker, status, log, latest, curves, gallery, process_log, stop, memory, checkpoint = training.watch(
        None, None, "tiny")
    assert picker["value"] == "terminal-run" and picker["choices"][0][1] == "terminal-run"
    assert "**Running** · epoch 2 of 3 done" in status and "about 2 s left" in status
    assert "epoch 2/3: loss 0.500" in log and len(gallery) == 2 and gallery[1][1] == "epoch 2"
    assert latest.endswith("epoch_002.png") and image_size(curves)[0] > 0 and stop["interactive"] is True
    assert [choice[1] for choice in checkpoint["choices"]][:1] == ["tiny"] and checkpoint["value"] == "tiny"

    # Nothing changed: the next tick sends only the status line.
    picker, status, log, *rest, memory, checkpoint = training.watch("terminal-run", memory, "tiny")
    assert picker == gr.skip() and log == gr.skip() and checkpoint == gr.skip() and "Running" in status

    writer.finish("stopped", "stop requested")
    _, status, log, *_ = training.watch("terminal-run", memory, "tiny")
    assert status.startswith("**Stopped** after 2 of 3 epochs") and log.endswith("stopped: stop requested")
    assert "not running" in training.launcher.stop("terminal-run")


def test_watch_with_no_runs_sends_the_note_once(training):
    first = training.watch(None, None, "tiny")
    assert first[1].startswith("No training runs yet") and first[0] == gr.skip()
    second = training.watch(None, first[8], "tiny")
    assert all(output == gr.skip() for output in second[:8]) and second[9] == gr.skip()


# -- Paths and the app itself ------------------------------------------------------------------------------------


def test_safe_stem_keeps_file_names_harmless():
    assert safe_stem("../../etc/passwd") == "passwd"
    assert safe_stem("Chat noir (2).JPG") == "Chat_noir_2"
    assert safe_stem("") == "pet" and safe_stem("...") == "pet"


def test_output_folder_keeps_only_recent_files(tmp_path):
    folder = OutputFolder(tmp_path, keep=3)
    paths = [Path(folder.write(np.zeros((8, 8, 4), np.uint8), "cat.jpg", "cutout.png")) for _ in range(5)]
    assert all(path.name == "cat-cutout.png" for path in paths) and len(set(paths)) == 5
    assert sum(path.exists() for path in paths) == 3 and paths[-1].exists()


def test_handlers_send_every_image_as_a_file_of_its_own(handlers, photo_path):
    """Gradio rewrites an array's cache file in place (see OutputFolder): no handler may return one."""
    first, second = (predict(handlers, str(photo_path), "tiny") for _ in range(2))
    compared = handlers.compare(str(photo_path), "tiny", "tiny")

    def files(outputs: tuple) -> list[str]:
        (photo, layers), confidence, slider = outputs[:3]
        return [photo, *(path for path, _ in layers), confidence, *slider]

    for value in (*files(first), *compared):
        assert not isinstance(value, (np.ndarray, Image.Image)), type(value)
    assert all(isinstance(path, str) for path in files(first))
    assert not set(files(first)) & set(files(second))
    assert Path(first[CONFIDENCE]).read_bytes() == Path(second[CONFIDENCE]).read_bytes()


def test_launch_options_serve_only_what_is_needed(tmp_path, monkeypatch):
    # A home folder outside the working and temporary folders, as on most machines, whatever this one's is.
    monkeypatch.setenv("HOME", "/srv/someone")
    inside = launch_options(tmp_path / "runs")
    assert inside["allowed_paths"] == [] and inside["max_file_size"] == "20mb"
    outside = launch_options("/srv/petseg-runs")
    assert outside["allowed_paths"] == ["/srv/petseg-runs"]
    # A run folder above the working folder would let the app serve every file in it.
    for folder in ("/", "/srv/someone", "/srv"):
        with pytest.raises(ValueError, match="holds"):
            launch_options(folder)


def test_app_refuses_a_runs_folder_that_would_serve_every_file(capsys):
    import app

    assert app.main(["--runs-dir", "/", "--port", "0"]) == 2
    assert "error: The runs folder / holds" in capsys.readouterr().err


def test_build_app_names_its_endpoints(weights_dir, tmp_path):
    demo = build_app(weights_dir, tmp_path / "runs", allow_training=False)
    api_names = {function.api_name for function in demo.fns.values()}
    assert {"predict", "cutout", "batch", "compare", "list_checkpoints"} <= api_names
    start = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "start-training")
    assert start.parent.visible is False  # Training is off: the start controls are hidden.
    assert not list(Path(petseg.segmentation.__file__).parent.glob("*.pyi")), "gradio wrote a stub into petseg/"


def test_empty_runs_folder_shows_the_default_checkpoints_shipped_run(weights_dir, trained_checkpoint, tmp_path):
    from petseg.runs import copy_run_record

    shipped = tmp_path / "weights"
    shutil.copytree(weights_dir, shipped)
    copy_run_record(trained_checkpoint.run_dir, shipped / "tiny.run")
    copy_run_record(trained_checkpoint.run_dir, shipped / "another.run")
    assert {"status.json", "metrics.jsonl", "epoch_001.png", "curves.png"} <= {p.name for p in (shipped / "tiny.run").iterdir()}
    assert read_run(shipped / "tiny.run").status["checkpoint"] == "tiny.keras"  # No training machine's folders.
    handlers = TrainingHandlers(shipped, tmp_path / "runs", allow_training=False)
    picker, status, *_ = handlers.watch(None, None)
    # The default checkpoint's record comes first and is shown.
    assert picker["value"] == "tiny.run" and "Done" in status
    assert [value for _, value in picker["choices"]] == ["tiny.run", "another.run"]
    gallery = handlers.watch(None, None)[5]
    assert [Path(path).name for path, _ in gallery] == ["epoch_001.png"]
    # Once a run exists in the runs folder, the tab shows runs from there instead.
    RunWriter(tmp_path / "runs" / "live", {"preset": "tutorial", "epochs": 1})
    assert handlers.watch(None, None)[0]["value"] == "live"


def test_voc_preset_takes_8k_plus_1_image_sizes():
    assert parse_request("voc", 2, 4, 65, "synthetic").image_size == 65
    with pytest.raises(TrainingRequestError, match="8k\\+1"):
        parse_request("voc", 2, 4, 64, "synthetic")
    # Choosing a preset in the form moves the image size to the nearest one the preset takes.
    assert image_size_field("voc", 128)["value"] == 129 and image_size_field("tutorial", 129)["value"] == 128
    for preset, size in [("voc", 32), ("voc", 512), ("voc", 257), ("tutorial", 500), ("finetune", 17)]:
        fitted = image_size_for(preset, size)
        assert parse_request(preset, 2, 4, fitted, "synthetic").image_size == fitted
    assert image_size_for("voc", "") == ""  # Left for parse_request to name.


def test_the_training_log_shows_each_progress_bar_once(tmp_path):
    (tmp_path / "train.log").write_text("Epoch 1/2\n\r1/3 [=>..]\r2/3 [==>.]\r3/3 [====]\r\nEpoch 2/2\n\r1/3 [=>..]")
    assert log_tail(tmp_path) == "Epoch 1/2\n3/3 [====]\nEpoch 2/2\n1/3 [=>..]"
    assert log_tail(tmp_path, max_lines=1) == "1/3 [=>..]"
