"""Evaluate a checkpoint on a whole split at each photo's original resolution, through the app's request path.

Usage:
    python -m petseg.evaluate --checkpoint weights/finetune.keras --data-dir ../shared/data/oxford-iiit-pet-subset
    python -m petseg.evaluate --checkpoint weights/tutorial.keras --split test --write-sidecar   # tfds
    python -m petseg.evaluate --checkpoint weights/tutorial.keras --tfds-data-dir /data/tfds     # tfds, kept there

Prints a JSON object: pixel accuracy, mean IoU, per-class IoU, binary pet IoU (pet + border against background),
and the counts of photos evaluated and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from petseg.checkpoints import CheckpointError, LoadedCheckpoint, load_checkpoint_file, store_metrics
from petseg.classes import NUM_CLASSES
from petseg.data import DataError, describe_source, iterate_split
from petseg.inference import predict_probabilities
from petseg.metrics import compute_metrics, confusion_matrix


def metrics_key(data_dir: str | os.PathLike | None, split: str) -> str:
    """Where a split's metrics live in a sidecar: "test" for tfds, "<folder name>/test" for a local folder."""
    return split if data_dir is None else f"{Path(data_dir).resolve().name}/{split}"


def evaluate_checkpoint(checkpoint: LoadedCheckpoint, data_dir: str | os.PathLike | None, split: str = "test",
                        limit: int | None = None, tfds_data_dir: str | None = None) -> dict:
    """Score ``checkpoint`` on every readable photo of ``split`` (or the first ``limit``).

    ``data_dir`` is a folder in the official layout; None reads tfds, from ``tfds_data_dir`` if given.
    """
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    skipped: list = []
    count = 0
    started = time.perf_counter()
    for example in iterate_split(data_dir, split, skipped, tfds_data_dir):
        prediction = predict_probabilities(example.image, checkpoint).argmax(axis=-1)
        confusion += confusion_matrix(example.mask, prediction)
        count += 1
        if limit is not None and count >= limit:
            break
    metrics = compute_metrics(confusion)
    metrics.update(
        data=describe_source(data_dir), split=split, photos=count, skipped=len(skipped),
        resolution="original", seconds=round(time.perf_counter() - started, 1),
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="path to a .keras checkpoint with its .json sidecar")
    parser.add_argument("--data-dir", help="folder in the official Oxford-IIIT Pet layout (default: tfds)")
    parser.add_argument("--tfds-data-dir", help="where tfds keeps its data (default: ~/tensorflow_datasets)")
    parser.add_argument("--split", default="test", choices=["test", "trainval"])
    parser.add_argument("--limit", type=int, help="evaluate only the first N photos (for quick checks)")
    parser.add_argument("--write-sidecar", action="store_true", help="store the metrics in the checkpoint's sidecar")
    args = parser.parse_args(argv)
    try:
        checkpoint = load_checkpoint_file(args.checkpoint)
        metrics = evaluate_checkpoint(checkpoint, args.data_dir, args.split, args.limit, args.tfds_data_dir)
    except (CheckpointError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.write_sidecar:
        store_metrics(checkpoint.path, metrics_key(args.data_dir, args.split), metrics)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
