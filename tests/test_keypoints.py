"""Detector layers: selections against NumPy, gradients, configuration errors."""
import math

import numpy as np
import pytest

from keypoint_gnn import ops
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.keypoints import (
    AttentionTopK,
    GridCoordinateRegressor,
    MaxPoolNMS,
    PerturbedTopK,
)
from tests.test_ops import (
    numpy_gaussian_top_k_marginals,
    numpy_matched_top_k,
    numpy_refine_positions,
)


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
    (lambda: MaxPoolNMS(num_keypoints=2, pool_size=3),
     "pool_size=3 does not divide the 8x8 feature map; valid: 1, 2, 4, 8"),
    (lambda: MaxPoolNMS(num_keypoints=5, pool_size=4),
     "num_keypoints=5 exceeds the 4 pooling windows .* use num_keypoints <= 4 or a smaller pool_size"),
    (lambda: PerturbedTopK(num_keypoints=2, pool_size=3),
     "pool_size=3 does not divide the 8x8 feature map; valid: 1, 2, 4, 8"),
    (lambda: PerturbedTopK(num_keypoints=5, pool_size=4),
     "num_keypoints=5 exceeds the 4 pooling windows .* use num_keypoints <= 4 or a smaller pool_size"),
    (lambda: PerturbedTopK(num_keypoints=65), "num_keypoints=65 exceeds the 8x8=64 locations"),
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
    (lambda: GridCoordinateRegressor(num_keypoints=4, offset_mode="tanh"),
     "offset_mode='tanh' is not one of 'sigmoid', 'softmax', 'dsnt'"),
    (lambda: GridCoordinateRegressor(num_keypoints=4, offset_mode="dsnt", dsnt_resolution=1),
     "dsnt_resolution=1 must be None"),
    (lambda: PerturbedTopK(num_keypoints=4, num_samples=0), "num_samples=0 must be a positive integer"),
    (lambda: PerturbedTopK(num_keypoints=4, sigma=0.0), "sigma=0.0 must be a finite noise scale > 0"),
    (lambda: PerturbedTopK(num_keypoints=4, sigma=-1), "sigma=-1 must be a finite noise scale > 0"),
    (lambda: PerturbedTopK(num_keypoints=4, sigma=float("nan")), "sigma=nan must be a finite"),
    (lambda: PerturbedTopK(num_keypoints=4, pool_size=0), "pool_size=0 must be a positive integer"),
    (lambda: PerturbedTopK(num_keypoints=4, pool_size=2.0), "pool_size=2.0 must be a positive integer"),
    (lambda: AttentionTopK(num_keypoints=4, selection_noise=-0.5),
     "selection_noise=-0.5 must be a finite number >= 0"),
    (lambda: MaxPoolNMS(num_keypoints=4, selection_noise=float("inf")),
     "selection_noise=inf must be a finite number >= 0"),
    (lambda: PerturbedTopK(num_keypoints=4, selection_noise=1.0),
     "selection_noise=1.0: the perturbed top-k has its own training selection"),
    (lambda: MaxPoolNMS(num_keypoints=4, subpixel_refinement=True),
     "subpixel_refinement=True is not one of 'none', 'neighbourhood', 'window'"),
    (lambda: PerturbedTopK(num_keypoints=4, selection="slots", subpixel_refinement="window",
                           pool_size=2),
     "subpixel_refinement='window' needs selection='marginal', not 'slots'"),
    (lambda: PerturbedTopK(num_keypoints=4, selection="features",
                           subpixel_refinement="neighbourhood"),
     "subpixel_refinement='neighbourhood' needs selection='marginal', not 'features'"),
    (lambda: AttentionTopK(num_keypoints=4, subpixel_refinement="window"),
     "subpixel_refinement='window' needs NMS windows, which AttentionTopK does not have"),
    (lambda: PerturbedTopK(num_keypoints=4, selection="marginal", subpixel_refinement="window"),
     "subpixel_refinement='window' needs NMS windows, pool_size > 1, not pool_size=1"),
    (lambda: AttentionTopK(num_keypoints=4, subpixel_refinement="centre"),
     "subpixel_refinement='centre' needs NMS windows, which AttentionTopK does not have"),
    (lambda: PerturbedTopK(num_keypoints=4, selection="marginal", subpixel_refinement="centre"),
     "subpixel_refinement='centre' needs NMS windows, pool_size > 1, not pool_size=1"),
    (lambda: PerturbedTopK(num_keypoints=4, selection="slots", subpixel_refinement="centre",
                           pool_size=2),
     "subpixel_refinement='centre' needs selection='marginal', not 'slots'"),
])
def test_detector_argument_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_detector_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"expects a feature map \(B, h, w, C\)"):
        AttentionTopK(num_keypoints=2)(tf.zeros([1, 8, 8]))


# --- beyond the paper: expectation offsets, perturbed top-k -----------------------------------


def _set_cell_bias(detector, feature_map, bias):
    """Zero kernel and a hand-set bias: every cell predicts the same raw channels."""
    detector(feature_map)
    detector.cell_conv.kernel.assign(np.zeros(detector.cell_conv.kernel.shape, "float32"))
    detector.cell_conv.bias.assign(np.asarray(bias, "float32"))


def test_softmax_offsets_hand_set_kernel():
    # One 2x2 cell, one point: 4 pixel bins (row-major) + dustbin.
    detector = GridCoordinateRegressor(num_keypoints=1, cell_size=2, points_per_cell=1,
                                       offset_mode="softmax")
    feature_map = np.zeros((1, 2, 2, 3), "float32")
    _set_cell_bias(detector, feature_map, [-30.0, -30.0, 30.0, -30.0, 1.0])  # bin (1, 0)
    cells = detector(feature_map, return_cells=True).numpy()[0, 0, 0, 0]
    np.testing.assert_allclose(cells[:2], [0.75, 0.25], atol=1e-6)
    np.testing.assert_allclose(cells[2], np.log(np.exp(-30) * 3 + np.exp(30)) - 1.0, rtol=1e-6)
    positions, _, _ = detector(feature_map)
    np.testing.assert_allclose(positions[0], [[1.0, 0.0]], atol=1e-5)  # the pixel of that bin

    bias = np.array([0.5, -1.0, 2.0, 0.0, 0.3])
    _set_cell_bias(detector, feature_map, bias)
    cells = detector(feature_map, return_cells=True).numpy()[0, 0, 0, 0]
    bins = np.exp(bias[:4]) / np.exp(bias[:4]).sum()
    centres = np.array([0.25, 0.75])
    np.testing.assert_allclose(cells[0], bins.reshape(2, 2).sum(1) @ centres, rtol=1e-6)
    np.testing.assert_allclose(cells[1], bins.reshape(2, 2).sum(0) @ centres, rtol=1e-6)
    dustbin = np.exp(bias[4]) / np.exp(bias).sum()
    np.testing.assert_allclose(cells[2], np.log((1 - dustbin) / dustbin), rtol=1e-5)


