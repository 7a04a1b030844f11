"""Figures 1-3, measured in this process: request latency, batch throughput and training throughput.

Each function returns result rows (see ``bench.common.Row``); ``bench/run.py`` decides sizes and repeats.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from bench.common import Row, alternate, percentile, process_seconds, row_from_runs, time_calls
from bench.seed_way import (compile_like_tutorial, make_load_image, read_record, seed_predict_mask, seed_request,
                            seed_training_data)
from petseg.checkpoints import load_checkpoint
from petseg.classes import NUM_CLASSES
from petseg.data import compiled_resize, make_training_data, read_folder_example, read_split_names, validation_indices
from petseg.inference import class_ids, get_predictor, predict_probabilities
from petseg.model import build_model, set_encoder_trainable
from petseg.presets import get_preset
from petseg.photos import load_photo
from petseg.synthetic import make_synthetic_pet, make_synthetic_pets
from petseg.training import cross_entropy_dice_loss
from petseg.visuals import overlay_mask

VALIDATION_FRACTION = 0.1  # petseg.training's default.

# ---------------------------------------------------------------------------------------------------------------
# Inputs: generated photos, so nothing depends on the real data set.


def make_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """The bytes of one synthetic pet photo as a JPEG (quality 90, like a phone upload)."""
    photo, _ = make_synthetic_pet(np.random.default_rng(seed), width, height)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def make_mixed_photos(count: int, smallest: int = 160, largest: int = 800, seed: int = 0) -> list[np.ndarray]:
    """``count`` RGB photos of random sizes between ``smallest`` and ``largest`` pixels a side."""
    rng = np.random.default_rng(seed)
    photos = []
    for index in range(count):
        width, height = (int(side) for side in rng.integers(smallest, largest + 1, size=2))
        photo, _ = make_synthetic_pet(rng, width, height)
        photos.append(np.asarray(photo))
    return photos


def make_training_folder(root: Path, photos: int, smallest: int, largest: int, seed: int = 0) -> Path:
    """A folder in the official layout with ``photos`` trainval photos (and one test photo), made once."""
    if (root / "annotations" / "trainval.txt").is_file():
        return root
    return make_synthetic_pets(root, trainval_count=photos, test_count=1, seed=seed, min_size=smallest,
                               max_size=largest)


# ---------------------------------------------------------------------------------------------------------------
# Figure 1: request latency, upload bytes to overlay at the photo's size.


def our_request(jpeg_bytes: bytes, checkpoint: str, weights_dir) -> np.ndarray:
    """What the app does per upload: decode (EXIF-aware), probabilities at full size, class ids, overlay."""
    photo = load_photo(jpeg_bytes)
    return overlay_mask(photo, class_ids(predict_probabilities(photo, checkpoint, weights_dir)))


def request_latency(jpeg_bytes: bytes, checkpoint: str, weights_dir, repeats: int, requests: int,
                    goal: bool = False) -> list[Row]:
    """p50 and p95 latency and p50 CPU time in milliseconds over ``requests`` requests per repeat, ours and the seed's.

    CPU time is the process's (every thread), measured in runs of their own after the latency runs.
    """
    loaded = load_checkpoint(checkpoint, weights_dir)
    get_predictor(checkpoint, weights_dir)  # Loaded and run once, as app.py does before it serves.
    ours = lambda: our_request(jpeg_bytes, checkpoint, weights_dir)  # noqa: E731
    seed = lambda: seed_request(jpeg_bytes, loaded.model, loaded.image_size)  # noqa: E731
    if ours().shape != seed().shape:
        raise AssertionError("our overlay and the seed's differ in shape")
    for _ in range(2):  # The seed's first model.predict builds its predict function; not counted.
        ours(), seed()
    latencies = alternate({"ours": lambda: time_calls(ours, requests), "seed": lambda: time_calls(seed, requests)},
                          repeats)
    cpu = alternate({"ours": lambda: time_calls(ours, requests, process_seconds),
                     "seed": lambda: time_calls(seed, requests, process_seconds)}, repeats)
    rows = []
    label = f"{checkpoint} ({loaded.image_size} px)"
    for name, runs, q in (("Request latency p50", latencies, 50), ("Request latency p95", latencies, 95),
                          ("Request CPU time p50", cpu, 50)):
        ours_runs = [1000 * percentile(run, q) for run in runs["ours"]]
        seed_runs = [1000 * percentile(run, q) for run in runs["seed"]]
        kwargs = {}
        if goal and name == "Request latency p50":
            kwargs = {"goal": "<= 8 ms and >= 10x",
                      "goal_check": lambda row: row.ours <= 8.0 and (row.ratio or 0) >= 10.0}
        rows.append(row_from_runs(f"{name}, {label}", "ms", ours_runs, seed_runs, "lower",
                                  note=f"{requests} requests per run, 500x375 JPEG to overlay", **kwargs))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Figure 2: batch throughput.


def batch_throughput(photos: list[np.ndarray], checkpoint: str, weights_dir, repeats: int) -> Row:
    """Images per second: ``predict_probabilities`` per photo against one ``model.predict`` per photo."""
    loaded = load_checkpoint(checkpoint, weights_dir)

    def ours() -> float:
        started = time.perf_counter()
        for photo in photos:
            predict_probabilities(photo, checkpoint, weights_dir)
        return len(photos) / (time.perf_counter() - started)

    def seed() -> float:
        started = time.perf_counter()
        for photo in photos:
            seed_predict_mask(photo, loaded.model, loaded.image_size)
        return len(photos) / (time.perf_counter() - started)

    ours(), seed()  # Warm-up: traces and the seed's predict function.
    runs = alternate({"ours": ours, "seed": seed}, repeats)
    return row_from_runs(f"Batch throughput, {len(photos)} mixed-size photos, {checkpoint}", "images/s",
                         runs["ours"], runs["seed"], "higher",
                         note="ours: probabilities at each photo's size; seed: 128 px mask scaled up")


# ---------------------------------------------------------------------------------------------------------------
# Figure 3: training throughput.


class EpochClock(keras.callbacks.Callback):
    """Records the time at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.epoch_ends: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(time.perf_counter())


