"""Cutout benchmark: each matting method on the example photos, the cutout's p50, and the time to the first picture.

    python bench/matting.py                    # all three parts, shipped default checkpoint, ~5 min on 2 cores
    python bench/matting.py --picture docs/matting.png --repeats 5

Parts:
1. Methods: for each photo in examples/, the predicted trimap and the cutout of every ``petseg.matting.METHODS``
   entry at full size and of closed-form at reduced size (``--reduced`` pixels, guided-filter upsampling), beside
   the old cutout (alpha = pet + half border probability). Median seconds of ``--repeats`` runs each, alpha
   estimation only. ``--picture`` writes the side-by-side picture (each cutout over a plain colour).
2. The cutout (``matting.cutout``: matte, foreground colours) p50 at full size for a 500x375 photo and a
   12-megapixel one (the middle of examples/Bengal_1.jpg scaled to each, saved as JPEG quality 92).
3. Time to the first picture: ``PredictHandlers.predict`` from the call to its first yield (class map,
   confidence, areas written), to its last (screen-sized cutout written) and to the full-resolution cutout
   (``PredictHandlers.cutout``, which the page asks for next), same photos.
4. The same photos through the ``/predict`` API endpoint (gradio_client against the app built in this process,
   files uploaded and downloaded), and the ``/cutout`` call after it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from petseg import matting  # noqa: E402
from petseg.classes import BORDER, PET  # noqa: E402

BACKDROP = (40, 160, 90)  # A green no pet photo has, so a grey halo or a background fringe shows.


def timed(function, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def predicted(photo: np.ndarray, checkpoint: str, weights_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The checkpoint's class probabilities and class ids for ``photo``."""
    from petseg.inference import get_predictor, predict_probabilities

    probabilities = predict_probabilities(photo, get_predictor(checkpoint, weights_dir).checkpoint)
    return probabilities, probabilities.argmax(axis=-1).astype(np.uint8)


