"""How often checkpoints paint people as pet, on photos with people that no model trained on.

The photos are those ``scripts/pseudo_label.py --hold-out`` kept out of training (``people.txt`` in each labelled
folder). Two measures, since no photo here has a person mask drawn by hand:
- person pixels painted pet: pixels the VOC DeepLab calls "person" (probability over 0.5) that the checkpoint calls
  pet, pooled over the photos. The DeepLab also taught the pseudo-labels, so this one flatters a student of it;
  and it merges some held pets into the person, which inflates it for every checkpoint alike.
- faces painted pet: frontal faces found by OpenCV's Haar cascade (independent of both models), each counted as
  painted when over 30% of its box is pet.

Usage:
    python scripts/people_check.py /tmp/pseudo-pets /tmp/pseudo-oxford --checkpoints finetune voc \
        --voc ../shared/data/encoders/deeplabv3_257_mv_gpu.tflite
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

FACE_PAINTED = 0.3


def find_faces(photo: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Frontal faces (x, y, width, height) by OpenCV's Haar cascade."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    side = min(photo.shape[:2])
    return [tuple(face) for face in cascade.detectMultiScale(gray, 1.1, 6, minSize=(side // 10, side // 10))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="folders written by scripts/pseudo_label.py --hold-out")
    parser.add_argument("--checkpoints", nargs="+", default=["finetune"])
    parser.add_argument("--weights-dir", default="weights")
    parser.add_argument("--voc", required=True, help="the VOC DeepLab .tflite")
    args = parser.parse_args(argv)
    from pseudo_label import VOC_SIZE, voc_person_probability

    from petseg.classes import PET
    from petseg.inference import get_predictor
    from petseg.litert import make_interpreter
    from petseg.photos import load_photo

    voc = make_interpreter(Path(args.voc).read_bytes(), shape=(1, VOC_SIZE, VOC_SIZE, 3))
    photos = []
    for folder in map(Path, args.folders):
        for name in (folder / "people.txt").read_text().split():
            photo = load_photo(folder / "images" / f"{name}.jpg")
            photos.append((name, photo, voc_person_probability(voc, photo) > 0.5, find_faces(photo)))
    faces = sum(len(found) for *_, found in photos)
    print(f"{len(photos)} photos with people, {faces} faces found")
    for checkpoint in args.checkpoints:
        predictor = get_predictor(checkpoint, args.weights_dir)
        person_pixels = painted_pixels = painted_faces = 0
        for name, photo, person, found in photos:
            pet = predictor.predict(photo).argmax(-1) == PET
            person_pixels += int(person.sum())
            painted_pixels += int((person & pet).sum())
            painted_faces += sum(pet[y:y + h, x:x + w].mean() > FACE_PAINTED for x, y, w, h in found)
        print(f"{checkpoint}: person pixels painted pet {painted_pixels / max(person_pixels, 1):.1%}; "
              f"faces painted pet {painted_faces} of {faces}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
