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
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="path to a .keras checkpoint with its .json sidecar")
    parser.add_argument("--data-dir", help="folder in the official Oxford-IIIT Pet layout (default: tfds)")
    parser.add_argument("--tfds-data-dir", help="where tfds keeps its data (default: ~/tensorflow_datasets)")
    parser.add_argument("--split", default="test", choices=["test", "trainval"])
    parser.add_argument("--limit", type=int, help="evaluate only the first N photos (for quick checks)")
    parser.add_argument("--write-sidecar", action="store_true", help="store the metrics in the checkpoint's sidecar")
    args = parser.parse_args(argv)
    # After parsing: --help answers without loading TensorFlow.
    from petseg.checkpoints import CheckpointError, servable_entry, store_metrics
    from petseg.data import DataError
    from petseg.metrics import evaluate_checkpoint, metrics_key

    try:
        checkpoint = servable_entry(Path(args.checkpoint).name, Path(args.checkpoint).parent)
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