def on_backdrop(photo: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The photo composited over ``BACKDROP`` with ``alpha``."""
    alpha = alpha[..., None]
    return np.rint(photo * alpha + np.array(BACKDROP) * (1.0 - alpha)).astype(np.uint8)


def compare_methods(photos: dict[str, np.ndarray], checkpoint: str, weights_dir: Path, repeats: int,
                    reduced: int) -> tuple[list[dict], list[list[tuple[str, np.ndarray]]]]:
    """Time every method on every photo; returns the table rows and the picture's cells."""
    rows, cells = [], []
    for name, photo in photos.items():
        probabilities, mask = predicted(photo, checkpoint, weights_dir)
        old_alpha = np.clip(probabilities[..., PET] + 0.5 * probabilities[..., BORDER], 0.0, 1.0)
        trimap = (matting.trimap_from_mask(mask) * 255).astype(np.uint8)
        row_cells = [("photo", photo), ("predicted trimap", np.repeat(trimap[..., None], 3, axis=-1)),
                     ("before: probabilities", on_backdrop(photo, old_alpha))]
        variants = [(method, method, matting.MATTE_PIXELS) for method in matting.METHODS]
        variants.insert(1, (f"closed-form at {reduced // 1000}k px", "closed-form", reduced))
        row = {"photo": name, "size": f"{photo.shape[1]}x{photo.shape[0]}", "band": float((mask == BORDER).mean())}
        for label, method, pixels in variants:
            seconds, alpha = timed(lambda: matting.estimate_alpha(photo, mask, method, pixels), repeats)
            foreground = matting.estimate_foreground(photo, alpha)
            row[label] = seconds
            row_cells.append((f"{label}: {seconds * 1000:.0f} ms", on_backdrop(foreground, alpha)))
            print(f"{name}: {label} {seconds * 1000:.0f} ms", flush=True)
        rows.append(row)
        cells.append(row_cells)
    return rows, cells


def draw_picture(cells: list[list[tuple[str, np.ndarray]]], path: Path, width: int = 260) -> None:
    """A grid: one row per photo, one column per method, each cell captioned."""
    height = max(int(width * cell.shape[0] / cell.shape[1]) for row in cells for _, cell in row)
    caption = 18
    grid = Image.new("RGB", (width * len(cells[0]), (height + caption) * len(cells)), "white")
    draw = ImageDraw.Draw(grid)
    for row_index, row in enumerate(cells):
        for column, (label, cell) in enumerate(row):
            picture = Image.fromarray(cell).resize((width, int(width * cell.shape[0] / cell.shape[1])), Image.LANCZOS)
            top = row_index * (height + caption)
            grid.paste(picture, (column * width, top + caption))
            draw.text((column * width + 4, top + 3), label, fill="black")
    grid.save(path, optimize=True)


def cutout_times(photos: dict[str, np.ndarray], checkpoint: str, weights_dir: Path, repeats: int) -> dict:
    """p50 seconds of the app's cutout (``matting.cutout``: matte and colours) per photo, at its full size."""
    results = {}
    for name, photo in photos.items():
        _, mask = predicted(photo, checkpoint, weights_dir)
        results[name] = timed(lambda: matting.cutout(photo, mask), repeats)[0]
        print(f"cutout p50 {name}: {results[name] * 1000:.0f} ms", flush=True)
    return results


def first_picture_times(photos: dict[str, np.ndarray], checkpoint: str, weights_dir: Path, repeats: int) -> dict:
    """Median seconds from ``predict`` to its first yield (class map), to its last (screen-sized cutout) and to
    the full-resolution cutout after it (``cutout``, from a fresh cache each run), per photo saved as a JPEG."""
    from petseg.segmentation import OutputFolder
    from petseg.ui_predict import PredictHandlers

    folder = Path(tempfile.mkdtemp(prefix="petseg-bench-matting-"))
    results = {}
    for name, path in save_photos(photos, folder).items():
        runs = []
        for _ in range(repeats):
            handlers = PredictHandlers(weights_dir, OutputFolder(folder / "outputs"))
            started = time.perf_counter()
            steps = handlers.predict(str(path), checkpoint)
            next(steps)
            run = [time.perf_counter() - started]
            for _ in steps:
                pass
            run.append(time.perf_counter() - started)
            handlers.cutout(str(path), checkpoint)
            runs.append(run + [time.perf_counter() - started])
        results[name] = [statistics.median(column) for column in zip(*runs)]
        print(f"handler {name}: first picture {results[name][0] * 1000:.0f} ms, screen cutout "
              f"{results[name][1] * 1000:.0f} ms, full-resolution cutout {results[name][2] * 1000:.0f} ms", flush=True)
    return results


def api_times(photos: dict[str, np.ndarray], checkpoint: str, weights_dir: Path, repeats: int) -> dict:
    """Median seconds of a ``/predict`` call through gradio_client (files uploaded and downloaded) against the
    app built in this process, per photo saved as a JPEG, and of the ``/cutout`` call the page makes after it."""
    from gradio_client import Client, handle_file

    from petseg.ui import build_app

    folder = Path(tempfile.mkdtemp(prefix="petseg-bench-api-"))
    demo = build_app(weights_dir, folder / "runs", allow_training=False)
    demo.queue().launch(prevent_thread_lock=True, quiet=True)
    client = Client(demo.local_url, verbose=False, download_files=str(folder / "downloads"))
    results = {}
    try:
        for name, path in save_photos(photos, folder).items():
            client.predict(handle_file(str(path)), checkpoint, api_name="/predict")  # Not counted: uploads once.
            runs = []
            for _ in range(repeats):
                started = time.perf_counter()
                client.predict(handle_file(str(path)), checkpoint, api_name="/predict")
                runs.append(time.perf_counter() - started)
            started = time.perf_counter()
            # Made here, once: an API client's /predict does not chain /cutout as the page does.
            client.predict(handle_file(str(path)), checkpoint, api_name="/cutout")
            results[name] = (statistics.median(runs), time.perf_counter() - started)
            print(f"/predict {name}: {results[name][0] * 1000:.0f} ms, then /cutout {results[name][1] * 1000:.0f} ms",
                  flush=True)
    finally:
        demo.close()
    return results


def save_photos(photos: dict[str, np.ndarray], folder: Path) -> dict[str, Path]:
    """Each photo as a JPEG (quality 92, like a phone's) in ``folder``."""
    paths = {}
    for name, photo in photos.items():
        paths[name] = folder / f"{name.replace(' ', '_')}.jpg"
        Image.fromarray(photo).save(paths[name], quality=92)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-dir", default=str(ROOT / "weights"))
    parser.add_argument("--checkpoint", help="default: the best checkpoint in the weights folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reduced", type=int, default=60_000, help="pixels of the reduced-size closed-form run")
    parser.add_argument("--picture", help="write the side-by-side picture here (PNG)")
    parser.add_argument("--only", default="methods,cutout,first,api", help="comma-separated parts")
    args = parser.parse_args(argv)
    from petseg.checkpoints import default_checkpoint
    from petseg.photos import load_photo

    weights_dir = Path(args.weights_dir)
    checkpoint = args.checkpoint or default_checkpoint(weights_dir)
    print(f"matting warm-up (pymatting import, numba cache): {matting.warm_up():.1f} s", flush=True)
    examples = {path.stem: load_photo(str(path)) for path in sorted((ROOT / "examples").glob("*.jpg"))}
    # The Bengal cat's landscape middle (600x450), at the data set's usual size and at a phone's 12 megapixels.
    bengal = Image.fromarray(examples["Bengal_1"][200:650])
    sizes = {"500x375": np.asarray(bengal.resize((500, 375), Image.BICUBIC)),
             "12 MP": np.asarray(bengal.resize((4032, 3024), Image.BICUBIC))}
    parts = set(args.only.split(","))
    if "methods" in parts:
        rows, cells = compare_methods(examples, checkpoint, weights_dir, args.repeats, args.reduced)
        if args.picture:
            draw_picture(cells, Path(args.picture))
        for row in rows:
            print(row)
    if "cutout" in parts:
        cutout_times(sizes, checkpoint, weights_dir, args.repeats)
    if "first" in parts:
        first_picture_times(sizes, checkpoint, weights_dir, args.repeats)
    if "api" in parts:
        api_times(sizes, checkpoint, weights_dir, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
