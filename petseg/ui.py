"""The PetSeg web app: Predict, Compare, Batch and Training tabs in one gradio Blocks, with the API endpoints
``/predict``, ``/cutout``, ``/batch``, ``/compare`` and ``/list_checkpoints`` (docs/app.md shows each).

The Training tab starts ``train.py`` runs (``petseg.launcher``) and shows any run live; the other tabs live in
``petseg.ui_predict``. Every user mistake becomes a readable ``gr.Error`` or ``gr.Warning``, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import gradio as gr
from gradio.utils import get_upload_folder

from petseg.checkpoints import default_checkpoint
from petseg.launcher import (DATA_SOURCES, ENCODER_WEIGHTS, IMAGE_SIZE_STEP, TrainingLauncher,
                             checkpoints_fingerprint, image_size_for, image_size_rule, is_deeplab, log_tail,
                             parse_request, progress_log, run_fingerprint, run_label, status_markdown, training_allowed)
from petseg.presets import PRESETS
from petseg.runs import DEFAULT_RUNS_DIR, RunState, list_runs, shipped_runs
from petseg.segmentation import OutputFolder, checkpoint_choices
from petseg.ui_predict import PredictHandlers, build_batch_tab, build_compare_tab, build_predict_tab, readable_errors
from petseg.visuals import plot_curves

MAX_FILE_SIZE = "20mb"
CACHE_LIMIT_MB = 1024  # The files the app hands out take at most about this much disk.
CACHE_MAX_AGE = 3600  # Seconds a result stays downloadable when the limit does not delete it sooner.
CACHE_MIN_AGE = 120  # Seconds every file is kept: a queued request's upload, a fresh result not yet downloaded.
CACHE_SWEEP_SECONDS = 5.0  # How often the cache is checked; a sweep deletes down to PRUNE_TO of the limit.
PRUNE_TO = 0.8
SESSIONS = 1000  # Visitors' sessions gradio keeps in memory (its default, 10,000, lets a busy day add up).
WATCH_SECONDS = 1.0  # How often the Training tab redraws.
TRAINING_OFF_NOTE = ("Starting runs is turned off here (set `PETSEG_ALLOW_TRAINING=1` or pass `--allow-training` "
                     "to turn it on); you can still watch runs started with `python train.py`.")
NO_RUN = ("no run",)  # The fingerprint of an empty runs folder.
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
PAW_ICON = ('<svg width="0.9em" height="0.9em" viewBox="0 0 24 24" fill="rgb(255,127,14)" aria-hidden="true" '
            'style="display:inline-block;vertical-align:-0.05em"><ellipse cx="12" cy="16.5" rx="5.5" ry="4.5"/>'
            '<circle cx="5" cy="10" r="2.3"/><circle cx="9" cy="5.5" r="2.3"/><circle cx="15" cy="5.5" r="2.3"/>'
            '<circle cx="19" cy="10" r="2.3"/></svg>')
HEADER = f"""
<div class="petseg-header">
<h1>{PAW_ICON} PetSeg</h1>
<p>Drop a photo of a cat or a dog: a U-Net trained on the Oxford-IIIT Pet trimaps marks every pixel as
<b>pet</b>, <b>background</b> or <b>border</b>, at the photo's own resolution.</p>
</div>
"""


def build_app(weights_dir: str | os.PathLike, runs_dir: str | os.PathLike, allow_training: bool | None) -> gr.Blocks:
    """Build the app's Blocks; launch it with ``demo.queue().launch(**launch_options(runs_dir))``."""
    # Results are written inside gradio's cache, which serves them as they are (no copy) and tracks them for pruning.
    outputs = OutputFolder(get_upload_folder())
    predict = PredictHandlers(weights_dir, outputs)
    training = TrainingHandlers(weights_dir, runs_dir, training_allowed(allow_training), outputs)
    with gr.Blocks(title="PetSeg: pet photo segmentation") as demo:
        gr.HTML(HEADER)
        with gr.Tabs():
            dropdowns = []  # Every tab's checkpoint dropdowns, which the Training tab refreshes.
            for label, build_tab in (("Predict", build_predict_tab), ("Compare", build_compare_tab),
                                     ("Batch", build_batch_tab)):
                with gr.Tab(label, id=label.lower()):
                    dropdowns += build_tab(predict)
            with gr.Tab("Training", id="training"):
                build_training_tab(training, dropdowns)
        gr.api(predict.list_checkpoints, api_name="list_checkpoints")
    return demo


def launch_options(runs_dir: str | os.PathLike | None = None, cache_limit_mb: float | None = None) -> dict[str, Any]:
    """The app's ``launch()`` arguments: its look, the upload limit, the folders it may serve, the cache limit (MB).

    The run folder (its sample PNGs) is served unless gradio serves it already (in the working or temporary folder),
    the weights folder never; ``ValueError`` for a run folder holding the working, temporary or home folder."""
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
            "app_kwargs": {"lifespan": functools.partial(cache_lifespan, limit_bytes=int(cache_limit_mb * 2**20))}}


