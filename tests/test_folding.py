"""Tests for petseg.folding and the request path that uses it: folded models compute what the originals do."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from petseg.checkpoints import load_checkpoint_file
from petseg.resize import resize_image
from petseg.folding import all_layers, fold_batch_norms
from petseg.inference import get_predictor, predict_probabilities
from petseg.model import build_unet


def randomise_batch_norms(model: keras.Model, seed: int = 0) -> None:
    """Give every BatchNormalization layer non-trivial statistics, so folding them is really tested."""
    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            shapes = [weight.shape for weight in layer.get_weights()]
            values = [rng.uniform(0.5, 1.5, shapes[0]), rng.uniform(-0.5, 0.5, shapes[1]),
                      rng.uniform(-0.5, 0.5, shapes[2]), rng.uniform(0.5, 2.0, shapes[3])]
            layer.set_weights([value.astype(np.float32) for value in values])


def count_batch_norms(model: keras.Model) -> int:
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in all_layers(model))


@pytest.mark.parametrize("preset", ["tutorial", "finetune"])
def test_folded_unet_has_no_batch_norms_and_the_same_logits(preset):
    model = build_unet(preset, image_size=64)
    randomise_batch_norms(model)
    assert count_batch_norms(model) == 54
    folded = fold_batch_norms(model)
    assert folded is not None and count_batch_norms(folded) == 0
    images = np.random.default_rng(1).uniform(size=(3, 64, 64, 3)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(folded(images, training=False)), expected,
                               atol=1e-4 * np.abs(expected).max())
    # The original model is left as it was.
    assert count_batch_norms(model) == 54


def test_models_without_foldable_pairs_are_left_alone():
    inputs = keras.Input((8, 8, 3))
    convolved = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)  # An activation first.
    outputs = keras.layers.BatchNormalization()(convolved)
    model = keras.Model(inputs, outputs)
    assert fold_batch_norms(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])) is None
    assert fold_batch_norms(model) is None


def test_a_batch_norm_after_a_model_output_convolution_is_not_folded():
    inputs = keras.Input((8, 8, 3))
    convolved = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    normalised = keras.layers.BatchNormalization()(convolved)
    model = keras.Model(inputs, [convolved, normalised])
    assert fold_batch_norms(model) is None


def test_request_path_matches_the_unfolded_model(trained_checkpoint):
    checkpoint = load_checkpoint_file(trained_checkpoint.checkpoint_path)
    predictor = get_predictor(checkpoint)
    assert predictor.request_model is not checkpoint.model and count_batch_norms(predictor.request_model) == 0
    photo = np.random.default_rng(2).integers(0, 255, size=(75, 100, 3), dtype=np.uint8)
    probabilities = predict_probabilities(photo, checkpoint)
    logits = checkpoint.model(resize_image(photo[np.newaxis], checkpoint.image_size), training=False)
    small = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    expected = keras.ops.convert_to_numpy(keras.ops.image.resize(small, (75, 100), interpolation="bilinear"))[0]
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    assert np.mean(probabilities.argmax(-1) == expected.argmax(-1)) >= 0.999
