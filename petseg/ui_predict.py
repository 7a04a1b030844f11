"""The Predict, Compare and Batch tabs: a photo through one or two checkpoints, or many photos through one.

``gr.AnnotatedImage`` shows the classes over the photo, ``gr.ImageSlider`` the photo against its matted cutout; the
class map, confidence and areas go out as soon as the model answers, and the cutout follows.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.components.annotated_image import AnnotatedImageData, Annotation
from gradio.data_classes import FileData

from petseg.checkpoints import CheckpointError, default_checkpoint, list_checkpoints
from petseg.classes import CLASS_NAMES, PALETTE
from petseg.launcher import TrainingRequestError
from petseg.photos import PhotoError
from petseg.segmentation import (MAX_PHOTOS, BatchError, OutputFolder, Segmenter, area_fractions, checkpoint_choices,
                                 checkpoint_markdown, cut_out_batch, mask_agreement)

EXAMPLE_PHOTOS = sorted(str(path) for path in (Path(__file__).resolve().parent.parent / "examples").glob("*")
                        if path.suffix.lower() in (".jpg", ".jpeg", ".png"))
IMAGE_HEIGHT = 340
COLOR_MAP = {name: "#{:02x}{:02x}{:02x}".format(*colour) for name, colour in zip(CLASS_NAMES, PALETTE)}
NO_PHOTO_MESSAGE = "Upload a photo, paste one, or pick an example."
NO_BATCH_MESSAGE = (f"Drop up to {MAX_PHOTOS} photos, or a .zip of photos, then press **Cut out every photo**: you "
                    "get one .zip of full-resolution transparent PNGs and a CSV of each photo's class shares.")
NO_CHECKPOINT_MESSAGE = ("There is no checkpoint in the weights folder yet: train one in the Training tab or with "
                         "`python train.py`, then pick it here.")
NO_COMPARE_MESSAGE = "Upload a photo or pick an example to compare the two checkpoints on it."
PHOTO_EVENT = {"preprocess": False, "concurrency_id": "model"}  # The raw upload (see uploaded_photo), one model queue.


def class_map_from_files(value: tuple[str, list[tuple[str, str]]] | None) -> AnnotatedImageData | None:
    """An ``AnnotatedImage`` value of files (the photo, ``(layer, class name)`` pairs), replacing the component's
    ``postprocess``, which builds arrays in float64 and writes them under content-hash names (see ``OutputFolder``)."""
    if value is None:
        return None
    annotations = [Annotation(image=FileData(path=path), label=label) for path, label in value[1]]
    return AnnotatedImageData(image=FileData(path=value[0]), annotations=annotations)


def uploaded_photo(value: Any) -> str | bytes | None:
    """The uploaded file behind an image input's raw value: a path, or bytes for a pasted data URL. Photo events run
    with ``preprocess=False`` (gradio still checks that the path is an upload): a ``gr.Image`` would open the upload
    with Pillow first, and a text file would end in a bare "Error"."""
    if not isinstance(value, dict):
        return value  # A path or None; ``decode_photo`` refuses anything else with a readable error.
    if not value.get("path") and str(value.get("url")).startswith("data:"):
        try:
            return base64.b64decode(value["url"].split(",", 1)[1], validate=False)
        except (IndexError, binascii.Error):
            raise gr.Error("The pasted image could not be read; please upload it as a file.",
                           print_exception=False) from None
    return value.get("path")


def photo_name(value: Any) -> str | None:
    """The name the photo had on the user's machine, else the last part of its path, else None."""
    if isinstance(value, dict):
        return value.get("orig_name") or (Path(value["path"]).name if value.get("path") else None)
    return Path(value).name if isinstance(value, (str, os.PathLike)) else None


@contextlib.contextmanager
def readable_errors() -> Iterator[None]:
    """Turn the errors of the layers below (bad photos, checkpoints, batches, training requests) into ``gr.Error``."""
    try:
        yield
    except (PhotoError, CheckpointError, BatchError, TrainingRequestError) as error:
        raise gr.Error(str(error), print_exception=False) from None


