"""Benchmark PetSeg against the seed's way (the TensorFlow tutorial's code) and write a results table.

Usage:
    python bench/run.py                       # the full benchmark on the checkpoints in weights/
    python bench/run.py --weights-dir /tmp/w --repeats 7
    python bench/run.py --quick               # small sizes, a minute or two: checks that everything runs
    python bench/run.py --only request,batch  # some figures only

Prints a table (figure, ours, seed's way, ratio, goal, runs) of medians over repeats and writes
bench/results/<time>.json and .md (and latest.json / latest.md). bench/README.md explains each figure.
Everything runs on generated photos and the checkpoints in the weights folder; no data set is needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # So that ``python bench/run.py`` finds petseg and bench.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FIGURES = ("request", "batch", "training", "epochs", "app", "training_memory")


@dataclasses.dataclass
class Settings:
    """Sizes of every figure; ``quick()`` shrinks them for the smoke test."""

    repeats: int = 5
    request_size: tuple[int, int] = (500, 375)  # Width, height of the uploaded JPEG.
    requests_per_run: int = 50
    batch_photos: int = 32
    train_photos: int = 214  # Both ways train on the 192 not held out: 3 whole batches of 64 per epoch.
    train_photo_sides: tuple[int, int] = (300, 500)  # Realistic photo sizes, like the real set's 500x375.
    train_image_size: int = 128
    train_batch_size: int = 64
    epoch_photos: int = 347  # The training split of the shared Oxford-IIIT Pet subset.
    preset_image_sizes: dict | None = None  # None: each preset's own (tutorial 128 px, finetune 160 px).
    preset_batch_sizes: dict | None = None  # None: each preset's own (tutorial 64, finetune 16).
    app_timeout: float = 180.0
    eager: bool = False  # Train without tracing: only for the smoke test, where tracing would dominate.

    @classmethod
    def quick(cls, repeats: int) -> "Settings":
        return cls(repeats=repeats, requests_per_run=5, batch_photos=6, train_photos=16,
                   train_photo_sides=(120, 200), train_image_size=64, train_batch_size=8, epoch_photos=347,
                   preset_image_sizes={"tutorial": 64, "finetune": 64},
                   preset_batch_sizes={"tutorial": 8, "finetune": 8}, app_timeout=120.0)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-dir", default=str(ROOT / "weights"), help="checkpoints to measure")
    parser.add_argument("--repeats", type=int, help="runs per figure; medians are reported (default 5, quick 2)")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that every figure runs")
    parser.add_argument("--only", help=f"comma-separated figures: {', '.join(FIGURES)}")
    parser.add_argument("--results-dir", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--work-dir", help="where generated photos go (default: a temporary folder)")
    return parser.parse_args(argv)


def choose_checkpoints(weights_dir: Path) -> tuple[str, str | None, list[str]]:
    """The best checkpoint (the app's default), the tutorial one if present, and the two the app test uses."""
    from petseg.checkpoints import default_checkpoint, list_checkpoints

    best = default_checkpoint(weights_dir)
    if best is None:
        raise SystemExit(f"No usable checkpoint in {weights_dir}; train one with train.py first.")
    available = [info for info in list_checkpoints(weights_dir) if info.available]
    tutorial = next((info.name for info in available if info.name == "tutorial"), None)
    tutorial = tutorial or next((info.name for info in available if info.sidecar.get("preset") == "tutorial"
                                 and info.name != best), None)
    return best, tutorial, [info.name for info in available[:2]]


def run_benchmark(weights_dir: Path, settings: Settings, figures: tuple[str, ...], work_dir: Path,
                  log=print) -> list:
    """Measure the chosen figures and return their rows, in the order of ``FIGURES``."""
    from bench import figures as measure
    from bench import processes
    from bench.common import pending_row, row_from_runs

    best, tutorial, app_checkpoints = choose_checkpoints(weights_dir)
    repeats = settings.repeats
    rows = []
    log(f"Checkpoints: best {best}, tutorial {tutorial or '(none)'}; {repeats} runs per figure.")

    if "request" in figures:
        log("Figure 1: request latency ...")
        jpeg = measure.make_jpeg(*settings.request_size)
        rows += measure.request_latency(jpeg, best, weights_dir, repeats, settings.requests_per_run, goal=True)
        if tutorial and tutorial != best:
            rows += measure.request_latency(jpeg, tutorial, weights_dir, repeats, settings.requests_per_run)

    if "batch" in figures:
        log("Figure 2: batch throughput ...")
        photos = measure.make_mixed_photos(settings.batch_photos)
        rows.append(measure.batch_throughput(photos, best, weights_dir, repeats))

    train_dir = work_dir / f"train-{settings.train_photos}"
    if {"training", "epochs", "training_memory"} & set(figures):
        log(f"Making {settings.train_photos} training photos in {train_dir} ...")
        smallest, largest = settings.train_photo_sides
        measure.make_training_folder(train_dir, settings.train_photos, smallest, largest)

    if "training" in figures:
        log("Figure 3: training throughput ...")
        warm_up_dir = measure.make_training_folder(work_dir / "warm-up", 2 * settings.train_batch_size, 96, 128,
                                                   seed=1)
        rows += measure.training_throughput(train_dir, warm_up_dir, settings.train_image_size,
                                            settings.train_batch_size, repeats, eager=settings.eager)
        rows += measure.first_epoch_cost(train_dir, settings.train_image_size, repeats)

    if "epochs" in figures:
        log("Figure 3b: seconds per epoch for each preset ...")
        rows += measure.preset_epoch_seconds(train_dir, repeats, settings.epoch_photos, settings.preset_image_sizes,
                                             settings.preset_batch_sizes, eager=settings.eager)

    if "app" in figures:
        log("Figures 4 and 5a: app start-up and memory ...")
        photo_path = work_dir / "request.jpg"
        photo_path.write_bytes(measure.make_jpeg(*settings.request_size))
        used = app_checkpoints if len(app_checkpoints) > 1 else app_checkpoints * 2
        try:
            runs = []
            for repeat in range(repeats):
                runs.append(processes.app_start_and_memory(
                    weights_dir, work_dir / "app-runs", photo_path, used, work_dir / f"app-{repeat}.log",
                    settings.app_timeout))
            rows.append(row_from_runs("Start-up, python app.py to first answer", "s",
                                      [run["answer_seconds"] for run in runs], better="lower", goal="<= 15 s",
                                      goal_check=lambda row: row.ours <= 15.0,
                                      note="a real predict request through gradio_client, polled"))
            rows.append(row_from_runs(f"Peak RSS, app after predicting with {' and '.join(used)}", "MB",
                                      [run["peak_rss"] / 2**20 for run in runs]))
        except processes.AppUnavailable as error:
            log(f"  app figures pending: {error}")
            rows.append(pending_row("Start-up, python app.py to first answer", "s", str(error)[:200]))
            rows.append(pending_row("Peak RSS, app with two checkpoints", "MB", str(error)[:200]))

    if "training_memory" in figures:
        log("Figure 5b: training memory ...")
        size, batch = settings.train_image_size, settings.train_batch_size
        output_dir = work_dir / "memory-weights"

        def ours() -> float:
            shutil.rmtree(output_dir, ignore_errors=True)
            return processes.training_peak_memory(processes.our_training_command(train_dir, output_dir, size, batch),
                                                  work_dir / "train-ours.log") / 2**20

        def seed() -> float:
            return processes.training_peak_memory(processes.seed_training_command(train_dir, size, batch),
                                                  work_dir / "train-seed.log") / 2**20

        from bench.common import alternate

        runs = alternate({"ours": ours, "seed": seed}, repeats)
        rows.append(row_from_runs(f"Peak RSS, training 1 epoch (tutorial, batch {batch}, {size} px)", "MB",
                                  runs["ours"], runs["seed"],
                                  note="ours: train.py (with validation and checkpoint); seed: bench.seed_way"))
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now()
    repeats = args.repeats or (2 if args.quick else 5)
    settings = Settings.quick(repeats) if args.quick else Settings(repeats=repeats)
    figures = tuple(args.only.split(",")) if args.only else FIGURES
    unknown = set(figures) - set(FIGURES)
    if unknown:
        raise SystemExit(f"Unknown figures {', '.join(sorted(unknown))}; choose from {', '.join(FIGURES)}.")
    from bench.common import table_lines, write_results

    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="petseg-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        rows = run_benchmark(Path(args.weights_dir), settings, figures, work_dir)
    finally:
        if not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    print("\n" + "\n".join(table_lines(rows)))
    json_path, markdown_path = write_results(rows, {**dataclasses.asdict(settings), "figures": figures,
                                                    "weights_dir": str(args.weights_dir), "quick": args.quick},
                                             Path(args.results_dir), started)
    print(f"\nWrote {json_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
