"""Tests for petseg.visuals: colours, blending, cutouts, areas, figures and atomic PNG writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as pyplot  # Only to check that its global figures stay untouched.
import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from petseg.classes import BACKGROUND, BORDER, CLASS_NAMES, PALETTE, PET
from petseg.visuals import (
    class_areas,
    colorize_mask,
    confidence_map,
    overlay_mask,
    plot_curves,
    sample_grid,
    save_png,
)

RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
MASK = RNG.integers(0, 3, size=(6, 8))
HISTORY = [
    {"epoch": epoch, "loss": 1.0 / epoch, "val_loss": 1.2 / epoch, "val_mean_iou": 0.4 + 0.05 * epoch, "val_accuracy": 0.8}
    for epoch in range(1, 6)
]


def one_hot(classes: list[int]) -> np.ndarray:
    """Probabilities shaped (1, len(classes), 3), certain of each class."""
    return np.eye(3, dtype=np.float32)[classes][None]


def test_colorize_mask_uses_the_palette() -> None:
    colours = colorize_mask(np.array([[PET, BACKGROUND, BORDER]], dtype=np.uint8))
    assert colours.dtype == np.uint8 and colours.shape == (1, 3, 3)
    assert [tuple(pixel) for pixel in colours[0]] == [PALETTE[PET], PALETTE[BACKGROUND], PALETTE[BORDER]]


@pytest.mark.parametrize(
    "mask",
    [np.array([[0, 3]]), np.array([[-1, 0]]), np.zeros((2, 2), dtype=np.float32), np.zeros((2, 2, 2), dtype=int)],
)
def test_colorize_mask_refuses_bad_masks(mask: np.ndarray) -> None:
    with pytest.raises(ValueError):
        colorize_mask(mask)


def test_masks_with_a_trailing_channel_axis_are_accepted() -> None:
    np.testing.assert_array_equal(colorize_mask(MASK[..., None]), colorize_mask(MASK))
    np.testing.assert_array_equal(overlay_mask(PHOTO, MASK[..., None]), overlay_mask(PHOTO, MASK))


def test_overlay_endpoints_and_midpoint() -> None:
    colours = colorize_mask(MASK)
    np.testing.assert_array_equal(overlay_mask(PHOTO, MASK, opacity=0.0), PHOTO)
    np.testing.assert_array_equal(overlay_mask(PHOTO, MASK, opacity=1.0), colours)
    quarter = overlay_mask(PHOTO, MASK, opacity=0.25)
    expected = np.rint(0.75 * PHOTO.astype(float) + 0.25 * colours.astype(float))
    assert quarter.dtype == np.uint8
    assert np.abs(quarter.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("opacity", [-0.1, 1.5])
def test_overlay_refuses_opacity_outside_zero_to_one(opacity: float) -> None:
    with pytest.raises(ValueError, match="opacity"):
        overlay_mask(PHOTO, MASK, opacity=opacity)


def test_overlay_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shaped"):
        overlay_mask(PHOTO, MASK[:5])
    with pytest.raises(ValueError, match="uint8"):
        overlay_mask(PHOTO.astype(np.float32), MASK)


def test_confidence_map_spans_the_colormap_from_a_guess_to_certainty() -> None:
    probabilities = np.concatenate([np.full((1, 1, 3), 1 / 3, dtype=np.float32), one_hot([BORDER])], axis=1)
    colours = confidence_map(probabilities)
    assert colours.shape == (1, 2, 3) and colours.dtype == np.uint8
    magma = colormaps["magma"]
    assert tuple(colours[0, 0]) == tuple(magma(0.0, bytes=True)[:3])
    assert tuple(colours[0, 1]) == tuple(magma(1.0, bytes=True)[:3])


def test_class_areas_match_a_hand_made_mask() -> None:
    mask = np.array(
        [
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [1, 1, 1, 1, 1],
            [1, 2, 2, 2, 2],
        ]
    )
    areas = class_areas(mask)
    assert list(areas) == list(CLASS_NAMES)
    assert areas == {"pet": 50.0, "background": 30.0, "border": 20.0}


def test_class_areas_sum_to_100() -> None:
    areas = class_areas(RNG.integers(0, 3, size=(37, 41)))
    assert sum(areas.values()) == pytest.approx(100.0)
    assert class_areas(np.ones((3, 3), dtype=np.int32)) == {"pet": 0.0, "background": 100.0, "border": 0.0}


def count_colour(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(image == colour, axis=-1).sum())


def test_sample_grid_renders_rows_and_n_a_without_touching_pyplot() -> None:
    figures_before = pyplot.get_fignums()
    photo = np.full((60, 80, 3), 128, dtype=np.uint8)
    mask = np.zeros((60, 80), dtype=np.int64)
    with_truth = sample_grid([photo], [mask], [mask], title="Validation")
    without_truth = sample_grid([photo], [None], [mask])
    two_rows = sample_grid([photo, photo], [mask, None], [mask, mask])
    assert pyplot.get_fignums() == figures_before
    for grid in (with_truth, without_truth, two_rows):
        assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
        assert grid.shape[1] >= 600 and grid.shape[0] >= 150
    assert two_rows.shape[0] > 1.6 * without_truth.shape[0]
    # The true-mask cell is painted in the pet colour; "n/a" leaves it blank.
    pet_pixels = count_colour(with_truth, PALETTE[PET])
    assert pet_pixels > 0
    assert count_colour(without_truth, PALETTE[PET]) == pytest.approx(pet_pixels / 2, rel=0.1)


def test_sample_grid_refuses_mismatched_or_empty_inputs() -> None:
    with pytest.raises(ValueError, match="counts must match"):
        sample_grid([PHOTO], [MASK, MASK], [MASK])
    with pytest.raises(ValueError, match="at least one"):
        sample_grid([], [], [])


@pytest.mark.parametrize(
    "history",
    [
        [],
        HISTORY[:1],
        HISTORY,
        [{"loss": 0.5}, {"loss": 0.4, "val_mean_iou": None}],
    ],
    ids=["empty", "one epoch", "five epochs", "partial keys"],
)
def test_plot_curves_renders_rgb_without_touching_pyplot(history: list[dict]) -> None:
    figures_before = pyplot.get_fignums()
    curves = plot_curves(history)
    assert pyplot.get_fignums() == figures_before
    assert curves.dtype == np.uint8 and curves.ndim == 3 and curves.shape[2] == 3
    assert curves.shape[0] >= 200 and curves.shape[1] >= 500


def test_plot_curves_draws_the_data() -> None:
    assert not np.array_equal(plot_curves([]), plot_curves(HISTORY))
    with pytest.raises(ValueError, match="dict"):
        plot_curves([0.5])  # type: ignore[list-item]


@pytest.mark.parametrize("shape", [(6, 8), (6, 8, 3), (6, 8, 4)])
def test_save_png_round_trips_and_leaves_no_temporary_files(tmp_path: Path, shape: tuple[int, ...]) -> None:
    array = RNG.integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / "picture.png"
    path.write_bytes(b"an older version")
    save_png(array, path)
    assert [entry.name for entry in tmp_path.iterdir()] == ["picture.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(path)), array)
    assert path.stat().st_mode & 0o777 == 0o644


def test_save_png_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "picture.png"
    path.write_bytes(b"an older version")

    def failing_replace(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_png(PHOTO, path)
    assert [entry.name for entry in tmp_path.iterdir()] == ["picture.png"]
    assert path.read_bytes() == b"an older version"


def test_save_png_refuses_non_image_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        save_png(np.zeros((4, 4), dtype=np.int64), tmp_path / "mask.png")
    assert list(tmp_path.iterdir()) == []


def test_import_is_light_and_drawing_never_imports_pyplot() -> None:
    code = (
        "import sys\n"
        "import numpy as np\n"
        "import petseg.visuals as visuals\n"
        "heavy = [name for name in ('tensorflow', 'gradio', 'matplotlib') if name in sys.modules]\n"
        "assert not heavy, heavy\n"
        "visuals.plot_curves([{'loss': 1.0}])\n"
        "photo = np.zeros((16, 16, 3), dtype=np.uint8)\n"
        "visuals.sample_grid([photo], [None], [np.zeros((16, 16), dtype=int)])\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
