"""keypoint_gnn.ops.sampling: features between maps and nodes (gather, bilinear sample,
scatter-mean, bilinear splat) against NumPy loops."""
import numpy as np

from keypoint_gnn import ops
from keypoint_gnn._backend import tf
from tests.ops import naive_bilinear


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