class PredictHandlers:
    """The Predict, Compare and Batch tabs' event handlers, as plain methods that tests can call without a browser."""

    def __init__(self, weights_dir: str | os.PathLike, outputs: OutputFolder):
        self.weights_dir = Path(weights_dir)
        self.segmenter = Segmenter(self.weights_dir, outputs)  # Every image goes out as a file (see OutputFolder).

    def predict(self, photo: Any, checkpoint: str | None) -> Iterator[tuple]:
        """Segment one photo (the input's raw value, a path or None): yields (class map, confidence, None, areas,
        status), then the same with the photo | cutout slider, all screen-sized."""
        if (upload := uploaded_photo(photo)) is None:
            yield None, None, None, None, NO_PHOTO_MESSAGE
            return
        name = self.require_checkpoint(checkpoint)
        with readable_errors():
            pictures = self.segmenter.pictures(upload, name, photo_name(photo))
        status = (f"Segmented **{pictures.name or 'the photo'}** ({pictures.size}) with **{name}** "
                  f"in {pictures.seconds:.2f} s")
        areas = area_fractions(pictures.areas)
        yield pictures.class_map, pictures.confidence, None, areas, status + "; matting the cutout..."
        cutout, seconds = self.segmenter.screen_cutout(pictures)
        yield (pictures.class_map, pictures.confidence, (pictures.class_map[0], cutout), areas,
               status + f"; cutout matted in {seconds:.2f} s.")

    def predict_once(self, photo: Any, checkpoint: str | None) -> tuple:
        """``predict``'s final value alone: the ``/predict`` endpoint's answer. An API client downloads every file
        of every value a generator sends, so the first pictures would cost it one more round of downloads."""
        return list(self.predict(photo, checkpoint))[-1]

    def cutout(self, photo: Any, checkpoint: str | None) -> str | None:
        """The cutout at the photo's full resolution (a transparent PNG), made once per photo and checkpoint."""
        if (upload := uploaded_photo(photo)) is None:
            return None
        with readable_errors():
            return self.segmenter.full_cutout(upload, self.require_checkpoint(checkpoint), photo_name(photo)).path

    def recutout(self, photo: Any, checkpoint: str | None) -> str | None:
        """Like ``cutout`` after ``repredict``, which has warned about an unusable checkpoint already."""
        with contextlib.suppress(gr.Error):
            return self.cutout(photo, checkpoint)

    def repredict(self, photo: Any, checkpoint: str | None) -> Iterator[tuple]:
        """Like ``predict`` after a checkpoint switch, but an unusable checkpoint clears the results with a warning."""
        try:
            yield from self.predict(photo, checkpoint)
        except gr.Error as error:
            gr.Warning(error.message)
            yield None, None, None, None, error.message

    def batch(self, files: list[str] | None, checkpoint: str | None, progress: gr.Progress = gr.Progress()) -> tuple:
        """Cut out many photos (files or .zip files): returns the gallery, the .zip of cutouts, the CSV and status."""
        if not files:
            return None, None, None, NO_BATCH_MESSAGE
        name = self.require_checkpoint(checkpoint)
        with readable_errors():
            result = cut_out_batch(self.segmenter, files, name, lambda done, total, photo: progress(
                (done, total), desc=f"Cutting out {photo}" if photo else "Writing the .zip", unit="photos"))
        failed = result.photos - len(result.gallery)
        status = f"Cut out **{len(result.gallery)}** of {result.photos} photos with **{name}**"
        status += f"; {failed} could not be used (their errors are in the CSV)." if failed else "."
        return result.gallery, result.zip_path, result.csv_path, status

    def describe_checkpoint(self, checkpoint: str | None) -> str:
        """The card under the checkpoint dropdown; an unavailable checkpoint also raises a warning with its reason."""
        if not checkpoint:
            return NO_CHECKPOINT_MESSAGE
        info = next((info for info in list_checkpoints(self.weights_dir) if info.name == checkpoint), None)
        if info is None:
            return f"There is no checkpoint called **{checkpoint}** in the weights folder."
        if not info.available:
            gr.Warning(f"Checkpoint {info.name} is unavailable: {info.reason}.")
        return checkpoint_markdown(info)

    def require_checkpoint(self, checkpoint: str | None) -> str:
        """The checkpoint to use, or a readable error when there is none."""
        if not (name := checkpoint or default_checkpoint(self.weights_dir)):
            raise gr.Error(NO_CHECKPOINT_MESSAGE, print_exception=False)
        return name

    def compare(self, photo: Any, first: str | None, second: str | None) -> tuple:
        """Segment one photo with two checkpoints; returns the verdict, then card and class map for each."""
        if (upload := uploaded_photo(photo)) is None:
            return NO_COMPARE_MESSAGE, *[None] * 4
        names = [self.require_checkpoint(checkpoint) for checkpoint in (first, second)]
        with readable_errors():
            results = [self.segmenter.pictures(upload, name, photo_name(photo)) for name in names]
        outputs = [f"On this {results[0].size} photo, **{names[0]}** and **{names[1]}** agree on "
                   f"**{mask_agreement(results[0].mask, results[1].mask):.1f} %** of the pixels; the pet area changes "
                   f"by {results[1].areas['pet'] - results[0].areas['pet']:+.1f} points from the first to the second."]
        for name, result in zip(names, results):
            areas = ", ".join(f"{label} {result.areas[label]:.1f} %" for label in CLASS_NAMES)
            outputs += [self.describe_checkpoint(name) + f"  \nAreas: {areas}.", result.class_map]
        return tuple(outputs)

    def list_checkpoints(self) -> list[dict]:
        """Every checkpoint in the weights folder, best first: availability, reason, description and metrics."""
        return [{"name": info.name, "available": info.available, "reason": info.reason, "description": info.describe(),
                 "metrics": info.sidecar.get("metrics", {})} for info in list_checkpoints(self.weights_dir)]


