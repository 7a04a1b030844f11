"""Label unlabelled pet photos with a teacher ensemble, in the official Oxford-IIIT Pet layout, for training only.

The teacher is the mean of several checkpoints' class probabilities, each averaged with its mirrored photo. The
output folder links the photos, writes each argmax as a trimap PNG and lists every photo in trainval.txt, so
``train.py --extra-data-dir OUT`` adds them to the training split (never to validation or test).

Usage:
    python scripts/pseudo_label.py ../shared/data/unlabelled-pets/images /tmp/pseudo --checkpoints finetune voc
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo_dir", help="folder of unlabelled .jpg photos")
    parser.add_argument("output_dir", help="folder to write in the official layout")
    parser.add_argument("--checkpoints", nargs="+", default=["finetune", "voc"], help="teacher checkpoint names")
    parser.add_argument("--weights-dir", default="weights", help="where the teacher checkpoints are")
    parser.add_argument("--min-confidence", type=float, default=0.0,
                        help="skip photos whose mean top probability is below this (several animals, people)")
    args = parser.parse_args(argv)
    from petseg.inference import get_predictor

    teachers = [get_predictor(name, args.weights_dir) for name in args.checkpoints]
    output = Path(args.output_dir)
    (output / "images").mkdir(parents=True, exist_ok=True)
    (output / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    kept, confidences = [], []
    for path in sorted(Path(args.photo_dir).glob("*.jpg")):
        # The stored pixels, not EXIF-turned: training turns photo and trimap together when it reads them.
        photo = np.asarray(Image.open(path).convert("RGB"))
        mirrored = np.ascontiguousarray(photo[:, ::-1])
        probabilities = np.mean([(t.predict(photo) + t.predict(mirrored)[:, ::-1]) / 2 for t in teachers], axis=0)
        confidence = float(probabilities.max(-1).mean())
        confidences.append(confidence)
        if confidence < args.min_confidence:
            continue
        Image.fromarray((probabilities.argmax(-1) + 1).astype(np.uint8)).save(
            output / "annotations" / "trimaps" / f"{path.stem}.png")
        link = output / "images" / path.name
        if not link.exists():
            os.symlink(path.resolve(), link)
        kept.append(path.stem)
    (output / "annotations" / "trainval.txt").write_text("".join(f"{name} 1 1 1\n" for name in kept))
    (output / "annotations" / "test.txt").write_text("")
    print(f"{len(kept)} of {len(confidences)} photos labelled; mean confidence {np.mean(confidences):.3f}, "
          f"10th percentile {np.percentile(confidences, 10):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
