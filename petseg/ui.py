"""The PetSeg web app: Predict, Compare and Training tabs in one gradio Blocks, with named API endpoints.

This is the only module that imports gradio. It lays out components and turns the results and errors of
``petseg.segmentation`` (one photo through one checkpoint) and ``petseg.launcher`` (training runs) into what the
page shows. Every user mistake becomes a readable ``gr.Error`` or ``gr.Warning``, never a traceback.

    from petseg.ui import build_app, launch_options
    demo = build_app()
    demo.queue().launch(**launch_options())

Named endpoints: ``/predict`` (photo, checkpoint, opacity -> mask, overlay, confidence, cutout, cutout file,
areas, status), ``/compare`` and ``/list_checkpoints``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from petseg.checkpoints import DEFAULT_WEIGHTS_DIR, CheckpointError, default_checkpoint, list_checkpoints
from petseg.classes import CLASS_NAMES
from petseg.launcher import (DATA_SOURCES, ENCODER_WEIGHTS, TrainingLauncher, TrainingRequestError,
                             checkpoints_fingerprint, log_tail, parse_request, progress_log, run_fingerprint,
                             run_label, status_markdown, training_allowed)
from petseg.presets import PRESETS
from petseg.photos import PhotoError, describe_photo, load_photo
from petseg.runs import DEFAULT_RUNS_DIR, RunState, list_runs, shipped_runs
from petseg.segmentation import (OutputFolder, Segmentation, area_fractions, checkpoint_choices, checkpoint_markdown,
                                 find_checkpoint, mask_agreement, pet_area_change, segment)
from petseg.visuals import legend_html, plot_curves

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"
MAX_FILE_SIZE = "20mb"
IMAGE_HEIGHT = 340
WATCH_SECONDS = 1.0
STATE_SECONDS = 3600  # A browser session's last segmentation is dropped after an hour without use.
NO_CHECKPOINT_MESSAGE = ("There is no checkpoint in the weights folder yet: train one in the Training tab or with "
                         "`python train.py`, then pick it here.")
TRAINING_OFF_NOTE = ("Starting runs is turned off here (set `PETSEG_ALLOW_TRAINING=1` or pass `--allow-training` "
                     "to turn it on); you can still watch runs started with `python train.py`.")

THEME = gr.themes.Soft(primary_hue="orange", secondary_hue="blue", neutral_hue="slate",
                       # System fonts: the page loads nothing from the internet.
                       font=("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif"),
                       font_mono=("ui-monospace", "SFMono-Regular", "Menlo", "monospace"))
CSS = """
.petseg-header h1 { margin-bottom: 0.2em; }
.petseg-header p { margin-top: 0; opacity: 0.8; }
.petseg-legend { justify-content: center; padding: 0.3em 0; }
#training-log textarea, #process-log textarea { font-family: var(--font-mono); font-size: 0.85em; }
/* A checkerboard behind the cutout shows which pixels are transparent. */
#cutout img { background: repeating-conic-gradient(#e5e7eb 0% 25%, #ffffff 0% 50%) 50% / 16px 16px; }
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


def uploaded_photo(value: Any) -> str | bytes | None:
    """The uploaded file behind an image input's raw value: a path, or bytes for a pasted data URL.

    The photo inputs' events run with ``preprocess=False``: a plain ``gr.Image`` would open the upload with Pillow
    before the handler runs, so a text file would end in a bare "Error", and orientation or colour conversions
    would happen outside the app's control. Gradio still checks that the path lies in its upload folder; handing
    the file over untouched keeps ``petseg.photos.load_photo`` the one decoder, with its readable messages.
    """
    if value is None or isinstance(value, (str, os.PathLike, bytes)):
        return value
    if not isinstance(value, dict):
        raise gr.Error(f"Cannot read a photo from a {type(value).__name__}.", print_exception=False)
    url = value.get("url") or ""
    if not value.get("path") and url.startswith("data:"):
        try:
            return base64.b64decode(url.split(",", 1)[1], validate=False)
        except (IndexError, binascii.Error):
            raise gr.Error("The pasted image could not be read; please upload it as a file.",
                           print_exception=False) from None
    return value.get("path")


