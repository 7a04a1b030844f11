"""Alpha matting for the cutout: the predicted classes are a trimap (pet 1, background 0, border band unknown).

``cutout`` solves alpha inside the band only and re-estimates the band's colours: closed-form matting on the photo
shrunk to at most ``MATTE_PIXELS``, brought to full size by a guided filter (picked by ``bench/matting.py``,
docs/matting.md). ``warm_up`` pays pymatting's numba compilation at start-up; importing this module does not.

>>> import numpy as np
>>> trimap_from_mask(np.array([[0, 1, 2]], np.uint8)).tolist()
[[1.0, 0.0, 0.5]]
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from petseg.classes import BACKGROUND, BORDER, PET

MATTE_PIXELS = 250_000  # Larger photos are matted at reduced size (about 500x500): about 0.2 s here.
GUIDED_RADIUS = 4  # The guided filter's window radius (pixels at matting size).
GUIDED_EPSILON = 1e-4  # Its smoothing, on [0, 1] colours.
CG_ITERATIONS = 2000  # Closed-form matting's conjugate-gradient budget: the band is narrow.
# An absolute tolerance too: pymatting's relative one never ends on a zero right-hand side (a band with no pet).
SOLVER = {"maxiter": CG_ITERATIONS, "atol": 1e-12}
BAND_MARGIN = 24  # Pixels around the band that a method's windows reach (guided filter: 2 x 8; closed-form: 2).


def trimap_from_mask(mask: np.ndarray) -> np.ndarray:
    """The matting trimap of a class-id mask: 1 on pet, 0 on background, 0.5 on the border band (float64)."""
    return np.select([mask == PET, mask == BACKGROUND], [1.0, 0.0], 0.5)


def box_mean(array: np.ndarray, radius: int) -> np.ndarray:
    """The mean over a (2 radius + 1)-pixel square around each pixel, edges replicated, along the first two axes."""
    from scipy.ndimage import uniform_filter

    size = (2 * radius + 1, 2 * radius + 1) + (1,) * (array.ndim - 2)
    return uniform_filter(array, size=size, mode="nearest")


def guided_coefficients(guide: np.ndarray, source: np.ndarray, radius: int = GUIDED_RADIUS,
                        epsilon: float = GUIDED_EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """The colour guided filter's (He et al. 2013) local linear model ``source ~ a . guide + b``: ``a`` (h, w, 3)
    and ``b`` (h, w). Each pixel's 3x3 system is solved by its cofactors, all pixels at once."""
    mean_guide, mean_source = box_mean(guide, radius), box_mean(source, radius)
    covariance_source = box_mean(guide * source[..., None], radius) - mean_guide * mean_source[..., None]
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]  # The covariance is symmetric: 6 entries of 9.
    products = box_mean(np.stack([guide[..., i] * guide[..., j] for i, j in pairs], axis=-1), radius)
    c00, c01, c02, c11, c12, c22 = (products[..., k] - mean_guide[..., i] * mean_guide[..., j]
                                    + (epsilon if i == j else 0.0) for k, (i, j) in enumerate(pairs))
    a00, a01, a02, a11, a12, a22 = (c11 * c22 - c12 * c12, c02 * c12 - c01 * c22, c01 * c12 - c02 * c11,  # Cofactors.
                                    c00 * c22 - c02 * c02, c01 * c02 - c00 * c12, c00 * c11 - c01 * c01)
    determinant = c00 * a00 + c01 * a01 + c02 * a02
    v0, v1, v2 = (covariance_source[..., channel] for channel in range(3))
    a = np.stack([a00 * v0 + a01 * v1 + a02 * v2, a01 * v0 + a11 * v1 + a12 * v2,
                  a02 * v0 + a12 * v1 + a22 * v2], axis=-1) / determinant[..., None]
    b = mean_source - np.einsum("hwc,hwc->hw", a, mean_guide)
    return box_mean(a, radius), box_mean(b, radius)


def guided_filter(image: np.ndarray, trimap: np.ndarray, radius: int = 8, epsilon: float = 1e-3) -> np.ndarray:
    """``trimap`` smoothed along the edges of the colour ``image`` ([0, 1]): the "guided filter" method, no matting."""
    a, b = guided_coefficients(image, trimap, radius, epsilon)
    return np.einsum("hwc,hwc->hw", a, image) + b


def resize_float(array: np.ndarray, size: tuple[int, int], where: np.ndarray | None = None) -> np.ndarray:
    """Resize a (h, w[, channels]) float array to ``size`` (width, height) bilinearly; with ``where``, those pixels."""
    if array.ndim == 3:
        return np.stack([resize_float(plane, size, where) for plane in np.moveaxis(array, -1, 0)], axis=-1)
    resized = np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize(size, Image.BILINEAR), np.float64)
    return resized if where is None else resized[where]


