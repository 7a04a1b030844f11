"""Presets: an architecture and its training recipe as plain data (no Keras, so ``--help`` and the UI list them fast).

>>> get_preset("voc").architecture
'deeplab'
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
    """An architecture plus the recipe that trains it; ``name`` is stored in each checkpoint's sidecar."""

    name: str
    description: str  # One sentence for the UI.
    architecture: str = "unet"  # "unet" (``petseg.model``) or "deeplab" (DeepLabV3+ on VOC's, ``petseg.deeplab``).
    decoder_filters: tuple[int, int, int, int] = (512, 256, 128, 64)  # The U-Net's upsample blocks, coarse to fine.
    decoder_dropout: float = 0.0  # Inside each upsample block (0: none).
    batchnorm_momentum: float = 0.99  # The decoder's BatchNorm: 0.9 catches up in an epoch or two on few photos.
    scale_inputs: bool = False  # Map [0, 1] inputs to the [-1, 1] MobileNetV2 was trained on (the tutorial does not).
    image_size: int = 128  # Default square input size in pixels.
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3  # Adam, while the encoder is frozen.
    fine_tune_after: int | None = None  # Frozen-encoder epochs before its convolutions train (None: never).
    fine_tune_learning_rate: float = 1e-4
    dice_weight: float = 0.0  # Soft Dice loss added to cross-entropy.
    half_resolution_stage: bool = False  # A DeepLab decoder stage at 1/2 resolution.
    border_weight: float = 1.0  # Cross-entropy weight on and next to the border ring.
    augmentation: str = "flip"  # "flip" (the tutorial's) or "strong" (scale/crop, flip, colour jitter).
    unlabelled_share: float = 0.5  # Share of each batch from pseudo-labelled photos (train.py --unlabelled-dir).
    min_confidence: float = 0.0  # Pseudo-label pixels whose teacher was less sure are ignored by the loss.


PRESETS: dict[str, Preset] = {preset.name: preset for preset in (
    Preset("tutorial", "The TensorFlow tutorial's model and recipe: frozen encoder, 512/256/128/64 decoder."),
    Preset("finetune", "Scaled inputs, a lighter decoder, strong augmentation, cross-entropy + Dice, and the encoder "
           "fine-tuned after a frozen warm-up.", decoder_filters=(256, 128, 64, 32), decoder_dropout=0.1,
           batchnorm_momentum=0.9, scale_inputs=True, image_size=160, epochs=40, batch_size=16, fine_tune_after=5,
           fine_tune_learning_rate=3e-4, dice_weight=1.0, augmentation="strong"),
    Preset("voc", "DeepLabV3+ on the PASCAL VOC DeepLabV3-MobileNetV2: head started from VOC's background and cat/dog "
           "rows, a decoder from 1/4 resolution, the encoder fine-tuned after a frozen warm-up.",
           architecture="deeplab", batchnorm_momentum=0.9, scale_inputs=True, image_size=257, epochs=24,
           batch_size=8, fine_tune_after=3, fine_tune_learning_rate=2e-4, augmentation="strong"),
)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or ``ValueError`` listing the known ones."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    return PRESETS[name]


def apply_overrides(preset: Preset, overrides: dict[str, str] | None) -> Preset:
    """``preset`` with fields replaced from strings, e.g. {"fine_tune_after": "5"}.

    >>> apply_overrides(PRESETS["finetune"], {"image_size": "160", "decoder_filters": "128,64,32,16"}).image_size
    160
    """
    fields, changes = sorted(set(Preset.__dataclass_fields__) - {"name", "architecture"}), {}
    for key, text in (overrides or {}).items():
        if key not in fields:
            raise ValueError(f"Unknown preset field {key!r}; choose from: {', '.join(fields)}.")
        default = getattr(preset, key)
        try:
            if isinstance(default, bool):
                changes[key] = text.lower() in ("1", "true", "yes")
            elif isinstance(default, tuple):
                changes[key] = tuple(int(part) for part in text.split(","))
            elif key == "fine_tune_after":
                changes[key] = None if text.lower() == "none" else int(text)
            else:
                changes[key] = type(default)(text)
        except ValueError:
            raise ValueError(f"Preset field {key!r} cannot take {text!r}.") from None
    return dataclasses.replace(preset, **changes)
