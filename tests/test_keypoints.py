"""Detector layers: selections against NumPy, gradients, configuration errors."""
import numpy as np
import pytest

from keypoint_gnn._backend import tf
from keypoint_gnn.keypoints import AttentionTopK, GridCoordinateRegressor, MaxPoolNMS


def _set_score_conv(detector, feature_map):
    """Makes the 1x1 score conv the identity on channel 0, so the score map is known."""
    detector(feature_map)
    kernel = np.zeros(detector.score_conv.kernel.shape, "float32")
    kernel[0, 0, 0, 0] = 1.0
    detector.score_conv.kernel.assign(kernel)
    detector.score_conv.bias.assign([0.0])


@pytest.mark.parametrize("activation", ["linear", "sigmoid"])
def test_attention_top_k_selects_highest_scores(rng, activation):
    feature_map = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    detector = AttentionTopK(num_keypoints=5, score_activation=activation)
    _set_score_conv(detector, feature_map)
    positions, scores, score_map = detector(feature_map)
    for b in range(2):
        flat = feature_map[b, :, :, 0].ravel()
        order = np.argsort(-flat)[:5]
        np.testing.assert_array_equal(positions[b], np.stack([order // 6, order % 6], -1))
        expected = flat[order] if activation == "linear" else 1 / (1 + np.exp(-flat[order]))
        np.testing.assert_allclose(scores[b], expected, rtol=1e-5)
    assert score_map.shape == (2, 6, 6, 1)


def test_max_pool_nms_layer_selects_window_maxima(rng):
    feature_map = rng.normal(size=(1, 8, 8, 2)).astype("float32")
    detector = MaxPoolNMS(num_keypoints=4, pool_size=4)
    _set_score_conv(detector, feature_map)
    positions, scores, _ = detector(feature_map)
    channel = feature_map[0, :, :, 0]
    maxima = sorted((channel[r:r + 4, c:c + 4].max() for r in (0, 4) for c in (0, 4)), reverse=True)
    np.testing.assert_allclose(scores[0], maxima, rtol=1e-6)
    for (y, x), s in zip(positions[0].numpy().astype(int), scores[0].numpy()):
        assert channel[y, x] == pytest.approx(s)


def test_grid_regressor_positions_lie_in_their_cells(rng):
    detector = GridCoordinateRegressor(num_keypoints=8, cell_size=4, points_per_cell=2)
    positions, scores, score_map = detector(rng.normal(size=(2, 8, 12, 3)).astype("float32"))
    assert positions.shape == (2, 8, 2) and scores.shape == (2, 8) and score_map.shape == (2, 8, 12, 1)
    cells = detector(rng.normal(size=(2, 8, 12, 3)).astype("float32"), return_cells=True).numpy()
    assert cells.shape == (2, 2, 3, 2, 3)
    assert np.all((cells[..., :2] >= 0) & (cells[..., :2] <= 1))
    assert np.all(positions.numpy() >= -0.5) and np.all(positions[..., 0] <= 7.5) and np.all(positions[..., 1] <= 11.5)


def test_grid_regressor_takes_top_confidences(rng):
    feature_map = rng.normal(size=(1, 4, 4, 3)).astype("float32")
    detector = GridCoordinateRegressor(num_keypoints=3, cell_size=2, points_per_cell=1)
    _, scores, _ = detector(feature_map)
    cells = detector(feature_map, return_cells=True).numpy()
    expected = np.sort(cells[0, ..., 2].ravel())[::-1][:3]
    np.testing.assert_allclose(scores[0], expected, rtol=1e-5)


def test_grid_regressor_gradient_reaches_coordinates(rng):
    feature_map = tf.constant(rng.normal(size=(1, 4, 4, 3)).astype("float32"))
    detector = GridCoordinateRegressor(num_keypoints=4, cell_size=2, points_per_cell=1)
    detector(feature_map)
    with tf.GradientTape() as tape:
        positions, _, _ = detector(feature_map)
        loss = tf.reduce_sum(positions * [[[1.0, 2.0]]])
    kernel_gradient = tape.gradient(loss, detector.cell_conv.kernel).numpy()
    assert np.abs(kernel_gradient[..., 0:2]).sum() > 0  # offset channels of the point


@pytest.mark.parametrize("make, message", [
    (lambda: AttentionTopK(num_keypoints=65), "num_keypoints=65 exceeds the 8x8=64 locations"),
    (lambda: MaxPoolNMS(num_keypoints=2, pool_size=3), "pool_size=3 does not divide the feature map height 8"),
    (lambda: MaxPoolNMS(num_keypoints=5, pool_size=4), "num_keypoints=5 exceeds the 4 pooling windows"),
    (lambda: GridCoordinateRegressor(num_keypoints=9, cell_size=4, points_per_cell=2),
     "num_keypoints=9 exceeds the 8 candidate points"),
    (lambda: GridCoordinateRegressor(num_keypoints=1, cell_size=3), "cell_size=3 does not divide"),
])
def test_detector_configuration_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()(tf.zeros([1, 8, 8, 4]))


@pytest.mark.parametrize("make, message", [
    (lambda: AttentionTopK(num_keypoints=0), "num_keypoints=0 must be a positive integer"),
    (lambda: AttentionTopK(num_keypoints=4, score_activation="relu"), "score_activation='relu' is not one of"),
    (lambda: MaxPoolNMS(num_keypoints=4, pool_size=0), "pool_size=0 must be a positive integer"),
    (lambda: GridCoordinateRegressor(num_keypoints=4, offset_mode="tanh"), "offset_mode='tanh' is not one of"),
])
def test_detector_argument_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_detector_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"expects a feature map \(B, h, w, C\)"):
        AttentionTopK(num_keypoints=2)(tf.zeros([1, 8, 8]))
