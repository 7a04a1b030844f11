"""Which request path is faster on this CPU: a traced TensorFlow function, or LiteRT on a TFLite export?

Both take a 500x375 uint8 photo to probabilities at its size, resizes included, on the same float32 model and the
same input shape (``petseg.inference.input_shape``: the photo's aspect ratio for a U-Net):
(a) one ``tf.function`` with a ``[None, None, 3]`` signature (antialiased resize in, the model, softmax, bilinear
resize back), as the app served until LiteRT won;
(b) ``petseg.inference``'s way: Pillow resizes around a LiteRT interpreter (2 threads) on the registry's export.
Requests alternate between the two, so both see the same load; the table gives the median wall time and the
median CPU time of the process per request (less sensitive to other jobs on the machine).

Usage:
    python bench/request_paths.py --checkpoint weights/finetune.keras
    python bench/request_paths.py --preset voc            # random weights: speed only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def tensorflow_path(model, image_size: int, any_size: bool):
    """(a): the traced function the app used, on the same input shape as (b)."""
    import tensorflow as tf

    from petseg.inference import input_shape
    from petseg.model import model_with_dtype
    from petseg.resize import resize_image

    request_model = model_with_dtype(model, "float32", any_size=any_size)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([], tf.int32)])
    def predict_one(image, rows, columns):
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        probabilities = tf.nn.softmax(request_model(resize_image(image[tf.newaxis], (rows, columns)), training=False))
        return tf.image.resize(probabilities, tf.stack([height, width]), method="bilinear")[0]

    return lambda photo: predict_one(photo, *input_shape(*photo.shape[:2], image_size, any_size)).numpy()


def litert_path(model, sidecar: dict):
    """(b): the request path of ``petseg.inference`` on a fresh export of the same model, as the registry makes it."""
    from petseg.checkpoints import CheckpointInfo
    from petseg.inference import Predictor
    from petseg.litert import make_export

    flatbuffer, _ = make_export(model, sidecar)
    predictor = Predictor(CheckpointInfo("bench", Path("bench.keras"), sidecar, True), flatbuffer)
    return predictor, len(flatbuffer)


def compare(paths: dict, photo: np.ndarray, rounds: int) -> dict:
    """Median wall and CPU milliseconds per request of each path, requests interleaved."""
    for run in paths.values():
        for _ in range(3):
            run(photo)
    wall = {name: [] for name in paths}
    cpu = {name: [] for name in paths}
    for _ in range(rounds):
        for name, run in paths.items():
            cpu_started, started = time.process_time(), time.perf_counter()
            run(photo)
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
    return {name: {"wall_p50_ms": round(1000 * float(np.median(wall[name])), 2),
                   "wall_p10_ms": round(1000 * float(np.percentile(wall[name], 10)), 2),
                   "cpu_p50_ms": round(1000 * float(np.median(cpu[name])), 2)} for name in paths}


def load_model(args):
    """The model to time and its sidecar (preset, input size): a checkpoint's, or a preset's with random weights."""
    if args.checkpoint:
        from petseg.checkpoints import load_checkpoint_file

        checkpoint = load_checkpoint_file(args.checkpoint)
        return checkpoint.model, checkpoint.sidecar, Path(args.checkpoint).stem
    from petseg.model import build_model
    from petseg.presets import get_preset

    preset = get_preset(args.preset)
    sidecar = {"preset": preset.name, "image_size": preset.image_size}
    return build_model(preset, preset.image_size, "none"), sidecar, f"{args.preset} (random weights)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="path to a .keras checkpoint")
    source.add_argument("--preset", help="a preset built with random weights")
    parser.add_argument("--rounds", type=int, default=100, help="requests per path (default 100)")
    args = parser.parse_args(argv)
    from petseg.synthetic import make_synthetic_pet

    model, sidecar, label = load_model(args)
    image_size = int(sidecar["image_size"])
    photo = np.asarray(make_synthetic_pet(np.random.default_rng(0), 500, 375)[0])
    predictor, export_bytes = litert_path(model, sidecar)
    serve = predictor.predict
    paths = {"tensorflow": tensorflow_path(model, image_size, predictor.any_size), "litert": serve}
    difference = float(np.max(np.abs(paths["tensorflow"](photo) - serve(photo))))
    load_before = os.getloadavg()[0]
    results = compare(paths, photo, args.rounds)
    input_size = list(predictor.shape[:2])
    print(json.dumps({"model": label, "image_size": image_size, "input_shape": input_size,
                      "export_bytes": export_bytes,
                      "max_probability_difference": difference, "rounds": args.rounds,
                      "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)], **results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
