import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from petseg import data
from petseg.resize import augment, resize_mask
from petseg.synthetic import make_synthetic_pets


def test_trimap_values_map_to_class_ids_and_invalid_values_become_border():
    trimap = np.array([[1, 2, 3], [0, 4, 255]], dtype=np.uint8)
    assert data.trimap_to_classes(trimap).tolist() == [[0, 1, 2], [2, 2, 2]]


def test_nearest_neighbour_mask_resize_keeps_only_valid_labels():
    rng = np.random.default_rng(0)
    mask = tf.constant(rng.integers(0, 3, size=(37, 53, 1)), dtype=tf.uint8)
    for size in (16, 64, 128):
        resized = resize_mask(mask, size).numpy()
        assert resized.shape == (size, size, 1)
        assert set(np.unique(resized)) <= {0, 1, 2}
    # Bilinear resizing would invent the in-between value 1 on a 0/2 edge; nearest never does.
    edge = tf.constant(np.repeat([[0] * 5 + [2] * 5], 10, axis=0)[..., None], dtype=tf.uint8)
    assert set(np.unique(resize_mask(edge, 7).numpy())) == {0, 2}


@pytest.mark.parametrize("augmentation", ["flip", "strong"])
def test_augmentation_keeps_image_and_mask_aligned(augmentation):
    # The mask is a function of the image (bright red pixels are "pet"), so any misalignment shows up.
    rng = np.random.default_rng(1)
    image = np.zeros((80, 80, 3), dtype=np.uint8)
    mask = np.ones((80, 80, 1), dtype=np.uint8)
    for _ in range(6):
        top, left = rng.integers(0, 60, size=2)
        image[top:top + 20, left:left + 12, 0] = 255
        mask[top:top + 20, left:left + 12, 0] = 0
    image[:, :8, 2] = 255  # Asymmetric, so a flip of one without the other is visible.
    tf.random.set_seed(3)
    flips_seen = set()
    for _ in range(12):
        out_image, out_mask = augment(tf.constant(image), tf.constant(mask), 64, augmentation)
        out_image, out_mask = out_image.numpy(), out_mask.numpy()[..., 0]
        assert out_image.shape == (64, 64, 3) and out_mask.shape == (64, 64)
        assert set(np.unique(out_mask)) <= {0, 1}
        # Away from edges (where resizing blends), the red channel must agree with the mask.
        red = out_image[..., 0]
        confident = (red > 0.9) | (red < 0.1)
        if augmentation == "flip":
            assert np.mean((red[confident] > 0.5) == (out_mask[confident] == 0)) > 0.97
            flips_seen.add(bool(out_image[:, -1, 2].mean() > 0.5))
        else:
            # Colour jitter moves values, so compare the redness ordering instead of thresholds.
            pet, rest = red[out_mask == 0], red[out_mask == 1]
            if pet.size and rest.size:
                assert np.median(pet) > np.median(rest) + 0.3
    if augmentation == "flip":
        assert flips_seen == {True, False}


def test_folder_source_decodes_by_content_and_skips_unreadable(tmp_path):
    from PIL import Image

    root = make_synthetic_pets(tmp_path, trainval_count=6, test_count=2)
    names = data.read_split_names(root, "trainval")
    # A PNG with alpha and a GIF hidden behind .jpg names, as in the real set, and one truncated file.
    Image.open(root / "images" / f"{names[0]}.jpg").convert("RGBA").save(root / "images" / f"{names[0]}.jpg", "PNG")
    Image.open(root / "images" / f"{names[1]}.jpg").save(root / "images" / f"{names[1]}.jpg", "GIF")
    (root / "images" / f"{names[2]}.jpg").write_bytes((root / "images" / f"{names[3]}.jpg").read_bytes()[:200])
    skipped: list = []
    examples = list(data.iterate_split(root, "trainval", skipped))
    assert len(examples) == 5 and [name for name, _ in skipped] == [names[2]]
    for example in examples:
        assert example.image.dtype == np.uint8 and example.image.shape[-1] == 3
        assert example.mask.shape == example.image.shape[:2]
        assert set(np.unique(example.mask)) <= {0, 1, 2}


