"""The VOC DeepLab converter, its parity with the TFLite file, and the ``voc`` preset's structure and training."""

import numpy as np
import pytest
import tensorflow as tf

from petseg.classes import BACKGROUND, BORDER, PET
from petseg.deeplab import (BLOCKS, LOW_LEVEL_LAYER, VOC_CAT, VOC_DOG, all_layers, assign_tflite_weights,
                            build_voc_deeplab, resolve_voc_weights, upsample_aligned, voc_head_weights)
from petseg.model import EncoderWeightsError, build_model, set_encoder_trainable
from petseg.presets import apply_overrides, get_preset

from conftest import ROOT

VOC_FILE = ROOT.parent / "shared" / "data" / "encoders" / "deeplabv3_257_mv_gpu.tflite"


def tflite_named_tensors(rng):
    """Random tensors named and shaped as in the VOC TFLite file: kernels (out, kh, kw, in), depthwise (1, kh, kw, c)."""
    tensors = {"MobilenetV2/Conv/weights": rng.normal(size=(16, 3, 3, 3)),
               "MobilenetV2/Conv/Conv2D_bias": rng.normal(size=16)}
    channels = 16
    for index, (expansion, filters, _, _) in enumerate(BLOCKS):
        scope = "MobilenetV2/expanded_conv" + (f"_{index}" if index else "")
        expanded = channels * expansion
        if expansion != 1:
            tensors[f"{scope}/expand/weights"] = rng.normal(size=(expanded, 1, 1, channels))
            tensors[f"{scope}/expand/Conv2D_bias"] = rng.normal(size=expanded)
        tensors[f"{scope}/depthwise/depthwise_weights"] = rng.normal(size=(1, 3, 3, expanded))
        tensors[f"{scope}/depthwise/depthwise_bias"] = rng.normal(size=expanded)
        tensors[f"{scope}/project/weights"] = rng.normal(size=(filters, 1, 1, expanded))
        tensors[f"{scope}/project/Conv2D_bias"] = rng.normal(size=filters)
        channels = filters
    for scope, shape in (("aspp0", (256, 1, 1, 160)), ("image_pooling", (256, 1, 1, 160)),
                         ("concat_projection", (256, 1, 1, 512)), ("logits/semantic", (21, 1, 1, 256))):
        tensors[f"{scope}/weights"] = rng.normal(size=shape)
        tensors[f"{scope}/Conv2D_bias"] = rng.normal(size=shape[0])
    return {name: value.astype(np.float32) for name, value in tensors.items()}


def test_tensor_names_map_to_layers_with_the_tflite_layouts_transposed():
    model = build_voc_deeplab(33)
    tensors = tflite_named_tensors(np.random.default_rng(0))
    assert assign_tflite_weights(model, tensors) == 55
    layers = all_layers(model)
    depthwise_kernel, depthwise_bias = layers["MobilenetV2_expanded_conv_5_depthwise"].get_weights()
    source = tensors["MobilenetV2/expanded_conv_5/depthwise/depthwise_weights"]
    assert depthwise_kernel[1, 2, 7, 0] == source[0, 1, 2, 7]
    np.testing.assert_array_equal(depthwise_bias, tensors["MobilenetV2/expanded_conv_5/depthwise/depthwise_bias"])
    kernel, _ = layers["logits_semantic"].get_weights()
    assert kernel[0, 0, 200, 12] == tensors["logits/semantic/weights"][12, 0, 0, 200]
    assert layers["MobilenetV2_expanded_conv_14_depthwise"].dilation_rate == (4, 4)


def test_a_missing_or_foreign_tensor_refuses_to_load_halfway():
    model = build_voc_deeplab(33)
    tensors = tflite_named_tensors(np.random.default_rng(0))
    with pytest.raises(ValueError, match="No TFLite weights for Keras layers: aspp0"):
        assign_tflite_weights(model, {key: value for key, value in tensors.items() if not key.startswith("aspp0")})
    with pytest.raises(ValueError, match="has no Keras layer"):
        assign_tflite_weights(model, {**tensors, "decoder/extra/weights": tensors["aspp0/weights"]})