def photo_name(value: Any) -> str | None:
    """The name the photo had on the user's machine, else the last part of its path, else None."""
    if isinstance(value, dict):
        return value.get("orig_name") or (Path(value["path"]).name if value.get("path") else None)
    return Path(value).name if isinstance(value, (str, os.PathLike)) else None


NO_RUN = ("no run",)  # The fingerprint of an empty runs folder.


@dataclasses.dataclass
class WatchMemory:
    """What the Training tab last drew for one browser session, so a timer tick only sends what changed."""

    run_choices: list = dataclasses.field(default_factory=list)
    run_fingerprint: tuple = ()
    checkpoints_fingerprint: tuple | None = None


class Handlers:
    """The app's event handlers, as plain methods that tests can call without a browser."""

    def __init__(self, weights_dir: str | os.PathLike, runs_dir: str | os.PathLike, allow_training: bool,
                 outputs: OutputFolder | None = None):
        self.weights_dir = Path(weights_dir)
        self.runs_dir = Path(runs_dir)
        self.allow_training = allow_training
        # Every image goes out as a file of its own (see OutputFolder), never as an array.
        self.outputs = outputs or OutputFolder()
        self.launcher = TrainingLauncher(self.weights_dir, self.runs_dir)

    # -- Predict -------------------------------------------------------------------------------------------------

    def predict(self, photo: Any, checkpoint: str | None, opacity: float = 0.5) -> tuple:
        """Segment one photo; returns mask, overlay, confidence, cutout, cutout file, areas, status, state.

        ``photo`` is the image input's raw value (see ``uploaded_photo``), a path, or None.
        """
        if uploaded_photo(photo) is None:
            return None, None, None, None, None, None, "Upload a photo, paste one, or pick an example.", None
        image = read_photo(uploaded_photo(photo))
        name = self.require_checkpoint(checkpoint)
        try:
            result = segment(image, name, self.weights_dir, opacity)
        except CheckpointError as error:
            raise gr.Error(str(error), print_exception=False) from None
        stem = photo_name(photo)
        status = (f"Segmented **{stem or 'the photo'}** ({describe_photo(image)}) with **{name}** "
                  f"in {result.seconds:.2f} s.")
        # The cutout preview shows the PNG written for download, so it is encoded once.
        cutout = self.outputs.write(result.cutout, stem, "cutout.png")
        return (self.outputs.write(result.colored_mask, stem, "mask.png"),
                self.outputs.write(result.overlay, stem, "overlay.jpg"),
                self.outputs.write(result.confidence, stem, "confidence.jpg"), cutout, cutout,
                area_fractions(result.areas), status, result.segmentation)

    def repredict(self, photo: Any, checkpoint: str | None, opacity: float = 0.5) -> tuple:
        """Like ``predict`` after a checkpoint switch, but an unusable checkpoint clears the results with a warning."""
        try:
            return self.predict(photo, checkpoint, opacity)
        except gr.Error as error:
            gr.Warning(error.message)
            return None, None, None, None, None, None, error.message, None

    def redraw_overlay(self, segmentation: Segmentation | None, opacity: float) -> Any:
        """Blend the last mask over its photo at a new opacity, without running the model again."""
        if segmentation is None:
            return gr.skip()
        return self.outputs.write(segmentation.overlay(opacity), None, "overlay.jpg")

    def describe_checkpoint(self, checkpoint: str | None) -> str:
        """The card under the checkpoint dropdown; an unavailable checkpoint also raises a warning with its reason."""
        if not checkpoint:
            return NO_CHECKPOINT_MESSAGE
        info = find_checkpoint(checkpoint, self.weights_dir)
        if info is None:
            return f"There is no checkpoint called **{checkpoint}** in the weights folder."
        if not info.available:
            gr.Warning(f"Checkpoint {info.name} is unavailable: {info.reason}.")
        return checkpoint_markdown(info)

    def require_checkpoint(self, checkpoint: str | None) -> str:
        """The checkpoint to use, or a readable error when there is none."""
        if checkpoint:
            return checkpoint
        fallback = default_checkpoint(self.weights_dir)
        if fallback is None:
            raise gr.Error(NO_CHECKPOINT_MESSAGE, print_exception=False)
        return fallback

    # -- Compare -------------------------------------------------------------------------------------------------

    def compare(self, photo: Any, first: str | None, second: str | None) -> tuple:
        """Segment one photo with two checkpoints; returns the verdict, then card, mask, overlay for each."""
        if uploaded_photo(photo) is None:
            return "Upload a photo or pick an example to compare the two checkpoints on it.", *[None] * 6
        image = read_photo(uploaded_photo(photo))
        results = []
        for checkpoint in (first, second):
            name = self.require_checkpoint(checkpoint)
            try:
                results.append((name, segment(image, name, self.weights_dir)))
            except CheckpointError as error:
                raise gr.Error(str(error), print_exception=False) from None
        (first_name, first_result), (second_name, second_result) = results
        first_mask, second_mask = first_result.segmentation.mask, second_result.segmentation.mask
        verdict = (f"On this {describe_photo(image)} photo, **{first_name}** and **{second_name}** agree on "
                   f"**{mask_agreement(first_mask, second_mask):.1f} %** of the pixels; the pet area changes by "
                   f"{pet_area_change(first_mask, second_mask):+.1f} points from the first to the second.")
        cards = []
        for name, result in results:
            areas = ", ".join(f"{label} {result.areas[label]:.1f} %" for label in CLASS_NAMES)
            cards.append(checkpoint_markdown(find_checkpoint(name, self.weights_dir)) + f"  \nAreas: {areas}.")
        stem = photo_name(photo)
        pictures = [(self.outputs.write(result.colored_mask, stem, f"{name}-mask.png"),
                     self.outputs.write(result.overlay, stem, f"{name}-overlay.jpg")) for name, result in results]
        return verdict, cards[0], *pictures[0], cards[1], *pictures[1]

    def list_checkpoints(self) -> list[dict]:
        """Every checkpoint in the weights folder, best first: availability, reason, description and metrics."""
        return [{"name": info.name, "available": info.available, "reason": info.reason,
                 "description": info.describe(), "metrics": info.sidecar.get("metrics", {})}
                for info in list_checkpoints(self.weights_dir)]

    # -- Training ------------------------------------------------------------------------------------------------

    def start_training(self, preset: str, data_source: str, data_dir: str, encoder_weights: str, epochs: float,
                       batch_size: float, image_size: float, name: str) -> tuple:
        """Validate the form and start ``train.py`` in its own process; returns the run picker and a fresh memory."""
        if not self.allow_training:
            raise gr.Error(TRAINING_OFF_NOTE, print_exception=False)
        try:
            request = parse_request(preset, epochs, batch_size, image_size, data_source, data_dir, encoder_weights,
                                    name, self.weights_dir)
            run_dir = self.launcher.start(request)
        except TrainingRequestError as error:
            raise gr.Error(str(error), print_exception=False) from None
        gr.Info(f"Run {run_dir.name} started; its epochs appear here as they finish.")
        choices = [(run_label(run), run.run_id) for run in list_runs(self.runs_dir)]
        return gr.update(choices=choices, value=run_dir.name), WatchMemory(run_choices=choices)

    def stop_training(self, run_id: str | None) -> None:
        """Ask the selected run to stop cleanly."""
        if not self.allow_training:
            raise gr.Error(TRAINING_OFF_NOTE, print_exception=False)
        if not run_id:
            raise gr.Error("Pick a run to stop.", print_exception=False)
        try:
            gr.Info(self.launcher.stop(run_id))
        except TrainingRequestError as error:
            raise gr.Error(str(error), print_exception=False) from None

    def watch(self, run_id: str | None, memory: WatchMemory | None, *checkpoints: str | None) -> tuple:
        """One timer tick: redraw what changed in the picked run and refresh the checkpoint lists after new saves.

        Returns the run picker, status, log, latest samples, curves, gallery, process log, stop button, memory and
        one update per checkpoint dropdown; unchanged outputs are ``gr.skip()``.
        """
        memory = memory or WatchMemory()
        # An empty runs folder (a Space, where starting runs is off) shows the shipped run records, the default
        # checkpoint's first.
        runs = list_runs(self.runs_dir) or shipped_runs(self.weights_dir, default_checkpoint(self.weights_dir))
        picker: Any = gr.skip()
        choices = [(run_label(run), run.run_id) for run in runs]
        if choices != memory.run_choices:
            if run_id not in {run.run_id for run in runs}:
                run_id = runs[0].run_id if runs else None
            picker = gr.update(choices=choices, value=run_id)
        run = next((run for run in runs if run.run_id == run_id), None)
        run_outputs = self.draw_run(run, memory)
        checkpoint_updates = self.refresh_checkpoints(memory, checkpoints)
        fingerprint = run_fingerprint(run) if run else NO_RUN
        memory = WatchMemory(choices, fingerprint, checkpoints_fingerprint(self.weights_dir))
        return (picker, *run_outputs, memory, *checkpoint_updates)

    def draw_run(self, run: RunState | None, memory: WatchMemory) -> tuple:
        """Status, log, latest samples, curves, gallery, process log and stop button for one run."""
        if run is None:
            if memory.run_fingerprint == NO_RUN:
                return tuple(gr.skip() for _ in range(7))
            note = "No training runs yet." + (" Start one on the left." if self.allow_training else "")
            return (note, "", None, None, [], "", gr.update(interactive=False))
        status = status_markdown(run)
        if run_fingerprint(run) == memory.run_fingerprint:
            # Only the elapsed time moves between epochs.
            return (status, *[gr.skip()] * 5, gr.skip())
        gallery = [(str(path), f"epoch {int(path.stem.split('_')[-1])}") for path in run.samples]
        curves = self.outputs.write(plot_curves(run.epochs), run.run_id, "curves.png") if run.epochs else None
        latest = str(run.samples[-1]) if run.samples else None
        stop = gr.update(interactive=self.allow_training and run.state == "running")
        return (status, progress_log(run), latest, curves, gallery, log_tail(run.run_dir), stop)

    def refresh_checkpoints(self, memory: WatchMemory, current: tuple[str | None, ...]) -> list:
        """New choices for each checkpoint dropdown when the weights folder changed, else ``gr.skip()``."""
        if checkpoints_fingerprint(self.weights_dir) == memory.checkpoints_fingerprint:
            return [gr.skip() for _ in current]
        choices = checkpoint_choices(self.weights_dir)
        fallback = default_checkpoint(self.weights_dir)
        return [gr.update(choices=choices, value=value or fallback) for value in current]


