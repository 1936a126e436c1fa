"""keypoint_gnn.ops against plain NumPy references and hand-worked cases."""
import numpy as np
import pytest

from keypoint_gnn import ops
from keypoint_gnn._backend import tf


def naive_bilinear(feature_map, y, x):
    h, w, _ = feature_map.shape
    y = min(max(y, 0.0), h - 1)
    x = min(max(x, 0.0), w - 1)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    dy, dx = y - y0, x - x0
    return ((1 - dy) * (1 - dx) * feature_map[y0, x0] + (1 - dy) * dx * feature_map[y0, x1]
            + dy * (1 - dx) * feature_map[y1, x0] + dy * dx * feature_map[y1, x1])


def test_top_k_positions_matches_numpy(rng):
    score_map = rng.normal(size=(3, 5, 7, 1)).astype("float32")
    positions, scores = ops.top_k_positions(tf.constant(score_map), 6)
    for b in range(3):
        flat = score_map[b, :, :, 0].ravel()
        order = np.argsort(-flat)[:6]
        np.testing.assert_allclose(scores[b], flat[order], rtol=1e-6)
        np.testing.assert_array_equal(positions[b], np.stack([order // 7, order % 7], -1))


def test_top_k_rejects_more_keypoints_than_locations():
    with pytest.raises(ValueError, match="num_keypoints=17 exceeds the 4x4=16 locations"):
        ops.top_k_positions(tf.zeros([1, 4, 4, 1]), 17)


def test_max_pool_nms_hand_worked():
    score_map = np.array(
        [[0, 1, 0, 0],
         [9, 0, 0, 5],
         [0, 0, 7, 0],
         [2, 0, 0, 8]], dtype="float32")[None, :, :, None]
    # Windows: top-left max 9 at (1,0); top-right 5 at (1,3); bottom-left 2 at (3,0);
    # bottom-right 8 at (3,3) (7 at (2,2) is suppressed by 8 in the same window).
    positions, scores = ops.max_pool_nms(tf.constant(score_map), pool_size=2, k=3)
    np.testing.assert_array_equal(scores[0], [9, 8, 5])
    np.testing.assert_array_equal(positions[0], [[1, 0], [3, 3], [1, 3]])


def test_max_pool_nms_one_keypoint_per_window(rng):
    score_map = rng.normal(size=(2, 8, 8)).astype("float32")
    positions, scores = ops.max_pool_nms(tf.constant(score_map), pool_size=4, k=4)
    for b in range(2):
        windows = {(int(y) // 4, int(x) // 4) for y, x in positions[b].numpy()}
        assert len(windows) == 4
        for (y, x), s in zip(positions[b].numpy().astype(int), scores[b].numpy()):
            wy, wx = y // 4 * 4, x // 4 * 4
            assert s == score_map[b, wy:wy + 4, wx:wx + 4].max() == score_map[b, y, x]


@pytest.mark.parametrize("pool_size,k,message", [
    (3, 1, "pool_size=3 does not divide the feature map height 8"),
    (4, 5, "num_keypoints=5 exceeds the 2x2=4 pooling windows"),
])
def test_max_pool_nms_bad_values(pool_size, k, message):
    with pytest.raises(ValueError, match=message):
        ops.max_pool_nms(tf.zeros([1, 8, 8, 1]), pool_size, k)


def test_gather_features_matches_indexing(rng):
    feature_map = rng.normal(size=(2, 6, 5, 3)).astype("float32")
    positions = np.array([[[0, 0], [5, 4], [2.2, 3.7]], [[1, 1], [3, 0], [9, -2]]], "float32")
    nodes = ops.gather_features(tf.constant(feature_map), tf.constant(positions)).numpy()
    expected = np.stack([
        feature_map[0, [0, 5, 2], [0, 4, 4]],
        feature_map[1, [1, 3, 5], [1, 0, 0]],  # out-of-map positions are clipped
    ])
    np.testing.assert_allclose(nodes, expected)


def test_bilinear_sample_matches_naive(rng):
    feature_map = rng.normal(size=(2, 6, 5, 3)).astype("float32")
    positions = rng.uniform(-1, 6.5, size=(2, 7, 2)).astype("float32")
    nodes = ops.bilinear_sample(tf.constant(feature_map), tf.constant(positions)).numpy()
    for b in range(2):
        for n in range(7):
            np.testing.assert_allclose(
                nodes[b, n], naive_bilinear(feature_map[b], *positions[b, n]), rtol=1e-5, atol=1e-6)


def test_bilinear_sample_is_differentiable_in_positions(rng):
    feature_map = tf.constant(rng.normal(size=(1, 6, 6, 2)).astype("float32"))
    positions = tf.Variable([[[2.3, 3.6], [1.5, 1.2]]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(ops.bilinear_sample(feature_map, positions))
    gradient = tape.gradient(loss, positions).numpy()
    assert np.all(np.abs(gradient) > 0)


def test_scatter_mean_averages_collisions():
    nodes = np.array([[[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]]], "float32")
    positions = np.array([[[1, 2], [1, 2], [0, 0]]], "float32")
    grid = ops.scatter_mean(tf.constant(nodes), tf.constant(positions), 3, 4).numpy()
    expected = np.zeros((1, 3, 4, 2), "float32")
    expected[0, 1, 2] = [2.0, 20.0]
    expected[0, 0, 0] = [5.0, 50.0]
    np.testing.assert_allclose(grid, expected)


def test_scatter_mean_matches_loop(rng):
    nodes = rng.normal(size=(2, 20, 3)).astype("float32")
    positions = rng.integers(0, 4, size=(2, 20, 2)).astype("float32")
    grid = ops.scatter_mean(tf.constant(nodes), tf.constant(positions), 4, 4).numpy()
    total = np.zeros((2, 4, 4, 3))
    count = np.zeros((2, 4, 4))
    for b in range(2):
        for n in range(20):
            y, x = positions[b, n].astype(int)
            total[b, y, x] += nodes[b, n]
            count[b, y, x] += 1
    expected = total / np.maximum(count, 1)[..., None]
    np.testing.assert_allclose(grid, expected, rtol=1e-5, atol=1e-6)


def test_bilinear_splat_matches_loop(rng):
    nodes = rng.normal(size=(2, 9, 3)).astype("float32")
    positions = rng.uniform(0, 4, size=(2, 9, 2)).astype("float32")
    grid = ops.bilinear_splat(tf.constant(nodes), tf.constant(positions), 5, 5).numpy()
    total = np.zeros((2, 5, 5, 3))
    weight = np.zeros((2, 5, 5))
    for b in range(2):
        for n in range(9):
            y, x = positions[b, n]
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            for yy, xx, w in ((y0, x0, (1 - (y - y0)) * (1 - (x - x0))), (y0, x0 + 1, (1 - (y - y0)) * (x - x0)),
                              (y0 + 1, x0, (y - y0) * (1 - (x - x0))), (y0 + 1, x0 + 1, (y - y0) * (x - x0))):
                total[b, min(yy, 4), min(xx, 4)] += w * nodes[b, n]
                weight[b, min(yy, 4), min(xx, 4)] += w
    expected = total / np.maximum(weight, 1)[..., None]
    np.testing.assert_allclose(grid, expected, rtol=1e-4, atol=1e-5)


def test_integer_splat_equals_scatter_mean(rng):
    nodes = tf.constant(rng.normal(size=(1, 12, 2)).astype("float32"))
    positions = tf.constant(rng.integers(0, 3, size=(1, 12, 2)).astype("float32"))
    np.testing.assert_allclose(ops.bilinear_splat(nodes, positions, 3, 3),
                               ops.scatter_mean(nodes, positions, 3, 3), rtol=1e-5, atol=1e-6)


def authors_adjacency(positions):
    """The authors' rule, written as a loop: 1/(1+d), over the largest off-diagonal, diag = 1."""
    n = len(positions)
    weights = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                weights[i, j] = 1.0 / (1.0 + np.linalg.norm(positions[i] - positions[j]))
    weights /= weights.max()
    np.fill_diagonal(weights, 1.0)
    return weights


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


def test_cell_offsets_to_positions_hand_worked():
    offsets = np.zeros((1, 2, 3, 1, 2), "float32")
    offsets[0, 1, 2, 0] = [0.5, 0.25]  # cell (1, 2) of 4-pixel cells spans y 4..8, x 8..12
    positions = ops.cell_offsets_to_positions(tf.constant(offsets), 4).numpy()
    assert positions.shape == (1, 6, 2)
    np.testing.assert_allclose(positions[0, 5], [(1 + 0.5) * 4 - 0.5, (2 + 0.25) * 4 - 0.5])
    np.testing.assert_allclose(positions[0, 0], [-0.5, -0.5])