def test_upsampling_matches_align_corners_bilinear():
    image = np.random.default_rng(1).normal(size=(1, 5, 7, 3)).astype(np.float32)
    import keras

    inputs = keras.Input((5, 7, 3))
    model = keras.Model(inputs, upsample_aligned(inputs, 4, "up"))
    expected = tf.compat.v1.image.resize_bilinear(image, (17, 25), align_corners=True).numpy()
    np.testing.assert_allclose(model(image).numpy(), expected, atol=1e-5)


@pytest.mark.skipif(not VOC_FILE.is_file(), reason="needs ../shared/data/encoders/deeplabv3_257_mv_gpu.tflite")
def test_converted_model_matches_the_tflite_interpreter():
    from petseg.deeplab import check_parity, load_voc_deeplab

    model = load_voc_deeplab(VOC_FILE)  # Raises unless argmax agrees on 99.9% of pixels.
    photo = np.random.default_rng(2).uniform(-1, 1, size=(257, 257, 3)).astype(np.float32)
    parity = check_parity(model, VOC_FILE, photo)
    assert parity["argmax_agreement"] >= 0.999 and parity["max_logit_difference"] < 1e-3


def test_head_starts_from_voc_background_and_cat_dog_rows():
    model = build_voc_deeplab(33)
    assign_tflite_weights(model, tflite_named_tensors(np.random.default_rng(3)))
    kernel, bias = voc_head_weights(model)
    voc_kernel, voc_bias = model.get_layer("logits_semantic").get_weights()
    np.testing.assert_allclose(kernel[..., PET], (voc_kernel[..., VOC_CAT] + voc_kernel[..., VOC_DOG]) / 2)
    np.testing.assert_allclose(kernel[..., BACKGROUND], voc_kernel[..., 0])
    assert bias[BORDER] == pytest.approx((bias[PET] + bias[BACKGROUND]) / 2 + 1.0)
    assert voc_bias.shape == (21,)


def test_voc_preset_structure():
    model = build_model("voc", image_size=65, encoder_weights=None)
    assert model.output_shape == (None, 65, 65, 3)
    encoder = model.get_layer("encoder")
    assert not encoder.trainable
    assert encoder.get_layer(LOW_LEVEL_LAYER).output.shape[1:] == (17, 17, 72)
    assert encoder.outputs[-1].shape[1:] == (9, 9, 256)
    assert not np.any(model.get_layer("decoder_logits").get_weights()[0])
    assert not [layer for layer in encoder.layers if "BatchNormalization" in type(layer).__name__]
    frozen = len(model.trainable_weights)
    set_encoder_trainable(model, True)
    assert len(model.trainable_weights) > frozen
    with pytest.raises(ValueError, match="8k\\+1"):
        build_model("voc", image_size=64, encoder_weights=None)
    refined = build_model(apply_overrides(get_preset("voc"), {"half_resolution_stage": "true"}), 65, None)
    assert refined.output_shape == (None, 65, 65, 3) and refined.get_layer("half_concat").output.shape[1] == 33


def test_missing_voc_file_names_the_options(tmp_path):
    with pytest.raises(EncoderWeightsError, match="'voc'.*none"):
        resolve_voc_weights(tmp_path / "missing.tflite")


def test_one_epoch_of_the_voc_preset_on_synthetic_pets(synthetic_data, tmp_path):
    from petseg.checkpoints import load_checkpoint_file, read_sidecar
    from petseg.inference import predict_probabilities
    from petseg.training import TrainConfig, train

    result = train(TrainConfig(data_dir=str(synthetic_data), preset="voc", epochs=1, batch_size=4, image_size=33,
                               encoder_weights="none", output_dir=str(tmp_path / "weights"),
                               run_dir=str(tmp_path / "run"), name="tiny-voc", overrides={"border_weight": "3"},
                               sample_photos=[str(ROOT / "examples" / "Abyssinian_94.jpg")], verbose=0))
    assert (tmp_path / "run" / "epoch_001.png").is_file()
    assert result.state == "done" and read_sidecar(result.checkpoint_path)["preset"] == "voc"
    checkpoint = load_checkpoint_file(result.checkpoint_path)
    photo = np.random.default_rng(0).integers(0, 255, size=(40, 52, 3), dtype=np.uint8)
    assert predict_probabilities(photo, checkpoint).shape == (40, 52, 3)
