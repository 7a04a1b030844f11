"""Run the PetSeg demo app: segment pet photos, compare checkpoints and watch training in the browser.

Examples:
    python app.py                                  # http://127.0.0.1:7860
    python app.py --port 8080 --weights-dir weights --runs-dir runs
    python app.py --no-allow-training              # watch runs, but start none

On a Hugging Face Space (SPACE_ID is set) the app listens on 0.0.0.0 and starting runs is off unless
PETSEG_ALLOW_TRAINING=1 or --allow-training says otherwise.
"""

import argparse
import ctypes
import os
import sys
import threading
import time

# Before gradio is imported: no usage statistics and no version check leave the machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_PORT = 7860
QUEUE_SIZE = 64  # Requests waiting beyond this are refused with "the queue is full".
CONCURRENCY = 2  # Predictions running at once; each uses every CPU core already.
ARENAS = 2  # glibc malloc arenas (M_ARENA_MAX); its default, 8 per core, lets each worker thread keep its own.
MMAP_THRESHOLD = 1 << 20  # Bytes from which an allocation is its own mapping, returned to the system when freed.


def bound_allocator() -> None:
    """Keep glibc's malloc from holding freed memory across requests; a no-op off glibc or where the user set it.

    Gradio runs each request in one of up to 40 worker threads, and by default glibc gives threads arenas of their
    own (up to 8 per core) and raises its mmap threshold up to 32 MB as large arrays are freed, after which a
    photo's arrays (a few MB to tens of MB) are carved from the arenas and their freed space is rarely returned:
    the server's resident memory then grows with the requests. Two arenas and a fixed 1 MB threshold keep it flat
    (docs/performance.md, "Memory and disk under a soak"); ``MALLOC_ARENA_MAX`` or ``MALLOC_MMAP_THRESHOLD_`` in
    the environment take precedence.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # Not glibc (macOS, Windows, musl): its allocator behaves differently.
    if "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(-8, ARENAS)  # M_ARENA_MAX
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD; setting it also stops glibc from raising it.


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Spaces route traffic to the container, so the app must listen on every interface there.
    default_host = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    parser.add_argument("--host", default=default_host,
                        help="address to listen on (default: 127.0.0.1, or 0.0.0.0 on a Space)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT),
                        help=f"port to listen on (default: $GRADIO_SERVER_PORT or {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    parser.add_argument("--weights-dir", help="checkpoint folder (default: weights/ or $PETSEG_WEIGHTS_DIR)")
    parser.add_argument("--runs-dir", help="training run folder (default: runs/ or $PETSEG_RUNS_DIR)")
    parser.add_argument("--allow-training", action=argparse.BooleanOptionalAction, default=None,
                        help="allow starting training runs (default: $PETSEG_ALLOW_TRAINING, else on except on "
                             "a Space)")
    parser.add_argument("--cache-limit-mb", type=float, default=os.environ.get("PETSEG_CACHE_LIMIT_MB"),
                        help="disk for the uploads and results the app keeps, oldest deleted first; each is kept "
                             "an hour at most (default: $PETSEG_CACHE_LIMIT_MB or 1024)")
    return parser.parse_args(argv)


def warm_up(weights_dir) -> str:
    """Load the default checkpoint's export and run it once so the first request is as fast as the rest."""
    from petseg.checkpoints import CheckpointError, default_checkpoint
    from petseg.inference import get_predictor

    name = default_checkpoint(weights_dir)
    if name is None:
        return "no checkpoint in the weights folder yet"
    try:
        get_predictor(name, weights_dir)
    except CheckpointError as error:
        return f"could not warm up {name}: {error}"
    return f"default checkpoint {name} loaded"


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    bound_allocator()
    from petseg.checkpoints import DEFAULT_WEIGHTS_DIR
    from petseg.matting import warm_up as warm_up_matting
    from petseg.runs import DEFAULT_RUNS_DIR
    from petseg.ui import build_app, launch_options

    weights_dir = args.weights_dir or DEFAULT_WEIGHTS_DIR
    runs_dir = args.runs_dir or DEFAULT_RUNS_DIR
    try:
        options = launch_options(runs_dir, args.cache_limit_mb)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Matting's numba kernels load (or compile, on a fresh install) beside the model's warm-up, not on a request.
    matting = threading.Thread(target=warm_up_matting, name="matting-warm-up", daemon=True)
    matting.start()
    warm_up_note = warm_up(weights_dir)
    demo = build_app(weights_dir, runs_dir, args.allow_training)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=True,
                quiet=True, **options)
    matting.join()
    print(f"PetSeg is ready at {demo.local_url} ({warm_up_note}; started in {time.perf_counter() - started:.1f} s)",
          flush=True)
    if demo.share_url:
        print(f"Public link: {demo.share_url}", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
