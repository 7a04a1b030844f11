"""The Training tab: a form that starts ``train.py`` runs (``petseg.launcher``) and a live view of any run.

A ``gr.Timer`` ticks once a second; ``TrainingHandlers.watch`` sends only what changed since the last tick, and
refreshes the app's checkpoint dropdowns when a run saves a checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import gradio as gr

from petseg.checkpoints import default_checkpoint
from petseg.launcher import (DATA_SOURCES, ENCODER_WEIGHTS, IMAGE_SIZE_STEP, TrainingLauncher,
                             checkpoints_fingerprint, image_size_for, image_size_rule, is_deeplab, log_tail,
                             parse_request, progress_log, run_fingerprint, run_label, status_markdown)
from petseg.presets import PRESETS
from petseg.runs import RunState, list_runs, shipped_runs
from petseg.segmentation import OutputFolder, checkpoint_choices
from petseg.ui_predict import readable_errors
from petseg.visuals import plot_curves

WATCH_SECONDS = 1.0
TRAINING_OFF_NOTE = ("Starting runs is turned off here (set `PETSEG_ALLOW_TRAINING=1` or pass `--allow-training` "
                     "to turn it on); you can still watch runs started with `python train.py`.")
NO_RUN = ("no run",)  # The fingerprint of an empty runs folder.


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
            if not handlers.allow_training:
                gr.Markdown(TRAINING_OFF_NOTE, elem_id="training-off")
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
            run_picker = gr.Dropdown(choices=[], label="Run", elem_id="run-picker",
                                     info="Runs in the runs folder, newest first, including runs started from a "
                                          "terminal.")
            run_status = gr.Markdown("No training runs yet.", elem_id="run-status")
            with gr.Row(equal_height=True):
                latest = gr.Image(label="Latest epoch samples", interactive=False, height=300, elem_id="latest-sample")
                curves = gr.Image(label="Loss and validation scores", interactive=False, height=300, elem_id="curves")
            log = gr.Textbox(label="Log", lines=6, max_lines=12, interactive=False, elem_id="training-log")
            gallery = gr.Gallery(label="Samples after each epoch (input / true mask / predicted mask)", columns=5,
                                 fit_columns=False, height=220, object_fit="contain", preview=False,
                                 elem_id="samples")
            with gr.Accordion("Process output (train.log)", open=False):
                process_log = gr.Textbox(show_label=False, lines=12, max_lines=20, interactive=False,
                                         elem_id="process-log")
    memory = gr.State(None)

    data_source.change(show_source_fields, data_source, [data_dir, encoder_weights], api_visibility="private")
    preset.change(image_size_field, [preset, image_size], image_size, api_visibility="private")
    start.click(handlers.start_training,
                [preset, data_source, data_dir, encoder_weights, epochs, batch_size, image_size, name],
                [run_picker, memory], api_visibility="private")
    stop.click(handlers.stop_training, run_picker, None, api_visibility="private")
    timer = gr.Timer(WATCH_SECONDS)
    timer.tick(handlers.watch, [run_picker, memory, *checkpoint_dropdowns],
               [run_picker, run_status, log, latest, curves, gallery, process_log, stop, memory,
                *checkpoint_dropdowns],
               api_visibility="private", concurrency_limit=None, show_progress="hidden", trigger_mode="once")


def image_size_field(preset: str, image_size: Any) -> dict:
    step = 1 if is_deeplab(preset) else IMAGE_SIZE_STEP  # Browsers step from multiples of the step.
    return gr.update(value=image_size_for(preset, image_size), info=f"32 to 512, {image_size_rule(preset)}", step=step)


def show_source_fields(data_source: str) -> tuple:
    """The folder field only for folder data; the encoder choice for all but synthetic data (always random)."""
    return gr.update(visible=data_source == "folder"), gr.update(visible=data_source != "synthetic")
