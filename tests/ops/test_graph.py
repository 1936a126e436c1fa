"""keypoint_gnn.ops.graph: keypoint and grid adjacencies and their GCN normalisation against
the authors' rule, Spektral's filter, brute force and hand-worked graphs."""
import numpy as np
import pytest

from keypoint_gnn import ops
from keypoint_gnn._backend import tf
from tests.ops import authors_adjacency


def test_inverse_distance_adjacency_matches_authors_rule(rng):
    positions = rng.integers(0, 16, size=(3, 10, 2)).astype("float32")
    adjacency = ops.inverse_distance_adjacency(tf.constant(positions)).numpy()
    for b in range(3):
        np.testing.assert_allclose(adjacency[b], authors_adjacency(positions[b]), rtol=1e-5)


def test_inverse_distance_adjacency_hand_worked():
    # Three points on a line at 0, 3, 4: distances 3, 1, 4 -> weights 1/4, 1/2, 1/5; max 1/2.
    adjacency = ops.inverse_distance_adjacency(tf.constant([[[0.0, 0.0], [0.0, 3.0], [0.0, 4.0]]]))
    expected = np.array([[1, 0.5, 0.4], [0.5, 1, 1], [0.4, 1, 1]])
    np.testing.assert_allclose(adjacency[0], expected, rtol=1e-6)


def test_gcn_normalize_matches_spektral_filter(rng):
    from spektral.utils import gcn_filter

    weights = rng.uniform(size=(6, 6)).astype("float32")
    weights = (weights + weights.T) / 2
    np.fill_diagonal(weights, 0)
    expected = gcn_filter(weights.copy(), symmetric=True)  # adds self loops itself
    normalized = ops.gcn_normalize(tf.constant(weights), add_self_loops=True).numpy()
    np.testing.assert_allclose(normalized, expected, rtol=1e-5)


def test_gcn_normalize_hand_worked():
    adjacency = np.array([[1.0, 1.0], [1.0, 1.0]], "float32")  # degrees 2 -> every entry / 2
    np.testing.assert_allclose(ops.gcn_normalize(tf.constant(adjacency)), adjacency / 2)


def test_grid_positions():
    np.testing.assert_array_equal(ops.grid_positions(2, 3), [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]])


@pytest.mark.parametrize("k", [4, 8, 12])
def test_grid_knn_adjacency_matches_brute_force(k):
    height, width = 5, 6
    adjacency = tf.sparse.to_dense(ops.grid_knn_adjacency(height, width, k)).numpy()
    offsets = ops.grid_neighbour_offsets(k)
    distances_of_offsets = sorted(np.hypot(*o) for o in offsets)
    # Brute force: every pair of cells whose displacement is one of the k offsets.
    expected = np.zeros((height * width, height * width))
    for i in range(height * width):
        expected[i, i] = 1.0
        yi, xi = divmod(i, width)
        for dy, dx in offsets:
            yj, xj = yi + dy, xi + dx
            if 0 <= yj < height and 0 <= xj < width:
                expected[i, yj * width + xj] = (1 / (1 + np.hypot(dy, dx))) / 0.5
    np.testing.assert_allclose(adjacency, expected, rtol=1e-6)
    np.testing.assert_allclose(adjacency, adjacency.T)
    # k=4: the 4-neighbourhood; k=8: the 8-neighbourhood; k=12 adds the 4 cells at distance 2.
    assert distances_of_offsets == sorted(
        {4: [1] * 4, 8: [1] * 4 + [2 ** 0.5] * 4, 12: [1] * 4 + [2 ** 0.5] * 4 + [2] * 4}[k])


def test_sparse_normalisation_matches_dense():
    sparse = ops.grid_knn_adjacency(4, 4, 8)
    dense = tf.sparse.to_dense(sparse)
    np.testing.assert_allclose(tf.sparse.to_dense(ops.gcn_normalize_sparse(sparse)),
                               ops.gcn_normalize(dense), rtol=1e-6)