def read_photo(photo: str | bytes) -> Any:
    """Decode an upload with ``load_photo``, turning its ``PhotoError`` into a readable ``gr.Error``."""
    try:
        return load_photo(photo)
    except PhotoError as error:
        raise gr.Error(str(error), print_exception=False) from None


def example_photos() -> list[str]:
    """The example photos shipped in ``examples/``."""
    return sorted(str(path) for path in EXAMPLES_DIR.glob("*") if path.suffix.lower() in (".jpg", ".jpeg", ".png"))


def build_app(weights_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None,
              allow_training: bool | None = None) -> gr.Blocks:
    """Build the app's Blocks; launch it with ``demo.queue().launch(**launch_options(runs_dir))``."""
    handlers = Handlers(weights_dir or DEFAULT_WEIGHTS_DIR, runs_dir or DEFAULT_RUNS_DIR,
                        training_allowed(allow_training))
    with gr.Blocks(title="PetSeg: pet photo segmentation") as demo:
        gr.HTML(HEADER)
        with gr.Tabs():
            with gr.Tab("Predict", id="predict"):
                predict_checkpoint = build_predict_tab(handlers)
            with gr.Tab("Compare", id="compare"):
                compare_checkpoints = build_compare_tab(handlers)
            with gr.Tab("Training", id="training"):
                build_training_tab(handlers, [predict_checkpoint, *compare_checkpoints])
        gr.api(handlers.list_checkpoints, api_name="list_checkpoints")
    return demo


