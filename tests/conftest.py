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


@pytest.hookimpl(tryfirst=True)  # Before pytest-xdist reads the groups.
def pytest_collection_modifyitems(items) -> None:
    """Under pytest-xdist (scripts/test.sh runs ``-n 2 --dist loadgroup``) the tests that use the session's trained
    checkpoint (the app fixture uses it too) share one worker, so each session fixture is made once; every other
    test, the training processes of test_reliability and test_scale among them, runs on the other worker."""
    for item in items:
        group = "trained_checkpoint" if "trained_checkpoint" in item.fixturenames else "self_contained"
        item.add_marker(pytest.mark.xdist_group(group))


def copy_checkpoint(source: Path, target: Path) -> Path:
    """Copy a checkpoint, its sidecar and its LiteRT export to ``target`` (a .keras path); return ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".json", ".tflite"):
        shutil.copy(source.with_suffix(suffix), target.with_suffix(suffix))
    return target


def tiny_train_command(data_dir: Path, folder: Path, name: str, *options: str) -> list[str]:
    """``python train.py`` (run in the repository root) for a 64 px model with a random encoder, writing
    ``folder/weights/<name>.keras`` and the run folder ``folder/run``, without the test evaluation; ``options``
    add flags."""
    return [sys.executable, "train.py", "--data-dir", str(data_dir), "--image-size", "64", "--encoder-weights", "none",
            "--output-dir", str(folder / "weights"), "--run-dir", str(folder / "run"), "--name", name, "--no-test",
            *options]


def assert_predicts(checkpoint) -> None:
    """The checkpoint turns a photo into class probabilities at the photo's size that sum to one."""
    import numpy as np

    from petseg.inference import predict_probabilities

    photo = np.random.default_rng(0).integers(0, 255, size=(90, 120, 3), dtype=np.uint8)
    probabilities = predict_probabilities(photo, checkpoint)
    assert probabilities.shape == (90, 120, 3)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """Twelve trainval and four test synthetic pets (a few seconds to make)."""
    from petseg.synthetic import make_synthetic_pets

    return make_synthetic_pets(tmp_path_factory.mktemp("pets"), trainval_count=12, test_count=4, seed=1)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, synthetic_data):
    """A 1-epoch tutorial checkpoint at 64 px with a random encoder, trained through train.py's code path.

    It trains with strong augmentation (random crops and scales), as ``finetune`` does, so its export takes any
    input size and the request path predicts at each photo's aspect ratio, as for the default checkpoint.
    """
    from petseg.training import TrainConfig, train

    weights_dir = tmp_path_factory.mktemp("weights")
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    result = train(TrainConfig(data_dir=str(synthetic_data), preset="tutorial", overrides={"augmentation": "strong"},
                               epochs=1, batch_size=4,
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
