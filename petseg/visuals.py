"""Colours, overlays and figures for segmentation results, as numpy arrays: images ``uint8`` (height, width, 3),
masks class ids (height, width) or (height, width, 1), probabilities float (height, width, NUM_CLASSES). Figures
are drawn on a ``Figure`` with its own Agg canvas, never with pyplot (safe in a web server); only the functions
that draw import matplotlib."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from petseg.atomic import atomic_path
from petseg.classes import CLASS_NAMES, NUM_CLASSES, PALETTE

PALETTE_ARRAY = np.array(PALETTE, dtype=np.uint8)


def colorize_mask(mask: np.ndarray) -> np.ndarray:
    """Paint each class id with its `PALETTE` colour, giving an RGB ``uint8`` image.

    >>> colorize_mask(np.array([[1, 2]])).tolist()
    [[[31, 119, 180], [255, 221, 51]]]
    """
    return np.take(PALETTE_ARRAY, _check_mask(mask), axis=0)  # Several times faster than PALETTE_ARRAY[mask].


def overlay_mask(image: np.ndarray, mask: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Blend the class colours over a photo: opacity 0 gives the photo, 1 gives the colour mask.

    >>> photo = np.zeros((1, 1, 3), dtype=np.uint8)
    >>> overlay_mask(photo, np.array([[0]]), opacity=0.5).tolist()
    [[[128, 64, 7]]]
    """
    image = _check_image(image)
    colours = colorize_mask(mask)
    if colours.shape != image.shape:
        raise ValueError(f"The mask is shaped {colours.shape[:2]} but the image is {image.shape[:2]}.")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}.")
    return np.rint(image.astype(np.float32) * (1.0 - opacity) + colours.astype(np.float32) * opacity).astype(np.uint8)


def confidence_map(probabilities: np.ndarray) -> np.ndarray:
    """Colour each pixel by its largest class probability: 1/3 (a guess) is dark, 1 (certain) is bright (magma)."""
    from matplotlib import colormaps

    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 3 or probabilities.shape[2] != NUM_CLASSES:
        raise ValueError(f"Probabilities must be shaped (height, width, {NUM_CLASSES}), got {probabilities.shape}.")
    lowest = 1.0 / NUM_CLASSES
    # One maximum per class plane: numpy's max over a short last axis is several times slower.
    largest = functools.reduce(np.maximum, (probabilities[..., index] for index in range(NUM_CLASSES)))
    confidence = (largest - lowest) * (255.0 / (1.0 - lowest))
    # The colormap's 256 colours, looked up by index: much faster than colouring every float.
    colours = colormaps["magma"](np.arange(256), bytes=True)[:, :3]
    return np.take(colours, np.rint(np.clip(confidence, 0.0, 255.0)).astype(np.uint8), axis=0)


def class_areas(mask: np.ndarray) -> dict[str, float]:
    """Return the percentage of pixels in each class, by class name; the values sum to 100.

    >>> class_areas(np.array([[0, 1, 1, 1]]))
    {'pet': 25.0, 'background': 75.0, 'border': 0.0}
    """
    mask = _check_mask(mask)
    if mask.size == 0:
        raise ValueError("The mask is empty.")
    counts = np.bincount(mask.ravel(), minlength=NUM_CLASSES)
    return {name: 100.0 * float(count) / mask.size for name, count in zip(CLASS_NAMES, counts)}