def photo_input(height: int, elem_id: str) -> gr.Image:
    """A photo upload that also takes webcam shots and pasted images; its events hand over the file undecoded."""
    return gr.Image(label="Pet photo", type="filepath", image_mode=None, height=height, elem_id=elem_id,
                    sources=["upload", "webcam", "clipboard"])


def checkpoint_dropdown(handlers: Handlers, label: str, value: str | None, info: str | None = None,
                        elem_id: str | None = None) -> gr.Dropdown:
    """A dropdown of every checkpoint; typed names are allowed so API clients can name checkpoints saved later."""
    return gr.Dropdown(choices=checkpoint_choices(handlers.weights_dir), value=value, label=label, info=info,
                       allow_custom_value=True, filterable=True, elem_id=elem_id)


def build_predict_tab(handlers: Handlers) -> gr.Dropdown:
    """The Predict tab; returns its checkpoint dropdown, which the Training tab refreshes."""
    default = default_checkpoint(handlers.weights_dir)
    checkpoint = checkpoint_dropdown(handlers, "Checkpoint", default,
                                     "Best first; labels give the preset, epochs, input size and test mIoU.",
                                     elem_id="checkpoint")
    checkpoint_info = gr.Markdown(handlers.describe_checkpoint(default))
    with gr.Row(equal_height=True):
        with gr.Column():
            photo = photo_input(IMAGE_HEIGHT, elem_id="photo")
        with gr.Column():
            mask = gr.Image(label="Predicted mask", format="png", interactive=False, height=IMAGE_HEIGHT,
                            elem_id="mask")
            gr.HTML(legend_html())
        with gr.Column():
            overlay = gr.Image(label="Overlay", format="jpeg", interactive=False, height=IMAGE_HEIGHT,
                               elem_id="overlay")
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Mask opacity")
    gr.Examples(example_photos(), inputs=photo, label="Example photos", cache_examples=False)
    status = gr.Markdown("Upload a photo, paste one, or pick an example.", elem_id="predict-status")
    with gr.Row(equal_height=True):
        confidence = gr.Image(label="Confidence: bright = sure", format="jpeg", interactive=False,
                              height=IMAGE_HEIGHT - 60, elem_id="confidence")
        cutout = gr.Image(label="Pet cutout", format="png", image_mode="RGBA", interactive=False,
                          height=IMAGE_HEIGHT - 60, elem_id="cutout")
        with gr.Column():
            areas = gr.Label(label="Share of the photo per class", num_top_classes=len(CLASS_NAMES))
            download = gr.File(label="Download the cutout (transparent PNG)", interactive=False, elem_id="cutout-file")
    last_segmentation = gr.State(None, time_to_live=STATE_SECONDS)

    outputs = [mask, overlay, confidence, cutout, download, areas, status, last_segmentation]
    photo.change(handlers.predict, [photo, checkpoint, opacity], outputs, api_name="predict", preprocess=False,
                 concurrency_id="model", trigger_mode="always_last")
    checkpoint.change(handlers.describe_checkpoint, checkpoint, checkpoint_info, api_visibility="private").then(
        handlers.repredict, [photo, checkpoint, opacity], outputs, api_visibility="private", preprocess=False,
        concurrency_id="model")
    opacity.change(handlers.redraw_overlay, [last_segmentation, opacity], overlay, api_visibility="private",
                   show_progress="hidden", trigger_mode="always_last")
    return checkpoint


