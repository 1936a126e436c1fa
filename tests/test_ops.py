"""keypoint_gnn.ops against plain NumPy references and hand-worked cases."""
import itertools
import math

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
    # The same windows as candidates, row-major over the windows; pool 1: every location.
    scores, positions = ops.window_candidates(tf.constant(score_map), 2)
    np.testing.assert_array_equal(scores[0], [9, 5, 2, 8])
    np.testing.assert_array_equal(positions[0], [[1, 0], [1, 3], [3, 0], [3, 3]])
    scores, positions = ops.window_candidates(tf.constant(score_map), 1)
    np.testing.assert_array_equal(scores[0], score_map.ravel())
    np.testing.assert_array_equal(positions[0], np.stack(np.divmod(np.arange(16), 4), axis=1))


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


def numpy_refine_positions(scores, positions, radius):
    """Loop reference of ops.refine_positions: (h, w) scores, (N, 2) cells -> (N, 2)."""
    height, width = scores.shape
    refined = []
    for y, x in np.round(positions).astype(int):
        y, x = min(max(y, 0), height - 1), min(max(x, 0), width - 1)
        cells = [(y + dy, x + dx) for dy in range(-radius, radius + 1)
                 for dx in range(-radius, radius + 1)
                 if 0 <= y + dy < height and 0 <= x + dx < width]
        values = np.array([scores[c] for c in cells], dtype=np.float64)
        weights = np.exp(values - values.max())
        weights /= weights.sum()
        refined.append(weights @ np.array(cells, dtype=np.float64))
    return np.array(refined)


def test_refine_positions_hand_worked():
    # 3x3 zeros with ln 3 right of the centre: weights 1/11 each, 3/11 for (1, 2);
    # x shift = (-3 + 1 + 1 + 3) / 11 = 2/11, y shift 0.
    scores = np.zeros((1, 3, 3), "float32")
    scores[0, 1, 2] = math.log(3.0)
    refined = ops.refine_positions(tf.constant(scores), tf.constant([[[1.0, 1.0]]]))
    np.testing.assert_allclose(refined[0, 0], [1.0, 1.0 + 2.0 / 11.0], rtol=1e-6)
    # At a corner only the four cells on the map count: flat scores -> their mean, (0.5, 0.5).
    refined = ops.refine_positions(tf.zeros([1, 3, 3]), tf.constant([[[0.0, 0.0], [2.0, 2.0]]]))
    np.testing.assert_allclose(refined[0], [[0.5, 0.5], [1.5, 1.5]], rtol=1e-6)


@pytest.mark.parametrize("radius", [1, 2])
def test_refine_positions_matches_numpy(rng, radius):
    scores = rng.normal(scale=2.0, size=(2, 5, 7, 1)).astype("float32")
    # Corners, edges and interior cells; -0.2 and 7.4 round and clip onto the map.
    positions = np.array([[[0, 0], [4, 6], [2, 3], [0, 5]],
                          [[3, 1], [4, 0], [1, 6], [-0.2, 7.4]]], "float32")
    refined = ops.refine_positions(tf.constant(scores), tf.constant(positions), radius=radius)
    for b in range(2):
        np.testing.assert_allclose(
            refined[b], numpy_refine_positions(scores[b, :, :, 0], positions[b], radius),
            rtol=1e-5, atol=1e-6)