def sample_grid(images: Sequence[np.ndarray], true_masks: Sequence[np.ndarray | None],
                predicted_masks: Sequence[np.ndarray], title: str = "") -> np.ndarray:
    """One row per sample with the columns "Input", "True mask" and "Predicted mask" (a None true mask: "n/a")."""
    if not len(images) == len(true_masks) == len(predicted_masks):
        raise ValueError(f"Got {len(images)} images, {len(true_masks)} true masks and {len(predicted_masks)} "
                         "predicted masks; the counts must match.")
    if len(images) == 0:
        raise ValueError("sample_grid needs at least one sample.")
    # Rows as tall as the first photo's aspect ratio needs, for three 3-inch-wide columns.
    first_height, first_width = np.shape(images[0])[:2]
    row_height = 3.0 * min(max(first_height / max(first_width, 1), 0.5), 2.0) + 0.4
    figure, canvas = _new_figure(width=9.0, height=row_height * len(images) + (0.4 if title else 0.0))
    axes = figure.subplots(len(images), 3, squeeze=False)
    for row, (image, true_mask, predicted_mask) in enumerate(zip(images, true_masks, predicted_masks)):
        true_colours = None if true_mask is None else colorize_mask(true_mask)
        pictures = (_check_image(image), true_colours, colorize_mask(predicted_mask))
        for axis, picture, heading in zip(axes[row], pictures, ("Input", "True mask", "Predicted mask")):
            if picture is None:
                axis.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=14, color="0.4", transform=axis.transAxes)
            else:
                axis.imshow(picture, interpolation="nearest")
            if row == 0:
                axis.set_title(heading)
            axis.set_axis_off()
    if title:
        figure.suptitle(title)
    return _render(canvas)


def plot_curves(history: Sequence[dict]) -> np.ndarray:
    """The training losses and the validation mean IoU and accuracy, one point per epoch: ``history`` holds a dict
    per epoch with any of "epoch" (else numbered from 1) and the plotted keys; missing and None values are skipped."""
    from matplotlib.ticker import MaxNLocator

    for index, record in enumerate(history):
        if not isinstance(record, dict):
            raise ValueError(f"Each history entry must be a dict, entry {index} is a {type(record).__name__}.")
    figure, canvas = _new_figure(width=10.0, height=3.6)
    loss_axis, score_axis = figure.subplots(1, 2)
    for axis, keys, heading in ((loss_axis, ("loss", "val_loss"), "Loss"),
                                (score_axis, ("val_mean_iou", "val_accuracy"), "Validation scores")):
        axis.set(title=heading, xlabel="epoch")
        for key in keys:
            points = [(index + 1 if record.get("epoch") is None else record["epoch"], record[key])
                      for index, record in enumerate(history) if record.get(key) is not None]
            if points:
                axis.plot(*np.array(points, dtype=float).T, marker="o", markersize=4, label=key)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not axis.lines:
            message = "no epochs yet" if not history else f"no {heading.lower()} yet"
            axis.text(0.5, 0.5, message, ha="center", va="center", color="0.4", transform=axis.transAxes)
            continue
        axis.legend(loc="best", fontsize="small")
        axis.grid(alpha=0.3)
        if np.ptp(axis.dataLim.intervalx) == 0:  # A single epoch: widen the axis to whole epochs around the point.
            axis.set_xlim(*(axis.dataLim.intervalx + [-1, 1]))
    score_axis.set_ylim(0.0, 1.0)
    return _render(canvas)


def save_png(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 HxW, HxWx3 or HxWx4 array as a PNG atomically: a reader sees the old file or the whole new one."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"save_png needs a uint8 array shaped HxW, HxWx3 or HxWx4, got {array.dtype} {array.shape}.")
    with atomic_path(path) as temporary:
        Image.fromarray(np.ascontiguousarray(array)).save(temporary, format="PNG")


def _check_mask(mask: np.ndarray) -> np.ndarray:
    """Return ``mask`` as (height, width) if it holds integer class ids in range, else raise ValueError."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:  # Keras datasets often keep a trailing channel axis on masks.
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise ValueError(f"A mask must be shaped (height, width) or (height, width, 1), got {mask.shape}.")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"A mask must hold integer class ids, got dtype {mask.dtype}.")
    if mask.size and (mask.min() < 0 or mask.max() >= NUM_CLASSES):
        raise ValueError(f"Mask class ids must be between 0 and {NUM_CLASSES - 1}, got values from {mask.min()} to "
                         f"{mask.max()}.")
    return mask


def _check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` if it is an RGB ``uint8`` array, else raise ValueError."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"An image must be a uint8 array shaped (height, width, 3), got {image.dtype} {image.shape}.")
    return image


def _new_figure(width: float, height: float):
    """Return a Figure of the given size in inches with its own Agg canvas, outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure, FigureCanvasAgg(figure)


def _render(canvas) -> np.ndarray:
    """Draw the canvas and return its pixels as an RGB ``uint8`` array."""
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])
