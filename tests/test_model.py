import numpy as np
import pytest

from petseg.model import (SKIP_LAYER_NAMES, EncoderWeightsError, SubPixelConv2DTranspose, build_model,
                          model_with_dtype, set_encoder_trainable, upsample_block)


def trainable_count(model):
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def test_tutorial_preset_matches_the_seed():
    model = build_model("tutorial", image_size=128, encoder_weights=None)
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
    model = build_model("finetune", image_size=64, encoder_weights=None)
    frozen = trainable_count(model)
    set_encoder_trainable(model, True)
    assert trainable_count(model) > frozen
    batchnorms = [layer for layer in model.get_layer("encoder").layers if "BatchNormalization" in type(layer).__name__]
    assert batchnorms and not any(layer.trainable for layer in batchnorms)


def test_missing_encoder_weights_file_names_the_options(tmp_path):
    with pytest.raises(EncoderWeightsError, match="imagenet.*none"):
        build_model("tutorial", 64, encoder_weights=str(tmp_path / "missing.h5"))


def test_image_size_must_be_a_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("tutorial", 100, encoder_weights=None)


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("filters", [4, 24])  # One fused convolution, and four (more than FUSED_MAX_FILTERS).
def test_subpixel_transposed_convolution_computes_the_same_numbers(use_bias, filters):
    import keras

    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(2, 5, 7, 6)).astype(np.float32)
    plain = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=use_bias)
    subpixel = SubPixelConv2DTranspose(filters, 3, strides=2, padding="same", use_bias=use_bias)
    plain.build(inputs.shape)
    subpixel.build(inputs.shape)
    weights = [rng.normal(size=weight.shape).astype(np.float32) for weight in plain.get_weights()]
    plain.set_weights(weights)
    subpixel.set_weights(weights)
    assert subpixel(inputs).shape == (2, 10, 14, filters)
    np.testing.assert_allclose(subpixel(inputs), plain(inputs), atol=1e-4)


def test_a_unet_rebuilt_with_subpixel_upsampling_keeps_its_outputs():
    model = build_model("finetune", image_size=64, encoder_weights=None)
    rebuilt = model_with_dtype(model, "float32", any_size=True, subpixel=True)
    kinds = {type(layer).__name__ for layer in [*rebuilt.layers, *rebuilt.get_layer("upsample_0").layers]}
    assert "SubPixelConv2DTranspose" in kinds and "Conv2DTranspose" not in kinds
    images = np.random.default_rng(1).uniform(size=(1, 64, 96, 3)).astype(np.float32)
    np.testing.assert_allclose(rebuilt(images), model_with_dtype(model, "float32", any_size=True)(images), atol=1e-4)
