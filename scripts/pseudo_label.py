"""Label unlabelled pet photos with a teacher, in the Oxford-IIIT Pet layout, for ``train.py --unlabelled-dir``.

The teacher is the mean of several checkpoints' class probabilities, each averaged with its mirrored photo. The VOC
DeepLab (21 classes, COCO + PASCAL VOC) then marks people: where its most likely class is "person", the label is
background, whatever the pet checkpoints said (they paint faces as pet). The output folder links the photos, writes
each label as a trimap PNG (1 pet, 2 background, 3 border), the teacher's confidence per pixel as a PNG
(``annotations/confidence/``, 255 = certain), the person pixels (``annotations/person/``, where there are any) and
lists the photos in ``annotations/trainval.txt``. ``photos.csv`` records each photo's mean confidence and its share
of person pixels.

``--hold-out N`` keeps N photos where people cover over 3% of the pixels (a seeded draw) out of trainval.txt,
listing them in ``people.txt`` instead, so that ``scripts/people_check.py`` can measure how often a model paints
people as pet on photos no model trained on; a second round passes the first's list (``--hold-out-list``), since
its own person masks would draw a few other photos. ``--people-copies N`` also writes ``OUTPUT/people/``, a folder
in the same layout that links every other photo with people (over 1% of the pixels, the pet at least 5%) N times,
to pass as one more ``--unlabelled-dir`` so that batches show people more often. Sphynx photos stay out of it: the
DeepLab takes these hairless cats for people, and their labels call the cat background.

Usage:
    python scripts/pseudo_label.py ../shared/data/oxford-iiit-pet-unlabelled/images /tmp/pseudo-oxford \
        --voc ../shared/data/encoders/deeplabv3_257_mv_gpu.tflite --hold-out 40
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VOC_PERSON = 15  # PASCAL VOC's class index of "person".
VOC_SIZE = 257


def voc_person_probability(voc, photo: np.ndarray) -> np.ndarray:
    """The VOC DeepLab's probability of "person" (height, width) at the photo's size, mirrored views averaged."""
    from petseg.inference import resize_channels

    height, width = photo.shape[:2]
    square = np.asarray(Image.fromarray(photo).resize((VOC_SIZE, VOC_SIZE), Image.BILINEAR), np.float32)
    views = []
    for view in (square, square[:, ::-1]):
        logits = voc(((view - 127.5) / 127.5)[np.newaxis])[0]
        logits = logits - logits.max(-1, keepdims=True)
        probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        views.append(probabilities[..., VOC_PERSON])
    person = (views[0] + views[1][:, ::-1]) / 2
    return resize_channels(person[..., np.newaxis].astype(np.float32), height, width)[..., 0]


def label_photo(photo: np.ndarray, teachers, voc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes 0..2, confidence in [0, 1], person mask) for one RGB photo."""
    from petseg.classes import BACKGROUND, PET

    mirrored = np.ascontiguousarray(photo[:, ::-1])
    probabilities = np.mean([(t.predict(photo) + t.predict(mirrored)[:, ::-1]) / 2 for t in teachers], axis=0)
    classes, confidence = probabilities.argmax(-1), probabilities.max(-1)
    person = voc_person_probability(voc, photo) if voc is not None else np.zeros(photo.shape[:2], np.float32)
    # The DeepLab calls some pets "person" (hairless Sphynx cats, pets held cheek to cheek): a person region that
    # the pet teachers mostly call pet stays theirs. The rest, people with the faces the pet checkpoints paint as
    # pet, is background.
    regions, count = scipy.ndimage.label(person > 0.5)
    pet_shares = scipy.ndimage.mean(classes == PET, regions, np.arange(1, count + 1)) if count else []
    is_person = np.isin(regions, 1 + np.flatnonzero(np.asarray(pet_shares) <= 0.5))
    classes = np.where(is_person, BACKGROUND, classes)
    confidence = np.where(is_person, person, confidence)
    return classes.astype(np.uint8), confidence, is_person


def write_lists(output: Path, rows: list[dict], hold_out: int, held_out: set[str] | None = None) -> set[str]:
    """Write photos.csv, trainval.txt (all but the held-out photos), an empty test.txt and people.txt: ``held_out``
    (an earlier round's draw) or a seeded draw of ``hold_out`` photos among those where people cover over 3% of the
    pixels."""
    if held_out is None:
        with_people = sorted((row["name"] for row in rows if row["person_share"] > 0.03),
                             key=lambda name: hashlib.sha256(name.encode()).hexdigest())
        held_out = set(with_people[:hold_out])
    with open(output / "photos.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (output / "annotations" / "trainval.txt").write_text(
        "".join(f"{row['name']} 1 1 1\n" for row in rows if row["name"] not in held_out))
    (output / "annotations" / "test.txt").write_text("")
    (output / "people.txt").write_text("".join(f"{name}\n" for name in sorted(held_out)))
    return held_out