def build_compare_tab(handlers: Handlers) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The Compare tab; returns its two checkpoint dropdowns."""
    names = [info.name for info in list_checkpoints(handlers.weights_dir) if info.available]
    with gr.Row():
        with gr.Column(scale=1):
            photo = photo_input(IMAGE_HEIGHT - 60, elem_id="compare-photo")
            gr.Examples(example_photos(), inputs=photo, label="Example photos", cache_examples=False)
            first = checkpoint_dropdown(handlers, "First checkpoint", names[0] if names else None)
            second = checkpoint_dropdown(handlers, "Second checkpoint",
                                         names[min(1, len(names) - 1)] if names else None)
            button = gr.Button("Compare", variant="primary")
        with gr.Column(scale=2):
            verdict = gr.Markdown("Upload a photo or pick an example to compare the two checkpoints on it.")
            # One row per kind of output, so the two checkpoints' pictures line up.
            with gr.Row(equal_height=True):
                masks = [gr.Image(label=f"{heading} checkpoint: mask", format="png", interactive=False,
                                  height=IMAGE_HEIGHT - 100) for heading in ("First", "Second")]
            with gr.Row(equal_height=True):
                overlays = [gr.Image(label=f"{heading} checkpoint: overlay", format="jpeg", interactive=False,
                                     height=IMAGE_HEIGHT - 100) for heading in ("First", "Second")]
            gr.HTML(legend_html())
            with gr.Row():
                cards = [gr.Markdown(), gr.Markdown()]
    outputs = [verdict, cards[0], masks[0], overlays[0], cards[1], masks[1], overlays[1]]
    button.click(handlers.compare, [photo, first, second], outputs, api_name="compare", preprocess=False,
                 concurrency_id="model")
    for trigger in (photo.change, first.change, second.change):
        trigger(handlers.compare, [photo, first, second], outputs, api_visibility="private", preprocess=False,
                concurrency_id="model", trigger_mode="always_last")
    return first, second


def build_training_tab(handlers: Handlers, checkpoint_dropdowns: list[gr.Dropdown]) -> None:
    """The Training tab: a form that starts runs (when allowed) and a live view of any run in the runs folder."""
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            gr.Markdown("### Start a run" if handlers.allow_training else "### Training")
            if not handlers.allow_training:
                gr.Markdown(TRAINING_OFF_NOTE, elem_id="training-off")
            with gr.Group(visible=handlers.allow_training):
                preset = gr.Dropdown(sorted(PRESETS), value="tutorial", label="Preset",
                                     info="tutorial: the TensorFlow tutorial; finetune: the stronger recipe.")
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
    start.click(handlers.start_training,
                [preset, data_source, data_dir, encoder_weights, epochs, batch_size, image_size, name],
                [run_picker, memory], api_visibility="private")
    stop.click(handlers.stop_training, run_picker, None, api_visibility="private")
    timer = gr.Timer(WATCH_SECONDS)
    timer.tick(handlers.watch, [run_picker, memory, *checkpoint_dropdowns],
               [run_picker, run_status, log, latest, curves, gallery, process_log, stop, memory,
                *checkpoint_dropdowns],
               api_visibility="private", concurrency_limit=None, show_progress="hidden", trigger_mode="once")


def show_source_fields(data_source: str) -> tuple:
    """The folder field only for folder data; the encoder choice for all but synthetic data (always random)."""
    return gr.update(visible=data_source == "folder"), gr.update(visible=data_source != "synthetic")


def launch_options(runs_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The ``launch()`` arguments that belong to the app: its look, the upload limit and the folders it may serve.

    The run folder is served (its sample PNGs) only when it lies outside the working and temporary folders,
    which gradio allows already; the weights folder is never served.
    """
    runs_dir = Path(runs_dir or DEFAULT_RUNS_DIR).resolve()
    already_allowed = [Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()]
    allowed_paths = [] if any(runs_dir.is_relative_to(folder) for folder in already_allowed) else [str(runs_dir)]
    return {"theme": THEME, "css": CSS, "max_file_size": MAX_FILE_SIZE, "allowed_paths": allowed_paths,
            "footer_links": ["api", "gradio", "settings"]}