def resize_photo(photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 RGB photo to ``size`` (width, height) with area averaging; returns floats in [0, 1]."""
    return np.asarray(Image.fromarray(photo).resize(size, Image.BOX), np.float64) / 255.0


def matting_size(height: int, width: int, max_pixels: int = MATTE_PIXELS) -> tuple[int, int]:
    """The (width, height) to matte at: the photo's own, or shrunk to at most ``max_pixels`` pixels.

    >>> matting_size(375, 500), matting_size(3000, 4000)
    ((500, 375), (577, 433))
    """
    scale = min(1.0, (max_pixels / (height * width)) ** 0.5)
    return max(1, int(width * scale)), max(1, int(height * scale))


def alpha_closed_form(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """Closed-form matting (Levin, Lischinski and Weiss 2008) inside the trimap's unknown band."""
    from pymatting import estimate_alpha_cf

    try:
        return estimate_alpha_cf(image, trimap, cg_kwargs=SOLVER)
    except ValueError:  # Conjugate gradients can stop short on a wide band of busy texture: a guided filter's edge.
        return guided_filter(image, trimap)


METHODS = {"closed-form": alpha_closed_form, "guided filter": guided_filter}  # The app's; bench/matting.py's rival.


def estimate_alpha(photo: np.ndarray, mask: np.ndarray, method: str = "closed-form",
                   max_pixels: int = MATTE_PIXELS) -> np.ndarray:
    """The alpha matte (h, w) in [0, 1] of an RGB uint8 photo and its class-id mask, solved at ``matting_size``
    (a guided filter brings it to full size); exactly 1 on pet and 0 on background."""
    if method not in METHODS:
        raise ValueError(f"Unknown matting method {method!r}; choose one of {', '.join(METHODS)}.")
    if photo.shape[:2] != mask.shape:
        raise ValueError(f"The mask is shaped {mask.shape} but the photo is {photo.shape[:2]}.")
    full_size, size = mask.shape[::-1], matting_size(*mask.shape, max_pixels)
    trimap, band = trimap_from_mask(mask), mask == BORDER
    if not band.any():
        return trimap  # No unknown band: nothing to solve.
    if size == full_size:
        trimap[band] = solve_band(photo / 255.0, trimap, method)[band]
    else:
        # The fast guided filter: the band's linear model fit at matting size, applied to the full-size photo.
        small_photo = resize_photo(photo, size)
        small_trimap = trimap_from_mask(np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST)))
        a, b = guided_coefficients(small_photo, solve_band(small_photo, small_trimap, method))
        a, b = resize_float(a, full_size, band), resize_float(b, full_size, band)
        trimap[band] = np.einsum("nc,nc->n", a, photo[band] / 255.0) + b
    trimap[band] = np.clip(trimap[band], 0.0, 1.0)
    return trimap


def solve_band(image: np.ndarray, trimap: np.ndarray, method: str) -> np.ndarray:
    """Alpha for a [0, 1] image and its trimap: ``method`` on the unknown band's bounding box (with the margin its
    windows reach, so the band's alpha is the whole photo's), 0 in a band with no pet in reach."""
    unknown = trimap == 0.5
    alpha = np.where(unknown, 0.0, trimap)
    if unknown.any():
        box = bounding_box(unknown, BAND_MARGIN)
        if (trimap[box] == 1.0).any():
            alpha[box] = METHODS[method](image[box], trimap[box])
    return alpha


def bounding_box(where: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    """The smallest box around the true pixels of a non-empty (h, w) boolean array, widened by ``margin``.

    >>> bounding_box(np.eye(4, dtype=bool)[1:3], margin=1)
    (slice(0, 3, None), slice(0, 4, None))
    """
    top, bottom = (int(index) for index in np.flatnonzero(where.any(axis=1))[[0, -1]])
    left, right = (int(index) for index in np.flatnonzero(where.any(axis=0))[[0, -1]])
    return slice(max(top - margin, 0), bottom + margin + 1), slice(max(left - margin, 0), right + margin + 1)


def estimate_foreground(photo: np.ndarray, alpha: np.ndarray, max_pixels: int = MATTE_PIXELS) -> np.ndarray:
    """The pet's own colours (h, w, 3 uint8): the photo, with partial pixels re-estimated (Germer et al. 2020) on
    their bounding box, at most ``max_pixels`` of it (a larger box's correction is found smaller and scaled up)."""
    partial = (alpha > 0.0) & (alpha < 1.0)
    result = photo.copy()
    if not partial.any():
        return result
    from pymatting import estimate_foreground_ml

    box = bounding_box(partial)
    band, (height, width) = partial[box], partial[box].shape
    size = matting_size(height, width, max_pixels)
    image = resize_photo(photo[box], size)  # The correction: the foreground estimate minus the photo, in [-1, 1].
    correction = resize_float(estimate_foreground_ml(image, resize_float(alpha[box], size)) - image,
                              (width, height), band)
    result[box][band] = np.rint(np.clip(photo[box][band] + correction * 255.0, 0.0, 255.0)).astype(np.uint8)
    return result


def cutout(photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The transparent cutout (h, w, 4 uint8) of the pet: a matted alpha, re-estimated edge colours, clear pixels
    black (no background colours kept; the PNG encodes faster and smaller)."""
    alpha = estimate_alpha(photo, mask)
    colours = estimate_foreground(photo, alpha)
    opacity = np.rint(alpha * 255.0).astype(np.uint8)
    colours *= (opacity != 0)[..., None]  # Clear pixels black.
    return np.dstack((colours, opacity))


def warm_up() -> float:
    """Import pymatting (which loads or compiles its numba kernels) and matte a tiny photo; returns seconds."""
    started = time.perf_counter()
    mask = np.pad(np.pad(np.full((6, 6), PET, np.uint8), 3, constant_values=BORDER), 6, constant_values=BACKGROUND)
    cutout(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8), mask)
    return time.perf_counter() - started