def test_dsnt_offsets_hand_set_kernel():
    # A 2x2 cell with a 4x4 heat map (dsnt_resolution=None -> max(2, 4)) + a confidence channel,
    # two points per cell.
    detector = GridCoordinateRegressor(num_keypoints=2, cell_size=2, points_per_cell=2,
                                       offset_mode="dsnt")
    assert detector.heatmap_size == 4 and detector.channels_per_point == 17
    feature_map = np.zeros((1, 2, 2, 3), "float32")
    heat = np.full((2, 17), -40.0)
    heat[0, 0 * 4 + 3], heat[0, 16] = 40.0, 2.0  # point 0: bin (0, 3), logit 2
    heat[1, [1 * 4 + 1, 2 * 4 + 2]], heat[1, 16] = 40.0, -1.0  # point 1: midpoint of (1,1), (2,2)
    _set_cell_bias(detector, feature_map, heat.ravel())
    cells = detector(feature_map, return_cells=True).numpy()[0, 0, 0]
    np.testing.assert_allclose(cells, [[0.125, 0.875, 2.0], [0.5, 0.5, -1.0]], atol=1e-6)


def test_widened_sigmoid_offsets_hand_set_kernel():
    # Two 2x2 cells side by side, one point each; margin 0.5: offset = 2 * sigmoid(a) - 0.5.
    detector = GridCoordinateRegressor(num_keypoints=2, cell_size=2, points_per_cell=1,
                                       offset_margin=0.5)
    feature_map = np.zeros((1, 2, 4, 3), "float32")
    _set_cell_bias(detector, feature_map, [0.0, np.log(3.0), 1.0])  # sigmoid 0.5 and 0.75
    cells = detector(feature_map, return_cells=True).numpy()[0, 0, :, 0]
    np.testing.assert_allclose(cells, [[0.5, 1.0, 1.0], [0.5, 1.0, 1.0]], atol=1e-6)
    positions, _, _ = detector(feature_map)
    # position = (cell + offset) * m - 0.5: y 0.5, x 1.5 (cell 0's right border) and 3.5.
    np.testing.assert_allclose(np.sort(positions[0].numpy(), axis=0), [[0.5, 1.5], [0.5, 3.5]],
                               atol=1e-5)
    _set_cell_bias(detector, feature_map, [-40.0, 40.0, 1.0])
    cells = detector(feature_map, return_cells=True).numpy()[0, 0, :, 0]
    np.testing.assert_allclose(cells[:, :2], [[-0.5, 1.5], [-0.5, 1.5]], atol=1e-6)


def test_standardized_sigmoid_offsets_hand_set_kernel():
    # Two 2x2 cells side by side, one point each. The y logit sums the cell's 4 features (ones
    # in cell 0, zeros in cell 1) plus a bias of 5; the x logit is the bias 3 alone.
    detector = GridCoordinateRegressor(num_keypoints=2, cell_size=2, points_per_cell=1,
                                       standardize_offsets=True)
    feature_map = np.zeros((1, 2, 4, 1), "float32")
    feature_map[0, :, :2] = 1.0
    detector(feature_map)
    kernel = np.zeros(detector.cell_conv.kernel.shape, "float32")  # (2, 2, 1, 3)
    kernel[..., 0, 0] = 1.0
    detector.cell_conv.kernel.assign(kernel)
    detector.cell_conv.bias.assign(np.array([5.0, 3.0, 0.0], "float32"))
    cells = detector(feature_map, return_cells=True).numpy()[0, 0, :, 0]
    # y logits 9 and 5: mean 7, variance 4 -> +-2 / sqrt(4.001) * pi / sqrt(3).
    z = 2.0 / np.sqrt(4.001) * np.pi / np.sqrt(3.0)
    np.testing.assert_allclose(cells[:, 0], 1 / (1 + np.exp([-z, z])), rtol=1e-5)
    # x: the same logit in both cells; the common bias is removed, offset 0.5.
    np.testing.assert_allclose(cells[:, 1], [0.5, 0.5], atol=1e-6)
    plain = GridCoordinateRegressor(num_keypoints=2, cell_size=2, points_per_cell=1)
    plain(feature_map)
    plain.set_weights(detector.get_weights())
    np.testing.assert_allclose(plain(feature_map, return_cells=True).numpy()[0, 0, :, 0, 1],
                               1 / (1 + np.exp(-3.0)), rtol=1e-6)  # without it: sigmoid(3)


def test_offset_uniformity_penalty_is_added_as_a_loss(rng):
    feature_map = tf.constant(rng.normal(size=(3, 4, 4, 2)).astype("float32"))
    detector = GridCoordinateRegressor(num_keypoints=5, cell_size=2, points_per_cell=2,
                                       offset_margin=0.5, offset_uniformity_weight=0.7)
    positions, _, _ = detector(feature_map)
    assert len(detector.losses) == 1
    # Reference: the 5 most confident slots' unit offsets per image (before the margin),
    # pooled, against the uniform's quantiles, per axis, by the closed form.
    raw = detector.cell_conv(feature_map).numpy().reshape(3, 8, 3).astype("float64")
    offsets = 1 / (1 + np.exp(-raw[..., :2]))
    chosen = np.argsort(-raw[..., 2], axis=1, kind="stable")[:, :5]
    selected = np.take_along_axis(offsets, chosen[..., None], axis=1).reshape(-1, 2)
    n = len(selected)
    quantiles = (np.arange(n) + 0.5) / n
    expected = np.mean([np.mean((np.sort(selected[:, c]) - quantiles) ** 2) + 1 / (12 * n * n)
                        for c in range(2)])
    np.testing.assert_allclose(float(detector.losses[0]), 0.7 * expected, rtol=1e-4)
    # The penalty only adds a loss: the keypoints are those of the same regressor without it.
    plain = GridCoordinateRegressor(num_keypoints=5, cell_size=2, points_per_cell=2,
                                    offset_margin=0.5)
    plain(feature_map)
    plain.set_weights(detector.get_weights())
    np.testing.assert_allclose(plain(feature_map)[0].numpy(), positions.numpy())
    assert plain.losses == []
    # Pre-training's cell path has no selection, hence no uniformity penalty.
    detector(feature_map, return_cells=True)
    assert float(tf.add_n(detector.losses)) == 0.0


def _descend_on_added_losses(detector, feature_map, steps, learning_rate):
    """Adam steps on the detector's own added losses (its penalties) alone."""
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            detector(feature_map)
            loss = tf.add_n(detector.losses)
        variables = detector.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    for _ in range(steps):
        step()


def test_offset_uniformity_penalty_alone_spreads_border_offsets(rng):
    """Gradient descent on the penalty alone moves offsets piled on the borders to a spread."""
    feature_map = tf.constant(rng.normal(size=(8, 8, 8, 3)).astype("float32"))
    detector = GridCoordinateRegressor(num_keypoints=16, cell_size=2, points_per_cell=2,
                                       offset_uniformity_weight=1.0)
    detector(feature_map)
    kernel = detector.cell_conv.kernel.numpy()
    detector.cell_conv.kernel.assign(kernel * 8.0)  # saturated offset logits: borders

    def border_fraction():
        cells = detector(feature_map, return_cells=True).numpy()
        offsets = cells[..., :2].reshape(8, -1, 2)
        chosen = np.argsort(-cells[..., 2].reshape(8, -1), axis=1, kind="stable")[:, :16]
        selected = np.take_along_axis(offsets, chosen[..., None], axis=1)
        near = (selected < 0.1) | (selected > 0.9)
        return near.any(axis=-1).mean()

    before = border_fraction()
    _descend_on_added_losses(detector, feature_map, steps=150, learning_rate=0.05)
    assert before > 0.7
    assert 0.26 <= border_fraction() <= 0.46  # uniform offsets: 1 - 0.8^2 = 0.36