def test_refine_positions_gradient_matches_numpy(rng):
    """d p'_c / d s_j = w_j (d_jc - shift_c) over the window's cells j, 0 elsewhere."""
    scores = rng.normal(size=(1, 4, 4)).astype("float32")
    positions = tf.constant([[[1.0, 2.0]]])
    upstream = np.array([0.7, -1.3], "float32")
    score_tensor = tf.constant(scores)
    with tf.GradientTape() as tape:
        tape.watch(score_tensor)
        refined = ops.refine_positions(score_tensor, positions)
        total = tf.reduce_sum(refined[0, 0] * upstream)
    gradient = tape.gradient(total, score_tensor).numpy()[0]
    cells = [(1 + dy, 2 + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    weights = np.exp([scores[0][c] for c in cells])
    weights /= weights.sum()
    offsets = np.array(cells, dtype=np.float64) - [1, 2]
    shift = weights @ offsets
    expected = np.zeros((4, 4))
    for (y, x), w, d in zip(cells, weights, offsets):
        expected[y, x] = w * ((d - shift) @ upstream)
    np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-6)


def test_window_soft_argmax_hand_worked():
    # One 2x2 window with scores ln 1, ln 2 / ln 3, ln 4: weights 0.1, 0.2 / 0.3, 0.4,
    # y = 0.3 + 0.4 = 0.7, x = 0.2 + 0.4 = 0.6; the second window is flat: its centre.
    scores = np.log(np.array([[[1, 2, 1, 1], [3, 4, 1, 1]]], "float32"))
    centres = ops.window_soft_argmax(tf.constant(scores), 2)
    np.testing.assert_allclose(centres[0, 0], [[0.7, 0.6], [0.5, 2.5]], rtol=1e-6)


def test_refine_in_windows_matches_numpy(rng):
    scores = rng.normal(scale=2.0, size=(2, 6, 9)).astype("float32")
    positions = np.array([[[0, 0], [5, 8], [2, 4], [3, 3]],
                          [[1, 7], [4, 2], [5, 5], [0, 4]]], "float32")
    refined = ops.refine_in_windows(tf.constant(scores), tf.constant(positions), 3)
    for b in range(2):
        for n, (y, x) in enumerate(positions[b].astype(int)):
            y0, x0 = y // 3 * 3, x // 3 * 3
            cells = [(y0 + i, x0 + j) for i in range(3) for j in range(3)]
            weights = np.exp([scores[b][c] for c in cells].copy())
            expected = weights / weights.sum() @ np.array(cells, dtype=np.float64)
            np.testing.assert_allclose(refined[b, n], expected, rtol=1e-5)


def test_window_centres_hand_worked():
    # 3x3 windows on a 6x9 map: cell (4, 7) lies in window (1, 2), centre (4, 7); cell (0, 5)
    # in window (0, 1), centre (1, 4); (5.4, -0.6) rounds and clips to (5, 0): centre (4, 1).
    positions = tf.constant([[[4.0, 7.0], [0.0, 5.0], [5.4, -0.6]]])
    centres = ops.window_centres(tf.zeros([1, 6, 9, 1]), positions, 3)
    np.testing.assert_array_equal(centres, [[[4, 7], [1, 4], [4, 1]]])
    # Even windows: the centre lies between cells, where bilinear sampling is the mean.
    centres = ops.window_centres(tf.zeros([1, 4, 4]), tf.constant([[[3.0, 0.0]]]), 2)
    np.testing.assert_array_equal(centres, [[[2.5, 0.5]]])


def test_window_centres_bad_pool_size():
    with pytest.raises(ValueError, match="pool_size=0 must be a positive integer"):
        ops.window_centres(tf.zeros([1, 4, 4]), tf.zeros([1, 1, 2]), 0)
    with pytest.raises(ValueError, match="pool_size=3 does not divide the feature map height 4"):
        ops.window_centres(tf.zeros([1, 4, 4]), tf.zeros([1, 1, 2]), 3)


def test_refine_in_windows_bad_pool_size():
    with pytest.raises(ValueError, match="pool_size=0 must be a positive integer"):
        ops.refine_in_windows(tf.zeros([1, 4, 4]), tf.zeros([1, 1, 2]), 0)
    with pytest.raises(ValueError, match="pool_size=3 does not divide the feature map height 4"):
        ops.refine_in_windows(tf.zeros([1, 4, 4]), tf.zeros([1, 1, 2]), 3)


@pytest.mark.parametrize("radius", [0, 1.5, True])
def test_refine_positions_bad_radius(radius):
    with pytest.raises(ValueError, match=f"radius={radius!r} must be a positive integer"):
        ops.refine_positions(tf.zeros([1, 3, 3]), tf.zeros([1, 1, 2]), radius=radius)


def test_gather_features_matches_indexing(rng):
    feature_map = rng.normal(size=(2, 6, 5, 3)).astype("float32")
    positions = np.array([[[0, 0], [5, 4], [2.2, 3.7]], [[1, 1], [3, 0], [9, -2]]], "float32")
    nodes = ops.gather_features(tf.constant(feature_map), tf.constant(positions)).numpy()
    expected = np.stack([
        feature_map[0, [0, 5, 2], [0, 4, 4]],
        feature_map[1, [1, 3, 5], [1, 0, 0]],  # out-of-map positions are clipped
    ])
    np.testing.assert_allclose(nodes, expected)


def test_location_weights_and_weighted_features_match_numpy(rng):
    """Weights over 5 distinct candidates per image, placed at their locations of a 4x3 map,
    then applied to the features: a naive loop for each."""
    weights = rng.normal(size=(2, 3, 5))
    feature_map = rng.normal(size=(2, 4, 3, 2))
    locations = np.stack([rng.permutation(12)[:5] for _ in range(2)])  # distinct per image
    positions = np.stack(np.divmod(locations, 3), axis=-1).astype("float64")
    placed = ops.location_weights(tf.constant(weights), tf.constant(positions), 4, 3).numpy()
    expected = np.zeros((2, 3, 12))
    nodes = np.zeros((2, 3, 2))
    for b in range(2):
        for j, (y, x) in enumerate(positions[b].astype(int)):
            expected[b, :, y * 3 + x] = weights[b, :, j]
            nodes[b] += weights[b, :, j][:, None] * feature_map[b, y, x][None, :]
    np.testing.assert_array_equal(placed, expected)
    np.testing.assert_allclose(ops.weighted_features(tf.constant(feature_map), tf.constant(placed)),
                               nodes, rtol=1e-12)
    # One-hot rows pick each node's own keypoint: the gathered features.
    one_hot = ops.location_weights(tf.eye(5, batch_shape=[2], dtype=tf.float64),
                                   tf.constant(positions), 4, 3)
    np.testing.assert_array_equal(ops.weighted_features(tf.constant(feature_map), one_hot),
                                  ops.gather_features(tf.constant(feature_map), tf.constant(positions)))


def test_weighted_scatter_matches_numpy_and_scatter_mean(rng):
    """General weights against a naive loop (divisor max(column sum, 1), not differentiated);
    one-hot rows at distinct cells give scatter_mean, and the gradient of a weight is the
    upstream gradient at its location dotted with the node."""
    nodes = rng.normal(size=(2, 3, 4))
    weights = rng.uniform(size=(2, 3, 6))
    grid = ops.weighted_scatter(tf.constant(nodes), tf.constant(weights), 2, 3).numpy()
    expected = np.zeros((2, 6, 4))
    for b in range(2):
        for cell in range(6):
            total = max(weights[b, :, cell].sum(), 1.0)
            for k in range(3):
                expected[b, cell] += weights[b, k, cell] * nodes[b, k] / total
    np.testing.assert_allclose(grid, expected.reshape(2, 2, 3, 4), rtol=1e-12)

    positions = np.array([[[0, 1], [1, 2], [1, 0]], [[0, 0], [0, 2], [1, 1]]], "float64")
    one_hot = tf.constant(ops.location_weights(tf.eye(3, batch_shape=[2], dtype=tf.float64),
                                               tf.constant(positions), 2, 3).numpy())
    upstream = rng.normal(size=(2, 2, 3, 4))
    with tf.GradientTape() as tape:
        tape.watch(one_hot)
        grid = ops.weighted_scatter(tf.constant(nodes), one_hot, 2, 3)
        loss = tf.reduce_sum(grid * upstream)
    np.testing.assert_array_equal(grid, ops.scatter_mean(tf.constant(nodes), tf.constant(positions), 2, 3))
    np.testing.assert_allclose(tape.gradient(loss, one_hot),
                               np.einsum("blc,bkc->bkl", upstream.reshape(2, 6, 4), nodes), rtol=1e-12)


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


# --- beyond the paper: soft-argmax offsets, dustbin presence, perturbed top-k ---------------


def test_widen_offsets_hand_worked():
    unit = tf.constant([[0.0, 1.0], [0.5, 0.25]])
    np.testing.assert_allclose(ops.widen_offsets(unit, 0.5).numpy(), [[-0.5, 1.5], [0.5, 0.0]])
    np.testing.assert_allclose(ops.widen_offsets(unit, 0.25).numpy(),
                               [[-0.25, 1.25], [0.5, 1.5 * 0.25 - 0.25]])
    assert ops.widen_offsets(unit, 0.0) is unit


def numpy_soft_argmax(logits, size):
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities = (exp / exp.sum(-1, keepdims=True)).reshape(logits.shape[:-1] + (size, size))
    centres = (np.arange(size) + 0.5) / size
    return np.stack([(probabilities.sum(-1) * centres).sum(-1),
                     (probabilities.sum(-2) * centres).sum(-1)], axis=-1)


def test_soft_argmax_all_mass_on_one_bin_gives_its_centre():
    logits = np.full((4, 9), -1e4, "float32")
    for row, (i, j) in enumerate([(0, 0), (0, 2), (2, 1), (1, 1)]):
        logits[row, i * 3 + j] = 0.0
    offsets = ops.soft_argmax_offsets(tf.constant(logits), 3).numpy()
    np.testing.assert_allclose(offsets, [[1 / 6, 1 / 6], [1 / 6, 5 / 6], [5 / 6, 0.5], [0.5, 0.5]],
                               atol=1e-6)


def test_soft_argmax_two_equal_bins_give_their_midpoint():
    logits = np.full((1, 16), -1e4, "float32")
    logits[0, 0 * 4 + 0] = logits[0, 3 * 4 + 2] = 5.0  # bins (0, 0) and (3, 2) of a 4x4 map
    offsets = ops.soft_argmax_offsets(tf.constant(logits), 4).numpy()
    np.testing.assert_allclose(offsets, [[(0.125 + 0.875) / 2, (0.125 + 0.625) / 2]], atol=1e-6)


def test_soft_argmax_matches_numpy_and_never_reaches_the_border(rng):
    logits = (rng.normal(size=(2, 3, 5, 16)) * 30).astype("float32")
    offsets = ops.soft_argmax_offsets(tf.constant(logits), 4).numpy()
    np.testing.assert_allclose(offsets, numpy_soft_argmax(logits.astype("float64"), 4), atol=1e-5)
    assert offsets.min() >= 0.125 - 1e-6 and offsets.max() <= 0.875 + 1e-6
    with pytest.raises(ValueError, match="expects 3x3=9 logits per heat map, got last dimension 16"):
        ops.soft_argmax_offsets(tf.constant(logits), 3)


def test_straight_through_argmax_forward_is_the_best_bin_and_backward_the_soft_argmax(rng):
    logits = tf.constant(rng.normal(size=(3, 4, 16)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(3, 4, 2)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        hard = ops.argmax_offsets_straight_through(logits, 4)
        soft = ops.soft_argmax_offsets(logits, 4)
        hard_loss, soft_loss = tf.reduce_sum(hard * upstream), tf.reduce_sum(soft * upstream)
    best = logits.numpy().argmax(-1)
    expected = np.stack([(best // 4 + 0.5) / 4, (best % 4 + 0.5) / 4], axis=-1)
    np.testing.assert_allclose(hard.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(hard_loss, logits), tape.gradient(soft_loss, logits),
                               rtol=1e-6)
    # A border bin's centre is reachable, unlike with the soft-argmax of a spread-out map.
    border = np.zeros((1, 16), "float32")
    border[0, 12] = 1.0  # bin (3, 0): y 7/8, x 1/8; the soft-argmax stays near the centre
    np.testing.assert_allclose(ops.argmax_offsets_straight_through(tf.constant(border), 4),
                               [[0.875, 0.125]], atol=1e-6)
    assert np.abs(ops.soft_argmax_offsets(tf.constant(border), 4).numpy() - 0.5).max() < 0.15


def numpy_heatmap_spread(logits, size):
    """Naive per-map loop: standard deviation of the bin rows and columns, in bins."""
    flat = logits.reshape(-1, size * size)
    spreads = []
    for row in flat:
        p = np.exp(row - row.max())
        p = (p / p.sum()).reshape(size, size)
        ys, xs = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
        spreads.append([np.sqrt((p * (ys - (p * ys).sum()) ** 2).sum()),
                        np.sqrt((p * (xs - (p * xs).sum()) ** 2).sum())])
    return np.array(spreads).reshape(logits.shape[:-1] + (2,))


def test_heatmap_spread_matches_numpy(rng):
    logits = (rng.normal(size=(2, 3, 25)) * 2).astype("float64")
    spread = ops.heatmap_spread(tf.constant(logits), 5).numpy()
    np.testing.assert_allclose(spread, numpy_heatmap_spread(logits, 5), atol=1e-4)


def test_heatmap_spread_hand_worked_maps():
    flat = np.zeros((1, 16))  # uniform over 4 bins per side: sd = sqrt((4^2 - 1) / 12)
    one_hot = np.full((1, 16), -1e4)
    one_hot[0, 5] = 0.0
    two_bins = np.full((1, 16), -1e4)  # bins (0, 1) and (2, 1): rows 0 and 2 -> sd_y 1, sd_x 0
    two_bins[0, [1, 9]] = 0.0
    spread = ops.heatmap_spread(tf.constant(np.concatenate([flat, one_hot, two_bins])), 4).numpy()
    np.testing.assert_allclose(spread, [[np.sqrt(15 / 12)] * 2, [0, 0], [1, 0]], atol=2e-3)
    with pytest.raises(ValueError, match="heatmap_spread expects 3x3=9 logits per heat map"):
        ops.heatmap_spread(tf.zeros([2, 16]), 3)


def test_heatmap_spread_penalty_matches_numpy_and_has_finite_gradients(rng):
    logits = (rng.normal(size=(4, 2, 9)) * 3).astype("float64")
    logits[0, 0] = -1e4
    logits[0, 0, 4] = 0.0  # a one-hot map, where sqrt's slope would be infinite
    expected = ((numpy_heatmap_spread(logits, 3) - 0.5) ** 2).sum(-1).mean()
    tensor = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        penalty = ops.heatmap_spread_penalty(tensor, 3, 0.5)
    np.testing.assert_allclose(float(penalty), expected, atol=2e-3)
    gradient = tape.gradient(penalty, tensor).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient[1:]).sum() > 0


def test_presence_logit_is_the_logit_of_one_minus_the_dustbin(rng):
    logits = rng.normal(size=(3, 4, 5)).astype("float64")
    dustbin = np.exp(logits[..., -1]) / np.exp(logits).sum(-1)
    expected = np.log((1 - dustbin) / dustbin)
    np.testing.assert_allclose(ops.presence_logit(tf.constant(logits)), expected, rtol=1e-10)


def numpy_perturbed_top_k(scores, k, sigma, noise):
    """Reference: (B, S, k, n) sampled hard indicators, sorted by index, and their mean."""
    batch, samples, num = noise.shape
    sigma = np.broadcast_to(np.asarray(sigma, "float64").reshape(-1), (batch,))
    hard = np.zeros((batch, samples, k, num))
    for b in range(batch):
        for s in range(samples):
            chosen = np.sort(np.argsort(-(scores[b] + sigma[b] * noise[b, s]))[:k])
            hard[b, s, np.arange(k), chosen] = 1.0
    return hard, hard.mean(axis=1)


def numpy_matched_top_k(scores, k, sigma, noise, reference):
    """Reference: (B, S, k, n) sampled hard indicators with slots matched to `reference`
    (B, k): its candidates keep their slots, the sample's other picks fill the rest in index
    order; and their mean."""
    batch, samples, num = noise.shape
    sigma = np.broadcast_to(np.asarray(sigma, "float64").reshape(-1), (batch,))
    hard = np.zeros((batch, samples, k, num))
    for b in range(batch):
        for s in range(samples):
            chosen = set(np.argsort(-(scores[b] + sigma[b] * noise[b, s]))[:k].tolist())
            newcomers = iter(sorted(chosen - set(reference[b].tolist())))
            for slot, candidate in enumerate(reference[b]):
                hard[b, s, slot, candidate if candidate in chosen else next(newcomers)] = 1.0
    return hard, hard.mean(axis=1)


def test_perturbed_top_k_matched_slots_match_numpy(rng):
    """Slots matched to the unperturbed top-k: the same selections as sorted slots, only
    arranged differently, and a near-hard noise gives the reference itself."""
    scores = rng.normal(size=(3, 12))
    noise = rng.normal(size=(3, 6, 12))
    reference = np.argsort(-scores, axis=1)[:, :4]
    indicators = ops.perturbed_top_k_indicators(tf.constant(scores), 4, 6, 0.8, noise=tf.constant(noise),
                                                reference=tf.constant(reference))
    hard, expected = numpy_matched_top_k(scores, 4, 0.8, noise, reference)
    np.testing.assert_allclose(indicators.numpy(), expected, atol=1e-12)
    sorted_hard, _ = numpy_perturbed_top_k(scores, 4, 0.8, noise)
    np.testing.assert_array_equal(hard.sum(axis=2), sorted_hard.sum(axis=2))  # same selections
    kept = np.array([[hard[b, s, np.arange(4), reference[b]] for s in range(6)] for b in range(3)])
    assert 0 < np.mean(kept == 0) < 0.5  # some samples swap candidates: the test sees matching
    near_hard = ops.perturbed_top_k_indicators(tf.constant(scores), 4, 6, 1e-9, noise=tf.constant(noise),
                                               reference=tf.constant(reference))
    np.testing.assert_array_equal(near_hard.numpy(), np.eye(12)[reference])
    for bad in (reference[:, :3], reference[0]):
        with pytest.raises(ValueError, match=r"reference of shape .* must be \(batch, k=4\)"):
            ops.perturbed_top_k_indicators(tf.constant(scores), 4, 6, 0.8, reference=bad)


def test_perturbed_top_k_matched_slots_gradient_matches_numpy(rng):
    scores = rng.normal(size=(2, 9))
    noise = rng.normal(size=(2, 5, 9))
    upstream = rng.normal(size=(2, 3, 9))
    reference = np.argsort(-scores, axis=1)[:, :3]
    scores_t = tf.constant(scores)
    with tf.GradientTape() as tape:
        tape.watch(scores_t)
        indicators = ops.perturbed_top_k_indicators(scores_t, 3, 5, 0.7, noise=tf.constant(noise),
                                                    reference=tf.constant(reference))
        loss = tf.reduce_sum(indicators * upstream)
    hard, _ = numpy_matched_top_k(scores, 3, 0.7, noise, reference)
    expected = np.einsum("bskn,bkn,bsm->bm", hard, upstream, noise) / (5 * 0.7)
    np.testing.assert_allclose(tape.gradient(loss, scores_t), expected, rtol=1e-10, atol=1e-12)


def test_perturbed_top_k_forward_is_the_mean_of_sampled_hard_top_k(rng):
    scores = rng.normal(size=(3, 10))
    noise = rng.normal(size=(3, 7, 10))
    indicators = ops.perturbed_top_k_indicators(tf.constant(scores), 4, 7, 0.5, noise=tf.constant(noise))
    _, expected = numpy_perturbed_top_k(scores, 4, 0.5, noise)
    np.testing.assert_allclose(indicators.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(indicators.numpy().sum(-1), 1.0)


def _perturbed_gradient(rng, sigma, **kwargs):
    """Random (3, 8) scores, (3, 5, 8) noise and (3, 2, 8) upstream gradient; top-2 of 5 samples.
    Returns them with d<upstream, Y>/d scores."""
    scores = rng.normal(size=(3, 8))
    noise = rng.normal(size=(3, 5, 8))
    upstream = rng.normal(size=(3, 2, 8))
    scores_t = tf.constant(scores)
    with tf.GradientTape() as tape:
        tape.watch(scores_t)
        indicators = ops.perturbed_top_k_indicators(scores_t, 2, 5, sigma, noise=tf.constant(noise),
                                                    **kwargs)
        loss = tf.reduce_sum(indicators * upstream)
    return scores, noise, upstream, tape.gradient(loss, scores_t).numpy()


@pytest.mark.parametrize("sigma", [0.3, np.array([0.2, 1.0, 3.0])])
def test_perturbed_top_k_gradient_matches_numpy_estimator(rng, sigma):
    scores, noise, upstream, gradient = _perturbed_gradient(rng, tf.constant(sigma, tf.float64))
    hard, _ = numpy_perturbed_top_k(scores, 2, sigma, noise)
    # dY/ds = E[Y_s Z_s^T] / sigma, contracted with the upstream gradient, per image.
    sigma_b = np.broadcast_to(np.asarray(sigma).reshape(-1), (3,))
    expected = np.zeros_like(scores)
    for b in range(3):
        jacobian = np.einsum("skn,sm->knm", hard[b], noise[b]) / (5 * sigma_b[b])
        expected[b] = np.einsum("kn,knm->m", upstream[b], jacobian)
    np.testing.assert_allclose(gradient, expected, rtol=1e-10, atol=1e-12)


def test_perturbed_top_k_with_small_noise_is_hard_top_k_by_index(rng):
    scores = rng.normal(size=(2, 12)).astype("float32")
    indicators = ops.perturbed_top_k_indicators(tf.constant(scores), 5, 3, 1e-6).numpy()
    for b in range(2):
        chosen = np.sort(np.argsort(-scores[b])[:5])
        np.testing.assert_array_equal(indicators[b].argmax(-1), chosen)
        np.testing.assert_allclose(indicators[b].max(-1), 1.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=3, num_samples=0, sigma=0.1), "num_samples=0 must be a positive integer"),
    (dict(k=3, num_samples=2, sigma=0.0), "sigma=0.0 must be a positive noise scale"),
    (dict(k=9, num_samples=2, sigma=0.1), "k=9 exceeds the 8 scores"),
])
def test_perturbed_top_k_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ops.perturbed_top_k_indicators(tf.zeros([1, 8]), **kwargs)


def test_perturbed_top_k_control_variate_matches_numpy_leave_one_out(rng):
    scores, noise, upstream, gradient = _perturbed_gradient(rng, 0.3, control_variate=True)
    hard, _ = numpy_perturbed_top_k(scores, 2, 0.3, noise)
    expected = np.zeros_like(scores)
    for b in range(3):
        weights = np.array([np.sum(upstream[b] * hard[b, s]) for s in range(5)])
        for s in range(5):
            baseline = (weights.sum() - weights[s]) / 4
            expected[b] += (weights[s] - baseline) * noise[b, s] / (5 * 0.3)
    np.testing.assert_allclose(gradient, expected, rtol=1e-10, atol=1e-12)


def test_perturbed_top_k_control_variate_keeps_the_mean_and_cuts_the_noise(rng):
    """Over many noise draws both estimators average to the same gradient; with small sigma the
    baseline one scatters far less around it."""
    scores = tf.constant(rng.normal(size=(1, 10)))
    upstream = tf.constant(rng.normal(size=(1, 3, 10)))

    def estimates(control_variate, draws=400):
        out = []
        for seed in range(draws):
            noise = tf.random.stateless_normal([1, 4, 10], seed=[seed, 7], dtype=tf.float64)
            with tf.GradientTape() as tape:
                tape.watch(scores)
                loss = tf.reduce_sum(upstream * ops.perturbed_top_k_indicators(
                    scores, 3, 4, 0.5, noise=noise, control_variate=control_variate))
            out.append(tape.gradient(loss, scores).numpy()[0])
        return np.array(out)

    plain, baseline = estimates(False), estimates(True)
    standard_error = np.sqrt(plain.var(axis=0) / len(plain) + baseline.var(axis=0) / len(baseline))
    assert np.all(np.abs(plain.mean(axis=0) - baseline.mean(axis=0)) < 4 * standard_error + 1e-9)
    assert baseline.var(axis=0).sum() < 0.5 * plain.var(axis=0).sum()


def _normal_cdf(x):
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(x) / math.sqrt(2.0)))


def numpy_gaussian_top_k_marginals(scores, k, sigma):
    """Reference: Phi((s - tau) / sigma) with tau from a float64 bisection on sum = k, per row;
    also returns tau."""
    sigma = np.broadcast_to(np.asarray(sigma, "float64").reshape(-1), (len(scores),))
    marginals, taus = [], []
    for row, scale in zip(scores, sigma):
        low, high = row.min() - 40 * scale, row.max() + 40 * scale
        for _ in range(200):
            middle = (low + high) / 2
            low, high = (middle, high) if _normal_cdf((row - middle) / scale).sum() > k else (low, middle)
        taus.append((low + high) / 2)
        marginals.append(_normal_cdf((row - taus[-1]) / scale))
    return np.array(marginals), np.array(taus)


@pytest.mark.parametrize("sigma", [0.3, np.array([0.05, 0.4, 2.0])])
def test_gaussian_top_k_marginals_match_numpy(rng, sigma):
    scores = rng.normal(size=(3, 20))
    marginals = ops.gaussian_top_k_marginals(tf.constant(scores), 6, tf.constant(sigma, tf.float64)).numpy()
    expected, _ = numpy_gaussian_top_k_marginals(scores, 6, sigma)
    np.testing.assert_allclose(marginals, expected, atol=1e-9)
    np.testing.assert_allclose(marginals.sum(axis=1), 6.0, atol=1e-9)


def test_gaussian_top_k_marginals_hand_cases():
    # Symmetric pair, k = 1: tau = 0, so m = (Phi(a / sigma), Phi(-a / sigma)).
    marginals = ops.gaussian_top_k_marginals(tf.constant([[0.3, -0.3]], tf.float64), 1, 0.2)
    np.testing.assert_allclose(marginals.numpy(), [[_normal_cdf(1.5), _normal_cdf(-1.5)]], atol=1e-12)
    # Four equal scores, k = 2: each is selected half the time.
    marginals = ops.gaussian_top_k_marginals(tf.ones([1, 4], tf.float64), 2, 0.7)
    np.testing.assert_allclose(marginals.numpy(), 0.5, atol=1e-12)


def test_gaussian_top_k_marginals_gradient_is_the_implicit_function_gradient(rng):
    """d m_i / d s_j = phi_i / sigma (delta_ij - phi_j / sum phi), by hand, and the same by
    central differences of the forward pass (which solves tau again each time)."""
    scores, upstream, sigma = rng.normal(size=(2, 9)), rng.normal(size=(2, 9)), 0.4
    scores_t = tf.constant(scores)
    with tf.GradientTape() as tape:
        tape.watch(scores_t)
        loss = tf.reduce_sum(upstream * ops.gaussian_top_k_marginals(scores_t, 3, sigma))
    gradient = tape.gradient(loss, scores_t).numpy()

    _, taus = numpy_gaussian_top_k_marginals(scores, 3, sigma)
    expected = np.zeros_like(scores)
    for b in range(2):
        density = np.exp(-0.5 * ((scores[b] - taus[b]) / sigma) ** 2) / math.sqrt(2 * math.pi)
        jacobian = density[:, None] / sigma * (np.eye(9) - density[None, :] / density.sum())
        expected[b] = upstream[b] @ jacobian
    np.testing.assert_allclose(gradient, expected, rtol=1e-7, atol=1e-10)

    step, numerical = 1e-6, np.zeros_like(scores)
    for index in np.ndindex(*scores.shape):
        shift = np.zeros_like(scores)
        shift[index] = step
        plus, minus = (np.sum(upstream * ops.gaussian_top_k_marginals(tf.constant(scores + d), 3, sigma))
                       for d in (shift, -shift))
        numerical[index] = (plus - minus) / (2 * step)
    np.testing.assert_allclose(gradient, numerical, rtol=1e-5, atol=1e-7)


def test_gaussian_top_k_marginals_approximate_sampled_inclusion_probabilities(rng):
    """The threshold approximation against each location's frequency in the top k of 5,000
    noisy copies (n = 144, k = 32, as over the built-in set's 12 x 12 map)."""
    scores = rng.normal(size=(1, 144))
    sigma = 0.5 * scores.std()
    chosen = np.argsort(-(scores + sigma * rng.normal(size=(5000, 144))), axis=1)[:, :32]
    frequency = np.bincount(chosen.ravel(), minlength=144) / 5000
    marginals = ops.gaussian_top_k_marginals(tf.constant(scores), 32, sigma).numpy()[0]
    assert np.abs(marginals - frequency).max() < 0.04
    assert np.abs(marginals - frequency).mean() < 0.005


def test_gaussian_top_k_marginals_when_every_score_is_selected(rng):
    scores = tf.constant(rng.normal(size=(2, 5)))
    with tf.GradientTape() as tape:
        tape.watch(scores)
        marginals = ops.gaussian_top_k_marginals(scores, 5, 0.1)
    np.testing.assert_allclose(marginals.numpy(), 1.0)
    gradient = tape.gradient(marginals, scores).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() < 1e-12


@pytest.mark.parametrize("k, sigma, message", [
    (0, 0.1, r"k=0 must be an integer in \[1, 8\]"),
    (9, 0.1, r"k=9 must be an integer in \[1, 8\]"),
    (3, 0.0, "sigma=0.0 must be a positive noise scale"),
])
def test_gaussian_top_k_marginals_errors(k, sigma, message):
    with pytest.raises(ValueError, match=message):
        ops.gaussian_top_k_marginals(tf.zeros([1, 8]), k, sigma)


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


def test_standardize_over_cells_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"\(B, L, M, h, 2\).*\(2, 3, 2\)"):
        ops.standardize_over_cells(tf.zeros([2, 3, 2]))


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


def test_wasserstein_to_uniform_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"\(n, d\).*\(2, 3, 2\)"):
        ops.wasserstein_to_uniform(tf.zeros([2, 3, 2]))