def prune_cache(demo: gr.Blocks, limit_bytes: int, max_age: float = CACHE_MAX_AGE,
                min_age: float = CACHE_MIN_AGE) -> int:
    """Delete the files ``demo`` handed out (``temp_file_sets``; examples neither deleted nor counted) older than
    ``max_age`` seconds, then the oldest while they take more than ``limit_bytes`` (down to ``PRUNE_TO`` of it), none
    younger than ``min_age``; return the bytes left. Why not gradio's ``delete_cache``: docs/performance.md."""
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


@contextlib.asynccontextmanager
async def cache_lifespan(app, limit_bytes: int):
    """A FastAPI lifespan, given ``limit_bytes``: ``prune_cache`` every ``CACHE_SWEEP_SECONDS``, every file at exit."""
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


@dataclasses.dataclass
class WatchMemory:
    """What the Training tab last drew for one browser session, so a timer tick only sends what changed."""

    run_choices: list = dataclasses.field(default_factory=list)
    run_fingerprint: tuple = ()
    checkpoints_fingerprint: tuple | None = None


class TrainingHandlers:
    """The Training tab's event handlers, as plain methods that tests can call without a browser."""

    def __init__(self, weights_dir: str | os.PathLike, runs_dir: str | os.PathLike, allow_training: bool,
                 outputs: OutputFolder | None = None):
        self.weights_dir, self.runs_dir, self.allow_training = Path(weights_dir), Path(runs_dir), allow_training
        self.outputs = outputs or OutputFolder()
        self.launcher = TrainingLauncher(self.weights_dir, self.runs_dir)

    def start_training(self, preset: str, data_source: str, data_dir: str, encoder_weights: str, epochs: float,
                       batch_size: float, image_size: float, name: str) -> tuple:
        """Validate the form and start ``train.py``; returns the run picker and a fresh memory."""
        if not self.allow_training:
            raise gr.Error(TRAINING_OFF_NOTE, print_exception=False)
        with readable_errors():
            run_dir = self.launcher.start(parse_request(preset, epochs, batch_size, image_size, data_source, data_dir,
                                                        encoder_weights, name, self.weights_dir))
        gr.Info(f"Run {run_dir.name} started; its epochs appear here as they finish.")
        choices = [(run_label(run), run.run_id) for run in list_runs(self.runs_dir)]
        return gr.update(choices=choices, value=run_dir.name), WatchMemory(run_choices=choices)

    def stop_training(self, run_id: str | None) -> None:
        if not self.allow_training:
            raise gr.Error(TRAINING_OFF_NOTE, print_exception=False)
        if not run_id:
            raise gr.Error("Pick a run to stop.", print_exception=False)
        with readable_errors():
            gr.Info(self.launcher.stop(run_id))

    def watch(self, run_id: str | None, memory: WatchMemory | None, *checkpoints: str | None) -> tuple:
        """One timer tick: the run picker, the run's outputs (``draw_run``), memory and one update per checkpoint
        dropdown; unchanged outputs are ``gr.skip()``."""
        memory, picker = memory or WatchMemory(), gr.skip()
        # An empty runs folder (as on a Space) shows the shipped run records, the default checkpoint's first.
        runs = list_runs(self.runs_dir) or shipped_runs(self.weights_dir, default_checkpoint(self.weights_dir))
        choices = [(run_label(run), run.run_id) for run in runs]
        if choices != memory.run_choices:
            if run_id not in {run.run_id for run in runs}:
                run_id = runs[0].run_id if runs else None
            picker = gr.update(choices=choices, value=run_id)
        run = next((run for run in runs if run.run_id == run_id), None)
        dropdowns, weights = [gr.skip() for _ in checkpoints], checkpoints_fingerprint(self.weights_dir)
        if weights != memory.checkpoints_fingerprint:
            names, fallback = checkpoint_choices(self.weights_dir), default_checkpoint(self.weights_dir)
            dropdowns = [gr.update(choices=names, value=value or fallback) for value in checkpoints]
        return (picker, *self.draw_run(run, memory),
                WatchMemory(choices, run_fingerprint(run) if run else NO_RUN, weights), *dropdowns)

    def draw_run(self, run: RunState | None, memory: WatchMemory) -> tuple:
        """Status, log, latest samples, curves, gallery, process log and stop button for one run."""
        if run is None:
            if memory.run_fingerprint == NO_RUN:
                return tuple(gr.skip() for _ in range(7))
            note = "No training runs yet." + (" Start one on the left." if self.allow_training else "")
            return (note, "", None, None, [], "", gr.update(interactive=False))
        status = status_markdown(run)
        if run_fingerprint(run) == memory.run_fingerprint:  # Only the elapsed time moves between epochs.
            return (status, *[gr.skip()] * 6)
        gallery = [(str(path), f"epoch {int(path.stem.split('_')[-1])}") for path in run.samples]
        curves = self.outputs.write(plot_curves(run.epochs), run.run_id, "curves.png") if run.epochs else None
        latest = str(run.samples[-1]) if run.samples else None
        stop = gr.update(interactive=self.allow_training and run.state == "running")
        return (status, progress_log(run), latest, curves, gallery, log_tail(run.run_dir), stop)


