"""Print the README's checkpoint table from the sidecars in weights/ (metrics on the subset test split).

Usage: python scripts/checkpoint_table.py [--weights-dir weights] [--split oxford-iiit-pet-subset/test]
Latency is not in the sidecars: it comes from `python bench/run.py` and is filled in by hand.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from petseg.checkpoints import list_checkpoints  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-dir", default="weights")
    parser.add_argument("--split", default="oxford-iiit-pet-subset/test")
    args = parser.parse_args()
    print("| checkpoint | preset | input | epochs (best) | train time | pixel acc. | mIoU | IoU pet / bg / border "
          "| binary pet IoU | size |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for info in list_checkpoints(args.weights_dir):
        if not info.available:
            continue
        sidecar = info.sidecar
        metrics = sidecar.get("metrics", {}).get(args.split)
        if not metrics:
            continue
        iou = metrics["iou"]
        # The kept epoch: the best validation epoch's, or the last one's (``--keep-last``).
        kept = sidecar.get("epochs", "?") if sidecar.get("epochs") == sidecar.get("best_epoch") else "last"
        print(f"| `{info.name}` | {sidecar['preset']} | {sidecar['image_size']} px "
              f"| {sidecar.get('epochs_done', '?')} ({kept}) "
              f"| {sidecar.get('train_seconds', 0) / 60:.0f} min | {metrics['pixel_accuracy']:.3f} "
              f"| {metrics['mean_iou']:.3f} | {iou['pet']:.3f} / {iou['background']:.3f} / {iou['border']:.3f} "
              f"| {metrics['binary_pet_iou']:.3f} | {sidecar['size_bytes'] / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()
