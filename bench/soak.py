"""Soak test: many mixed requests from a few concurrent clients against one ``python app.py``, watching its memory
and its cache folder.

Starts the app on a free 127.0.0.1 port with a cache folder of its own (``GRADIO_TEMP_DIR``), then sends a bounded
number of requests through gradio_client from ``--clients`` threads: photos of 300 to 1,600 px to ``/predict``,
some to ``/compare`` (the first two checkpoints), a few bad files (text, empty, truncated JPEG) that must be
refused with a readable message, and a few to ``/batch`` when the app has that endpoint. Along the way it records
the server's resident memory (RSS) and the cache folder's size, and at the end counts the tracebacks in its log.
The readings it compares (after a tenth of the requests and after all; 40 and 400 within a longer soak) wait until
no request is in flight: a photo being matted holds 100 MB or more for a moment, which is not what the app keeps.

Usage:
    python bench/soak.py                                  # 400 requests from 8 clients
    nice -n 10 python bench/soak.py --requests 2000 --output bench/results/soak-2000.json

Writes JSON (every sample), a Markdown table beside it and a PNG curve of RSS and cache size against requests
(``--output``, default bench/results/soak.json, .md, .png and the server's .log); Ctrl-C or SIGTERM stops sending
and writes what was measured. "Errors" are requests whose outcome is wrong: a good photo refused or a bad file
accepted, timeouts included; bad files refused with a message are expected.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # So that ``python bench/soak.py`` finds petseg and bench.

from bench.load_test import LoadTestError  # noqa: E402 (after the path above)
from bench import processes  # noqa: E402

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "soak.json"
MAX_REQUESTS = 5000  # A ceiling on --requests, so a typo cannot start an endless run.
PHOTO_SIDES = (300, 500, 800, 1200, 1600)  # Longer sides of the good photos; each at 4:3.
# One cycle of request kinds; "batch" is replaced by "predict" when the app has no /batch endpoint.
CYCLE = ["predict"] * 12 + ["compare"] * 4 + ["bad"] * 2 + ["batch"] * 2
BAD_FILES = {"not_an_image.txt": b"this is not a photo\n", "empty.jpg": b""}


def make_inputs(folder: Path) -> tuple[list[np.ndarray], list[Path]]:
    """Good photos of every size in ``PHOTO_SIDES`` (as arrays), and bad files written into ``folder``."""
    from petseg.synthetic import make_synthetic_pet

    rng = np.random.default_rng(0)
    good = []
    for index, side in enumerate(PHOTO_SIDES):
        width, height = (side, side * 3 // 4) if index % 2 == 0 else (side * 3 // 4, side)
        good.append(np.asarray(make_synthetic_pet(rng, width, height)[0]))
    bad = []
    for name, content in BAD_FILES.items():
        (folder / name).write_bytes(content)
        bad.append(folder / name)
    truncated = folder / "truncated.jpg"
    Image.fromarray(good[0]).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    return good, [*bad, truncated]


def unique_photo(photo: np.ndarray, index: int, path: Path) -> Path:
    """Save ``photo`` with request ``index`` written into its top row, so that no two requests send the same
    bytes (gradio's cache keeps one copy of identical files, and visitors send photos of their own); every fifth is
    a PNG, the rest JPEGs."""
    marked = photo.copy()
    marked[0, :8] = np.frombuffer(index.to_bytes(24, "little"), np.uint8).reshape(8, 3)
    path = path.with_suffix(".png" if index % 5 == 0 else ".jpg")
    Image.fromarray(marked).save(path)
    return path


def folder_bytes(folder: Path) -> int:
    """The bytes of every file under ``folder`` (files that vanish while walking are skipped)."""
    total = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


class Soak:
    """The requests of one soak, their outcomes and the samples of memory and disk taken along the way."""

    def __init__(self, url: str, pid: int, cache_dir: Path, good: list[np.ndarray], bad: list[Path], requests: int,
                 sample_every: int, deadline: float):
        self.url, self.cache_dir, self.good, self.bad = url, cache_dir, good, bad
        self.process = psutil.Process(pid)
        self.requests, self.sample_every, self.deadline = requests, sample_every, deadline
        self.lock = threading.Lock()
        self.all_done = threading.Condition(self.lock)  # Notified as each request finishes.
        self.next_index = 0
        self.done = 0
        self.errors: dict[str, int] = {}
        self.kinds: dict[str, int] = {}
        self.samples: list[dict] = []
        self.started = time.monotonic()

    def sample(self) -> None:
        """Record the server's RSS and the cache folder's size after ``self.done`` requests (lock held)."""
        self.samples.append({"requests": self.done, "seconds": round(time.monotonic() - self.started, 1),
                             "rss_mb": round(self.process.memory_info().rss / 2**20, 1),
                             "cache_mb": round(folder_bytes(self.cache_dir) / 2**20, 2),
                             "errors": sum(self.errors.values())})
        last = self.samples[-1]
        print(f"  {last['requests']:>5} requests  {last['seconds']:>7.0f} s  RSS {last['rss_mb']:>6.0f} MB  "
              f"cache {last['cache_mb']:>7.1f} MB  errors {last['errors']}", flush=True)

    def stop(self, *_) -> None:
        """Send no more requests (Ctrl-C or SIGTERM): the ones in flight finish and the results are written."""
        print("Stopping: no more requests are sent; waiting for those in flight ...", flush=True)
        with self.lock:
            self.requests = self.next_index

    def take(self) -> int | None:
        """The next request's index, or None when all are sent. At a count whose RSS is compared, no request starts
        until all before it have finished, so that reading holds no photo in flight, only what the app kept."""
        with self.lock:
            if self.next_index in growth_marks(self.requests):
                self.all_done.wait_for(lambda: self.done >= self.next_index)
            if self.next_index >= self.requests:
                return None
            self.next_index += 1
            return self.next_index - 1

    def finish(self, kind: str, error: str | None) -> None:
        with self.lock:
            self.done += 1
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if error:
                self.errors[error] = self.errors.get(error, 0) + 1
            if self.done % self.sample_every == 0 or self.done in growth_marks(self.requests):
                self.sample()
            self.all_done.notify_all()

    def send(self, client, index: int, kind: str, checkpoints: list[str], folder: Path) -> str | None:
        """Send request ``index`` of ``kind``; return None when its outcome is right, else what went wrong.

        The client's photos are written into ``folder`` (one per client, overwritten by its next request)."""
        from gradio_client import handle_file

        if kind == "bad":
            path = self.bad[index % len(self.bad)]
            arguments, api_name = (handle_file(str(path)), checkpoints[0]), "/predict"
        elif kind == "batch":
            paths = [unique_photo(self.good[(index + offset) % 3], index, folder / f"batch-{offset}")
                     for offset in range(3)]
            arguments, api_name = ([handle_file(str(path)) for path in paths], checkpoints[0]), "/batch"
        else:
            path = handle_file(str(unique_photo(self.good[index % len(self.good)], index, folder / "photo")))
            arguments, api_name = {"predict": ((path, checkpoints[index % len(checkpoints)]), "/predict"),
                                   "compare": ((path, *checkpoints[:2]), "/compare")}[kind]
        job = client.submit(*arguments, api_name=api_name)
        try:
            job.result(timeout=max(self.deadline - time.monotonic(), 0.1))
        except concurrent.futures.TimeoutError:
            job.cancel()
            return "timeout: no answer before the time limit"
        except Exception as error:  # gradio_client raises AppError and transport errors alike.
            if kind == "bad" and "AppError" in type(error).__name__:
                return None  # Refused with the app's message, as it should be.
            return f"{kind}: {type(error).__name__}: {str(error)[:160]}"
        return f"bad: {path.name} was accepted" if kind == "bad" else None

    def worker(self, client, kinds: list[str], checkpoints: list[str], folder: Path) -> None:
        folder.mkdir()
        while (index := self.take()) is not None:
            kind = kinds[index % len(kinds)]
            if time.monotonic() >= self.deadline:
                self.finish(kind, "not sent: the time limit was reached")
                continue
            self.finish(kind, self.send(client, index, kind, checkpoints, folder))


def request_kinds(client) -> tuple[list[str], list[str]]:
    """The cycle of request kinds this app can take, and its available checkpoints (at least one)."""
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    kinds = [kind if kind != "batch" or "/batch" in endpoints else "predict" for kind in CYCLE]
    names = [entry["name"] for entry in client.predict(api_name="/list_checkpoints") if entry["available"]]
    if not names:
        raise LoadTestError("The app has no available checkpoint to soak.")
    return kinds, names if len(names) > 1 else names * 2


def run_soak(app: processes.AppProcess, cache_dir: Path, inputs: Path, args: argparse.Namespace) -> Soak:
    """Send every request of the soak from ``args.clients`` threads; return the soak with its samples."""
    import gradio_client

    good, bad = make_inputs(inputs)
    # httpx's default of 5 s per upload or poll is shorter than a browser waits on a busy server.
    clients = [gradio_client.Client(app.url, verbose=False, download_files=False, httpx_kwargs={"timeout": 120})
               for _ in range(args.clients)]
    kinds, checkpoints = request_kinds(clients[0])
    sample_every = max(1, args.requests // 50)
    soak = Soak(app.url, app.process.pid, cache_dir, good, bad, args.requests, sample_every,
                time.monotonic() + args.timeout)
    with soak.lock:
        soak.sample()  # Before the first request: the warm app.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, soak.stop)
    print(f"Sending {args.requests} requests ({', '.join(sorted(set(kinds)))}) from {args.clients} clients; "
          f"checkpoints {checkpoints[:2]} ...", flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.clients) as pool:
        futures = [pool.submit(soak.worker, client, kinds, checkpoints, inputs / f"client-{number}")
                   for number, client in enumerate(clients)]
        for future in futures:
            future.result()
        list(pool.map(lambda client: client.close(), clients))
    return soak


# ---------------------------------------------------------------------------------------------------------------
# Results: a summary, a table and a curve.


def growth_pairs(requests: int) -> list[tuple[int, int]]:
    """The (early, late) request counts whose RSS are compared: a tenth against all, and 40 against 400 within a
    longer soak (the issue's check), so one long soak also answers the short one.

    >>> growth_pairs(2000)
    [(200, 2000), (40, 400)]
    """
    return [(max(requests // 10, 1), requests)] + ([(40, 400)] if requests > 400 else [])


def growth_marks(requests: int) -> set[int]:
    return {count for pair in growth_pairs(requests) for count in pair}


def rss_growth(samples: list[dict], early: int, late: int) -> float | None:
    """RSS after ``late`` requests relative to after ``early`` ones, in percent (None if either is missing)."""
    by_count = {sample["requests"]: sample["rss_mb"] for sample in samples}
    if early not in by_count or late not in by_count:
        return None
    return round(100.0 * (by_count[late] / by_count[early] - 1.0), 1)


def summarise(soak: Soak, app: processes.AppProcess, args: argparse.Namespace) -> dict:
    log = app.log()
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "requests": args.requests, "clients": args.clients, "done": soak.done, "kinds": soak.kinds,
        "stopped_early": soak.done < args.requests,
        "errors": sum(soak.errors.values()), "error_messages": soak.errors,
        "server_tracebacks": log.count("Traceback (most recent call last)"),
        "wall_seconds": round(time.monotonic() - soak.started, 1),
        "rss_growth_percent": [{"early": early, "late": late, "value": rss_growth(soak.samples, early, late)}
                               for early, late in growth_pairs(args.requests)],
        "cache_limit_mb": args.cache_limit_mb,
        "cache_max_mb": max(sample["cache_mb"] for sample in soak.samples),
        "load_average": list(os.getloadavg()), "cpu_count": os.cpu_count(),
        "samples": soak.samples,
    }


def table_lines(result: dict) -> list[str]:
    """The samples as a Markdown table (about ten rows), then the verdicts."""
    samples = result["samples"]
    step = max(1, len(samples) // 10)
    marks = growth_marks(result["requests"])
    chosen = [sample for index, sample in enumerate(samples) if index % step == 0 or sample["requests"] in marks]
    lines = ["| requests | seconds | RSS (MB) | cache folder (MB) | errors |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {s['requests']} | {s['seconds']:.0f} | {s['rss_mb']:.0f} | {s['cache_mb']:.1f} | {s['errors']} |"
              for s in chosen]
    growths = "; ".join(f"RSS after {growth['late']} is "
                        + ("not measured" if growth["value"] is None else f"{growth['value']:+.1f} %")
                        + f" of after {growth['early']}" for growth in result["rss_growth_percent"])
    limit = result["cache_limit_mb"]
    lines += ["", f"{result['done']} of {result['requests']} requests from {result['clients']} clients "
              f"({', '.join(f'{count} {kind}' for kind, count in sorted(result['kinds'].items()))}) in "
              f"{result['wall_seconds']:.0f} s: {result['errors']} errors, {result['server_tracebacks']} server "
              f"tracebacks; {growths}; cache folder at most {result['cache_max_mb']:.1f} MB"
              + (f" (limit {limit} MB)" if limit else "") + f"; load average {result['load_average'][0]:.1f} "
              f"on {result['cpu_count']} cores."]
    return lines


def draw_curve(result: dict, path: Path) -> None:
    """RSS and cache-folder size against the requests done, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    samples = result["samples"]
    counts = [sample["requests"] for sample in samples]
    figure = Figure(figsize=(7, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    rss_axes = figure.add_subplot()
    rss_axes.plot(counts, [sample["rss_mb"] for sample in samples], color="tab:orange", label="server RSS")
    rss_axes.set_xlabel("requests done")
    rss_axes.set_ylabel("RSS (MB)", color="tab:orange")
    rss_axes.set_ylim(bottom=0)
    cache_axes = rss_axes.twinx()
    cache_axes.plot(counts, [sample["cache_mb"] for sample in samples], color="tab:blue", label="cache folder")
    if result["cache_limit_mb"]:
        cache_axes.axhline(result["cache_limit_mb"], color="tab:blue", linestyle=":", label="cache limit")
    cache_axes.set_ylabel("cache folder (MB)", color="tab:blue")
    cache_axes.set_ylim(bottom=0)
    figure.suptitle(f"Soak: {result['requests']} requests from {result['clients']} clients")
    figure.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path)


# ---------------------------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests in all (default: 400)")
    parser.add_argument("--clients", type=int, default=8, help="clients sending at once (default: 8)")
    parser.add_argument("--weights-dir", type=Path, default=ROOT / "weights", help="checkpoints for the app")
    parser.add_argument("--cache-limit-mb", type=int, help="the app's --cache-limit-mb (default: the app's own)")
    parser.add_argument("--timeout", type=float, default=7200.0,
                        help="seconds for all requests together; unsent ones count as errors (default: 7200)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON result; .md and .png beside")
    args = parser.parse_args(argv)
    refusals = {f"--requests must be between 10 and {MAX_REQUESTS}": not 10 <= args.requests <= MAX_REQUESTS,
                "--clients must be between 1 and 64": not 1 <= args.clients <= 64,
                "--timeout must be positive": args.timeout <= 0}
    for message in [message for message, refused in refusals.items() if refused][:1]:
        parser.error(message)
    return args


def run(args: argparse.Namespace) -> dict:
    """Start the app, soak it as ``args`` asks, and write the JSON, table and curve; return the result."""
    with tempfile.TemporaryDirectory(prefix="petseg-soak-") as scratch:
        scratch = Path(scratch)
        cache_dir, inputs = scratch / "cache", scratch / "inputs"
        cache_dir.mkdir()
        inputs.mkdir()
        arguments = ["--weights-dir", str(args.weights_dir), "--runs-dir", str(scratch / "runs"),
                     "--no-allow-training"]
        if args.cache_limit_mb:
            arguments += ["--cache-limit-mb", str(args.cache_limit_mb)]
        print("Starting app.py ...", flush=True)
        try:
            app, _ = processes.start_app(arguments, scratch / "app.log", 240.0, {"GRADIO_TEMP_DIR": str(cache_dir)})
        except RuntimeError as error:
            raise LoadTestError(str(error)) from error
        try:
            soak = run_soak(app, cache_dir, inputs, args)
            result = summarise(soak, app, args)
        finally:
            processes.stop_process(app.process)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.with_suffix(".log").write_text(app.log())  # The server's log, tracebacks included.
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text("\n".join(table_lines(result)) + "\n")
    draw_curve(result, args.output.with_suffix(".png"))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except LoadTestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(table_lines(result)))
    print(f"Written to {args.output} (.md and .png beside it).")
    return 0 if result["errors"] == 0 and result["server_tracebacks"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
