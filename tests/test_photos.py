"""Tests for petseg.photos: every corpus case, orientation, bit depth, transparency and size limits."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from petseg.photos import MAX_PIXELS, MIN_SIDE, PhotoError, decode_photo, load_photo
from tests.corpus import EXIF_BLOCK, EXPECTED, bad_inputs

IGNORE_BOMB_WARNING = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return bad_inputs(tmp_path_factory.mktemp("corpus"))


def close_to(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


@IGNORE_BOMB_WARNING
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_case(corpus: dict[str, Path], name: str) -> None:
    expected = EXPECTED[name]
    if expected[0] == "error":
        with pytest.raises(PhotoError) as raised:
            load_photo(corpus[name])
        message = str(raised.value)
        assert expected[1] in message.lower()
        # The message is for users: one short sentence, no folders, no traceback.
        assert str(corpus[name].parent) not in message
        assert "\n" not in message and len(message) < 200
    else:
        photo = load_photo(corpus[name])
        assert photo.shape == expected
        assert photo.dtype == np.uint8
        assert photo.flags.c_contiguous


@IGNORE_BOMB_WARNING
@pytest.mark.parametrize("name", sorted(name for name in EXPECTED if name != "missing.png"))
def test_bytes_give_the_same_result_as_the_file(corpus: dict[str, Path], name: str) -> None:
    data = corpus[name].read_bytes()
    if EXPECTED[name][0] == "error":
        with pytest.raises(PhotoError, match="(?i)" + EXPECTED[name][1]):
            load_photo(data)
    else:
        np.testing.assert_array_equal(load_photo(data), load_photo(corpus[name]))


def test_exif_orientation_rotates_the_red_corner_to_the_top_right(corpus: dict[str, Path]) -> None:
    # Orientation 6 means "rotate 90 degrees clockwise to display": stored top-left becomes top-right.
    photo = load_photo(corpus["exif_rotated.jpg"])
    inner = EXIF_BLOCK // 2
    assert close_to(photo[:inner, -inner:].mean(axis=(0, 1)), (255, 0, 0), tolerance=20)
    assert close_to(photo[:inner, :inner].mean(axis=(0, 1)), (128, 128, 128), tolerance=20)
    assert close_to(photo[-inner:, -inner:].mean(axis=(0, 1)), (128, 128, 128), tolerance=20)


def test_exif_orientation_is_applied_to_pil_images_too(corpus: dict[str, Path]) -> None:
    with Image.open(corpus["exif_rotated.jpg"]) as image:
        assert image.size == (60, 40)
        assert load_photo(image).shape == (60, 40, 3)


def test_sixteen_bit_png_is_scaled_not_clipped(corpus: dict[str, Path]) -> None:
    photo = load_photo(corpus["sixteen_bit.png"])
    ramp = np.asarray(Image.open(corpus["sixteen_bit.png"])).astype(np.int64)
    assert ramp.max() == 65535
    expected = np.rint(ramp * 255 / 65535)
    np.testing.assert_array_equal(photo[:, :, 0], expected)
    assert photo[0, 0, 0] == 0 and photo[-1, -1, 0] == 255
    # A ramp must stay a ramp: clipping would give mostly 255.
    assert 100 < photo[photo.shape[0] // 2, 0, 0] < 160


def test_sixteen_bit_arrays_and_mode_i_images_are_scaled() -> None:
    values = np.array([0, 257, 32768, 65535], dtype=np.uint16)
    block = np.repeat(np.repeat(values[None, :], 8, axis=0), 2, axis=1)
    np.testing.assert_array_equal(load_photo(block)[0, ::2, 1], [0, 1, 128, 255])
    mode_i = Image.fromarray(block.astype(np.int32))
    assert mode_i.mode == "I"
    np.testing.assert_array_equal(load_photo(mode_i)[0, ::2, 2], [0, 1, 128, 255])


def test_transparent_pixels_are_composited_onto_white(corpus: dict[str, Path]) -> None:
    photo = load_photo(corpus["rgba_transparent.png"])
    half = photo.shape[1] // 2
    assert np.all(photo[:, :half] == 255)
    assert np.all(photo[:, half:] == (0, 0, 255))


def test_half_transparent_black_array_becomes_mid_grey() -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 128
    assert np.all(load_photo(rgba) == 127)


def test_grayscale_with_alpha_is_composited_onto_white() -> None:
    image = Image.new("LA", (10, 10), (0, 0))
    image.paste((0, 255), (0, 0, 5, 10))
    photo = load_photo(image)
    assert np.all(photo[:, :5] == 0)
    assert np.all(photo[:, 5:] == 255)


@pytest.mark.parametrize(("mode", "colour"), [("L", 100), ("RGB", (100, 0, 0))])
def test_a_transparent_colour_key_becomes_white(tmp_path: Path, mode: str, colour: int | tuple) -> None:
    image = Image.new(mode, (10, 10), 0)
    image.paste(colour, (5, 0, 10, 10))
    image.save(tmp_path / "keyed.png", transparency=0 if mode == "L" else (0, 0, 0))
    photo = load_photo(tmp_path / "keyed.png")
    assert np.all(photo[:, :5] == 255)
    assert np.all(photo[:, 5:] == np.broadcast_to(colour, (3,)))


def test_palette_images_with_and_without_transparency(corpus: dict[str, Path]) -> None:
    assert np.all(load_photo(corpus["palette.png"])[:, 0] == (255, 0, 0))
    transparent = load_photo(corpus["palette_transparent.png"])
    assert np.all(transparent[:, 0] == 255)
    assert np.all(transparent[:, -1] == (255, 255, 0))


def test_grayscale_and_cmyk_become_rgb(corpus: dict[str, Path]) -> None:
    gray = load_photo(corpus["grayscale.jpg"])
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    cmyk = load_photo(corpus["cmyk.jpg"])
    assert close_to(cmyk.mean(axis=(0, 1)), (0, 255, 255))


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp"])
def test_animations_give_their_first_frame(corpus: dict[str, Path], name: str) -> None:
    photo = load_photo(corpus[name])
    assert close_to(photo.mean(axis=(0, 1)), (255, 0, 0))


@pytest.mark.parametrize(
    ("array", "expected_value"),
    [
        (np.full((9, 10), 200, dtype=np.uint8), 200),
        (np.full((9, 10, 1), 200, dtype=np.uint8), 200),
        (np.ones((9, 10), dtype=bool), 255),
        (np.full((9, 10, 3), 0.5, dtype=np.float32), 128),
        (np.full((9, 10, 3), 1.0, dtype=np.float64), 255),
        (np.full((9, 10, 3), 60, dtype=np.int64), 60),
    ],
)
def test_array_inputs(array: np.ndarray, expected_value: int) -> None:
    photo = load_photo(array)
    assert photo.shape == (9, 10, 3) and photo.dtype == np.uint8
    assert np.all(photo == expected_value)


def test_arrays_are_copied_and_made_contiguous() -> None:
    source = np.zeros((20, 30, 3), dtype=np.uint8)
    photo = load_photo(source)
    photo[:] = 1
    assert source.max() == 0
    view = np.zeros((30, 20, 3), dtype=np.uint8).transpose(1, 0, 2)
    assert load_photo(view).flags.c_contiguous


@pytest.mark.parametrize(
    ("array", "word"),
    [
        (np.full((9, 10, 3), 2.0, dtype=np.float32), "between 0 and 1"),
        (np.full((9, 10, 3), np.nan, dtype=np.float32), "invalid"),
        (np.zeros((9, 10, 2), dtype=np.uint8), "shaped"),
        (np.zeros((9,), dtype=np.uint8), "shaped"),
        (np.full((9, 10), 300, dtype=np.int32), "between 0 and 255"),
        (np.zeros((9, 10), dtype=complex), "not supported"),
    ],
)
def test_unusable_arrays_raise_photo_error(array: np.ndarray, word: str) -> None:
    with pytest.raises(PhotoError, match=word):
        load_photo(array)


def test_the_smallest_allowed_side() -> None:
    assert load_photo(np.zeros((MIN_SIDE, MIN_SIDE), dtype=np.uint8)).shape == (MIN_SIDE, MIN_SIDE, 3)
    with pytest.raises(PhotoError, match="100x7 px"):
        load_photo(np.zeros((MIN_SIDE - 1, 100), dtype=np.uint8))


@IGNORE_BOMB_WARNING
def test_huge_photo_is_refused_from_its_header_without_decoding(
    corpus: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail_if_decoded(self: ImageFile.ImageFile) -> None:
        raise RuntimeError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail_if_decoded)
    with pytest.raises(PhotoError) as raised:
        load_photo(corpus["huge.png"])
    message = str(raised.value)
    assert "10000x10000" in message and "100,000,000" in message and f"{MAX_PIXELS:,}" in message


def test_max_pixels_is_honoured() -> None:
    photo = np.zeros((100, 100), dtype=np.uint8)
    assert load_photo(photo, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(PhotoError, match="limit is 9,999 pixels"):
        load_photo(photo, max_pixels=9_999)


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_pillow_bomb_warning_as_error_becomes_photo_error(corpus: dict[str, Path]) -> None:
    # Above our own limit, Pillow's check in Image.open speaks first.
    with pytest.raises(PhotoError, match="too large"):
        load_photo(corpus["huge.png"], max_pixels=200_000_000)


def test_pillow_bomb_error_becomes_photo_error(corpus: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    with pytest.raises(PhotoError, match="too large"):
        load_photo(corpus["palette.png"])


def test_other_sources(tmp_path: Path) -> None:
    with pytest.raises(PhotoError, match="folder"):
        load_photo(tmp_path)
    with pytest.raises(PhotoError, match="No photo"):
        load_photo(None)  # type: ignore[arg-type]
    with pytest.raises(PhotoError, match="No photo"):
        load_photo("")
    with pytest.raises(PhotoError, match="could not be read"):
        load_photo(tmp_path / ("x" * 5000))
    with pytest.raises(PhotoError, match="list"):
        load_photo([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(PhotoError, match="empty"):
        load_photo(bytearray())
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (1, 2, 3)).save(buffer, format="PNG")
    assert np.all(load_photo(memoryview(buffer.getvalue())) == (1, 2, 3))
    assert np.all(load_photo(str(_save(tmp_path / "a.png", buffer))) == (1, 2, 3))


def test_invalid_max_pixels_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        load_photo(np.zeros((10, 10), dtype=np.uint8), max_pixels=0)


def test_a_large_jpeg_is_decoded_at_reduced_size_for_the_screen(tmp_path: Path) -> None:
    path = tmp_path / "wide.jpg"
    # Stored 3400 wide and 300 high, EXIF-rotated: upright it is 300 wide and 3400 high.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (3400, 300), (200, 30, 30)).save(path, exif=exif)
    photo, size = decode_photo(str(path), max_side=1600)
    assert size == (300, 3400) and photo.shape == (1600, 141, 3)
    assert close_to(photo[800, 70], (200, 30, 30))
    np.testing.assert_array_equal(decode_photo(str(path))[0], load_photo(str(path)))


def test_import_is_light() -> None:
    code = (
        "import sys, petseg.photos\n"
        "heavy = [name for name in ('tensorflow', 'gradio', 'matplotlib') if name in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def _save(path: Path, buffer: io.BytesIO) -> Path:
    path.write_bytes(buffer.getvalue())
    return path