def our_pipeline(data_dir: Path, image_size: int, batch_size: int, augmentation: str = "flip"):
    """Our training dataset, Keras' steps per epoch (None: one pass) and the images in each epoch."""
    data = make_training_data(data_dir, image_size, batch_size, augmentation, VALIDATION_FRACTION, seed=0)
    return data.train, None, lambda epoch: data.counts["train"]


def our_training_names(data_dir: Path) -> list[str]:
    """The photos our pipeline trains on: the trainval split less the validation photos it holds out."""
    names = read_split_names(data_dir, "trainval")
    held_out = set(validation_indices(names, VALIDATION_FRACTION, seed=0).tolist())
    return [name for index, name in enumerate(names) if index not in held_out]


def seed_pipeline(data_dir: Path, image_size: int, batch_size: int):
    """The seed's training dataset, the tutorial's steps per epoch and the images in each epoch.

    It trains on the same photos as ours (ours holds some out for validation). The tutorial batches before it
    repeats, so when the photos are not a multiple of the batch each pass ends with a short batch and an epoch of
    ``photos // batch`` steps holds fewer images than steps times batch; they are counted exactly.
    """
    dataset, steps, photos = seed_training_data(data_dir, image_size, batch_size, our_training_names(data_dir))
    one_pass = [batch_size] * (photos // batch_size) + ([photos % batch_size] if photos % batch_size else [])

    def images_in_epoch(epoch: int) -> int:
        return sum(one_pass[step % len(one_pass)] for step in range(epoch * steps, (epoch + 1) * steps))

    return dataset, steps, images_in_epoch


def fit_epochs(model: keras.Model, build, epochs: int) -> tuple[list[float], list[int]]:
    """Build a pipeline and fit ``epochs`` epochs; return each epoch's seconds (the first includes the build)
    and images."""
    started = time.perf_counter()
    dataset, steps, images_in_epoch = build()
    clock = EpochClock()
    model.fit(dataset, epochs=epochs, steps_per_epoch=steps, callbacks=[clock], verbose=0)
    ends = [started, *clock.epoch_ends]
    return [end - begin for begin, end in zip(ends, ends[1:])], [images_in_epoch(e) for e in range(epochs)]


def iterate_epochs(build, epochs: int) -> tuple[list[float], list[int]]:
    """Like ``fit_epochs`` without a model: only pull every batch through the input pipeline."""
    started = time.perf_counter()
    dataset, steps, images_in_epoch = build()
    iterator = iter(dataset)
    ends = [started]
    for _ in range(epochs):
        if steps is None:
            for _ in dataset:  # Our dataset is finite: one pass is one epoch.
                pass
        else:
            for _ in range(steps):
                next(iterator)
        ends.append(time.perf_counter())
    return [end - begin for begin, end in zip(ends, ends[1:])], [images_in_epoch(e) for e in range(epochs)]


def training_throughput(data_dir: Path, warm_up_dir: Path, image_size: int, batch_size: int, repeats: int,
                        goal: bool = True, eager: bool = False) -> list[Row]:
    """Training images per second with our pipeline and the seed's, the same tutorial model and batch.

    Each run builds its pipeline from the photo files and fits a first epoch (decoding happens here) and one
    more (steady state). Both train functions are traced before timing, on a small warm-up folder. ``eager``
    skips tracing altogether (only for the smoke test, where tracing would take most of its time).
    """
    model = compile_like_tutorial(build_model("tutorial", image_size, encoder_weights=None), run_eagerly=eager)
    ways = {"ours": lambda folder: our_pipeline(folder, image_size, batch_size),
            "seed": lambda folder: seed_pipeline(folder, image_size, batch_size)}
    for build in ways.values():  # Trace the train step for each pipeline's element types.
        fit_epochs(model, lambda: build(warm_up_dir), 1)

    def run(build, fit: bool):
        seconds, images = (fit_epochs(model, lambda: build(data_dir), 2) if fit
                           else iterate_epochs(lambda: build(data_dir), 2))
        return {"first": images[0] / seconds[0], "steady": images[1] / seconds[1],
                "whole": sum(images) / sum(seconds)}

    fitted = alternate({name: (lambda build=build: run(build, True)) for name, build in ways.items()}, repeats)
    piped = alternate({name: (lambda build=build: run(build, False)) for name, build in ways.items()}, repeats)
    goal_kwargs = {"goal": ">= 1.5x", "goal_check": lambda row: (row.ratio or 0) >= 1.5} if goal else {}
    setting = f"tutorial model, batch {batch_size}, {image_size} px"
    rows = [
        row_from_runs(f"Training, first epoch ({setting})", "images/s", [r["first"] for r in fitted["ours"]],
                      [r["first"] for r in fitted["seed"]], "higher", note="includes building the pipeline"),
        row_from_runs(f"Training, steady epoch ({setting})", "images/s", [r["steady"] for r in fitted["ours"]],
                      [r["steady"] for r in fitted["seed"]], "higher"),
        row_from_runs(f"Training, first + steady epoch ({setting})", "images/s",
                      [r["whole"] for r in fitted["ours"]], [r["whole"] for r in fitted["seed"]], "higher",
                      **goal_kwargs),
        row_from_runs(f"Input pipeline alone, first epoch (batch {batch_size})", "images/s",
                      [r["first"] for r in piped["ours"]], [r["first"] for r in piped["seed"]], "higher",
                      note="no model: decode, resize, augment, batch"),
        row_from_runs(f"Input pipeline alone, steady epoch (batch {batch_size})", "images/s",
                      [r["steady"] for r in piped["ours"]], [r["steady"] for r in piped["seed"]], "higher"),
    ]
    return rows


def first_epoch_cost(data_dir: Path, image_size: int, repeats: int) -> list[Row]:
    """CPU milliseconds per photo of the two things a first epoch does once per photo: decode, and resize.

    Ours decodes as the app does (``petseg.photos``: by content, EXIF orientation, transparency on white, the
    trimap turned with its photo) and resizes with antialiasing, as the app's request path does; the seed's way
    decodes with ``tf.io.decode_jpeg``/``decode_png`` and resizes without antialiasing. Process CPU time over
    every trainval photo, so other work on the machine matters less than for wall time.
    """
    names = read_split_names(data_dir, "trainval")
    paths = [(str(data_dir / "images" / f"{name}.jpg"), str(data_dir / "annotations" / "trimaps" / f"{name}.png"))
             for name in names]
    examples = [read_folder_example(data_dir, name) for name in names]
    records = [read_record(*pair) for pair in paths]
    ours_resize, load_image = compiled_resize(image_size), make_load_image(image_size)
    seed_resize = tf.function(lambda image, mask: load_image({"image": image, "segmentation_mask": mask}),
                              input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                               tf.TensorSpec([None, None, 1], tf.uint8)])

    def cpu_milliseconds(work) -> float:
        started = time.process_time()
        work()
        return 1000 * (time.process_time() - started) / len(names)

    decode = {"ours": lambda: cpu_milliseconds(lambda: [read_folder_example(data_dir, name) for name in names]),
              "seed": lambda: cpu_milliseconds(lambda: [read_record(*pair) for pair in paths])}
    resize = {"ours": lambda: cpu_milliseconds(lambda: [ours_resize(e.image, e.mask[..., None]) for e in examples]),
              "seed": lambda: cpu_milliseconds(lambda: [seed_resize(r["image"], r["segmentation_mask"])
                                                        for r in records])}
    for way in [*decode.values(), *resize.values()]:
        way()  # Traces the resize functions and warms the file cache.
    decoded, resized = alternate(decode, repeats), alternate(resize, repeats)
    return [
        row_from_runs("First epoch, decode a photo and its trimap (CPU)", "ms", decoded["ours"], decoded["seed"],
                      note="ours as the app decodes (EXIF, alpha on white); the seed's tf.io.decode_jpeg"),
        row_from_runs("First epoch, resize a photo and its trimap (CPU)", "ms", resized["ours"], resized["seed"],
                      note="ours antialiased, as the app resizes; the seed's plain bilinear"),
    ]


