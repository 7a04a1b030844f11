"""Shared fixtures: synthetic data in the official layout and one tiny trained checkpoint per test session."""

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def copy_checkpoint(source: Path, target: Path) -> Path:
    """Copy a checkpoint and its sidecar to ``target`` (a .keras path); return ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".json"):
        shutil.copy(source.with_suffix(suffix), target.with_suffix(suffix))
    return target


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """Twelve trainval and four test synthetic pets (a few seconds to make)."""
    from petseg.synthetic import make_synthetic_pets

    return make_synthetic_pets(tmp_path_factory.mktemp("pets"), trainval_count=12, test_count=4, seed=1)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, synthetic_data):
    """A 1-epoch tutorial checkpoint at 64 px with a random encoder, trained through train.py's code path."""
    from petseg.training import TrainConfig, train

    weights_dir = tmp_path_factory.mktemp("weights")
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    result = train(TrainConfig(data_dir=str(synthetic_data), preset="tutorial", epochs=1, batch_size=4,
                               image_size=64, encoder_weights="none", output_dir=str(weights_dir),
                               run_dir=str(run_dir), name="tiny", verbose=0))
    return result


@pytest.fixture(scope="session")
def app_server(tmp_path_factory, trained_checkpoint):
    """``python app.py`` on a free loopback port with two tiny checkpoints (and the best shipped one, if any) and an
    empty runs folder; always stopped."""
    from tests.app_server import make_app_weights, start_app, stop_app

    folder = tmp_path_factory.mktemp("app")
    weights_dir = make_app_weights(trained_checkpoint.checkpoint_path, folder / "weights", ROOT / "weights")
    server = start_app(weights_dir, folder / "runs", folder / "app.log")
    try:
        yield server
    finally:
        stop_app(server)
