"""Presets: each names an architecture and its training recipe in one place, as plain data.

This module imports neither Keras nor TensorFlow, so ``train.py --help``, the launcher and the UI can list presets
at once. ``petseg.model.build_model`` builds a preset's architecture and ``petseg.training`` reads its recipe.

>>> get_preset("voc").architecture
'deeplab'
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Preset:
    """An architecture plus the recipe that trains it.

    Attributes:
        name: The preset's name, stored in each checkpoint's sidecar.
        description: One sentence for the UI and the README.
        architecture: "unet" (MobileNetV2 U-Net, ``petseg.model``) or "deeplab" (DeepLabV3+ on the PASCAL VOC
            DeepLabV3-MobileNetV2, ``petseg.deeplab``).
        decoder_filters: Filters of the U-Net's four upsample blocks, coarse to fine (unet only).
        decoder_dropout: Dropout rate inside each upsample block (0 disables it).
        batchnorm_momentum: Momentum of the decoder's BatchNorm statistics. Keras' 0.99 needs thousands of steps;
            on a few hundred photos 0.9 lets the inference-mode statistics catch up within an epoch or two.
        scale_inputs: Map [0, 1] inputs to the [-1, 1] range MobileNetV2 was trained on. The tutorial feeds [0, 1].
        image_size: Default square input size in pixels.
        epochs: Default number of epochs.
        batch_size: Default batch size.
        learning_rate: Adam learning rate for the frozen-encoder phase.
        fine_tune_after: Epochs with a frozen encoder before the encoder's convolutions are unfrozen (None: never).
        fine_tune_learning_rate: Adam learning rate once the encoder is unfrozen.
        dice_weight: Weight of the soft Dice loss added to cross-entropy (0: cross-entropy alone).
        half_resolution_stage: Add a DeepLab decoder stage at 1/2 resolution (deeplab only).
        border_weight: Cross-entropy weight of pixels on and next to the border ring (1: plain cross-entropy).
        augmentation: "flip" (the tutorial's), "strong" (scale/crop, flip, colour jitter).
        unlabelled_share: Share of each batch drawn from pseudo-labelled photos (``train.py --unlabelled-dir``).
        min_confidence: Pseudo-label pixels whose teacher confidence is lower are ignored by the loss.
    """

    name: str
    description: str
    architecture: str = "unet"
    decoder_filters: tuple[int, int, int, int] = (512, 256, 128, 64)
    decoder_dropout: float = 0.0
    batchnorm_momentum: float = 0.99
    scale_inputs: bool = False
    image_size: int = 128
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    fine_tune_after: int | None = None
    fine_tune_learning_rate: float = 1e-4
    dice_weight: float = 0.0
    half_resolution_stage: bool = False
    border_weight: float = 1.0
    augmentation: str = "flip"
    unlabelled_share: float = 0.5
    min_confidence: float = 0.0


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="tutorial",
            description="The TensorFlow tutorial's model and recipe: frozen encoder, 512/256/128/64 decoder.",
        ),
        Preset(
            name="finetune",
            description=(
                "Scaled inputs, a lighter decoder, strong augmentation, cross-entropy + Dice, and the encoder "
                "fine-tuned after a frozen warm-up."
            ),
            decoder_filters=(256, 128, 64, 32), decoder_dropout=0.1, batchnorm_momentum=0.9, scale_inputs=True,
            image_size=160, epochs=40, batch_size=16, fine_tune_after=5, fine_tune_learning_rate=3e-4,
            dice_weight=1.0, augmentation="strong",
        ),
        Preset(
            name="voc",
            description=(
                "DeepLabV3+ on the PASCAL VOC DeepLabV3-MobileNetV2: head started from VOC's background and cat/dog "
                "rows, a decoder from 1/4 resolution, the encoder fine-tuned after a frozen warm-up."
            ),
            architecture="deeplab", batchnorm_momentum=0.9, scale_inputs=True, image_size=257, epochs=24,
            batch_size=8, fine_tune_after=3, fine_tune_learning_rate=2e-4, augmentation="strong",
        ),
    )
}


def get_preset(name: str) -> Preset:
    """Return the preset called ``name`` or raise ``ValueError`` listing the known ones."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    return PRESETS[name]


def apply_overrides(preset: Preset, overrides: dict[str, str] | None) -> Preset:
    """Return ``preset`` with fields replaced from "name=value" strings, e.g. {"fine_tune_after": "5"}.

    >>> apply_overrides(PRESETS["finetune"], {"image_size": "160", "decoder_filters": "128,64,32,16"}).image_size
    160
    """
    if not overrides:
        return preset
    fields = {field.name: field for field in dataclasses.fields(Preset)}
    changes = {}
    for key, text in overrides.items():
        if key not in fields or key in ("name", "architecture"):
            raise ValueError(f"Unknown preset field {key!r}; choose from: {', '.join(sorted(fields))}.")
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
