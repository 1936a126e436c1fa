"""ConfidenceWeightedMSE (paper §8): the conf-MSE it adds to the model's losses against a NumPy
conf-MSE (bilinear resize of the confidence with half-pixel centres, clipped at 0, normalised
per image, plain MSE where no confidence is positive) and a hand-worked case."""
import numpy as np
import pytest

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers import ConfidenceWeightedMSE


def numpy_resize_bilinear(values, height, width):
    """(h, w) -> (height, width), bilinear with half-pixel centres (tf.image.resize's rule):
    output pixel i samples the input at (i + 0.5) * h / height - 0.5, clipped to the map."""
    h, w = values.shape
    out = np.zeros((height, width))
    for i in range(height):
        y = min(max((i + 0.5) * h / height - 0.5, 0.0), h - 1)
        y0 = int(np.floor(y))
        y1, dy = min(y0 + 1, h - 1), y - y0
        for j in range(width):
            x = min(max((j + 0.5) * w / width - 0.5, 0.0), w - 1)
            x0 = int(np.floor(x))
            x1, dx = min(x0 + 1, w - 1), x - x0
            out[i, j] = ((1 - dy) * (1 - dx) * values[y0, x0] + (1 - dy) * dx * values[y0, x1]
                         + dy * (1 - dx) * values[y1, x0] + dy * dx * values[y1, x1])
    return out


def numpy_conf_mse(images, reconstructions, confidence):
    per_image = []
    for image, reconstruction, conf in zip(images, reconstructions, confidence):
        error = ((reconstruction.astype(np.float64) - image) ** 2).mean(-1)
        weights = np.maximum(numpy_resize_bilinear(conf[..., 0], *error.shape), 0)
        per_image.append((weights * error).sum() / weights.sum() if weights.sum() > 1e-8 else error.mean())
    return np.mean(per_image)


def _hand_case():
    """Two 2x2 one-channel images, target 0, reconstruction [[1, 2], [3, 0]] (squared errors
    [[1, 4], [9, 0]]). Image 0: confidence [[1, 0], [-1, 1]] -> clipped [[1, 0], [0, 1]], conf-MSE
    (1 + 0) / 2 = 0.5; image 1: no positive confidence -> plain MSE 14 / 4 = 3.5. Mean 2.0."""
    images = np.zeros((2, 2, 2, 1), "float32")
    reconstructions = np.tile(np.array([[1, 2], [3, 0]], "float32")[None, :, :, None], (2, 1, 1, 1))
    confidence = np.array([[[1, 0], [-1, 1]], [[0, -2], [-1, 0]]], "float32")[..., None]
    return images, reconstructions, confidence


def _layer_loss(images, reconstructions, confidence):
    layer = ConfidenceWeightedMSE()
    output = layer([tf.constant(images), tf.constant(reconstructions), tf.constant(confidence)])
    np.testing.assert_array_equal(output, reconstructions)  # passed through unchanged
    assert len(layer.losses) == 1
    return float(layer.losses[0])


def test_hand_worked_conf_mse():
    case = _hand_case()
    assert numpy_conf_mse(*case) == pytest.approx(2.0)
    assert _layer_loss(*case) == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("confidence_size", [3, 6, 12])
def test_added_loss_matches_numpy_conf_mse(rng, confidence_size):
    """Random 6x6x3 images; the confidence map coarser than, as large as or finer than them,
    partly negative; image 2's confidence is all negative (the plain-MSE fallback)."""
    images = rng.uniform(size=(3, 6, 6, 3)).astype("float32")
    reconstructions = rng.uniform(size=(3, 6, 6, 3)).astype("float32")
    confidence = rng.normal(0.3, 1.0, size=(3, confidence_size, confidence_size, 1)).astype("float32")
    confidence[2] = -np.abs(confidence[2]) - 0.1
    np.testing.assert_allclose(_layer_loss(images, reconstructions, confidence),
                               numpy_conf_mse(images, reconstructions, confidence), rtol=1e-5)


def test_conf_mse_is_a_model_loss(rng):
    """In a functional model the loss reaches `model.losses`, so `compile(loss=None)` trains on it."""
    inputs = [keras.Input((4, 4, 1)), keras.Input((4, 4, 1)), keras.Input((2, 2, 1))]
    model = keras.Model(inputs, ConfidenceWeightedMSE()(inputs))
    images, reconstructions = rng.uniform(size=(2, 2, 4, 4, 1)).astype("float32")
    confidence = rng.uniform(size=(2, 2, 2, 1)).astype("float32")
    np.testing.assert_array_equal(model([images, reconstructions, confidence]), reconstructions)
    assert len(model.losses) == 1
    np.testing.assert_allclose(float(model.losses[0]),
                               numpy_conf_mse(images, reconstructions, confidence), rtol=1e-5)


def test_config_round_trip():
    layer = ConfidenceWeightedMSE(name="conf_mse")
    clone = ConfidenceWeightedMSE.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert keras.saving.get_registered_object("keypoint_gnn>ConfidenceWeightedMSE") is ConfidenceWeightedMSE