@pytest.mark.parametrize("value", [-0.1, float("nan"), "1", True])
def test_offset_uniformity_weight_bad_values(value):
    with pytest.raises(ValueError, match=f"offset_uniformity_weight={value!r} must be a finite "
                                         "number >= 0"):
        GridCoordinateRegressor(num_keypoints=1, offset_uniformity_weight=value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(offset_mode="dsnt", standardize_offsets=True),
     "standardize_offsets=True applies to offset_mode='sigmoid' only, not offset_mode='dsnt'"),
    (dict(standardize_offsets="yes"), "standardize_offsets='yes' must be True or False"),
])
def test_standardize_offsets_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GridCoordinateRegressor(num_keypoints=1, **kwargs)


def test_widened_dsnt_offsets_hand_set_kernel():
    detector = GridCoordinateRegressor(num_keypoints=1, cell_size=2, points_per_cell=1,
                                       offset_mode="dsnt", dsnt_resolution=4, offset_margin=0.25)
    feature_map = np.zeros((1, 2, 2, 3), "float32")
    heat = np.full(17, -40.0)
    heat[0 * 4 + 3], heat[16] = 40.0, 0.0  # bin (0, 3): unit offsets (0.125, 0.875)
    _set_cell_bias(detector, feature_map, heat)
    cells = detector(feature_map, return_cells=True).numpy()[0, 0, 0, 0]
    np.testing.assert_allclose(cells[:2], [1.5 * 0.125 - 0.25, 1.5 * 0.875 - 0.25], atol=1e-6)


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_widened_sigmoid_keeps_its_gradient_at_the_cell_border(margin):
    # Raw channel set so the y offset is 0.98 (near the bottom border) in cell units.
    detector = GridCoordinateRegressor(num_keypoints=1, cell_size=2, points_per_cell=1,
                                       offset_margin=margin)
    feature_map = np.zeros((1, 2, 2, 3), "float32")
    unit = (0.98 + margin) / (1 + 2 * margin)
    raw = np.log(unit / (1 - unit))
    _set_cell_bias(detector, feature_map, [raw, 0.0, 0.0])
    with tf.GradientTape() as tape:
        cells = detector(feature_map, return_cells=True)
        offset_y = cells[0, 0, 0, 0, 0]
    np.testing.assert_allclose(offset_y.numpy(), 0.98, atol=1e-5)
    gradient = tape.gradient(offset_y, detector.cell_conv.bias).numpy()[0]
    expected = (1 + 2 * margin) * unit * (1 - unit)  # d offset / d raw, by hand
    np.testing.assert_allclose(gradient, expected, rtol=1e-4)
    if margin:  # ~0.36 per unit of raw at the border, against 0.0196 for the paper's sigmoid
        assert gradient > 0.35


def test_widened_regressor_saves_and_loads(tmp_path, rng):
    feature_map = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    inputs = keras.Input((4, 4, 3))
    detector = GridCoordinateRegressor(num_keypoints=3, cell_size=2, offset_margin=0.5)
    model = keras.Model(inputs, detector(inputs))
    reference = [t.numpy() for t in model(feature_map)]
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert restored.layers[-1].offset_margin == 0.5
    for expected, actual in zip(reference, restored(feature_map)):
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("margin, message", [
    (-0.1, "offset_margin=-0.1 must be a finite number >= 0"),
    (1.5, r"offset_margin=1.5 must be in \[0, 1\]"),
    ("0.5", "offset_margin='0.5' must be a finite number >= 0"),
    (float("nan"), "offset_margin=nan must be a finite number >= 0"),
])
def test_offset_margin_bad_values(margin, message):
    with pytest.raises(ValueError, match=message):
        GridCoordinateRegressor(num_keypoints=1, offset_margin=margin)


@pytest.mark.parametrize("mode", ["softmax", "dsnt"])
def test_expectation_offsets_cannot_saturate(rng, mode):
    detector = GridCoordinateRegressor(num_keypoints=4, cell_size=2, points_per_cell=2,
                                       offset_mode=mode)
    feature_map = (rng.normal(size=(2, 4, 6, 3)) * 1000).astype("float32")  # huge logits
    cells = detector(feature_map, return_cells=True).numpy()
    bins = detector.heatmap_size
    assert cells.shape == (2, 2, 3, 2, 3)
    assert cells[..., :2].min() >= 0.5 / bins - 1e-6 and cells[..., :2].max() <= 1 - 0.5 / bins + 1e-6


@pytest.mark.parametrize("mode", ["sigmoid", "softmax", "dsnt"])
def test_regressor_gradient_reaches_offset_channels(rng, mode):
    feature_map = tf.constant(rng.normal(size=(1, 4, 4, 3)).astype("float32"))
    detector = GridCoordinateRegressor(num_keypoints=4, cell_size=2, points_per_cell=1,
                                       offset_mode=mode, dsnt_resolution=3)
    detector(feature_map)
    with tf.GradientTape() as tape:
        positions, _, _ = detector(feature_map)
        loss = tf.reduce_sum(positions * [[[1.0, 2.0]]])
    gradient = tape.gradient(loss, detector.cell_conv.kernel).numpy()
    offset_channels = {"sigmoid": slice(0, 2), "softmax": slice(0, 4), "dsnt": slice(0, 9)}[mode]
    assert np.abs(gradient[..., offset_channels]).sum() > 0
    if mode == "dsnt":  # the confidence channel does not move the positions
        assert np.abs(gradient[..., 9]).sum() == 0


def test_dsnt_spread_penalty_is_added_as_a_loss(rng):
    feature_map = tf.constant(rng.normal(size=(2, 4, 4, 3)).astype("float32"))
    detector = GridCoordinateRegressor(num_keypoints=4, cell_size=2, points_per_cell=2,
                                       offset_mode="dsnt", dsnt_resolution=3, dsnt_spread=0.4,
                                       dsnt_spread_weight=0.5)
    outputs = detector(feature_map)
    assert len(outputs) == 3 and len(detector.losses) == 1
    raw = detector.cell_conv(feature_map).numpy().reshape(2, 2, 2, 2, 10)
    heat = raw[..., :9].astype("float64")
    probabilities = np.exp(heat - heat.max(-1, keepdims=True))
    probabilities = (probabilities / probabilities.sum(-1, keepdims=True)).reshape(-1, 3, 3)
    bins = np.arange(3) + 0.5
    sd_y = np.sqrt((probabilities.sum(2) * bins ** 2).sum(-1) - (probabilities.sum(2) * bins).sum(-1) ** 2)
    sd_x = np.sqrt((probabilities.sum(1) * bins ** 2).sum(-1) - (probabilities.sum(1) * bins).sum(-1) ** 2)
    expected = 0.5 * ((sd_y - 0.4) ** 2 + (sd_x - 0.4) ** 2).mean()
    np.testing.assert_allclose(float(detector.losses[0]), expected, rtol=1e-3)

    plain = GridCoordinateRegressor(num_keypoints=4, cell_size=2, offset_mode="dsnt")
    plain(feature_map)
    assert plain.losses == []


