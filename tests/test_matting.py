"""Alpha matting from the predicted trimap, on a synthetic photo whose soft edge and colours are known exactly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from petseg.classes import BACKGROUND, BORDER, PET
from petseg.matting import METHODS, cutout, estimate_alpha, estimate_foreground, matting_size, trimap_from_mask

SIZE = 96
RADIUS = 28.0
RAMP = 6.0  # The true edge fades from opaque to clear over this many pixels.
BAND = 3.0  # The "predicted" border band reaches this far beyond the soft edge on each side.


@pytest.fixture(scope="module")
def scene() -> dict[str, np.ndarray]:
    """A striped orange pet disc with a soft edge, composited over a blue and green checked background."""
    rows, columns = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    distance = np.hypot(rows - SIZE / 2, columns - SIZE / 2)
    alpha = np.clip((RADIUS + RAMP / 2 - distance) / RAMP, 0.0, 1.0)
    stripes = 0.5 + 0.5 * np.sin(columns / 3.0)[..., None]
    foreground = np.array([0.95, 0.55, 0.15]) * (0.75 + 0.25 * stripes)
    checks = ((rows // 12 + columns // 12) % 2)[..., None]
    background = np.where(checks == 1, [0.15, 0.35, 0.85], [0.2, 0.7, 0.3])
    composite = alpha[..., None] * foreground + (1.0 - alpha[..., None]) * background
    photo = np.rint(composite * 255.0).astype(np.uint8)
    mask = np.full((SIZE, SIZE), BORDER, np.uint8)
    mask[distance <= RADIUS - RAMP / 2 - BAND] = PET
    mask[distance >= RADIUS + RAMP / 2 + BAND] = BACKGROUND
    return {"photo": photo, "mask": mask, "alpha": alpha, "foreground": np.rint(foreground * 255.0)}


@pytest.mark.parametrize("max_pixels", [SIZE * SIZE, SIZE * SIZE // 4], ids=["full size", "reduced size"])
def test_alpha_is_sure_outside_the_band_and_soft_only_inside(scene, max_pixels):
    alpha = estimate_alpha(scene["photo"], scene["mask"], max_pixels=max_pixels)
    band = scene["mask"] == BORDER
    assert np.all(alpha[scene["mask"] == PET] == 1.0) and np.all(alpha[scene["mask"] == BACKGROUND] == 0.0)
    partial = (alpha > 0.0) & (alpha < 1.0)
    assert partial.any() and not (partial & ~band).any()
    # Inside the band the matte follows the true soft edge, unlike the trimap's flat 0.5.
    error = np.abs(alpha[band] - scene["alpha"][band]).mean()
    assert error < 0.05, f"mean alpha error {error:.3f} in the band"
    assert error < 0.5 * np.abs(0.5 - scene["alpha"][band]).mean()


@pytest.mark.parametrize("max_pixels", [SIZE * SIZE, SIZE * SIZE // 4], ids=["full size", "reduced size"])
def test_foreground_colours_are_closer_to_the_truth_than_the_photo(scene, max_pixels):
    alpha = estimate_alpha(scene["photo"], scene["mask"], max_pixels=max_pixels)
    colours = estimate_foreground(scene["photo"], alpha, max_pixels=max_pixels)
    edge = (alpha > 0.05) & (alpha < 0.95)
    truth = scene["foreground"][edge]
    matted_error = np.abs(colours[edge].astype(np.float64) - truth).mean()
    photo_error = np.abs(scene["photo"][edge].astype(np.float64) - truth).mean()
    assert matted_error < 0.5 * photo_error, f"{matted_error:.1f} against the photo's {photo_error:.1f}"
    # Sure pixels keep the photo's own colours.
    np.testing.assert_array_equal(colours[alpha == 1.0], scene["photo"][alpha == 1.0])


def test_cutout_is_rgba_at_the_photo_size_and_clear_on_the_background(scene):
    result = cutout(scene["photo"], scene["mask"])
    assert result.shape == (SIZE, SIZE, 4) and result.dtype == np.uint8
    assert np.all(result[scene["mask"] == BACKGROUND, 3] == 0) and np.all(result[scene["mask"] == PET, 3] == 255)


def test_a_mask_without_a_band_is_its_own_matte():
    mask = np.array([[PET, BACKGROUND], [BACKGROUND, PET]], np.uint8)
    alpha = estimate_alpha(np.zeros((2, 2, 3), np.uint8), mask)
    assert alpha.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_bad_arguments_are_refused(scene):
    with pytest.raises(ValueError, match="Unknown matting method"):
        estimate_alpha(scene["photo"], scene["mask"], method="magic")
    with pytest.raises(ValueError, match="mask is shaped"):
        estimate_alpha(scene["photo"], scene["mask"][:10])


def test_large_photos_are_matted_at_a_bounded_size():
    width, height = matting_size(3000, 4000)
    assert width * height <= 250_000 and abs(width / height - 4 / 3) < 0.01


def test_closed_form_on_the_band_box_equals_the_whole_photo(scene):
    """Matting solves only the band's bounding box (less memory and time); on a photo with a wide margin around
    the pet the alpha is exactly the whole photo's solve."""
    photo = np.pad(scene["photo"], ((40, 8), (30, 60), (0, 0)), mode="edge")
    mask = np.pad(scene["mask"], ((40, 8), (30, 60)), constant_values=BACKGROUND)
    whole = METHODS["closed-form"](photo / 255.0, trimap_from_mask(mask))
    np.testing.assert_array_equal(estimate_alpha(photo, mask, max_pixels=mask.size), np.clip(whole, 0.0, 1.0))


@pytest.mark.parametrize("pet", ["none", "far away"])
def test_a_band_with_no_pet_beside_it_is_clear_at_once(scene, pet):
    """A border band with no pet beside it has alpha 0 (a zero right-hand side for the solver, which once divided by
    zero, spun through all its iterations and fell back to a faint ghost of the band)."""
    mask = np.full((SIZE, SIZE), BACKGROUND, np.uint8)
    mask[40:60, 40:60] = BORDER
    if pet == "far away":
        mask[:10, :10] = PET
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alpha = estimate_alpha(scene["photo"], mask)
    assert np.all(alpha[mask != PET] == 0.0)
