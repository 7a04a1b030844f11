import numpy as np
import pytest

from petseg.model import SKIP_LAYER_NAMES, EncoderWeightsError, build_unet, set_encoder_trainable, upsample_block


def trainable_count(model):
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def test_tutorial_preset_matches_the_seed():
    model = build_unet("tutorial", image_size=128, encoder_weights=None)
    assert model.count_params() == 6_504_227
    assert trainable_count(model) == 4_660_323
    encoder = model.get_layer("encoder")
    assert [encoder.get_layer(name).output for name in SKIP_LAYER_NAMES] == list(encoder.outputs)
    assert SKIP_LAYER_NAMES == (
        "block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu",
        "block_16_project")
    assert [model.get_layer(f"upsample_{i}").layers[0].filters for i in range(4)] == [512, 256, 128, 64]
    logits = model.get_layer("logits")
    assert logits.filters == 3 and logits.strides == (2, 2)
    assert model.output_shape == (None, 128, 128, 3)


def test_upsample_block_is_pix2pix():
    block = upsample_block(8, dropout=0.5)
    kinds = [type(layer).__name__ for layer in block.layers]
    assert kinds == ["Conv2DTranspose", "BatchNormalization", "Dropout", "ReLU"]
    assert block.layers[0].use_bias is False and block.layers[0].strides == (2, 2)
    assert block.layers[0].kernel_initializer.stddev == 0.02


def test_fine_tuning_unfreezes_convolutions_but_never_batchnorm():
    model = build_unet("finetune", image_size=64, encoder_weights=None)
    frozen = trainable_count(model)
    set_encoder_trainable(model, True)
    assert trainable_count(model) > frozen
    batchnorms = [layer for layer in model.get_layer("encoder").layers if "BatchNormalization" in type(layer).__name__]
    assert batchnorms and not any(layer.trainable for layer in batchnorms)


def test_missing_encoder_weights_file_names_the_options(tmp_path):
    with pytest.raises(EncoderWeightsError, match="imagenet.*none"):
        build_unet("tutorial", 64, encoder_weights=str(tmp_path / "missing.h5"))


def test_image_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_unet("tutorial", 100, encoder_weights=None)
