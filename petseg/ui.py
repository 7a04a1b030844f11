"""The PetSeg web app: Predict, Compare, Batch and Training tabs in one gradio Blocks, with named API endpoints.

This module builds the page (header, theme, tabs) and the ``launch()`` options. The tabs live beside it:
``petseg.ui_predict`` (Predict, Compare and Batch: one photo through one or two checkpoints, or many photos) and
``petseg.ui_training`` (start and watch training runs). These three are the only modules that import gradio; they
turn the results and errors of ``petseg.segmentation`` and ``petseg.launcher`` into what the page shows. Every
user mistake becomes a readable ``gr.Error`` or ``gr.Warning``, never a traceback.

    from petseg.ui import build_app, launch_options
    demo = build_app()
    demo.queue().launch(**launch_options())

Named endpoints: ``/predict`` (photo, checkpoint -> class map, confidence, photo and cutout, areas, status, all
screen-sized; the class map and areas come first, the matted cutout a moment later), ``/cutout`` (photo,
checkpoint -> the full-resolution transparent PNG), ``/batch`` (photos or .zip files, checkpoint -> gallery, .zip of
cutouts, CSV of class shares, status), ``/compare`` and ``/list_checkpoints``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from petseg.checkpoints import DEFAULT_WEIGHTS_DIR
from petseg.launcher import training_allowed
from petseg.runs import DEFAULT_RUNS_DIR
from petseg.segmentation import OutputFolder
from petseg.ui_predict import PredictHandlers, build_batch_tab, build_compare_tab, build_predict_tab
from petseg.ui_training import TrainingHandlers, build_training_tab

MAX_FILE_SIZE = "20mb"
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
    outputs = OutputFolder()
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


def launch_options(runs_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``launch()`` arguments that belong to the app: its look, the upload limit and the folders it may serve.

    The run folder is served (its sample PNGs) only when it lies outside the working and temporary folders,
    which gradio allows already; the weights folder is never served. A run folder that holds the working, temporary
    or home folder (``/``, ``~``) raises ``ValueError``: serving it would serve every file in them.
    """
    runs_dir = Path(runs_dir or DEFAULT_RUNS_DIR).resolve()
    already_allowed = [Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()]
    allowed_paths = [] if any(runs_dir.is_relative_to(folder) for folder in already_allowed) else [str(runs_dir)]
    held = [folder for folder in (*already_allowed, Path.home().resolve()) if folder.is_relative_to(runs_dir)]
    if allowed_paths and held:
        raise ValueError(f"The runs folder {runs_dir} holds {held[0]}: the app would serve every file in it. "
                         "Choose a folder of its own, e.g. runs/.")
    return {"theme": THEME, "css": CSS, "max_file_size": MAX_FILE_SIZE, "allowed_paths": allowed_paths,
            "footer_links": ["api", "gradio", "settings"]}