def test_dsnt_straight_through_places_keypoints_at_the_highest_bin(rng):
    feature_map = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    detector = GridCoordinateRegressor(num_keypoints=4, cell_size=2, points_per_cell=1,
                                       offset_mode="dsnt", dsnt_resolution=5,
                                       dsnt_straight_through=True)
    cells = detector(feature_map, return_cells=True).numpy()
    raw = detector.cell_conv(feature_map).numpy().reshape(2, 2, 2, 1, 26)
    best = raw[..., :25].argmax(-1)
    np.testing.assert_allclose(cells[..., 0], (best // 5 + 0.5) / 5, atol=1e-6)
    np.testing.assert_allclose(cells[..., 1], (best % 5 + 0.5) / 5, atol=1e-6)
    with tf.GradientTape() as tape:
        positions, _, _ = detector(feature_map)
        loss = tf.reduce_sum(positions)
    assert np.abs(tape.gradient(loss, detector.cell_conv.kernel).numpy()[..., :25]).sum() > 0


def test_dsnt_spread_penalty_alone_sharpens_the_heat_maps(rng):
    """Gradient descent on the penalty alone brings every map's spread to the target."""
    feature_map = tf.constant(rng.normal(size=(4, 4, 4, 3)).astype("float32"))
    detector = GridCoordinateRegressor(num_keypoints=4, cell_size=2, points_per_cell=1,
                                       offset_mode="dsnt", dsnt_resolution=6, dsnt_spread=0.5,
                                       dsnt_spread_weight=1.0)
    detector(feature_map)

    def spread():
        raw = tf.reshape(detector.cell_conv(feature_map), [-1, 37])
        return ops.heatmap_spread(raw[:, :36], 6).numpy()

    before = spread()
    _descend_on_added_losses(detector, feature_map, steps=150, learning_rate=0.05)
    after = spread()
    assert before.mean() > 1.2  # near a flat 6x6 map's sqrt(35 / 12) = 1.71
    np.testing.assert_allclose(after, 0.5, atol=0.15)


@pytest.mark.parametrize("kwargs, message", [
    (dict(dsnt_spread=-1.0), r"dsnt_spread=-1.0 must be a finite number >= 0"),
    (dict(dsnt_spread_weight=float("nan")), r"dsnt_spread_weight=nan must be a finite number >= 0"),
    (dict(dsnt_spread_weight="high"), r"dsnt_spread_weight='high' must be a finite number >= 0"),
    (dict(dsnt_spread_weight=True), r"dsnt_spread_weight=True must be a finite number >= 0"),
    (dict(offset_mode="sigmoid", dsnt_spread_weight=0.1),
     r"dsnt_spread_weight=0.1 applies to offset_mode='dsnt' only, not offset_mode='sigmoid'"),
    (dict(dsnt_straight_through="yes"), r"dsnt_straight_through='yes' must be True or False"),
    (dict(offset_mode="softmax", dsnt_straight_through=True),
     r"dsnt_straight_through=True applies to offset_mode='dsnt' only, not offset_mode='softmax'"),
])
def test_dsnt_spread_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GridCoordinateRegressor(num_keypoints=4, **{"offset_mode": "dsnt", **kwargs})


def test_perturbed_top_k_at_inference_is_attention_top_k(rng):
    feature_map = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    attention = AttentionTopK(num_keypoints=5, score_activation="sigmoid")
    perturbed = PerturbedTopK(num_keypoints=5, score_activation="sigmoid", num_samples=4)
    _set_score_conv(attention, feature_map)
    _set_score_conv(perturbed, feature_map)
    for expected, actual in zip(attention(feature_map), perturbed(feature_map, training=False)):
        np.testing.assert_array_equal(actual.numpy(), expected.numpy())
    assert np.array_equal(perturbed(feature_map)[0], attention(feature_map)[0])  # default: inference


def test_perturbed_top_k_training_with_small_noise_selects_by_index(rng):
    feature_map = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    detector = PerturbedTopK(num_keypoints=5, num_samples=3, sigma=1e-5)
    _set_score_conv(detector, feature_map)
    positions, scores, _ = detector(feature_map, training=True)
    for b in range(2):
        flat = feature_map[b, :, :, 0].ravel()
        chosen = np.sort(np.argsort(-flat)[:5])
        np.testing.assert_allclose(positions[b], np.stack([chosen // 6, chosen % 6], -1), atol=1e-6)
        np.testing.assert_allclose(scores[b], flat[chosen], rtol=1e-5)


def test_perturbed_top_k_training_gives_positions_a_gradient(rng):
    feature_map = tf.constant(rng.normal(size=(2, 6, 6, 3)).astype("float32"))
    for detector, expect_gradient in ((AttentionTopK(num_keypoints=5), False),
                                      (PerturbedTopK(num_keypoints=5, num_samples=16, sigma=0.5), True)):
        detector(feature_map)
        with tf.GradientTape() as tape:
            positions, _, _ = detector(feature_map, training=True)
            loss = tf.reduce_sum(positions * [[[1.0, 2.0]]])
        gradient = tape.gradient(loss, detector.score_conv.kernel)
        assert (gradient is not None and np.abs(gradient.numpy()).sum() > 0) == expect_gradient
    assert np.all((positions.numpy() >= 0) & (positions.numpy() <= 5))


def _window_maxima(score_map, pool_size):
    """NumPy reference: (h, w) -> maxima (n,) and their (y, x) positions (n, 2), windows row-major."""
    maxima, positions = [], []
    for r in range(0, score_map.shape[0], pool_size):
        for c in range(0, score_map.shape[1], pool_size):
            window = score_map[r:r + pool_size, c:c + pool_size]
            y, x = np.unravel_index(np.argmax(window), window.shape)
            maxima.append(window[y, x])
            positions.append((r + y, c + x))
    return np.array(maxima), np.array(positions, "float32")


def test_perturbed_top_k_over_windows_matches_numpy(rng):
    # Training selection = the mean over noise draws of the hard top-k of the window maxima.
    feature_map = rng.normal(size=(2, 6, 8, 3)).astype("float32")
    detector = PerturbedTopK(num_keypoints=4, score_activation="sigmoid", num_samples=5, sigma=0.5,
                             pool_size=2)
    _set_score_conv(detector, feature_map)
    noise = rng.normal(size=(2, 5, 12)).astype("float32")
    positions, scores = detector.perturbed_select(detector.score_conv(feature_map), noise=noise)
    for b in range(2):
        maxima, candidates = _window_maxima(feature_map[b, :, :, 0], 2)
        scale = 0.5 * max(maxima.std(), 1e-3)
        indicators = np.zeros((4, 12))
        for draw in noise[b]:
            chosen = np.sort(np.argsort(-(maxima + scale * draw))[:4])
            indicators[np.arange(4), chosen] += 1 / 5
        np.testing.assert_allclose(positions[b], indicators @ candidates, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scores[b], indicators @ (1 / (1 + np.exp(-maxima))), rtol=1e-5)


def test_perturbed_top_k_over_windows_at_inference_is_max_pool_nms(rng):
    feature_map = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    nms = MaxPoolNMS(num_keypoints=6, pool_size=2, score_activation="sigmoid")
    perturbed = PerturbedTopK(num_keypoints=6, score_activation="sigmoid", num_samples=4, pool_size=2)
    _set_score_conv(nms, feature_map)
    _set_score_conv(perturbed, feature_map)
    for expected, actual in zip(nms(feature_map), perturbed(feature_map, training=False)):
        np.testing.assert_array_equal(actual.numpy(), expected.numpy())
    for image_positions in perturbed(feature_map)[0].numpy():  # default: inference
        windows = {tuple(window) for window in (image_positions // 2).astype(int)}
        assert len(windows) == 6


def test_perturbed_top_k_over_windows_gives_positions_a_gradient(rng):
    feature_map = tf.constant(rng.normal(size=(2, 8, 8, 3)).astype("float32"))
    detector = PerturbedTopK(num_keypoints=5, num_samples=16, sigma=0.5, pool_size=2)
    detector(feature_map)
    with tf.GradientTape() as tape:
        positions, _, _ = detector(feature_map, training=True)
        loss = tf.reduce_sum(positions * [[[1.0, 2.0]]])
    gradient = tape.gradient(loss, detector.score_conv.kernel).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).sum() > 0
    assert np.all((positions.numpy() >= 0) & (positions.numpy() <= 7))


def test_perturbed_top_k_over_windows_saves_and_loads(tmp_path, rng):
    feature_map = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    detector = PerturbedTopK(num_keypoints=5, num_samples=4, pool_size=2, name="detector")
    model = keras.Model(inputs, detector(inputs))
    reference = [output.numpy() for output in model(feature_map, training=False)]

    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert restored.get_layer("detector").pool_size == 2
    assert restored.get_layer("detector").get_config() == detector.get_config()
    for expected, actual in zip(reference, restored(feature_map, training=False)):
        np.testing.assert_array_equal(actual.numpy(), expected)

    model.save(tmp_path / "savedmodel", save_format="tf")
    loaded = tf.saved_model.load(str(tmp_path / "savedmodel"))
    for expected, actual in zip(reference, loaded(tf.constant(feature_map), training=False)):
        np.testing.assert_array_equal(actual.numpy(), expected)


@pytest.mark.parametrize("layer", [
    PerturbedTopK(num_keypoints=3, score_activation="sigmoid", num_samples=7, sigma=0.2),
    PerturbedTopK(num_keypoints=3, num_samples=5, pool_size=2),
    PerturbedTopK(num_keypoints=3, num_samples=5, pool_size=2, control_variate=True),
    PerturbedTopK(num_keypoints=3, num_samples=5, selection="marginal"),
    PerturbedTopK(num_keypoints=3, pool_size=2, selection="marginal", estimator="threshold"),
    PerturbedTopK(num_keypoints=3, pool_size=2, selection="features", control_variate=True),
    AttentionTopK(num_keypoints=3, selection_noise=0.7),
    MaxPoolNMS(num_keypoints=3, pool_size=2, selection_noise=1.5),
    MaxPoolNMS(num_keypoints=3, pool_size=2, subpixel_refinement="window"),
    PerturbedTopK(num_keypoints=3, pool_size=2, selection="marginal", subpixel_refinement="centre"),
    AttentionTopK(num_keypoints=3, subpixel_refinement="neighbourhood"),
    PerturbedTopK(num_keypoints=3, pool_size=2, selection="marginal",
                  subpixel_refinement="neighbourhood"),
    GridCoordinateRegressor(num_keypoints=3, cell_size=2, offset_mode="softmax"),
    GridCoordinateRegressor(num_keypoints=3, cell_size=2, offset_mode="dsnt", dsnt_resolution=5),
    GridCoordinateRegressor(num_keypoints=3, cell_size=2, offset_mode="dsnt", dsnt_spread=0.8,
                            dsnt_spread_weight=0.02, dsnt_straight_through=True),
    GridCoordinateRegressor(num_keypoints=3, cell_size=2, offset_margin=0.5),
    GridCoordinateRegressor(num_keypoints=3, cell_size=2, standardize_offsets=True),
    GridCoordinateRegressor(num_keypoints=3, cell_size=2, offset_mode="dsnt",
                            offset_uniformity_weight=0.5),
])
def test_new_detector_options_round_trip_config(layer):
    config = layer.get_config()
    restored = type(layer).from_config(config)
    assert restored.get_config() == config


@pytest.mark.parametrize("pool_size, estimator", [(1, "sampled"), (2, "sampled"),
                                                  (1, "threshold"), (2, "threshold")])
def test_marginal_selection_trains_on_the_inference_selection(rng, pool_size, estimator):
    feature_map = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    detector = PerturbedTopK(num_keypoints=6, score_activation="sigmoid", num_samples=4,
                             pool_size=pool_size, selection="marginal", estimator=estimator)
    inference = [t.numpy() for t in detector(feature_map, training=False)]
    training = [t.numpy() for t in detector(feature_map, training=True)]
    for expected, actual in zip(inference, training):
        np.testing.assert_allclose(actual, expected, rtol=1e-6)


def test_marginal_selection_gradient_matches_numpy(rng):
    """Linear scores, pool 1, fixed noise: d/dr of sum_j G_j s_j, with s_j = r_(n_j) and the
    inclusion probabilities' perturbed-optimiser Jacobian (1/(S sigma)) sum_s 1[n in sel_s] Z_s."""
    batch, size, k, samples, sigma = 2, 4, 3, 5, 0.3
    raw_map = rng.normal(size=(batch, size, size, 1))
    noise = rng.normal(size=(batch, samples, size * size))
    upstream = rng.normal(size=(batch, k))
    detector = PerturbedTopK(num_keypoints=k, num_samples=samples, sigma=sigma, selection="marginal",
                             dtype="float64")
    raw_t = tf.constant(raw_map)
    with tf.GradientTape() as tape:
        tape.watch(raw_t)
        _, scores = detector.perturbed_select(raw_t, noise=tf.constant(noise))
        loss = tf.reduce_sum(scores * upstream)
    gradient = tape.gradient(loss, raw_t).numpy().reshape(batch, -1)

    raw = raw_map.reshape(batch, -1)
    expected = np.zeros_like(raw)
    for b in range(batch):
        chosen = np.argsort(-raw[b])[:k]
        scale = sigma * raw[b].std()
        expected[b, chosen] += upstream[b]
        for s in range(samples):
            selected = set(np.argsort(-(raw[b] + scale * noise[b, s]))[:k])
            weight = sum(upstream[b, j] * raw[b, n] for j, n in enumerate(chosen) if n in selected)
            expected[b] += weight * noise[b, s] / (samples * scale)
    np.testing.assert_allclose(gradient, expected, rtol=1e-8, atol=1e-10)


def test_threshold_estimator_gradient_matches_numpy(rng):
    """Linear scores, NMS windows of 2: d/dr of sum_j G_j s_j, with s_j = r_(n_j) and the
    threshold inclusion probabilities m_i = Phi((r_i - tau) / sigma_b) over the window maxima:
    d m_i / d r_l = phi_i / sigma_b (delta_il - phi_l / sum phi), reaching each window's argmax."""
    batch, size, k, pool, relative_sigma = 2, 6, 4, 2, 0.5
    raw_map = rng.normal(size=(batch, size, size, 1))
    upstream = rng.normal(size=(batch, k))
    detector = PerturbedTopK(num_keypoints=k, sigma=relative_sigma, pool_size=pool,
                             selection="marginal", estimator="threshold", dtype="float64")
    raw_t = tf.constant(raw_map)
    with tf.GradientTape() as tape:
        tape.watch(raw_t)
        _, scores = detector.perturbed_select(raw_t)
        loss = tf.reduce_sum(scores * upstream)
    gradient = tape.gradient(loss, raw_t).numpy().reshape(batch, size, size)

    expected = np.zeros((batch, size, size))
    for b in range(batch):
        windows = raw_map[b, :, :, 0].reshape(size // pool, pool, size // pool, pool)
        windows = windows.transpose(0, 2, 1, 3).reshape(-1, pool * pool)
        maxima, where = windows.max(axis=1), windows.argmax(axis=1)
        window_y, window_x = np.divmod(np.arange(len(maxima)), size // pool)
        pixels = np.stack([window_y * pool + where // pool, window_x * pool + where % pool], axis=1)
        sigma = relative_sigma * maxima.std()
        _, (tau,) = numpy_gaussian_top_k_marginals(maxima[None], k, sigma)
        density = np.exp(-0.5 * ((maxima - tau) / sigma) ** 2)
        jacobian = density[:, None] / (sigma * math.sqrt(2 * math.pi)) * (
            np.eye(len(maxima)) - density[None, :] / density.sum())
        chosen = np.argsort(-maxima)[:k]
        window_gradient = np.zeros(len(maxima))
        window_gradient[chosen] += upstream[b]  # d r_(n_j) / d r
        window_gradient += (upstream[b] * maxima[chosen]) @ jacobian[chosen]
        for (y, x), value in zip(pixels, window_gradient):
            expected[b, y, x] = value
    np.testing.assert_allclose(gradient, expected, rtol=1e-6, atol=1e-9)


def test_threshold_estimator_draws_no_noise(rng):
    """Same inputs, same gradient: nothing random is left in training mode."""
    feature_map = tf.constant(rng.normal(size=(2, 8, 8, 3)).astype("float32"))
    detector = PerturbedTopK(num_keypoints=5, pool_size=2, selection="marginal", estimator="threshold")
    detector(feature_map)
    gradients = []
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(detector(feature_map, training=True)[1])
        gradients.append(tape.gradient(loss, detector.score_conv.kernel).numpy())
    np.testing.assert_array_equal(gradients[0], gradients[1])
    assert np.abs(gradients[0]).sum() > 0


def test_perturbed_top_k_warns_when_every_window_is_selected():
    detector = PerturbedTopK(num_keypoints=4, pool_size=2)
    with pytest.warns(UserWarning, match="num_keypoints=4 equals the 4 windows of 2x2 on the 4x4 map"):
        detector(tf.zeros([1, 4, 4, 2]))


@pytest.mark.parametrize("estimator", ["sampled", "threshold"])
def test_perturbed_top_k_selecting_every_window_trains_as_max_pool_nms(rng, estimator):
    """What the warning says: N = all 16 windows, so training selects the same keypoints as
    max-pool NMS, and the score conv gets NMS's gradient (the perturbed term is zero)."""
    feature_map = tf.constant(rng.normal(size=(2, 8, 8, 3)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(2, 16)).astype("float32"))
    perturbed = PerturbedTopK(num_keypoints=16, score_activation="sigmoid", pool_size=2,
                              selection="marginal", control_variate=True, estimator=estimator)
    nms = MaxPoolNMS(num_keypoints=16, score_activation="sigmoid", pool_size=2)
    with pytest.warns(UserWarning, match="equals the 16 windows"):
        perturbed(feature_map)
    nms(feature_map)
    nms.set_weights(perturbed.get_weights())
    results = []
    for detector in (perturbed, nms):
        with tf.GradientTape() as tape:
            positions, scores, _ = detector(feature_map, training=True)
            # Pair each score with its keypoint, not its slot: slot orders differ.
            order = tf.argsort(positions[..., 0] * 8 + positions[..., 1], axis=1)
            loss = tf.reduce_sum(upstream * tf.gather(scores, order, batch_dims=1))
        results.append((tf.gather(positions, order, batch_dims=1).numpy(),
                        tape.gradient(loss, detector.score_conv.kernel).numpy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-7)


def test_bad_perturbed_estimator_is_refused():
    with pytest.raises(ValueError, match="estimator='exact' is not one of 'sampled', 'threshold'"):
        PerturbedTopK(num_keypoints=3, selection="marginal", estimator="exact")
    with pytest.raises(ValueError, match="estimator='threshold' needs selection='marginal', not "
                                         "selection='slots'"):
        PerturbedTopK(num_keypoints=3, selection="slots", estimator="threshold")
    with pytest.raises(ValueError, match="estimator='threshold' needs selection='marginal', not "
                                         "selection='features'"):
        PerturbedTopK(num_keypoints=3, selection="features", estimator="threshold")


def test_unknown_perturbed_selection_is_refused():
    with pytest.raises(ValueError, match="selection='soft' is not one of 'slots', 'marginal', "
                                         "'features'"):
        PerturbedTopK(num_keypoints=3, selection="soft")


@pytest.mark.parametrize("pool_size,selection", [(1, "features"), (2, "features"),
                                                  (1, "keypoints"), (2, "keypoints")])
def test_feature_selection_trains_on_the_inference_selection(rng, pool_size, selection):
    """selection="features"/"keypoints": training and inference select the same keypoints in
    the same order, and in both modes the node weights give the gathered features scaled by the
    scores (and the location weights write each node at its own keypoint)."""
    feature_map = tf.constant(rng.normal(size=(2, 8, 8, 3)).astype("float32"))
    values = tf.constant(rng.normal(size=(2, 8, 8, 5)).astype("float32"))
    detector = PerturbedTopK(num_keypoints=6, score_activation="sigmoid", num_samples=4, sigma=0.5,
                             pool_size=pool_size, selection=selection)
    results = []
    for training in (False, True):
        positions, scores, _, node_weights, *location_weights = detector(feature_map,
                                                                         training=training)
        assert node_weights.shape == (2, 6, 64)
        assert len(location_weights) == (selection == "keypoints")
        gathered = ops.gather_features(values, positions) * scores[..., None]
        np.testing.assert_allclose(ops.weighted_features(values, node_weights), gathered,
                                   rtol=1e-5, atol=1e-6)
        if location_weights:
            np.testing.assert_array_equal(ops.weighted_scatter(gathered, location_weights[0], 8, 8),
                                          ops.scatter_mean(gathered, positions, 8, 8))
        results.append([positions.numpy(), scores.numpy()])
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)


@pytest.mark.parametrize("control_variate", [False, True])
def test_feature_selection_gradient_matches_numpy(rng, control_variate):
    """Linear scores, pool 1, fixed noise, an upstream gradient G on the node weights W
    (B, N, h*w). By hand: the hard selection's own term G[k, n_k] for the candidate n_k in slot
    k, plus the perturbed-optimiser estimator for the blend's indicators with upstream
    U[k, j] = G[k, j] * r_j (the candidate's own weighted feature): sum_s w_s Z_s / (S sigma_b),
    w_s = <U, T_s> with T_s's slots matched to the hard selection, less the other samples'
    mean with the control variate."""
    batch, size, k, samples, sigma = 2, 4, 3, 5, 0.3
    raw_map = rng.normal(size=(batch, size, size, 1))
    noise = rng.normal(size=(batch, samples, size * size))
    upstream = rng.normal(size=(batch, k, size * size))
    detector = PerturbedTopK(num_keypoints=k, num_samples=samples, sigma=sigma, selection="features",
                             control_variate=control_variate, dtype="float64")
    raw_t = tf.constant(raw_map)
    with tf.GradientTape() as tape:
        tape.watch(raw_t)
        positions, scores, node_weights = detector.perturbed_select(raw_t, noise=tf.constant(noise))
        loss = tf.reduce_sum(node_weights * upstream)
    gradient = tape.gradient(loss, raw_t).numpy().reshape(batch, -1)

    raw = raw_map.reshape(batch, -1)
    top = np.argsort(-raw, axis=1)[:, :k]  # highest first, as at inference
    hard, _ = numpy_matched_top_k(raw, k, sigma * raw.std(axis=1), noise, top)
    expected = np.zeros_like(raw)
    for b in range(batch):
        chosen = top[b]
        np.testing.assert_array_equal(positions[b], np.stack(np.divmod(chosen, size), axis=1))
        np.testing.assert_allclose(scores[b], raw[b, chosen])
        expected[b, chosen] += upstream[b, np.arange(k), chosen]
        weight = np.einsum("kn,skn->s", upstream[b] * raw[b][None, :], hard[b])
        if control_variate:
            weight = weight - (weight.sum() - weight) / (samples - 1)
        expected[b] += weight @ noise[b] / (samples * sigma * raw[b].std())
    np.testing.assert_allclose(gradient, expected, rtol=1e-8, atol=1e-10)


def test_keypoint_selection_gradient_matches_numpy(rng):
    """selection="keypoints", linear scores, pool 1, fixed noise, upstream gradients G on the
    node weights, A on the positions and V on the location weights. By hand: the hard
    selection's own term G[k, n_k], plus the estimator (control variate) with upstream
    U[k, j] = G[k, j] r_j + <A_k, c_j> + V[k, j]: the blend moves the whole keypoint."""
    batch, size, k, samples, sigma = 2, 4, 3, 5, 0.3
    raw_map = rng.normal(size=(batch, size, size, 1))
    noise = rng.normal(size=(batch, samples, size * size))
    upstream, position_upstream, location_upstream = (
        rng.normal(size=shape) for shape in ((batch, k, size * size), (batch, k, 2),
                                             (batch, k, size * size)))
    detector = PerturbedTopK(num_keypoints=k, num_samples=samples, sigma=sigma,
                             selection="keypoints", control_variate=True, dtype="float64")
    raw_t = tf.constant(raw_map)
    with tf.GradientTape() as tape:
        tape.watch(raw_t)
        positions, _, node_weights, location_weights = detector.perturbed_select(
            raw_t, noise=tf.constant(noise))
        loss = (tf.reduce_sum(node_weights * upstream)
                + tf.reduce_sum(tf.cast(positions, tf.float64) * position_upstream)
                + tf.reduce_sum(location_weights * location_upstream))
    gradient = tape.gradient(loss, raw_t).numpy().reshape(batch, -1)

    raw = raw_map.reshape(batch, -1)
    cells = np.stack(np.divmod(np.arange(size * size), size), axis=1).astype(float)  # c_j
    top = np.argsort(-raw, axis=1)[:, :k]
    hard, _ = numpy_matched_top_k(raw, k, sigma * raw.std(axis=1), noise, top)
    expected = np.zeros_like(raw)
    for b in range(batch):
        np.testing.assert_array_equal(positions[b], cells[top[b]])
        np.testing.assert_array_equal(location_weights[b], np.eye(size * size)[top[b]])
        expected[b, top[b]] += upstream[b, np.arange(k), top[b]]
        rating = (upstream[b] * raw[b][None, :] + position_upstream[b] @ cells.T
                  + location_upstream[b])
        weight = np.einsum("kn,skn->s", rating, hard[b])
        weight = weight - (weight.sum() - weight) / (samples - 1)
        expected[b] += weight @ noise[b] / (samples * sigma * raw[b].std())
    # Positions are float32 (the convention), so the position term is exact to ~1e-7.
    np.testing.assert_allclose(gradient, expected, rtol=1e-6, atol=1e-7)


def test_feature_selection_gives_unselected_candidates_a_gradient_from_their_features(rng):
    """The swap value: what an unselected candidate's features are worth changes its gradient
    under selection="features", not under "marginal" (which never reads them)."""
    feature_map = tf.constant(rng.normal(size=(1, 6, 6, 3)).astype("float32"))
    values = rng.normal(size=(1, 6, 6, 4)).astype("float32")
    detector = PerturbedTopK(num_keypoints=4, num_samples=8, sigma=0.5, selection="features")
    detector(feature_map)
    # The best candidate left out: the noise puts it into some of the sampled selections.
    score_map = detector(feature_map, training=False)[2].numpy()[0, :, :, 0]
    fifth = np.argsort(-score_map, axis=None)[4]
    changed = values.copy()
    changed[0, fifth // 6, fifth % 6] += 10.0
    gradients = []
    for features in (values, changed):
        tf.random.set_seed(3)
        with tf.GradientTape() as tape:
            _, _, _, node_weights = detector(feature_map, training=True)
            loss = tf.reduce_sum(ops.weighted_features(tf.constant(features), node_weights) ** 2)
        gradients.append(tape.gradient(loss, detector.score_conv.kernel).numpy())
    assert np.abs(gradients[0] - gradients[1]).max() > 1e-3


@pytest.mark.parametrize("make", [
    lambda: AttentionTopK(num_keypoints=5, score_activation="sigmoid", selection_noise=0.8),
    lambda: MaxPoolNMS(num_keypoints=5, pool_size=2, selection_noise=0.8),
], ids=["attention", "maxpool_nms"])
def test_selection_noise_explores_in_training_only(rng, make):
    """Training: the selection on raw + 0.8 * std(raw) * Z (a NumPy top-N / window maxima),
    with the selected locations' real scores; inference: the plain selection."""
    feature_map = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    detector = make()
    _set_score_conv(detector, feature_map)
    noise = rng.normal(size=(2, 8, 8, 1)).astype("float32")
    raw = feature_map[..., :1]
    positions, raw_scores = detector.noisy_select(tf.constant(raw), noise=tf.constant(noise))
    pool = getattr(detector, "pool_size", 1)
    for b in range(2):
        noisy = raw[b, :, :, 0] + 0.8 * raw[b].std() * noise[b, :, :, 0]
        # Each window's noisy maximum (every location for attention), then the top 5 of those.
        windows = [max(((y, x) for y in range(r, r + pool) for x in range(c, c + pool)),
                       key=lambda yx: noisy[yx]) for r in range(0, 8, pool) for c in range(0, 8, pool)]
        expected = sorted(windows, key=lambda yx: -noisy[yx])[:5]
        np.testing.assert_array_equal(positions[b].numpy().astype(int), expected)
        np.testing.assert_allclose(raw_scores[b], [raw[b, y, x, 0] for y, x in expected],
                                   rtol=1e-6)
    # The noise changes the selection here, so the check above is not the plain one.
    plain, _ = detector.select(tf.constant(raw))
    assert not np.array_equal(plain.numpy(), positions.numpy())
    inference, scores, _ = detector(feature_map, training=False)
    np.testing.assert_array_equal(inference.numpy(), plain.numpy())
    # In training the scores still carry the task gradient to the score convolution.
    with tf.GradientTape() as tape:
        _, scores, _ = detector(feature_map, training=True)
        total = tf.reduce_sum(scores)
    assert np.abs(tape.gradient(total, detector.score_conv.kernel).numpy()).sum() > 0


def _window_soft_argmax(scores, position, pool):
    """NumPy: the soft-argmax of the pool x pool window of (h, w) scores holding position."""
    y0, x0 = (np.round(position).astype(int) // pool) * pool
    cells = [(y0 + i, x0 + j) for i in range(pool) for j in range(pool)]
    weights = np.exp([scores[c] for c in cells])
    return (weights / weights.sum()) @ np.array(cells, dtype=np.float64)


def _numpy_refined(mode, scores, positions, pool):
    if mode == "neighbourhood":
        return numpy_refine_positions(scores, positions, 1)
    return np.array([_window_soft_argmax(scores, p, pool) for p in positions])


REFINED_DETECTORS = {
    "attention": lambda refine: AttentionTopK(num_keypoints=5, score_activation="sigmoid",
                                              subpixel_refinement=refine),
    "maxpool_nms": lambda refine: MaxPoolNMS(num_keypoints=5, pool_size=2,
                                             subpixel_refinement=refine),
    "maxpool_nms_window": lambda refine: MaxPoolNMS(num_keypoints=5, pool_size=2,
                                                    subpixel_refinement=refine),
    "attention_noise": lambda refine: AttentionTopK(num_keypoints=5, selection_noise=0.5,
                                                    subpixel_refinement=refine),
    "perturbed_sampled": lambda refine: PerturbedTopK(num_keypoints=5, pool_size=2, num_samples=4,
                                                      selection="marginal",
                                                      subpixel_refinement=refine),
    "perturbed_threshold_window": lambda refine: PerturbedTopK(num_keypoints=5, pool_size=2,
                                                               selection="marginal",
                                                               estimator="threshold",
                                                               subpixel_refinement=refine),
}


def _refinement(name):
    return "window" if name.endswith("_window") else "neighbourhood"


@pytest.mark.parametrize("name", sorted(REFINED_DETECTORS))
def test_subpixel_refinement_moves_the_selected_keypoints(rng, name):
    """Refined positions = the NumPy soft-argmax of the raw scores around the unrefined
    detector's keypoints (same weights), in training and at inference; the scores and the
    score map are the unrefined ones."""
    feature_map = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    mode = _refinement(name)
    plain, refined = (REFINED_DETECTORS[name](refine) for refine in ("none", mode))
    _set_score_conv(plain, feature_map)
    _set_score_conv(refined, feature_map)
    for training in (False, True):
        seed = 7
        tf.random.set_seed(seed)  # the same noisy selection for both when there is noise
        positions, scores, score_map = plain(feature_map, training=training)
        tf.random.set_seed(seed)
        moved, moved_scores, moved_map = refined(feature_map, training=training)
        np.testing.assert_allclose(moved_scores, scores, rtol=1e-6)
        np.testing.assert_allclose(moved_map, score_map, rtol=1e-6)
        for b in range(2):
            expected = _numpy_refined(mode, feature_map[b, :, :, 0], positions[b].numpy(), 2)
            np.testing.assert_allclose(moved[b], expected, rtol=1e-5, atol=1e-5)
        # Fractional, and within one cell of the selected cell.
        assert np.abs(moved.numpy() - np.round(moved.numpy())).max() > 1e-3
        assert np.abs(moved.numpy() - positions.numpy()).max() < 1.0


def test_window_refinement_of_flat_scores_is_the_window_centre():
    detector = MaxPoolNMS(num_keypoints=4, pool_size=2, subpixel_refinement="window")
    positions, _, _ = detector(tf.zeros([1, 4, 4, 3]))
    np.testing.assert_allclose(sorted(map(tuple, positions[0].numpy())),
                               [(0.5, 0.5), (0.5, 2.5), (2.5, 0.5), (2.5, 2.5)])


@pytest.mark.parametrize("name", ["maxpool_nms_window", "perturbed_threshold_window"])
def test_centre_refinement_puts_keypoints_at_their_window_centres(rng, name):
    """The same selection and scores as without refinement; each keypoint at the centre of the
    2x2 window holding it (NumPy), in training and at inference; no gradient to positions."""
    feature_map = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    plain, centred = (REFINED_DETECTORS[name](refine) for refine in ("none", "centre"))
    _set_score_conv(plain, feature_map)
    _set_score_conv(centred, feature_map)
    for training in (False, True):
        tf.random.set_seed(3)
        positions, scores, _ = plain(feature_map, training=training)
        tf.random.set_seed(3)
        with tf.GradientTape() as tape:
            moved, moved_scores, _ = centred(feature_map, training=training)
            total = tf.reduce_sum(moved)
        np.testing.assert_allclose(moved_scores, scores, rtol=1e-6)
        expected = positions.numpy() // 2 * 2 + 0.5
        np.testing.assert_array_equal(moved, expected)
        assert tape.gradient(total, centred.score_conv.kernel) is None


@pytest.mark.parametrize("name", ["attention", "maxpool_nms", "maxpool_nms_window",
                                  "perturbed_threshold_window"])
def test_subpixel_refinement_gives_positions_a_gradient(rng, name):
    """Without refinement the positions are indices (no gradient); with it a loss on the
    positions alone reaches the score convolution."""
    feature_map = tf.constant(rng.normal(size=(2, 8, 8, 3)).astype("float32"))
    upstream = rng.normal(size=(2, 5, 2)).astype("float32")
    for refine in ("none", _refinement(name)):
        detector = REFINED_DETECTORS[name](refine)
        detector(feature_map)
        with tf.GradientTape() as tape:
            positions = detector(feature_map, training=True)[0]
            total = tf.reduce_sum(positions * upstream)
        gradient = tape.gradient(total, detector.score_conv.kernel)
        if refine != "none":
            assert np.all(np.isfinite(gradient)) and np.abs(gradient.numpy()).sum() > 0
        else:
            assert gradient is None or np.abs(gradient.numpy()).sum() == 0