def write_people_folder(output: Path, rows: list[dict], held_out: set[str], copies: int) -> int:
    """Link each trainval photo with people ``copies`` times into ``output/people``; return how many photos."""
    people = [row["name"] for row in rows if row["person_share"] > 0.01 and row["pet_share"] >= 0.05
              and row["name"] not in held_out and not row["name"].startswith("Sphynx")]
    folder = output / "people"
    kinds = (("images", ".jpg"), ("annotations/trimaps", ".png"), ("annotations/confidence", ".png"))
    for kind, _ in kinds:
        (folder / kind).mkdir(parents=True, exist_ok=True)
    names = []
    for original in people:
        for copy in range(copies):
            names.append(f"{original}_p{copy}")
            for kind, suffix in kinds:
                link = folder / kind / f"{names[-1]}{suffix}"
                if not link.exists():
                    os.symlink((output / kind / f"{original}{suffix}").resolve(), link)
    (folder / "annotations" / "trainval.txt").write_text("".join(f"{name} 1 1 1\n" for name in names))
    (folder / "annotations" / "test.txt").write_text("")
    return len(people)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo_dir", help="folder of unlabelled .jpg photos")
    parser.add_argument("output_dir", help="folder to write in the official layout")
    parser.add_argument("--checkpoints", nargs="+", default=["finetune", "voc"], help="teacher checkpoint names")
    parser.add_argument("--weights-dir", default="weights", help="where the teacher checkpoints are")
    parser.add_argument("--voc", help="the VOC DeepLab .tflite that marks people as background (default: none)")
    parser.add_argument("--hold-out", type=int, default=0, help="photos with the most people kept out of trainval")
    parser.add_argument("--hold-out-list", metavar="PEOPLE_TXT",
                        help="hold out the photos an earlier round's people.txt lists instead of a new draw")
    parser.add_argument("--people-copies", type=int, default=0, help="also write OUTPUT/people (see above)")
    parser.add_argument("--limit", type=int, help="label only the first N photos (sorted by name)")
    args = parser.parse_args(argv)
    from petseg.data import read_name_list
    from petseg.inference import get_predictor
    from petseg.litert import ImagesRunner
    from petseg.photos import exif_orientation, load_photo

    teachers = [get_predictor(name, args.weights_dir) for name in args.checkpoints]
    voc = None
    if args.voc:
        voc = ImagesRunner(Path(args.voc).read_bytes())
    output = Path(args.output_dir)
    for folder in ("images", "annotations/trimaps", "annotations/confidence", "annotations/person"):
        (output / folder).mkdir(parents=True, exist_ok=True)
    paths = sorted(Path(args.photo_dir).glob("*.jpg"))[:args.limit]
    rows, started = [], time.perf_counter()
    for index, path in enumerate(paths):
        trimap_path = output / "annotations" / "trimaps" / f"{path.stem}.png"
        confidence_path = output / "annotations" / "confidence" / f"{path.stem}.png"
        try:
            # Decoded as training decodes it. Training turns a trimap as the photo's EXIF says, since trimaps are
            # drawn on the stored pixels; a label of the turned photo would be turned twice, so such photos wait.
            with Image.open(path) as image:
                if exif_orientation(image) != 1:
                    raise ValueError("EXIF-turned photos are not labelled")
            photo = load_photo(path)
        except (OSError, ValueError) as error:
            print(f"skipping {path.name}: {error}", flush=True)
            continue
        classes, confidence, person = label_photo(photo, teachers, voc)
        Image.fromarray(classes + 1).save(trimap_path)
        Image.fromarray(np.round(confidence * 255).astype(np.uint8)).save(confidence_path)
        person_share = float(person.mean())
        if person_share > 0:  # What scripts/people_check.py counts as person pixels.
            Image.fromarray(person).save(output / "annotations" / "person" / f"{path.stem}.png")
        link = output / "images" / path.name
        if not link.exists():
            os.symlink(path.resolve(), link)
        rows.append({"name": path.stem, "confidence": round(float(confidence.mean()), 4),
                     "person_share": round(person_share, 4), "pet_share": round(float((classes == 0).mean()), 4)})
        if (index + 1) % 200 == 0:
            print(f"{index + 1}/{len(paths)} photos, {time.perf_counter() - started:.0f} s", flush=True)
    held_out = write_lists(output, rows, args.hold_out,
                           set(read_name_list(args.hold_out_list)) if args.hold_out_list else None)
    if args.people_copies:
        print(f"{write_people_folder(output, rows, held_out, args.people_copies)} photos with people linked "
              f"{args.people_copies} times into {output / 'people'}")
    confidences = [row["confidence"] for row in rows]
    print(f"{len(rows)} of {len(paths)} photos labelled in {time.perf_counter() - started:.0f} s, {len(held_out)} held "
          f"out; mean confidence {np.mean(confidences):.3f}, 10th percentile {np.percentile(confidences, 10):.3f}; "
          f"{sum(row['person_share'] > 0.01 for row in rows)} photos with people (over 1% of pixels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
