"""Load test: many concurrent /predict requests against ``python app.py`` on the loopback interface.

Starts the app on a free 127.0.0.1 port (or uses one already running on loopback with --url), sends a bounded
number of concurrent predict requests through gradio_client from threads, and reports latency percentiles, errors
and the wall time. Every request and the whole run are bounded in time; only loopback addresses are ever used.

Usage:
    python bench/load_test.py                            # 32 concurrent requests, checkpoints from weights/
    python bench/load_test.py --weights-dir /tmp/weights --requests 64 --concurrency 16
    python bench/load_test.py --url http://127.0.0.1:7860/ --checkpoint finetune

When the weights folder has no usable checkpoint, a tiny one (64 px, one epoch on synthetic pets) is trained into
a temporary folder first, so the figures then measure the app's overhead more than the model. The result is
printed and written as JSON to bench/results/load_test.json (or --output).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import ipaddress
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # So that ``python bench/load_test.py`` finds petseg.

from bench.processes import AppProcess, start_app as start_app_process  # noqa: E402 (after the path above)
from petseg import runs  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "load_test.json"
MAX_REQUESTS = 512  # A ceiling on --requests, so a typo cannot start an endless run.
START_TIMEOUT = 240.0


class LoadTestError(RuntimeError):
    """The load test could not run as asked (bad address, app did not start); the message says why."""


# ---------------------------------------------------------------------------------------------------------------
# Loopback only.


def require_loopback(url: str) -> str:
    """Return ``url`` if its host is a loopback address or "localhost"; raise ``LoadTestError`` otherwise.

    >>> require_loopback("http://127.0.0.1:7860/")
    'http://127.0.0.1:7860/'
    """
    host = urllib.parse.urlsplit(url).hostname or ""
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise LoadTestError(f"Refusing {url}: the load test only talks to loopback addresses (127.0.0.1, ::1).")
    return url


# ---------------------------------------------------------------------------------------------------------------
# Inputs: a checkpoint and a photo.


def usable_checkpoint(weights_dir: Path) -> str | None:
    from petseg.checkpoints import default_checkpoint

    return default_checkpoint(weights_dir)


def train_tiny_checkpoint(folder: Path, timeout: float) -> Path:
    """Train a 64 px, one-epoch checkpoint on synthetic pets into ``folder/weights`` with ``python train.py``."""
    from petseg.synthetic import make_synthetic_pets

    data_dir = make_synthetic_pets(folder / "pets", trainval_count=12, test_count=2, seed=0)
    weights_dir = folder / "weights"
    command = [sys.executable, str(ROOT / "train.py"), "--data-dir", str(data_dir), "--image-size", "64",
               "--encoder-weights", "none", "--epochs", "1", "--batch-size", "4", "--output-dir", str(weights_dir),
               "--run-dir", str(folder / "run"), "--name", "load-test-tiny", "--no-test"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if completed.returncode != 0:
        raise LoadTestError(f"Training the tiny checkpoint failed:\n{completed.stderr[-3000:]}")
    return weights_dir


def make_photo(path: Path, width: int = 500, height: int = 375) -> Path:
    """A synthetic pet photo of the typical Oxford-IIIT Pet size, saved as JPEG."""
    import numpy as np

    from petseg.synthetic import make_synthetic_pet

    photo, _trimap = make_synthetic_pet(np.random.default_rng(7), width, height)
    photo.save(path, quality=90)
    return path


# ---------------------------------------------------------------------------------------------------------------
# The load.


def percentile(values: list[float], fraction: float) -> float | None:
    """The ``fraction`` quantile by linear interpolation, or None for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.5
    """
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def send_requests(url: str, photo: Path, checkpoint: str | None, requests: int, concurrency: int,
                  deadline: float) -> tuple[list[float], list[str], float]:
    """Send ``requests`` predict calls from ``concurrency`` threads at once; return latencies, errors, wall time.

    Each thread has its own client (made before the clock starts); all threads start together at a barrier. A
    request still unanswered at ``deadline`` (a ``time.monotonic`` value) counts as an error.
    """
    import gradio_client

    clients = [gradio_client.Client(url, verbose=False, download_files=False) for _ in range(concurrency)]
    barrier = threading.Barrier(concurrency)
    lock = threading.Lock()
    counter = iter(range(requests))
    latencies: list[float] = []
    errors: list[str] = []
    arguments = (gradio_client.handle_file(str(photo)),) + ((checkpoint,) if checkpoint else ())

    def next_index() -> int | None:
        with lock:
            return next(counter, None)

    def worker(client) -> None:
        barrier.wait(timeout=60)
        while next_index() is not None:
            started = time.monotonic()
            remaining = deadline - started
            if remaining <= 0:
                with lock:
                    errors.append("not sent: the time limit was reached")
                continue
            job = client.submit(*arguments, api_name="/predict")
            try:
                job.result(timeout=remaining)
            except concurrent.futures.TimeoutError:
                job.cancel()
                with lock:
                    errors.append("timeout: no answer before the time limit")
            except Exception as error:  # gradio_client raises AppError and transport errors alike.
                with lock:
                    errors.append(f"{type(error).__name__}: {str(error)[:200]}")
            else:
                with lock:
                    latencies.append(time.monotonic() - started)

    wall_started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(worker, client) for client in clients]:
            future.result()
        wall_seconds = time.monotonic() - wall_started
        # Closing waits up to a second per client for its heartbeat thread, so close them together, off the clock.
        list(pool.map(lambda client: client.close(), clients))
    return latencies, errors, wall_seconds


def summarise(latencies: list[float], errors: list[str], wall_seconds: float) -> dict:
    rounded = lambda value: None if value is None else round(value, 3)  # noqa: E731
    messages: dict[str, int] = {}
    for message in errors:
        messages[message] = messages.get(message, 0) + 1
    return {
        "ok": len(latencies), "errors": len(errors), "error_messages": messages,
        "latency_seconds": {"p50": rounded(percentile(latencies, 0.5)), "p95": rounded(percentile(latencies, 0.95)),
                            "mean": rounded(sum(latencies) / len(latencies)) if latencies else None,
                            "max": rounded(max(latencies, default=None))},
        "wall_seconds": round(wall_seconds, 3),
        "requests_per_second": round(len(latencies) / wall_seconds, 2) if wall_seconds > 0 else None,
    }


# ---------------------------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32, help=f"predict calls in all (at most {MAX_REQUESTS})")
    parser.add_argument("--concurrency", type=int, help="threads sending at once (default: --requests)")
    parser.add_argument("--weights-dir", type=Path, default=ROOT / "weights",
                        help="checkpoints for the app (default: weights/; a tiny one is trained if it has none)")
    parser.add_argument("--checkpoint", help="checkpoint name to request (default: the app's default)")
    parser.add_argument("--photo", type=Path, help="photo to send (default: a synthetic 500x375 JPEG)")
    parser.add_argument("--url", help="use an app already running at this loopback URL instead of starting one")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds for all requests together; unanswered ones count as errors (default: 300)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON result")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be between 1 and {MAX_REQUESTS}")
    args.concurrency = min(args.concurrency or args.requests, args.requests)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def start_app(weights_dir: Path, scratch: Path) -> tuple[AppProcess, float]:
    """``python app.py`` on a free 127.0.0.1 port, training off, ready to answer; and its start-up seconds."""
    print("Starting app.py ...", flush=True)
    arguments = ["--weights-dir", str(weights_dir), "--runs-dir", str(scratch / "runs"), "--no-allow-training"]
    try:
        app, seconds = start_app_process(arguments, scratch / "app.log", START_TIMEOUT)
    except RuntimeError as error:
        raise LoadTestError(str(error)) from error
    print(f"app.py answers on {app.url} after {seconds:.1f} s.", flush=True)
    return app, round(seconds, 1)


def run(args: argparse.Namespace) -> dict:
    """Run the load test as ``args`` asks and return its result (also written to ``args.output``)."""
    with tempfile.TemporaryDirectory(prefix="petseg-load-") as scratch:
        scratch = Path(scratch)
        photo = args.photo or make_photo(scratch / "pet.jpg")
        app, start_seconds, note = None, None, ""
        if args.url:
            url = require_loopback(args.url)
        else:
            weights_dir = args.weights_dir
            if usable_checkpoint(weights_dir) is None:
                print(f"No usable checkpoint in {weights_dir}: training a tiny one (64 px, one epoch)...", flush=True)
                weights_dir = train_tiny_checkpoint(scratch, timeout=START_TIMEOUT)
                note = "tiny 64 px checkpoint trained for this run (no usable checkpoint in the weights folder)"
            app, start_seconds = start_app(weights_dir, scratch)
            url = app.url
        try:
            print(f"Sending {args.requests} predict requests from {args.concurrency} threads ...", flush=True)
            latencies, errors, wall = send_requests(url, photo, args.checkpoint, args.requests, args.concurrency,
                                                    time.monotonic() + args.timeout)
        finally:
            if app is not None:
                runs.stop_process(app.process)
        from PIL import Image

        with Image.open(photo) as image:
            photo_size = list(image.size)
    result = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "url": url, "requests": args.requests, "concurrency": args.concurrency, "checkpoint": args.checkpoint,
        "photo_size": photo_size, "timeout_seconds": args.timeout,
        "app_start_seconds": start_seconds,
        **summarise(latencies, errors, wall),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "note": note,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except (LoadTestError, subprocess.TimeoutExpired) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    latency = result["latency_seconds"]
    print(f"{result['ok']}/{result['requests']} ok, {result['errors']} errors; latency p50 {latency['p50']} s, "
          f"p95 {latency['p95']} s, max {latency['max']} s; wall {result['wall_seconds']} s "
          f"({result['requests_per_second']} requests/s). Written to {args.output}.")
    for message, count in result["error_messages"].items():
        print(f"  {count} x {message}")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
