"""The PetSeg web app: Predict, Compare, Batch and Training tabs in one gradio Blocks, with named API endpoints.

This module builds the page, the ``launch()`` options and the cache sweep (``prune_cache``); the tabs live in
``petseg.ui_predict`` and ``petseg.ui_training`` (the only other modules that import gradio). Every user mistake
becomes a readable ``gr.Error`` or ``gr.Warning``, never a traceback.

Named endpoints: ``/predict`` (photo, checkpoint -> class map, confidence, photo and cutout, areas, status, all
screen-sized), ``/cutout`` (photo, checkpoint -> the full-resolution transparent PNG), ``/batch`` (photos or .zip
files, checkpoint -> gallery, .zip of cutouts, CSV of class shares, status), ``/compare`` and ``/list_checkpoints``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import gradio as gr
from gradio.utils import get_upload_folder

from petseg.checkpoints import DEFAULT_WEIGHTS_DIR
from petseg.launcher import training_allowed
from petseg.runs import DEFAULT_RUNS_DIR
from petseg.segmentation import OutputFolder
from petseg.ui_predict import PredictHandlers, build_batch_tab, build_compare_tab, build_predict_tab
from petseg.ui_training import TrainingHandlers, build_training_tab

MAX_FILE_SIZE = "20mb"
CACHE_LIMIT_MB = 1024  # The files the app hands out take at most about this much disk.
CACHE_MAX_AGE = 3600  # Seconds a result stays downloadable when the limit does not delete it sooner.
CACHE_MIN_AGE = 120  # Seconds every file is kept: a queued request's upload, a fresh result not yet downloaded.
CACHE_SWEEP_SECONDS = 5.0  # How often the cache is checked; a sweep deletes down to PRUNE_TO of the limit.
PRUNE_TO = 0.8
SESSIONS = 1000  # Visitors' sessions gradio keeps in memory (its default, 10,000, lets a busy day add up).
THEME = gr.themes.Soft(primary_hue="orange", secondary_hue="blue", neutral_hue="slate",
                       # System fonts: the page loads nothing from the internet.
                       font=("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"),
                       font_mono=("ui-monospace", "SFMono-Regular", "Menlo", "monospace"))
CSS = """
.petseg-header h1 { margin-bottom: 0.2em; }
.petseg-header p { margin-top: 0; opacity: 0.8; }
#training-log textarea, #process-log textarea { font-family: var(--font-mono); font-size: 0.85em; }
/* A checkerboard behind the cutout (the slider's second image) shows which pixels are transparent; gradio sets
   that image's background inline, hence !important. */
