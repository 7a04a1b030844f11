"""The app's cache folder stays under its limit after many requests, and gradio's record of it stays as small."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import copy_checkpoint
from bench.processes import free_port
from petseg.synthetic import make_synthetic_pet

LIMIT_MB = 0.1  # Far less than the requests below write, so the limit must delete files.
REQUESTS = 12


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@pytest.fixture
def served_app(tmp_path, trained_checkpoint, monkeypatch):
    """The app in this process on a free loopback port, with a cache folder of its own and a 0.1 MB limit."""
    import gradio as gr

    from petseg.ui import build_app, launch_options

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    weights_dir = tmp_path / "weights"
    copy_checkpoint(trained_checkpoint.checkpoint_path, weights_dir / "tiny.keras")
    demo = build_app(weights_dir, tmp_path / "runs", allow_training=False)
    demo.queue()
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                **launch_options(tmp_path / "runs", cache_limit_mb=LIMIT_MB))
    try:
        yield demo, tmp_path / "cache"
    finally:
        demo.close()
        gr.close_all()


def test_cache_folder_stays_under_its_limit_after_many_requests(served_app, tmp_path):
    from gradio_client import Client, handle_file

    from petseg.ui import prune_cache

    demo, cache = served_app
    client = Client(demo.local_url, verbose=False, download_files=False)
    photo = np.asarray(make_synthetic_pet(np.random.default_rng(0), 96, 72)[0])
    for index in range(REQUESTS):
        marked = photo.copy()
        marked[0, 0] = index  # A new photo each time, as visitors send: gradio keeps one copy of identical files.
        Image.fromarray(marked).save(tmp_path / "pet.png")
        client.predict(handle_file(str(tmp_path / "pet.png")), "tiny", api_name="/predict")
    written = folder_bytes(cache)
    assert written > LIMIT_MB * 2**20, "the requests must write more than the limit for this test to mean anything"

    # What the app's sweep does every few seconds, without the two minutes every file is kept at least.
    left = prune_cache(demo, int(LIMIT_MB * 2**20), min_age=0)
    examples = set().union(*(getattr(block, "keep_in_cache", set()) for block in demo.blocks.values()))
    assert left <= LIMIT_MB * 2**20
    assert folder_bytes(cache) - sum(os.path.getsize(path) for path in examples) <= LIMIT_MB * 2**20
    recorded = set().union(*demo.temp_file_sets)
    assert all(os.path.exists(path) for path in recorded), "deleted files must leave gradio's record"
    # The app still answers, and its result files are there to download.
    result = client.predict(handle_file(str(tmp_path / "pet.png")), "tiny", api_name="/predict")
    cutout = result[2][1]  # The slider's cutout, not downloaded: the file's record on the server.
    cutout = Path(cutout["path"] if isinstance(cutout, dict) else cutout)
    assert cutout.is_file() and cutout.resolve().is_relative_to(cache.resolve())


def test_old_files_go_and_examples_stay(tmp_path, monkeypatch):
    from petseg.ui import build_app, prune_cache

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    demo, cache = build_app(tmp_path / "no-weights", tmp_path / "runs", allow_training=False), tmp_path / "cache"
    old = cache / "0123abcd" / "old.png"
    old.parent.mkdir(parents=True)
    shutil.copy(Path(__file__).parent.parent / "examples" / "Bengal_1.jpg", old)
    demo.upload_file_set.add(str(old))
    examples = set().union(*(getattr(block, "keep_in_cache", set()) for block in demo.blocks.values()))
    prune_cache(demo, 2**40, max_age=-1, min_age=-1)  # Every file is too old, however large the limit.
    assert not old.exists() and not old.parent.exists() and str(old) not in demo.upload_file_set
    assert all(os.path.exists(path) for path in examples)


def test_a_bad_limit_is_refused():
    from petseg.ui import launch_options

    with pytest.raises(ValueError, match="must be positive"):
        launch_options(cache_limit_mb=0)


def test_soak_reports_rss_growth_and_draws_its_curve(tmp_path):
    from bench import soak

    samples = [{"requests": count, "seconds": count, "rss_mb": 500.0 + (50.0 if count == 400 else 0.0),
                "cache_mb": count / 10, "errors": 0} for count in range(0, 401, 8)]
    result = {"requests": 400, "clients": 8, "done": 400, "kinds": {"predict": 400}, "errors": 0,
              "server_tracebacks": 0, "wall_seconds": 400.0, "cache_limit_mb": 256, "cache_max_mb": 40.0,
              "load_average": [1.0, 1.0, 1.0], "cpu_count": 2, "samples": samples,
              "rss_growth_percent": [{"early": early, "late": late, "value": soak.rss_growth(samples, early, late)}
                                     for early, late in soak.growth_pairs(400)]}
    assert result["rss_growth_percent"] == [{"early": 40, "late": 400, "value": 10.0}]
    assert "RSS after 400 is +10.0 % of after 40" in "\n".join(soak.table_lines(result))
    soak.draw_curve(result, tmp_path / "soak.png")
    assert Image.open(tmp_path / "soak.png").size == (700, 350)
    with pytest.raises(SystemExit):
        soak.parse_args(["--requests", str(soak.MAX_REQUESTS + 1)])
