"""GridCoordinateRegressor (paper §4.2): cell offsets and confidences, hand-set kernels,
gradients, the offset standardisation and uniformity penalty, argument checks."""
import numpy as np
import pytest

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers import GridCoordinateRegressor


def _set_cell_bias(detector, feature_map, bias):
    """Zero kernel and a hand-set bias: every cell predicts the same raw channels."""
    detector(feature_map)
    detector.cell_conv.kernel.assign(np.zeros(detector.cell_conv.kernel.shape, "float32"))
    detector.cell_conv.bias.assign(np.asarray(bias, "float32"))


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


def test_sigmoid_offsets_hand_set_kernel():
    """Two 2x2 cells side by side, one point each: offset = sigmoid(a), position =
    (cell + offset) * m - 0.5; the score map holds each cell's confidence over its pixels."""
    detector = GridCoordinateRegressor(num_keypoints=2, cell_size=2, points_per_cell=1)
    feature_map = np.zeros((1, 2, 4, 3), "float32")
    _set_cell_bias(detector, feature_map, [0.0, np.log(3.0), 1.0])  # sigmoid 0.5 and 0.75
    cells = detector(feature_map, return_cells=True).numpy()[0, 0, :, 0]
    np.testing.assert_allclose(cells, [[0.5, 0.75, 1.0], [0.5, 0.75, 1.0]], atol=1e-6)
    positions, scores, score_map = detector(feature_map)
    # y (0 + 0.5) * 2 - 0.5 = 0.5; x (0 + 0.75) * 2 - 0.5 = 1.0 and (1 + 0.75) * 2 - 0.5 = 3.0.
    np.testing.assert_allclose(np.sort(positions[0].numpy(), axis=0), [[0.5, 1.0], [0.5, 3.0]],
                               atol=1e-5)
    np.testing.assert_allclose(scores, [[1.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(score_map, np.ones((1, 2, 4, 1)), atol=1e-6)


def test_grid_regressor_gradient_reaches_the_offset_channels_only(rng):
    """A loss on the positions reaches the offset channels, not the confidence channel."""
    feature_map = tf.constant(rng.normal(size=(1, 4, 4, 3)).astype("float32"))
    detector = GridCoordinateRegressor(num_keypoints=4, cell_size=2, points_per_cell=1)
    detector(feature_map)
    with tf.GradientTape() as tape:
        positions, _, _ = detector(feature_map)
        loss = tf.reduce_sum(positions * [[[1.0, 2.0]]])
    kernel_gradient = tape.gradient(loss, detector.cell_conv.kernel).numpy()
    assert np.abs(kernel_gradient[..., 0:2]).sum() > 0  # offset channels of the point
    assert np.abs(kernel_gradient[..., 2]).sum() == 0  # its confidence


def test_sigmoid_offset_gradient_at_the_cell_border():
    # Raw channel set so the y offset is 0.98 (near the bottom border) in cell units.
    detector = GridCoordinateRegressor(num_keypoints=1, cell_size=2, points_per_cell=1)
    feature_map = np.zeros((1, 2, 2, 3), "float32")
    raw = np.log(0.98 / (1 - 0.98))
    _set_cell_bias(detector, feature_map, [raw, 0.0, 0.0])
    with tf.GradientTape() as tape:
        cells = detector(feature_map, return_cells=True)
        offset_y = cells[0, 0, 0, 0, 0]
    np.testing.assert_allclose(offset_y.numpy(), 0.98, atol=1e-5)
    gradient = tape.gradient(offset_y, detector.cell_conv.bias).numpy()[0]
    np.testing.assert_allclose(gradient, 0.98 * (1 - 0.98), rtol=1e-4)  # d sigmoid / d raw


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
                                       offset_uniformity_weight=0.7)
    assert detector.penalized
    positions, _, _ = detector(feature_map)
    assert len(detector.losses) == 1
    # Reference: the 5 most confident slots' offsets per image, pooled, against the uniform's
    # quantiles, per axis, by the closed form.
    raw = detector.cell_conv(feature_map).numpy().reshape(3, 8, 3).astype("float64")
    offsets = 1 / (1 + np.exp(-raw[..., :2]))
    chosen = np.argsort(-raw[..., 2], axis=1, kind="stable")[:, :5]
    selected = np.take_along_axis(offsets, chosen[..., None], axis=1).reshape(-1, 2)
    n = len(selected)
    quantiles = (np.arange(n) + 0.5) / n
    expected = np.mean([np.mean((np.sort(selected[:, c]) - quantiles) ** 2) + 1 / (12 * n * n)
                        for c in range(2)])
    np.testing.assert_allclose(float(detector.losses[0]), 0.7 * expected, rtol=1e-4)
    # `detect` returns the same penalty without adding a loss.
    _, penalty = detector.detect(feature_map)
    np.testing.assert_allclose(float(penalty), 0.7 * expected, rtol=1e-4)
    # The penalty only adds a loss: the keypoints are those of the same regressor without it.
    plain = GridCoordinateRegressor(num_keypoints=5, cell_size=2, points_per_cell=2)
    assert not plain.penalized
    plain(feature_map)
    plain.set_weights(detector.get_weights())
    np.testing.assert_allclose(plain(feature_map)[0].numpy(), positions.numpy())
    assert plain.losses == []
    # Pre-training's cell path has no selection, hence no uniformity penalty.
    detector(feature_map, return_cells=True)
    assert sum(float(loss) for loss in detector.losses) == 0.0


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

    optimizer = keras.optimizers.Adam(0.05)

    @tf.function
    def step():  # an Adam step on the detector's own added loss (the penalty) alone
        with tf.GradientTape() as tape:
            detector(feature_map)
            loss = tf.add_n(detector.losses)
        variables = detector.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    before = border_fraction()
    for _ in range(150):
        step()
    assert before > 0.7
    assert 0.26 <= border_fraction() <= 0.46  # uniform offsets: 1 - 0.8^2 = 0.36


@pytest.mark.parametrize("value", [-0.1, float("nan"), "1", True])
def test_offset_uniformity_weight_bad_values(value):
    with pytest.raises(ValueError, match=f"offset_uniformity_weight={value!r} must be a finite "
                                         "number >= 0"):
        GridCoordinateRegressor(num_keypoints=1, offset_uniformity_weight=value)


@pytest.mark.parametrize("kwargs, message", [
    ({"standardize_offsets": "yes"}, "standardize_offsets='yes' must be True or False"),
    ({"cell_size": 0}, "cell_size=0 must be a positive integer"),
    ({"points_per_cell": 1.5}, "points_per_cell=1.5 must be a positive integer"),
])
def test_grid_regressor_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GridCoordinateRegressor(num_keypoints=1, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_keypoints": 9, "cell_size": 4, "points_per_cell": 2},
     r"num_keypoints=9 exceeds the 8 candidate points \(2x2 cells x 2 points per cell\)"),
    ({"num_keypoints": 1, "cell_size": 3}, "cell_size=3 does not divide the feature map height 8"),
])
def test_grid_regressor_configuration_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GridCoordinateRegressor(**kwargs)(tf.zeros([1, 8, 8, 4]))

