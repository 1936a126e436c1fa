"""keypoint_gnn.ops.offsets: the grid regressor's in-cell offsets (positions, standardisation
over cells, distance to the uniform) against NumPy, numerical integration and hand-worked
cases."""
import itertools

import numpy as np
import pytest

from keypoint_gnn import ops
from keypoint_gnn._backend import tf


def test_cell_offsets_to_positions_hand_worked():
    offsets = np.zeros((1, 2, 3, 1, 2), "float32")
    offsets[0, 1, 2, 0] = [0.5, 0.25]  # cell (1, 2) of 4-pixel cells spans y 4..8, x 8..12
    positions = ops.cell_offsets_to_positions(tf.constant(offsets), 4).numpy()
    assert positions.shape == (1, 6, 2)
    np.testing.assert_allclose(positions[0, 5], [(1 + 0.5) * 4 - 0.5, (2 + 0.25) * 4 - 0.5])
    np.testing.assert_allclose(positions[0, 0], [-0.5, -0.5])


def test_standardize_over_cells_matches_numpy(rng):
    logits = rng.normal(3.0, 5.0, size=(2, 3, 4, 2, 2)).astype("float32")
    expected = np.empty_like(logits)
    for b, k, c in itertools.product(range(2), range(2), range(2)):
        cells = logits[b, :, :, k, c].astype(np.float64)
        expected[b, :, :, k, c] = ((cells - cells.mean()) / np.sqrt(cells.var() + 1e-3)
                                   * np.pi / np.sqrt(3.0))
    result = ops.standardize_over_cells(tf.constant(logits)).numpy()
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)
    # A common shift of every cell's logits is removed.
    shifted = ops.standardize_over_cells(tf.constant(logits + 7.0)).numpy()
    np.testing.assert_allclose(shifted, result, rtol=1e-4, atol=1e-4)
    # Equal logits in every cell give 0 (offset 0.5), not a division by zero.
    np.testing.assert_allclose(ops.standardize_over_cells(tf.fill([1, 2, 2, 1, 2], 4.0)).numpy(), 0.0)
    assert ops.LOGISTIC_SD == pytest.approx(np.pi / np.sqrt(3.0))


def _numeric_wasserstein_to_uniform(column, steps=200_000):
    """int_0^1 (Q(u) - u)^2 du by the midpoint rule, Q the sample's quantile function."""
    u = (np.arange(steps) + 0.5) / steps
    quantile = np.sort(column)[np.minimum((u * len(column)).astype(int), len(column) - 1)]
    return np.mean((quantile - u) ** 2)


def test_wasserstein_to_uniform_matches_numerical_integration(rng):
    values = np.stack([rng.uniform(size=7), rng.beta(0.3, 0.3, size=7)], axis=1)
    result = ops.wasserstein_to_uniform(tf.constant(values)).numpy()
    expected = [_numeric_wasserstein_to_uniform(values[:, c]) for c in range(2)]
    np.testing.assert_allclose(result, expected, rtol=1e-4)
    # Hand-worked: one value at 0 is int_0^1 u^2 du = 1/3; two values on the quantiles
    # 1/4, 3/4 leave only the spread within each half, 1/(12 * 4).
    np.testing.assert_allclose(ops.wasserstein_to_uniform(tf.zeros([1, 1])).numpy(), [1 / 3])
    np.testing.assert_allclose(ops.wasserstein_to_uniform(tf.constant([[0.75], [0.25]])).numpy(),
                               [1 / 48])
    # Values piled on the borders are further from the uniform than spread ones.
    borders = np.tile([[0.02], [0.98]], (50, 1))
    spread = rng.uniform(size=(100, 1))
    assert (ops.wasserstein_to_uniform(tf.constant(borders)).numpy()[0]
            > 10 * ops.wasserstein_to_uniform(tf.constant(spread)).numpy()[0])


def test_wasserstein_to_uniform_gradient_moves_values_to_their_quantiles():
    values = tf.constant([[0.9], [0.0], [0.5], [0.6]], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(values)
        distance = ops.wasserstein_to_uniform(values)[0]
    # Sorted: 0.0, 0.5, 0.6, 0.9 against the quantiles 1/8, 3/8, 5/8, 7/8;
    # d/dx_(i) = 2 (x_(i) - q_i) / n, returned in the input order.
    expected = 2 * (np.array([0.9, 0.0, 0.5, 0.6]) - np.array([7, 1, 3, 5]) / 8) / 4
    np.testing.assert_allclose(tape.gradient(distance, values).numpy()[:, 0], expected)


@pytest.mark.parametrize("function, message", [
    (ops.standardize_over_cells, r"\(B, L, M, h, 2\).*\(2, 3, 2\)"),
    (ops.wasserstein_to_uniform, r"\(n, d\).*\(2, 3, 2\)"),
])
def test_offset_ops_reject_other_shapes(function, message):
    with pytest.raises(ValueError, match=message):
        function(tf.zeros([2, 3, 2]))