def photo_input(height: int, elem_id: str) -> gr.Image:
    """A photo upload that also takes webcam shots and pasted images; its events hand over the file undecoded."""
    return gr.Image(label="Pet photo", type="filepath", image_mode=None, height=height, elem_id=elem_id,
                    sources=["upload", "webcam", "clipboard"])


def checkpoint_dropdown(weights_dir: Path, label: str, value: str | None = None, info: str | None = None,
                        elem_id: str | None = None) -> gr.Dropdown:
    """A dropdown of every checkpoint, on ``value`` or the default; typed names are allowed, for later checkpoints."""
    return gr.Dropdown(choices=checkpoint_choices(weights_dir), value=value or default_checkpoint(weights_dir),
                       label=label, info=info, allow_custom_value=True, filterable=True, elem_id=elem_id)


def class_map_output(label: str, height: int, elem_id: str | None = None) -> gr.AnnotatedImage:
    """A class map: the photo under the class colours, with gradio's legend (hover a class to see it alone). Its
    values are files (``class_map_from_files``; a subclass would make gradio write a ``.pyi`` stub beside us)."""
    component = gr.AnnotatedImage(label=label, color_map=COLOR_MAP, height=height, elem_id=elem_id)
    component.postprocess = class_map_from_files
    return component


def build_predict_tab(handlers: PredictHandlers) -> list[gr.Dropdown]:
    """The Predict tab; returns its checkpoint dropdown, which the Training tab refreshes."""
    checkpoint = checkpoint_dropdown(handlers.weights_dir, "Checkpoint", elem_id="checkpoint",
                                     info="Best first; labels give the preset, epochs, input size and test mIoU.")
    checkpoint_info = gr.Markdown(handlers.describe_checkpoint(checkpoint.value))
    with gr.Row(equal_height=True):
        photo = photo_input(IMAGE_HEIGHT, elem_id="photo")
        class_map = class_map_output("Classes: hover a name to see it alone", IMAGE_HEIGHT, elem_id="classes")
        slider = gr.ImageSlider(label="Photo | cutout: drag the line", height=IMAGE_HEIGHT, max_height=IMAGE_HEIGHT,
                                interactive=False, buttons=["fullscreen"], elem_id="cutout")
    gr.Examples(EXAMPLE_PHOTOS, inputs=photo, label="Example photos", cache_examples=False)
    status = gr.Markdown(NO_PHOTO_MESSAGE, elem_id="predict-status")
    with gr.Row(equal_height=True):
        confidence = gr.Image(label="Confidence: bright = sure", format="jpeg", interactive=False,
                              height=IMAGE_HEIGHT - 60, elem_id="confidence")
        areas = gr.Label(label="Share of the photo per class", num_top_classes=len(CLASS_NAMES))
        download = gr.File(label="Download the cutout (transparent PNG, full resolution)", interactive=False,
                           elem_id="cutout-file")

    outputs = [class_map, confidence, slider, areas, status]
    # The full-resolution cutout follows each prediction as an event of its own, /cutout for API clients.
    cutout = {"fn": handlers.cutout, "inputs": [photo, checkpoint], "outputs": download, **PHOTO_EVENT}
    photo.change(lambda: None, None, download, api_visibility="private", queue=False)
    photo.change(handlers.predict, [photo, checkpoint], outputs, api_name="predict_page", api_visibility="private",
                 trigger_mode="always_last", **PHOTO_EVENT).success(**cutout, api_name="cutout")
    gr.Button(visible=False).click(handlers.predict_once, [photo, checkpoint], outputs, api_name="predict",
                                   **PHOTO_EVENT)
    checkpoint.change(handlers.describe_checkpoint, checkpoint, checkpoint_info, api_visibility="private").then(
        lambda: None, None, download, api_visibility="private", queue=False).then(
        handlers.repredict, [photo, checkpoint], outputs, api_visibility="private", **PHOTO_EVENT).then(
        **{**cutout, "fn": handlers.recutout}, api_visibility="private")
    return [checkpoint]