def test_training_decodes_photos_as_the_app_does_and_turns_trimaps_with_them(tmp_path):
    from PIL import ExifTags, Image

    from petseg.photos import load_photo

    root = make_synthetic_pets(tmp_path, trainval_count=2, test_count=1)
    name = data.read_split_names(root, "trainval")[0]
    photo_path, trimap_path = root / "images" / f"{name}.jpg", root / "annotations" / "trimaps" / f"{name}.png"
    stored = np.asarray(Image.open(photo_path).convert("RGBA")).copy()
    stored[:10, :20, 3] = 0  # A transparent corner, to be composited on white.
    trimap = np.asarray(Image.open(trimap_path))
    # Store the pixels losslessly (a PNG behind a .jpg name) with EXIF orientation 6: "turn 90 degrees clockwise".
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    Image.fromarray(stored).save(photo_path, "PNG", exif=exif)

    example = data.read_folder_example(root, name)
    np.testing.assert_array_equal(example.image, load_photo(photo_path))  # Exactly what the app sees.
    upright = np.rot90(stored, k=-1)
    assert example.image.shape == upright.shape[:2] + (3,) and example.image.shape != stored.shape[:2] + (3,)
    assert (example.image[:20, -10:] == 255).all()  # The transparent corner, turned and white.
    np.testing.assert_array_equal(example.image[20:, :], upright[20:, :, :3])
    # The trimap turned with the photo, so every label still sits on its pixel.
    np.testing.assert_array_equal(example.mask, data.trimap_to_classes(np.rot90(trimap, k=-1)))


def test_bad_data_folder_gives_a_clear_error(tmp_path):
    with pytest.raises(data.DataError, match="not found"):
        data.read_split_names(tmp_path / "missing", "test")
    with pytest.raises(data.DataError, match="official Oxford-IIIT Pet layout"):
        data.read_split_names(tmp_path, "test")


def test_validation_split_is_seeded_and_disjoint(synthetic_data):
    names = data.read_split_names(synthetic_data, "trainval")
    first = data.validation_indices(names, 0.25, seed=0)
    chosen = sorted(names[i] for i in first)
    reversed_names = list(reversed(names))
    assert chosen == sorted(reversed_names[i] for i in data.validation_indices(reversed_names, 0.25, seed=0))
    assert len(first) == 3
    assert data.validation_indices(names, 0.25, seed=1).tolist() != first.tolist()


def test_training_data_pipeline_shapes_and_counts(synthetic_data):
    training = data.make_training_data(synthetic_data, image_size=64, batch_size=4, augmentation="strong",
                                       validation_fraction=0.2, seed=0)
    assert training.counts == {"train": 9, "validation": 3, "skipped": 0}
    images, masks = next(iter(training.train))
    assert images.shape == (4, 64, 64, 3) and images.dtype == tf.float32
    assert masks.shape == (4, 64, 64, 1) and masks.dtype == tf.int32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    validation_images, _ = next(iter(training.validation))
    assert validation_images.shape[1:] == (64, 64, 3)
    assert training.sample_images.shape == (3, 64, 64, 3)