#cutout img.fixed, #batch-gallery img {
  background: repeating-conic-gradient(#e5e7eb 0% 25%, #ffffff 0% 50%) 50% / 16px 16px !important; }
"""
# A paw print in the pet colour, drawn inline: emoji fonts are missing on many servers.
PAW_ICON = (
    '<svg width="0.9em" height="0.9em" viewBox="0 0 24 24" fill="rgb(255,127,14)" aria-hidden="true" '
    'style="display:inline-block;vertical-align:-0.05em"><ellipse cx="12" cy="16.5" rx="5.5" ry="4.5"/>'
    '<circle cx="5" cy="10" r="2.3"/>'
    '<circle cx="9" cy="5.5" r="2.3"/><circle cx="15" cy="5.5" r="2.3"/><circle cx="19" cy="10" r="2.3"/></svg>'
)
HEADER = f"""
<div class="petseg-header">
<h1>{PAW_ICON} PetSeg</h1>
<p>Drop a photo of a cat or a dog: a U-Net trained on the Oxford-IIIT Pet trimaps marks every pixel as
<b>pet</b>, <b>background</b> or <b>border</b>, at the photo's own resolution.</p>
</div>
"""


def build_app(weights_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None,
              allow_training: bool | None = None) -> gr.Blocks:
    """Build the app's Blocks; launch it with ``demo.queue().launch(**launch_options(runs_dir))``."""
    weights_dir = weights_dir or DEFAULT_WEIGHTS_DIR
    # Results are written inside gradio's cache, which serves them as they are (no copy) and tracks them for pruning.
    Path(get_upload_folder()).mkdir(parents=True, exist_ok=True)
    outputs = OutputFolder(tempfile.mkdtemp(prefix="petseg-outputs-", dir=get_upload_folder()))
    predict = PredictHandlers(weights_dir, outputs)
    training = TrainingHandlers(weights_dir, runs_dir or DEFAULT_RUNS_DIR, training_allowed(allow_training), outputs)
    with gr.Blocks(title="PetSeg: pet photo segmentation") as demo:
        gr.HTML(HEADER)
        with gr.Tabs():
            with gr.Tab("Predict", id="predict"):
                predict_checkpoint = build_predict_tab(predict)
            with gr.Tab("Compare", id="compare"):
                compare_checkpoints = build_compare_tab(predict)
            with gr.Tab("Batch", id="batch"):
                batch_checkpoint = build_batch_tab(predict)
            with gr.Tab("Training", id="training"):
                build_training_tab(training, [predict_checkpoint, *compare_checkpoints, batch_checkpoint])
        gr.api(predict.list_checkpoints, api_name="list_checkpoints")
    return demo


def launch_options(runs_dir: str | os.PathLike | None = None, cache_limit_mb: float | None = None
                   ) -> dict[str, Any]:
    """The app's ``launch()`` arguments: its look, the upload limit, the folders it may serve, the cache limit (MB).

    The run folder is served (its sample PNGs) only outside the working and temporary folders, which gradio serves
    already; never the weights folder. A run folder holding the working, temporary or home folder raises
    ``ValueError``: serving it would serve every file in them.
    """
    runs_dir = Path(runs_dir or DEFAULT_RUNS_DIR).resolve()
    already_allowed = [Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()]
    allowed_paths = [] if any(runs_dir.is_relative_to(folder) for folder in already_allowed) else [str(runs_dir)]
    held = [folder for folder in (*already_allowed, Path.home().resolve()) if folder.is_relative_to(runs_dir)]
    if allowed_paths and held:
        raise ValueError(f"The runs folder {runs_dir} holds {held[0]}: the app would serve every file in it. "
                         "Choose a folder of its own, e.g. runs/.")
    cache_limit_mb = CACHE_LIMIT_MB if cache_limit_mb is None else cache_limit_mb
    if cache_limit_mb <= 0:
        raise ValueError(f"The cache limit must be positive, not {cache_limit_mb} MB.")
    return {"theme": THEME, "css": CSS, "max_file_size": MAX_FILE_SIZE, "allowed_paths": allowed_paths,
            "footer_links": ["api", "gradio", "settings"], "state_session_capacity": SESSIONS,
            "app_kwargs": {"lifespan": cache_lifespan(int(cache_limit_mb * 2**20))}}


def prune_cache(demo: gr.Blocks, limit_bytes: int, max_age: float = CACHE_MAX_AGE,
                min_age: float = CACHE_MIN_AGE) -> int:
    """Delete the files ``demo`` handed out older than ``max_age`` seconds, then the oldest while they take more
    than ``limit_bytes`` (down to ``PRUNE_TO`` of it), none younger than ``min_age``; return the bytes left.

    The files are gradio's own record (``temp_file_sets``; its ``delete_cache`` walks the live sets from a thread,
    which fails when a request adds a file meanwhile, and has no size limit). Deleted and vanished files leave the
    record, and gradio's emptied folders go; example photos (``keep_in_cache``) are neither deleted nor counted.
    """
    keep = set().union(*(getattr(block, "keep_in_cache", set()) for block in list(demo.blocks.values())))
    file_sets, cache_root = list(demo.temp_file_sets), Path(get_upload_folder()).resolve()
    files: dict[str, os.stat_result] = {}
    for file_set in file_sets:
        for path in file_set.copy() - keep:  # One atomic copy: requests add files while this runs.
            try:
                files[path] = os.lstat(path)
            except FileNotFoundError:
                file_set.discard(path)
    now, total = time.time(), sum(stat.st_size for stat in files.values())
    too_big = total > limit_bytes
    for path, stat in sorted(files.items(), key=lambda item: item[1].st_ctime):  # Oldest first.
        age = now - stat.st_ctime
        if age <= min_age or (age <= max_age and not (too_big and total > limit_bytes * PRUNE_TO)):
            break  # This file and every newer one stay.
        with contextlib.suppress(OSError):  # Gone already (OutputFolder prunes too), or not ours to delete.
            os.remove(path)
        total -= stat.st_size
        for file_set in file_sets:
            file_set.discard(path)
        folder = Path(path).parent
        if folder.parent.resolve() == cache_root:  # Gradio's folder of one file; OutputFolder prunes its own.
            with contextlib.suppress(OSError):
                folder.rmdir()
    return total


def cache_lifespan(limit_bytes: int):
    """A FastAPI lifespan that runs ``prune_cache`` every ``CACHE_SWEEP_SECONDS`` while the app serves, and
    deletes every file the app handed out when it stops."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        demo = app.get_blocks()

        async def sweep() -> None:
            while True:
                await asyncio.sleep(CACHE_SWEEP_SECONDS)
                await anyio.to_thread.run_sync(prune_cache, demo, limit_bytes)

        task = asyncio.create_task(sweep())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            prune_cache(demo, 0, max_age=-1, min_age=-1)

    return lifespan
