"""Train a PetSeg U-Net and write its best checkpoint into weights/.

Examples:
    python train.py --data-dir ../shared/data/oxford-iiit-pet-subset --preset finetune \
        --encoder-weights ../shared/data/encoders/mobilenet_v2_1.00_imagenet_no_top.weights.h5
    python train.py --preset tutorial --epochs 20            # tfds oxford_iiit_pet, ImageNet encoder (online)

Each epoch prints a metrics line and writes runs/<id>/epoch_NNN.png and metrics.jsonl, which the app's training
tab can watch. Create runs/<id>/stop (or press Stop in the app) to end a run cleanly after the current batch.
"""

import argparse
import signal
import sys

from petseg.presets import PRESETS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder in the official Oxford-IIIT Pet layout (default: tfds)")
    parser.add_argument("--tfds-data-dir", help="where tfds keeps its data (default: ~/tensorflow_datasets)")
    parser.add_argument("--preset", default="tutorial", choices=sorted(PRESETS))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                        help="change a preset field, e.g. --set fine_tune_after=5 --set decoder_dropout=0.2")
    parser.add_argument("--epochs", type=int, help="default: the preset's")
    parser.add_argument("--batch-size", type=int, help="default: the preset's")
    parser.add_argument("--image-size", type=int,
                        help="square input size: a multiple of 32 for U-Nets, 8k+1 for DeepLab (default: the preset's)")
    parser.add_argument("--learning-rate", type=float, help="default: the preset's")
    parser.add_argument("--encoder-weights", default="imagenet",
                        help="'imagenet' (download), a local Keras weights file, or 'none'; for DeepLab presets "
                             "'voc' or 'imagenet' download the pinned VOC .tflite, or give its path")
    parser.add_argument("--unlabelled-dir", nargs="+", metavar="DIR", dest="unlabelled_dirs",
                        help="folders of pseudo-labelled photos (scripts/pseudo_label.py) mixed into every batch "
                             "(--set unlabelled_share=0.5 --set min_confidence=0.0); never validated or tested on")
    parser.add_argument("--init-checkpoint", metavar="PATH",
                        help="start from a trained checkpoint of the same preset and size, e.g. weights/finetune.keras")
    parser.add_argument("--keep-last", action="store_true",
                        help="keep the last epoch's checkpoint rather than the best validation epoch's (when the "
                             "validation photos do not measure what the run is for)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue a stopped or killed run from its last finished epoch (other options ignored)")
    parser.add_argument("--output-dir", default="weights", help="where the checkpoint and sidecar go")
    parser.add_argument("--run-dir", help="run folder for samples and metrics (default: runs/<timestamp>)")
    parser.add_argument("--name", help="checkpoint name (default: <preset>-<run id>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--validation-list", metavar="FILE",
                        help="validate on these trainval photos (one name a line) instead of a seeded fraction")
    parser.add_argument("--strategy", default="default", choices=["default", "mirrored", "multiworker"],
                        help="tf.distribute strategy; multiworker reads TF_CONFIG")
    parser.add_argument("--sample-photos", nargs="+", metavar="PHOTO",
                        help="photos for the per-epoch sample images instead of validation photos")
    parser.add_argument("--no-test", action="store_true", help="skip the final test-split evaluation")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # Imported after parsing so that --help answers at once.
    from petseg.checkpoints import CheckpointError
    from petseg.data import DataError
    from petseg.model import EncoderWeightsError
    from petseg.callbacks import stop_on_signal
    from petseg.training import TrainConfig, resume_config, train

    overrides = {}
    for item in args.overrides:
        key, separator, value = item.partition("=")
        if not separator:
            print(f"error: --set needs FIELD=VALUE, got {item!r}", file=sys.stderr)
            return 2
        overrides[key.strip()] = value.strip()
    # Each option is the config field of the same name.
    options = {key: value for key, value in vars(args).items() if key in TrainConfig.__dataclass_fields__}
    config = TrainConfig(**{**options, "overrides": overrides}, evaluate_test=not args.no_test,
                         verbose=1 if sys.stdout.isatty() else 2)
    # SIGTERM (docker stop, a process manager, the app) ends the run like Ctrl-C: marked stopped, best checkpoint
    # kept; while fitting, at the end of the current batch.
    signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        result = train(resume_config(args.resume), resume=True) if args.resume else train(config)
    except (DataError, EncoderWeightsError, CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted: the run is marked stopped; the best checkpoint so far is kept.", file=sys.stderr)
        return 130
    print(f"{result.state}: checkpoint {result.checkpoint_path}, run folder {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
