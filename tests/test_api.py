"""The app's named API endpoints through gradio_client, against ``python app.py`` (the ``app_server`` fixture)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.app_server import FIRST_CHECKPOINT, SECOND_CHECKPOINT
from tests.corpus import EXPECTED, bad_inputs

gradio_client = pytest.importorskip("gradio_client")

# Outputs of /predict, in order.
CLASS_MAP, CONFIDENCE, SLIDER, CUTOUT_FILE, AREAS, STATUS = range(6)


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
    assert {"/predict", "/compare", "/list_checkpoints"} <= set(endpoints)


def test_predict_returns_classes_and_the_matted_cutout_at_the_photo_size(client, app_server, photo_500x375):
    client = gradio_client.Client(app_server.url, verbose=False)  # This one downloads the files.
    result = client.predict(gradio_client.handle_file(str(photo_500x375)), FIRST_CHECKPOINT, api_name="/predict")
    class_map = result[CLASS_MAP]
    assert [layer["label"] for layer in class_map["annotations"]] == ["pet", "background", "border"]
    for path in (class_map["image"], *(layer["image"] for layer in class_map["annotations"]), result[CONFIDENCE]):
        with Image.open(path) as image:
            assert image.size == (500, 375)
    # The final value holds the cutout: matted, so alpha is exactly 0 or 255 outside the border layer.
    with Image.open(result[CUTOUT_FILE]) as cutout, Image.open(class_map["annotations"][2]["image"]) as border:
        assert cutout.mode == "RGBA" and cutout.size == (500, 375)
        alpha, band = np.asarray(cutout)[..., 3], np.asarray(border)[..., 3] > 0
        assert np.isin(alpha[~band], [0, 255]).all()
    photo, cutout = result[SLIDER]
    with Image.open(photo) as image:
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