def compile_like_training(model: keras.Model, preset, learning_rate: float, eager: bool = False) -> keras.Model:
    """Compile as ``petseg.training.train`` does: Adam, the preset's loss, accuracy and mean IoU."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=cross_entropy_dice_loss(preset.dice_weight),
                  metrics=["accuracy", keras.metrics.MeanIoU(NUM_CLASSES, sparse_y_pred=False, name="mean_iou")],
                  run_eagerly=eager)
    return model


def preset_epoch_seconds(data_dir: Path, repeats: int, epoch_photos: int, image_sizes: dict[str, int] | None = None,
                         batch_sizes: dict[str, int] | None = None, eager: bool = False) -> list[Row]:
    """Seconds per training epoch of ``epoch_photos`` photos for each preset and phase (ours only).

    Each preset trains at its own image size and batch size unless ``image_sizes`` / ``batch_sizes`` say
    otherwise (the quick run and the smoke test shrink them).

    Like ``petseg.training.train``, the finetune preset trains one model through both phases: frozen encoder
    first, then the encoder unfrozen and the model recompiled. Each phase fits ``1 + repeats`` epochs; the first
    (tracing) is dropped and the others are scaled from the folder's training photos to ``epoch_photos``.
    Validation is not included.
    """
    rows = []
    for preset_name in ("tutorial", "finetune"):
        preset = get_preset(preset_name)
        batch_size = (batch_sizes or {}).get(preset_name, preset.batch_size)
        image_size = (image_sizes or {}).get(preset_name, preset.image_size)
        model = build_model(preset, image_size, encoder_weights=None)
        phases = [False] + ([True] if preset.fine_tune_after is not None else [])
        for fine_tune in phases:
            set_encoder_trainable(model, fine_tune)
            rate = preset.fine_tune_learning_rate if fine_tune else preset.learning_rate
            compile_like_training(model, preset, rate, eager)
            seconds, images = fit_epochs(model, lambda: our_pipeline(data_dir, image_size, batch_size,
                                                                      preset.augmentation), 1 + repeats)
            scaled = [value * epoch_photos / count for value, count in zip(seconds[1:], images[1:])]
            phase = "fine-tune phase" if fine_tune else ("frozen encoder" if len(phases) > 1 else "")
            label = (f"Epoch time, {preset_name}" + (f" {phase}" if phase else "")
                     + f" (batch {batch_size}, {image_size} px)")
            rows.append(row_from_runs(label, "s", scaled, None, "lower",
                                      note=f"{epoch_photos} photos-equivalent, no validation"))
    return rows