def pseudo_labelled_folder(root, count: int):
    """Synthetic pets labelled as ``scripts/pseudo_label.py`` writes them: the teacher sure of each photo's left
    half (confidence 250 of 255) and unsure of its right half (50)."""
    from PIL import Image

    root = make_synthetic_pets(root, trainval_count=count, test_count=0, seed=2)
    (root / "annotations" / "confidence").mkdir()
    for trimap in (root / "annotations" / "trimaps").glob("*.png"):
        width, height = Image.open(trimap).size
        confidence = np.full((height, width), 250, np.uint8)
        confidence[:, width // 2:] = 50
        Image.fromarray(confidence).save(root / "annotations" / "confidence" / trimap.name)
    return root


def test_unlabelled_photos_join_each_training_batch_with_unsure_pixels_ignored(synthetic_data, tmp_path):
    # 20 pseudo-labelled photos named as the synthetic set names them: the first 16 share a name with one of the
    # labelled set's 12 trainval (validation included) or 4 test photos, so only 4 may train.
    unlabelled = pseudo_labelled_folder(tmp_path / "pseudo", count=20)
    training = data.make_training_data(synthetic_data, image_size=64, batch_size=4, augmentation="none",
                                       validation_fraction=0.2, seed=0, unlabelled_dirs=[str(unlabelled)],
                                       min_confidence=0.5, unlabelled_share=0.5)
    assert training.counts == {"train": 9, "validation": 3, "skipped": 0, "unlabelled": 4, "unlabelled_skipped": 0,
                               "unlabelled_per_epoch": 10}  # 5 steps of 2 unlabelled photos.
    assert "unlabelled folder:pseudo (confidence >= 0.5)" in training.source
    assert training.steps_per_epoch == 5  # One pass over 9 labelled photos, 2 a batch.
    batches = list(training.train)
    assert len(batches) == 5 and [int(masks.shape[0]) for _, masks in batches] == [4, 4, 4, 4, 3]
    for _, masks in batches:
        labelled, pseudo = masks[:-2, ..., 0].numpy(), masks[-2:, ..., 0].numpy()
        assert not (labelled == data.IGNORE).any() and set(np.unique(labelled)) <= {0, 1, 2}
        # The unsure right half is ignored, the sure left half keeps the teacher's classes (the crop-free
        # "none" augmentation keeps halves in place; the resize may blur the middle column).
        assert (pseudo[:, :, 33:] == data.IGNORE).all() and not (pseudo[:, :, :31] == data.IGNORE).any()
    assert not any((masks.numpy() == data.IGNORE).any() for _, masks in training.validation)


def test_a_threshold_of_zero_keeps_every_pseudo_label_and_all_known_names_drop_out(synthetic_data, tmp_path):
    unlabelled = pseudo_labelled_folder(tmp_path / "pseudo", count=16)
    with pytest.raises(data.DataError, match="each is a labelled photo too"):
        data.make_training_data(synthetic_data, image_size=64, batch_size=4, unlabelled_dirs=[str(unlabelled)])
    examples = data.load_resized(unlabelled, "trainval", 64, min_confidence=0.0)
    assert not (examples.masks == data.IGNORE).any()


def test_tfds_source_on_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        examples = list(data.iterate_split(None, "test"))
    assert len(examples) == 5
    for example in examples:
        assert example.image.ndim == 3 and example.image.shape[-1] == 3
        assert example.mask.shape == example.image.shape[:2]
        assert set(np.unique(example.mask)) <= {0, 1, 2}


def load_script(name: str):
    """``scripts/<name>.py`` as a module (scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_people_folder_repeats_only_trainval_photos_with_people_and_a_pet(tmp_path):
    write_people_folder = load_script("pseudo_label").write_people_folder

    folder = pseudo_labelled_folder(tmp_path / "pseudo", count=4)
    names = data.read_split_names(folder, "trainval")
    rows = [{"name": names[0], "person_share": 0.2, "pet_share": 0.3},  # People and a pet: linked 3 times.
            {"name": names[1], "person_share": 0.0, "pet_share": 0.3},  # No people.
            {"name": names[2], "person_share": 0.2, "pet_share": 0.3},  # Held out for people_check.py.
            {"name": names[3], "person_share": 0.5, "pet_share": 0.01}]  # A pet label too small to trust.
    assert write_people_folder(folder, rows, held_out={names[2]}, copies=3) == 1
    people = data.load_resized(folder / "people", "trainval", 64, min_confidence=0.0)
    original = data.load_resized(folder, "trainval", 64, min_confidence=0.0)
    assert people.names == [f"{names[0]}_p{copy}" for copy in range(3)]
    assert all((image == original.images[0]).all() for image in people.images)
    assert all((mask == original.masks[0]).all() for mask in people.masks)


def test_the_people_check_says_which_opencv_it_needs_instead_of_a_traceback(monkeypatch):
    # OpenCV 5 has no Haar cascade; a missing OpenCV reads the same to the script.
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(SystemExit, match="needs OpenCV 4"):
        load_script("people_check").find_faces(np.zeros((32, 32, 3), np.uint8))


def test_people_on_labelled_photos_are_the_deeplabs_person_pixels_on_the_trimaps_background(tmp_path, monkeypatch):
    from petseg.classes import BACKGROUND, PET

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "scripts"))
    labelled_people = load_script("people_check").labelled_people
    root = make_synthetic_pets(tmp_path, trainval_count=1, test_count=2)

    def deeplab(person_logit: float):
        def run(batch: np.ndarray) -> np.ndarray:
            logits = np.zeros(batch.shape[:3] + (21,), np.float32)
            logits[..., 15] = person_logit  # PASCAL VOC's "person".
            return logits
        return run

    # A DeepLab that sees a person everywhere, the pet included: only the trimap's background counts.
    found = labelled_people(root, deeplab(10.0))
    assert [name for name, *_ in found] == data.read_split_names(root, "test")
    for name, photo, person in found:
        example = data.read_folder_example(root, name)
        assert (photo == example.image).all()
        assert (person == (example.mask == BACKGROUND)).all() and not person[example.mask == PET].any()
    # A DeepLab that sees nobody: no photo with people.
    assert labelled_people(root, deeplab(-10.0)) == []



def test_the_people_check_names_a_missing_deeplab_instead_of_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script("people_check").main(["--labelled", str(tmp_path), "--voc", str(tmp_path / "missing.tflite")])
    assert exit_info.value.code == 2 and "no VOC DeepLab at" in capsys.readouterr().err


def test_a_second_round_holds_out_the_first_rounds_people_photos(tmp_path):
    pseudo_label = load_script("pseudo_label")
    (tmp_path / "annotations").mkdir()
    rows = [{"name": f"pet_{index}", "person_share": share, "pet_share": 0.3}
            for index, share in enumerate([0.2, 0.0, 0.5, 0.1])]
    drawn = pseudo_label.write_lists(tmp_path, rows, hold_out=2)
    assert len(drawn) == 2 and drawn <= {"pet_0", "pet_2", "pet_3"}
    # The second round's person masks may differ; the first round's list is held out all the same.
    assert pseudo_label.write_lists(tmp_path, rows, hold_out=2, held_out={"pet_1"}) == {"pet_1"}
    assert data.read_split_names(tmp_path, "trainval") == ["pet_0", "pet_2", "pet_3"]
    assert (tmp_path / "people.txt").read_text() == "pet_1\n"
