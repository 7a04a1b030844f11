"""Seconds of training until a run first reaches a validation mIoU, read from its metrics.jsonl.

Usage: python bench/time_to_quality.py RUN_DIR [RUN_DIR ...] --target 0.758

Counts the epochs' own seconds (training and validation, not start-up or data loading). Runs that shared the
machine with other jobs are slower than they would be alone: compare runs made under similar load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from petseg.runs import read_metrics  # noqa: E402


def seconds_to_reach(epochs: list[dict], target: float) -> tuple[float | None, int | None]:
    """Cumulative epoch seconds and the epoch at which ``val_mean_iou`` first reaches ``target`` (None: never).

    >>> seconds_to_reach([{"epoch": 1, "seconds": 10, "val_mean_iou": 0.5}, {"epoch": 2, "seconds": 12,
    ...                    "val_mean_iou": 0.8}], 0.758)
    (22.0, 2)
    """
    total = 0.0
    for record in epochs:
        total += float(record.get("seconds", 0.0))
        if record.get("val_mean_iou", -1.0) >= target:
            return total, int(record["epoch"])
    return None, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders holding metrics.jsonl")
    parser.add_argument("--target", type=float, default=0.758, help="validation mIoU to reach (finetune's best)")
    args = parser.parse_args(argv)
    for run in args.runs:
        epochs = read_metrics(Path(run))
        seconds, epoch = seconds_to_reach(epochs, args.target)
        total = sum(float(record.get("seconds", 0.0)) for record in epochs)
        best = max((record.get("val_mean_iou", -1.0) for record in epochs), default=float("nan"))
        reached = f"{seconds:.0f} s (epoch {epoch})" if seconds is not None else "never"
        print(f"{run}: reaches {args.target} after {reached}; best {best:.3f} in {len(epochs)} epochs, {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
