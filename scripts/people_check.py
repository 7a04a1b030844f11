"""How often checkpoints paint people as pet, on photos with people that no model trained on.

Two sets of photos, since no photo here has a person mask drawn by hand:
- FOLDERS: the photos ``scripts/pseudo_label.py --hold-out`` kept out of training (``people.txt`` in each
  labelled folder). Their person pixels are the pseudo-labeller's (``annotations/person/``: the VOC DeepLab's
  "person", less regions the pet teachers mostly call pet, such as Sphynx cats). The same rule taught the student,
  and the DeepLab's "person" sometimes covers a pet held cheek to cheek, which the models are right to call pet.
- ``--labelled DATA_DIR``: the test photos of a folder in the official layout where the VOC DeepLab (``--voc``)
  sees people (over 1% of the pixels). Their person pixels are the DeepLab's "person" that the trimap calls
  background, so no pet ever counts as a person; a person pixel painted pet is always a mistake.
Two measures on them:
- person pixels painted pet: person pixels that the checkpoint calls pet, pooled over the photos.
- faces painted pet: frontal faces found by OpenCV's Haar cascade on person pixels, each counted as painted when
  over 30% of its box is pet. The cascade does not know the models, but the person pixels it is checked against do.

Needs OpenCV 4 for the cascade (OpenCV 5 moved it out): ``pip install "opencv-python-headless<5"``.

Usage:
    python scripts/people_check.py /tmp/pseudo-pets /tmp/pseudo-oxford --checkpoints finetune voc
    python scripts/people_check.py --labelled ../shared/data/oxford-iiit-pet-subset --checkpoints student
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FACE_PAINTED = 0.3
PEOPLE_SHARE = 0.01


def find_faces(photo: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Frontal faces (x, y, width, height) by OpenCV's Haar cascade."""
    try:
        import cv2

        cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    except (ImportError, AttributeError):
        sys.exit('error: the face count needs OpenCV 4: pip install "opencv-python-headless<5"')
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    return [tuple(face) for face in cascade.detectMultiScale(gray, 1.1, 5, minSize=(20, 20))]


def labelled_people(data_dir: str | Path, voc, split: str = "test") -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, photo, person pixels) for the split's photos where ``voc`` sees people on the trimap's background."""
    from pseudo_label import voc_person_probability

    from petseg.classes import BACKGROUND
    from petseg.data import read_folder_example, read_split_names

    photos = []
    for name in read_split_names(data_dir, split):
        example = read_folder_example(data_dir, name)
        person = (voc_person_probability(voc, example.image) > 0.5) & (example.mask == BACKGROUND)
        if person.mean() > PEOPLE_SHARE:
            photos.append((name, example.image, person))
    return photos


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", help="folders written by scripts/pseudo_label.py --hold-out")
    parser.add_argument("--labelled", metavar="DATA_DIR", help="also the test photos of a labelled folder (see above)")
    parser.add_argument("--voc", default="../shared/data/encoders/deeplabv3_257_mv_gpu.tflite",
                        help="the VOC DeepLab .tflite, for --labelled")
    parser.add_argument("--checkpoints", nargs="+", default=["finetune"])
    parser.add_argument("--weights-dir", default="weights")
    args = parser.parse_args(argv)
    from PIL import Image

    from petseg.classes import PET
    from petseg.inference import get_predictor
    from petseg.photos import load_photo

    if not args.folders and not args.labelled:
        parser.error("give held-out FOLDERS, --labelled DATA_DIR, or both")
    if args.labelled and not Path(args.voc).is_file():
        parser.error(f"no VOC DeepLab at {args.voc}: pass its .tflite with --voc")
    people = []
    for folder in map(Path, args.folders):
        for name in (folder / "people.txt").read_text().split():
            person = np.asarray(Image.open(folder / "annotations" / "person" / f"{name}.png")) > 0
            people.append((name, load_photo(folder / "images" / f"{name}.jpg"), person))
    if args.labelled:
        from petseg.litert import ImagesRunner

        people += labelled_people(args.labelled, ImagesRunner(Path(args.voc).read_bytes()))
    photos = []
    for name, photo, person in people:
        # The cascade also answers to dog faces and cat eyes: keep the faces that lie on person pixels.
        faces = [(x, y, w, h) for x, y, w, h in find_faces(photo) if person[y:y + h, x:x + w].mean() > 0.5]
        photos.append((name, photo, person, faces))
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