def build_compare_tab(handlers: PredictHandlers) -> list[gr.Dropdown]:
    """The Compare tab; returns its two checkpoint dropdowns."""
    names = [info.name for info in list_checkpoints(handlers.weights_dir) if info.available] or [None]
    with gr.Row():
        with gr.Column(scale=1):
            photo = photo_input(IMAGE_HEIGHT - 60, elem_id="compare-photo")
            gr.Examples(EXAMPLE_PHOTOS, inputs=photo, label="Example photos", cache_examples=False)
            first = checkpoint_dropdown(handlers.weights_dir, "First checkpoint", names[0])
            second = checkpoint_dropdown(handlers.weights_dir, "Second checkpoint", names[min(1, len(names) - 1)])
            button = gr.Button("Compare", variant="primary")
        with gr.Column(scale=2):
            outputs = [gr.Markdown(NO_COMPARE_MESSAGE)]  # The verdict, then a card and a class map per checkpoint.
            with gr.Row(equal_height=True):
                for heading in ("First", "Second"):
                    with gr.Column():
                        outputs += [gr.Markdown(), class_map_output(f"{heading} checkpoint", IMAGE_HEIGHT - 60)]
    button.click(handlers.compare, [photo, first, second], outputs, api_name="compare", **PHOTO_EVENT)
    for trigger in (photo.change, first.change, second.change):
        trigger(handlers.compare, [photo, first, second], outputs, api_visibility="private", trigger_mode="always_last",
                **PHOTO_EVENT)
    return [first, second]


def build_batch_tab(handlers: PredictHandlers) -> list[gr.Dropdown]:
    """The Batch tab: many photos in, a gallery of cutouts, a .zip of them and a CSV out; returns its dropdown."""
    with gr.Row():
        with gr.Column(scale=1):
            files = gr.File(label="Pet photos, or a .zip of photos", file_count="multiple", elem_id="batch-files")
            checkpoint = checkpoint_dropdown(handlers.weights_dir, "Checkpoint")
            button = gr.Button("Cut out every photo", variant="primary", elem_id="batch-start")
        with gr.Column(scale=2):
            status = gr.Markdown(NO_BATCH_MESSAGE, elem_id="batch-status")
            gallery = gr.Gallery(label="Cutouts", columns=4, height=IMAGE_HEIGHT, object_fit="contain",
                                 elem_id="batch-gallery")
            with gr.Row():
                archive = gr.File(label="All cutouts: full-resolution transparent PNGs (.zip)", elem_id="batch-zip")
                table = gr.File(label="Class shares per photo (CSV)", elem_id="batch-csv")
    button.click(handlers.batch, [files, checkpoint], [gallery, archive, table, status], api_name="batch",
                 concurrency_id="model")
    return [checkpoint]