def build_training_tab(handlers: TrainingHandlers, checkpoint_dropdowns: list[gr.Dropdown]) -> None:
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            gr.Markdown("### Start a run" if handlers.allow_training else "### Training")
            gr.Markdown(TRAINING_OFF_NOTE, elem_id="training-off", visible=not handlers.allow_training)
            with gr.Group(visible=handlers.allow_training):
                preset = gr.Dropdown(sorted(PRESETS), value="tutorial", label="Preset",
                                     info="tutorial: the TensorFlow tutorial; finetune: the stronger recipe; voc: "
                                          "DeepLabV3+ from a model that knows cats and dogs.")
                data_source = gr.Radio([(label, key) for key, label in DATA_SOURCES.items()], value="synthetic",
                                       label="Data")
                data_dir = gr.Textbox(label="Data folder", placeholder="/path/to/oxford-iiit-pet", visible=False)
                encoder_weights = gr.Dropdown(list(ENCODER_WEIGHTS), value="imagenet", allow_custom_value=True,
                                              label="Encoder weights", visible=False,
                                              info="imagenet downloads them; or type the path of a weights file.")
                # No minimum, maximum or precision here: the handler checks the numbers and names the field.
                with gr.Row():
                    epochs = gr.Number(5, label="Epochs", info="1 to 200", elem_id="epochs")
                    batch_size = gr.Number(8, label="Batch size", info="1 to 256", elem_id="batch-size")
                    image_size = gr.Number(128, label="Image size", info="32 to 512, a multiple of 32", step=32,
                                           elem_id="image-size")
                name = gr.Textbox(label="Checkpoint name (optional)", placeholder="<preset>-<run id>",
                                  elem_id="checkpoint-name")
            with gr.Row(visible=handlers.allow_training):
                start = gr.Button("Start training", variant="primary", elem_id="start-training")
                stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop-training")
            gr.Markdown("Synthetic demo data trains from a random encoder in seconds: the masks stay rough, "
                        "but every step of the pipeline runs. Runs keep going if you close the page.",
                        visible=handlers.allow_training)
        with gr.Column(scale=2):
            run_picker = gr.Dropdown(choices=[], label="Run", elem_id="run-picker", info="Runs in the runs folder, "
                                     "newest first, including runs started from a terminal.")
            run_status = gr.Markdown("No training runs yet.", elem_id="run-status")
            with gr.Row(equal_height=True):
                latest = gr.Image(label="Latest epoch samples", interactive=False, height=300, elem_id="latest-sample")
                curves = gr.Image(label="Loss and validation scores", interactive=False, height=300, elem_id="curves")
            log = gr.Textbox(label="Log", lines=6, max_lines=12, interactive=False, elem_id="training-log")
            gallery = gr.Gallery(label="Samples after each epoch (input / true mask / predicted mask)", columns=5,
                                 fit_columns=False, height=220, object_fit="contain", preview=False, elem_id="samples")
            with gr.Accordion("Process output (train.log)", open=False):
                process_log = gr.Textbox(show_label=False, lines=12, max_lines=20, interactive=False,
                                         elem_id="process-log")
    memory = gr.State(None)

    # The folder field only for folder data; the encoder choice for all but synthetic data (always random).
    data_source.change(lambda source: (gr.update(visible=source == "folder"), gr.update(visible=source != "synthetic")),
                       data_source, [data_dir, encoder_weights], api_visibility="private")
    preset.change(image_size_field, [preset, image_size], image_size, api_visibility="private")
    form = [preset, data_source, data_dir, encoder_weights, epochs, batch_size, image_size, name]
    start.click(handlers.start_training, form, [run_picker, memory], api_visibility="private")
    stop.click(handlers.stop_training, run_picker, None, api_visibility="private")
    gr.Timer(WATCH_SECONDS).tick(handlers.watch, [run_picker, memory, *checkpoint_dropdowns],
                                 [run_picker, run_status, log, latest, curves, gallery, process_log, stop, memory,
                                  *checkpoint_dropdowns], api_visibility="private", concurrency_limit=None,
                                 show_progress="hidden", trigger_mode="once")


def image_size_field(preset: str, image_size: Any) -> dict:
    step = 1 if is_deeplab(preset) else IMAGE_SIZE_STEP  # Browsers step from multiples of the step.
    return gr.update(value=image_size_for(preset, image_size), info=f"32 to 512, {image_size_rule(preset)}", step=step)
