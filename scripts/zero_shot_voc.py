"""Save the VOC DeepLab, untrained for pets, as a PetSeg checkpoint so ``petseg.evaluate`` can score it zero-shot.

Pet = VOC's animal classes (bird, cat, cow, dog, horse, sheep), background = the other 15; it never answers border.

Usage: python scripts/zero_shot_voc.py --encoder-weights ../shared/data/encoders/deeplabv3_257_mv_gpu.tflite \
           --output-dir /tmp/zero-shot
       python -m petseg.evaluate --checkpoint /tmp/zero-shot/voc-zero-shot.keras --data-dir DATA --split test
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder-weights", default="voc", help="'voc' (download) or the .tflite file")
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args(argv)
    from petseg.checkpoints import save_checkpoint
    from petseg.classes import CLASS_NAMES
    from petseg.deeplab import build_zero_shot

    path = Path(args.output_dir) / "voc-zero-shot.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {"name": path.stem, "preset": "voc-zero-shot", "image_size": 257, "classes": list(CLASS_NAMES),
               "description": "VOC DeepLabV3 untrained for pets: pet = its animal classes; never border."}
    save_checkpoint(build_zero_shot(args.encoder_weights), path, sidecar)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
