"""The app's named API endpoints through gradio_client, against ``python app.py`` (the ``app_server`` fixture)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.app_server import FIRST_CHECKPOINT, SECOND_CHECKPOINT
from tests.corpus import EXPECTED, bad_inputs

gradio_client = pytest.importorskip("gradio_client")

# Outputs of /predict, in order.
CLASS_MAP, CONFIDENCE, SLIDER, AREAS, STATUS = range(5)


@pytest.fixture(scope="module")
def client(app_server):
    return gradio_client.Client(app_server.url, verbose=False, download_files=False)


@pytest.fixture(scope="module")
def photo_500x375(tmp_path_factory):
    """A 500x375 synthetic pet photo, the size of a typical Oxford-IIIT Pet photo."""
    from petseg.synthetic import make_synthetic_pet

    path = tmp_path_factory.mktemp("photos") / "pet.jpg"
    make_synthetic_pet(np.random.default_rng(3), 500, 375)[0].save(path, quality=90)
    return path


def test_named_endpoints_are_listed(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/predict", "/cutout", "/batch", "/compare", "/list_checkpoints"} <= set(endpoints)


def test_predict_returns_classes_and_the_matted_cutout_at_the_photo_size(client, app_server, photo_500x375):
    client = gradio_client.Client(app_server.url, verbose=False)  # This one downloads the files.
    result = client.predict(gradio_client.handle_file(str(photo_500x375)), FIRST_CHECKPOINT, api_name="/predict")
    class_map = result[CLASS_MAP]
    assert [layer["label"] for layer in class_map["annotations"]] == ["pet", "background", "border"]
    for path in (class_map["image"], *(layer["image"] for layer in class_map["annotations"]), result[CONFIDENCE]):
        with Image.open(path) as image:
            assert image.size == (500, 375)
    # The full-resolution cutout (/cutout, which the page calls next): matted, so alpha is exactly 0 or 255
    # outside the border layer.
    cutout_file = client.predict(gradio_client.handle_file(str(photo_500x375)), FIRST_CHECKPOINT, api_name="/cutout")
    with Image.open(cutout_file) as cutout, Image.open(class_map["annotations"][2]["image"]) as border:
        assert cutout.mode == "RGBA" and cutout.size == (500, 375)
        alpha, band = np.asarray(cutout)[..., 3], np.asarray(border.convert("RGBA"))[..., 3] > 0
        assert np.isin(alpha[~band], [0, 255]).all()
    for path in result[SLIDER]:  # The photo and its cutout.
        with Image.open(path) as image:
            assert image.size == (500, 375)
    areas = {entry["label"]: entry["confidence"] for entry in result[AREAS]["confidences"]}
    assert set(areas) == {"pet", "background", "border"} and sum(areas.values()) == pytest.approx(1.0)
    assert f"with **{FIRST_CHECKPOINT}**" in result[STATUS] and "500x375 px" in result[STATUS]


def test_predict_uses_the_default_checkpoint_when_none_is_named(client, photo_500x375):
    result = client.predict(gradio_client.handle_file(str(photo_500x375)), api_name="/predict")
    assert "500x375 px" in result[STATUS] and "cutout matted in" in result[STATUS]


@pytest.mark.parametrize("name", ["not_an_image.txt", "truncated.jpg", "one_pixel.png", "huge.png"])
def test_bad_upload_gives_a_readable_error(client, tmp_path, name):
    path = bad_inputs(tmp_path)[name]
    with pytest.raises(gradio_client.exceptions.AppError) as raised:
        client.predict(gradio_client.handle_file(str(path)), FIRST_CHECKPOINT, api_name="/predict")
    assert EXPECTED[name][1] in str(raised.value).lower()
    assert "Traceback" not in str(raised.value)


def test_unknown_checkpoint_gives_a_readable_error(client, photo_500x375):
    with pytest.raises(gradio_client.exceptions.AppError, match="unavailable: file not found"):
        client.predict(gradio_client.handle_file(str(photo_500x375)), "no-such-checkpoint", api_name="/predict")
    with pytest.raises(gradio_client.exceptions.AppError, match="Refused checkpoint name"):
        client.predict(gradio_client.handle_file(str(photo_500x375)), "../weights/tiny", api_name="/predict")


def test_app_keeps_working_after_bad_uploads(client, tmp_path, photo_500x375):
    with pytest.raises(gradio_client.exceptions.AppError):
        client.predict(gradio_client.handle_file(str(bad_inputs(tmp_path)["zero_bytes.jpg"])), api_name="/predict")
    result = client.predict(gradio_client.handle_file(str(photo_500x375)), SECOND_CHECKPOINT, api_name="/predict")
    assert f"with **{SECOND_CHECKPOINT}**" in result[STATUS]


def test_compare_and_list_checkpoints(client, photo_500x375):
    verdict, *_ = client.predict(gradio_client.handle_file(str(photo_500x375)), FIRST_CHECKPOINT, SECOND_CHECKPOINT,
                                 api_name="/compare")
    assert "agree on" in verdict
    listed = {entry["name"]: entry for entry in client.predict(api_name="/list_checkpoints")}
    assert {FIRST_CHECKPOINT, SECOND_CHECKPOINT} <= set(listed)
    assert listed[FIRST_CHECKPOINT]["available"] and listed[FIRST_CHECKPOINT]["description"].startswith("tiny:")


def test_batch_returns_a_zip_of_rgba_cutouts_and_a_csv_row_per_file(client, app_server, tmp_path, photo_500x375):
    import csv
    import zipfile

    client = gradio_client.Client(app_server.url, verbose=False)  # This one downloads the files.
    photos = [photo_500x375, tmp_path / "pet.png", tmp_path / "second" / "pet.jpg", tmp_path / "broken.jpg"]
    photos[2].parent.mkdir()
    Image.open(photo_500x375).save(photos[1])
    Image.open(photo_500x375).resize((250, 180)).save(photos[2])
    photos[3].write_bytes(photo_500x375.read_bytes()[:2000])  # Truncated: a bad file, not a failed batch.
    gallery, zip_path, csv_path, status = client.predict(
        [gradio_client.handle_file(str(path)) for path in photos], FIRST_CHECKPOINT, api_name="/batch")
    assert len(gallery) == 3 and "**3** of 4 photos" in status
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == ["pet.png", "pet-2.png", "pet-3.png"]
        for name, size in zip(archive.namelist(), [(500, 375), (500, 375), (250, 180)]):
            with archive.open(name) as member, Image.open(member) as cutout:
                assert cutout.mode == "RGBA" and cutout.size == size
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["cutout"] for row in rows] == ["pet.png", "pet-2.png", "pet-3.png", ""]
    assert rows[3]["file"] == "broken.jpg" and "truncated or damaged" in rows[3]["error"]
