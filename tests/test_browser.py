"""The app in a real browser: Debian's Chromium driven by Playwright against ``python app.py``.

One test walks the whole story a user would: upload a 12-megapixel phone photo, see the class map and the confidence
at screen size, then the matted cutout in the photo | cutout slider and the full-resolution cutout's download, hover
a class in the legend, switch checkpoints, cut out three photos in the Batch tab, train two epochs on synthetic data
while watching them arrive, and find the new checkpoint in the dropdown. With PETSEG_UPDATE_SCREENSHOTS=1 it
refreshes docs/screenshots/ on the way. Skipped without Chromium or Playwright.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from PIL import Image

from petseg.checkpoints import default_checkpoint
from tests.app_server import SECOND_CHECKPOINT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PHOTO_SIZE = [1200, 1600]  # A 3024x4032 phone photo, as the page shows it.
TRAINED_NAME = "browser-run"

# Bounded waits, in milliseconds; generous, as the other test worker may be training on the same cores.
ACTION_TIMEOUT = 15_000
PAGE_TIMEOUT = 60_000
PREDICT_TIMEOUT = 120_000
TRAINING_TIMEOUT = 300_000

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
if not CHROMIUM.exists():
    pytest.skip(f"Debian's Chromium is missing at {CHROMIUM}", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, app_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(ACTION_TIMEOUT)
    page = context.new_page()
    page.outside_requests = []
    page.on("request", lambda request: None if request.url.startswith((app_server.url, "data:", "blob:"))
            else page.outside_requests.append(request.url))
    page.goto(app_server.url, timeout=PAGE_TIMEOUT)
    page.wait_for_selector("#photo input[type=file]", state="attached")
    try:
        yield page
    finally:
        context.close()


def image_size(page, selector: str) -> list[int]:
    """The natural size of the image shown in ``selector`` (0, 0 while it is loading)."""
    return page.eval_on_selector(f"{selector} img", "image => [image.naturalWidth, image.naturalHeight]")


def wait_for_image(page, selector: str, size: list[int] | None = None) -> None:
    page.wait_for_function(
        "([selector, size]) => { const image = document.querySelector(selector + ' img');"
        " return image && image.complete && image.naturalWidth > 0"
        " && (!size || (image.naturalWidth === size[0] && image.naturalHeight === size[1])); }",
        arg=[selector, size], timeout=PREDICT_TIMEOUT)


def choose_checkpoint(page, name: str) -> None:
    page.locator("#checkpoint input").click()
    page.get_by_role("option", name=f"{name}:").click()


def test_predict_switch_and_train(page, app_server, tmp_path):
    expect = sync_api.expect
    # The README's screenshots are refreshed only on request, so a test run leaves tracked files alone.
    screenshots = SCREENSHOTS if os.environ.get("PETSEG_UPDATE_SCREENSHOTS") == "1" else tmp_path
    screenshots.mkdir(parents=True, exist_ok=True)

    # Upload a phone-sized photo (an example scaled to 3024x4032): the class map and confidence appear at screen
    # size, from the default checkpoint (the shipped one when the project has one, so the screenshot shows a real
    # mask), then the cutout joins the slider.
    photo = tmp_path / "Abyssinian_94.jpg"
    with Image.open(EXAMPLES / "Abyssinian_94.jpg") as example:
        example.resize((3024, 4032), Image.Resampling.BICUBIC).save(photo, quality=90)
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    default = default_checkpoint(app_server.weights_dir)
    expect(page.locator("#predict-status")).to_contain_text(f"with {default} in", timeout=PREDICT_TIMEOUT)
    for selector in ("#classes", "#confidence"):
        wait_for_image(page, selector, PHOTO_SIZE)
        box = page.locator(f"{selector} img").first.bounding_box()
        assert box and box["width"] > 50 and box["height"] > 50, f"{selector} is not visible: {box}"
    expect(page.locator("#classes img")).to_have_count(4)  # The photo and one layer per class.
    expect(page.locator("#predict-status")).to_contain_text("cutout matted in", timeout=PREDICT_TIMEOUT)
    # The photo and the cutout, either side of the slider's line, both at the photo's size.
    page.wait_for_function(
        "size => [...document.querySelectorAll('#cutout img')].filter(image => image.complete"
        " && image.naturalWidth === size[0] && image.naturalHeight === size[1]).length >= 2", arg=PHOTO_SIZE,
        timeout=PREDICT_TIMEOUT)
    # The cutout's side shows a checkerboard through its transparent pixels (gradio's own background is plain).
    backdrop = page.eval_on_selector("#cutout img.fixed", "image => getComputedStyle(image).backgroundImage")
    assert "conic-gradient" in backdrop, backdrop
    expect(page.locator("#cutout-file")).to_contain_text("Abyssinian_94-cutout", timeout=PREDICT_TIMEOUT)
    page.screenshot(path=str(screenshots / "predict.png"), full_page=True)

    # Hovering a class in the legend shows that class alone.
    page.locator("#classes").get_by_text("border", exact=True).hover()
    page.wait_for_function(
        "() => { const masks = [...document.querySelectorAll('#classes img.mask')];"
        " return masks.length === 3 && masks.map(mask => getComputedStyle(mask).opacity).sort().join() === '0,0,1'; }")
    page.mouse.move(0, 0)
    # The photo's file is the same for both checkpoints (gradio's cache names it by content); the pet layer is not.
    first_map = page.eval_on_selector("#classes img.mask", "image => image.src")

    # Switching the checkpoint runs the same photo again.
    choose_checkpoint(page, SECOND_CHECKPOINT)
    expect(page.locator("#predict-status")).to_contain_text(f"with {SECOND_CHECKPOINT} in", timeout=PREDICT_TIMEOUT)
    page.wait_for_function("src => document.querySelector('#classes img.mask').src !== src", arg=first_map,
                           timeout=PREDICT_TIMEOUT)
    wait_for_image(page, "#classes", PHOTO_SIZE)

    # Batch: three example photos in, a gallery of their cutouts and a .zip of them out.
    page.get_by_role("tab", name="Batch").click()
    batch = [str(EXAMPLES / name) for name in ("Bengal_1.jpg", "american_bulldog_28.jpg", "american_bulldog_214.jpg")]
    page.locator("#batch-files input[type=file]").set_input_files(batch)
    page.locator("#batch-start").click()
    expect(page.locator("#batch-status")).to_contain_text("of 3 photos", timeout=PREDICT_TIMEOUT)
    expect(page.locator("#batch-gallery img")).to_have_count(3)
    expect(page.locator("#batch-zip a[download]").first).to_be_visible()  # The download link (its size, "4.2 MB").
    page.wait_for_function("() => [...document.querySelectorAll('#batch-gallery img')].every("
                           "image => image.complete && image.naturalWidth > 0)", timeout=PREDICT_TIMEOUT)
    page.screenshot(path=str(screenshots / "batch.png"), full_page=True)

    # Training: two epochs on synthetic data stream in, then the checkpoint joins the dropdown.
    page.get_by_role("tab", name="Training").click()
    # Choosing a DeepLab preset moves the image size to the 8k+1 it takes, and back for the U-Net.
    for preset, size in (("voc", "129"), ("tutorial", "128")):
        page.get_by_label("Preset").click()
        page.get_by_role("option", name=preset).click()
        expect(page.locator("#image-size input")).to_have_value(size)
    page.locator("#epochs input").fill("2")
    page.locator("#batch-size input").fill("4")
    page.locator("#image-size input").fill("64")
    page.locator("#checkpoint-name").get_by_role("textbox").fill(TRAINED_NAME)
    page.locator("#start-training").click()
    log = page.locator("#training-log textarea")
    expect(log).to_have_value(re.compile("epoch 1/2"), timeout=TRAINING_TIMEOUT)
    expect(log).to_have_value(re.compile("epoch 2/2"), timeout=TRAINING_TIMEOUT)
    expect(page.locator("#samples img")).to_have_count(2, timeout=PREDICT_TIMEOUT)
    expect(page.locator("#run-status")).to_contain_text("Done", timeout=TRAINING_TIMEOUT)
    wait_for_image(page, "#latest-sample")
    wait_for_image(page, "#curves")
    page.screenshot(path=str(screenshots / "training.png"), full_page=True)

    page.get_by_role("tab", name="Predict").click()
    page.locator("#checkpoint input").click()
    expect(page.get_by_role("option", name=f"{TRAINED_NAME}:")).to_be_visible(timeout=PREDICT_TIMEOUT)
    page.keyboard.press("Escape")
    assert (app_server.weights_dir / f"{TRAINED_NAME}.keras").exists()
    assert page.outside_requests == [], f"the page fetched from outside the app: {page.outside_requests}"

