"""Many visitors at once, through ``gradio_client`` as users' scripts call the app (the ``app_server`` fixture).

Identical requests make identical output files; gradio once served them from one cache path that a second request
rewrote in place while the first was still downloading it (see ``petseg.segmentation.OutputFolder``).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import CONCURRENCY, QUEUE_SIZE
from tests.app_server import FIRST_CHECKPOINT

gradio_client = pytest.importorskip("gradio_client")
from gradio_client.utils import QueueError, Status  # noqa: E402 - after the import check.

IDENTICAL_CALLS = 16
DISTINCT_CALLS = 4
CALL_TIMEOUT = 300.0
# Uploads wait their turn behind the burst on a busy machine: httpx's default 5 s is too short for them.
HTTP_OPTIONS = {"timeout": 120.0}


def output_files(result: tuple) -> list[tuple[str, str]]:
    """The files of one /predict answer and the image mode each must decode to: the class map's photo and
    layers (palette PNGs with a clear entry), the confidence map, and the slider's photo and cutout."""
    class_map, confidence, (photo, cutout) = result[:3]
    layers = [(layer["image"], "P") for layer in class_map["annotations"]]
    return [(class_map["image"], "RGB"), *layers, (confidence, "RGB"), (photo, "RGB"), (cutout, "RGBA")]


def make_photo(path: Path, width: int, height: int, seed: int) -> Path:
    """A synthetic pet photo saved as a JPEG."""
    from petseg.synthetic import make_synthetic_pet

    make_synthetic_pet(np.random.default_rng(seed), width, height)[0].save(path, quality=90)
    return path


def call_predict(url: str, photo: Path, download_dir: Path, start: threading.Barrier | None = None) -> tuple:
    """One visitor: a client of its own, one /predict call, every file downloaded into a folder of its own."""
    download_dir.mkdir(parents=True, exist_ok=True)
    client = gradio_client.Client(url, verbose=False, download_files=str(download_dir), httpx_kwargs=HTTP_OPTIONS)
    if start is not None:
        start.wait(timeout=CALL_TIMEOUT)
    job = client.submit(gradio_client.handle_file(str(photo)), FIRST_CHECKPOINT, api_name="/predict")
    return job.result(timeout=CALL_TIMEOUT)


def broken_files(result: tuple, size: tuple[int, int]) -> list[str]:
    """What is wrong with the files of one /predict answer: each must decode whole, at the photo's size."""
    problems = []
    for index, (path, mode) in enumerate(output_files(result)):
        try:
            with Image.open(path) as image:
                image.load()  # Decodes every byte: a short file fails here.
                if image.size != size or image.mode != mode:
                    problems.append(f"file {index} is {image.mode} {image.size}")
        except (OSError, ValueError) as error:
            problems.append(f"file {index}: {error}")
    return problems


def test_identical_and_distinct_concurrent_calls_all_get_complete_files(app_server, tmp_path):
    log_start = len(app_server.log())
    same_photo = make_photo(tmp_path / "same.jpg", 320, 240, seed=5)
    calls = [(same_photo, (320, 240))] * IDENTICAL_CALLS
    for index in range(DISTINCT_CALLS):
        size = (160 + 20 * index, 120 + 10 * index)
        calls.append((make_photo(tmp_path / f"distinct-{index}.jpg", *size, seed=10 + index), size))
    start = threading.Barrier(len(calls))
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call_predict, app_server.url, photo, tmp_path / f"client-{index}", start)
                   for index, (photo, _) in enumerate(calls)]
        failures = []
        for index, (future, (_, size)) in enumerate(zip(futures, calls)):
            try:
                failures += [f"call {index}: {problem}" for problem in broken_files(future.result(), size)]
            except Exception as error:  # noqa: BLE001 - every failed call is reported, not just the first.
                failures.append(f"call {index}: {type(error).__name__}: {error}")
    assert failures == []
    assert "Traceback" not in app_server.log()[log_start:]


RUNNING = (Status.PROCESSING, Status.ITERATING, Status.PROGRESS)  # A worker has the job (/predict yields twice).


def wait_for_status(jobs: list, codes: tuple, timeout: float = CALL_TIMEOUT) -> None:
    """Wait until every job has reached one of the status ``codes`` (or finished); no fixed sleeps."""
    deadline = time.monotonic() + timeout
    while not all(job.status().code in (*codes, Status.FINISHED) for job in jobs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"The large photos never reached {codes}.")
        time.sleep(0.05)


def test_calls_beyond_the_queue_are_refused_and_the_app_keeps_serving(app_server, tmp_path):
    """Two large photos keep both workers busy and more wait first in the queue while a burst of small ones
    overfills it behind them. On a quiet machine the burst takes about 7 s to arrive and a large photo about 1.3 s
    (screen-sized pictures): the waiting ones keep both workers busy for eight more rounds, about 10 s, so the
    queue is still full when the burst arrives."""
    large = make_photo(tmp_path / "large.jpg", 4000, 3000, seed=7)
    small = make_photo(tmp_path / "small.jpg", 160, 120, seed=8)
    burst = QUEUE_SIZE + 12
    # Each large photo has a client of its own (with 18 jobs on one client, gradio_client once cancelled a job whose
    # answer had come); one client whose thread pool holds the whole burst, so that it reaches the server together.
    large_clients = [gradio_client.Client(app_server.url, verbose=False, download_files=False,
                                          httpx_kwargs=HTTP_OPTIONS) for _ in range(9 * CONCURRENCY)]
    client = gradio_client.Client(app_server.url, verbose=False, download_files=False, httpx_kwargs=HTTP_OPTIONS,
                                  max_workers=burst + 1)
    busy = [own.submit(gradio_client.handle_file(str(large)), FIRST_CHECKPOINT, api_name="/predict")
            for own in large_clients[:CONCURRENCY]]
    wait_for_status(busy, RUNNING)
    waiting = [own.submit(gradio_client.handle_file(str(large)), FIRST_CHECKPOINT, api_name="/predict")
               for own in large_clients[CONCURRENCY:]]
    wait_for_status(waiting, (Status.IN_QUEUE, Status.SENDING_DATA, *RUNNING))
    jobs = [client.submit(gradio_client.handle_file(str(small)), FIRST_CHECKPOINT, api_name="/predict")
            for _ in range(burst)]
    outcomes = []
    for job in jobs:
        try:
            job.result(timeout=CALL_TIMEOUT)
            outcomes.append("served")
        except QueueError as error:  # What gradio_client raises when the app answers "queue_full".
            outcomes.append(str(error))
    for job in busy + waiting:
        assert "4000x3000 px" in job.result(timeout=CALL_TIMEOUT)[-1]
    refused = [outcome for outcome in outcomes if outcome != "served"]
    assert refused and set(refused) == {"Queue is full! Please try again."}
    # Every place in the queue was used before refusing: the waiting photos held some of them.
    assert outcomes.count("served") >= QUEUE_SIZE - len(waiting)
    after = client.predict(gradio_client.handle_file(str(small)), FIRST_CHECKPOINT, api_name="/predict")
    assert "160x120 px" in after[-1]
