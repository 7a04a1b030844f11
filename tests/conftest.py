"""Shared fixtures: synthetic data in the official layout and one tiny trained checkpoint per test session."""

import fcntl
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
    """Under pytest-xdist (scripts/test.sh runs ``-n 2 --dist loadgroup``) each module is a unit of work, so its
    module fixtures (test_reliability's training processes) are made once; the tests that talk to the app form one
    unit across modules, so ``python app.py`` starts once. A worker takes the next unit as soon as it is free."""
    for item in items:
        group = "app_server" if "app_server" in item.fixturenames else item.module.__name__
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
    """A 1-epoch tutorial checkpoint at 64 px with a random encoder, trained through train.py's code path, once per
    test run: under pytest-xdist the first worker that needs it trains it while holding a lock, the others read it.

    It trains with strong augmentation (random crops and scales), as ``finetune`` does, so its export takes any
    input size and the request path predicts at each photo's aspect ratio, as for the default checkpoint.
    """
    from petseg.checkpoints import read_sidecar
    from petseg.runs import read_run
    from petseg.training import TrainConfig, TrainResult, train

    # Each xdist worker's base folder lies in the run's own folder, which all of them share.
    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared
    checkpoint_path, run_dir = shared / "tiny" / "weights" / "tiny.keras", shared / "tiny" / "run"
    with open(shared / "tiny.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not checkpoint_path.with_suffix(".json").exists():  # The sidecar is written last.
            train(TrainConfig(data_dir=str(synthetic_data), preset="tutorial", overrides={"augmentation": "strong"},
                              epochs=1, batch_size=4, image_size=64, encoder_weights="none",
                              output_dir=str(checkpoint_path.parent), run_dir=str(run_dir), name="tiny", verbose=0))
    return TrainResult(checkpoint_path, read_sidecar(checkpoint_path), run_dir, read_run(run_dir).state)


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
