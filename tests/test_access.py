"""Access: checkpoint names can only reach files inside the weights folder, whoever sends them."""

import os
from pathlib import Path

import numpy as np
import pytest

from petseg.checkpoints import CheckpointError, checkpoint_path, list_checkpoints, load_checkpoint, load_checkpoint_file
from petseg.inference import predict_probabilities

from conftest import copy_checkpoint

REFUSED_NAMES = [
    "..", "../tiny", "../../etc/passwd", "..tiny", "tiny..", "/etc/passwd", "/tmp/tiny.keras", "sub/tiny",
    "sub\\tiny", "tiny/", "./tiny", "~/tiny", "", ".", ".hidden", "tiny\n", "tiny\x00", " tiny", "tiny name",
    "%2e%2e%2ftiny", "a" * 101,
]


@pytest.fixture
def weights_dir(trained_checkpoint, tmp_path) -> Path:
    """A weights folder holding a copy of the tiny checkpoint as "tiny"."""
    folder = tmp_path / "weights"
    folder.mkdir()
    copy_checkpoint(trained_checkpoint.checkpoint_path, folder / "tiny.keras")
    return folder


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_names_that_could_leave_the_weights_folder_are_refused(weights_dir, name):
    with pytest.raises(CheckpointError, match="Refused"):
        checkpoint_path(name, weights_dir)
    with pytest.raises(CheckpointError, match="Refused"):
        load_checkpoint(name, weights_dir)


@pytest.mark.parametrize("name", [None, 3, b"tiny", ["tiny"]])
def test_names_that_are_not_strings_are_refused(weights_dir, name):
    with pytest.raises(CheckpointError, match="Refused"):
        load_checkpoint(name, weights_dir)


def test_the_inference_entry_point_applies_the_same_guard(weights_dir):
    photo = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(CheckpointError, match="Refused"):
        predict_probabilities(photo, "../weights/tiny", weights_dir)
    assert predict_probabilities(photo, "tiny", weights_dir).shape == (32, 32, 3)


@pytest.mark.parametrize("name", ["tiny", "tiny.keras", "Finetune-v1.2_b"])
def test_plain_names_map_into_the_weights_folder(weights_dir, name):
    path = checkpoint_path(name, weights_dir)
    assert path.parent == weights_dir.resolve() and path.suffix == ".keras"


def test_symlink_to_a_checkpoint_outside_is_refused(trained_checkpoint, weights_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    copy_checkpoint(trained_checkpoint.checkpoint_path, outside / "secret.keras")
    (weights_dir / "escape.keras").symlink_to(outside / "secret.keras")
    (weights_dir / "escape.json").symlink_to(outside / "secret.json")
    assert load_checkpoint_file(outside / "secret.keras")  # The target itself is a valid checkpoint.

    listed = {info.name: info for info in list_checkpoints(weights_dir)}
    assert listed["tiny"].available
    assert not listed["escape"].available and "outside the weights folder" in listed["escape"].reason
    with pytest.raises(CheckpointError, match="outside the weights folder"):
        load_checkpoint("escape", weights_dir)
    with pytest.raises(CheckpointError, match="outside the weights folder"):
        load_checkpoint_file(weights_dir / "escape.keras")


def test_symlinked_sidecar_outside_is_refused(trained_checkpoint, weights_dir, tmp_path):
    (weights_dir / "borrowed.keras").write_bytes(trained_checkpoint.checkpoint_path.read_bytes())
    outside = tmp_path / "elsewhere.json"
    outside.write_text(trained_checkpoint.checkpoint_path.with_suffix(".json").read_text())
    (weights_dir / "borrowed.json").symlink_to(outside)
    listed = {info.name: info for info in list_checkpoints(weights_dir)}
    assert not listed["borrowed"].available and "sidecar points outside" in listed["borrowed"].reason
    with pytest.raises(CheckpointError, match="sidecar points outside"):
        load_checkpoint("borrowed", weights_dir)


def test_symlink_loops_and_dangling_links_are_listed_unavailable(weights_dir):
    (weights_dir / "loop.keras").symlink_to("loop.keras")
    (weights_dir / "ping.keras").symlink_to("pong.keras")
    (weights_dir / "pong.keras").symlink_to("ping.keras")
    (weights_dir / "dangling.keras").symlink_to("missing.keras")
    listed = {info.name: info for info in list_checkpoints(weights_dir)}
    assert listed["tiny"].available
    for name in ("loop", "ping", "pong", "dangling"):
        assert not listed[name].available and listed[name].reason
        with pytest.raises(CheckpointError):
            load_checkpoint(name, weights_dir)


def test_symlink_inside_the_weights_folder_is_an_alias(weights_dir):
    (weights_dir / "alias.keras").symlink_to("tiny.keras")
    (weights_dir / "alias.json").symlink_to("tiny.json")
    assert {info.name for info in list_checkpoints(weights_dir) if info.available} == {"tiny"}  # Export missing.
    (weights_dir / "alias.tflite").symlink_to("tiny.tflite")  # An alias links the whole entry.
    assert {info.name for info in list_checkpoints(weights_dir) if info.available} == {"tiny", "alias"}
    assert load_checkpoint("alias", weights_dir).model is not None


def test_a_symlinked_weights_folder_works(weights_dir, tmp_path):
    link = tmp_path / "linked-weights"
    link.symlink_to(weights_dir, target_is_directory=True)
    assert [info.name for info in list_checkpoints(link) if info.available] == ["tiny"]
    assert load_checkpoint("tiny", link).name == "tiny"


def test_non_files_named_like_checkpoints_are_unavailable(weights_dir):
    (weights_dir / "folder.keras").mkdir()
    os.mkfifo(weights_dir / "pipe.keras")  # Reading a FIFO would block forever.
    listed = {info.name: info for info in list_checkpoints(weights_dir)}
    assert not listed["folder"].available and not listed["pipe"].available
    with pytest.raises(CheckpointError):
        load_checkpoint("pipe", weights_dir)
