"""CNN<->graph interconnect layers against NumPy references."""
import numpy as np
import pytest

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.interconnects import CNNToGraph, GraphToCNN, GridToGraph
from tests.test_ops import authors_adjacency, naive_bilinear


def numpy_gcn_normalize(adjacency):
    degree = adjacency.sum(-1)
    return adjacency / np.sqrt(degree[:, None] * degree[None, :])


@pytest.mark.parametrize("normalize", [False, True])
def test_cnn_to_graph_gather(rng, normalize):
    feature_map = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    positions = rng.integers(0, 5, size=(2, 4, 2)).astype("float32")
    scores = rng.uniform(size=(2, 4)).astype("float32")
    nodes, adjacency = CNNToGraph(normalize=normalize)([feature_map, positions, scores])
    for b in range(2):
        y, x = positions[b].astype(int).T
        np.testing.assert_allclose(nodes[b], feature_map[b, y, x] * scores[b][:, None], rtol=1e-6)
        expected = authors_adjacency(positions[b])
        if normalize:
            expected = numpy_gcn_normalize(expected)
        np.testing.assert_allclose(adjacency[b], expected, rtol=1e-5)


def test_cnn_to_graph_position_features_under_mixed_precision(rng):
    """Under a mixed policy the layer casts its inputs to bfloat16 (what `--mixed-precision`
    gives on a CPU); the position features must still be the positions over the map's extent."""
    feature_map = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    positions = rng.integers(0, 5, size=(2, 4, 2)).astype("float32")
    scores = rng.uniform(size=(2, 4)).astype("float32")
    layer = CNNToGraph(position_features=True, dtype="mixed_bfloat16")
    nodes, adjacency = layer([feature_map, positions, scores])
    assert nodes.dtype == tf.bfloat16 and adjacency.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(nodes[..., 3:], tf.float32), positions / 4, atol=1e-2)


def test_cnn_to_graph_bilinear(rng):
    feature_map = rng.normal(size=(1, 5, 5, 2)).astype("float32")
    positions = rng.uniform(0, 4, size=(1, 3, 2)).astype("float32")
    scores = np.ones((1, 3), "float32")
    nodes, _ = CNNToGraph(sampling="bilinear")([feature_map, positions, scores])
    for n in range(3):
        np.testing.assert_allclose(nodes[0, n], naive_bilinear(feature_map[0], *positions[0, n]), rtol=1e-5)


def test_cnn_to_graph_scores_carry_gradient(rng):
    feature_map = tf.constant(rng.normal(size=(1, 4, 4, 2)).astype("float32"))
    positions = tf.constant([[[0.0, 1.0], [3.0, 2.0]]])
    scores = tf.Variable([[0.5, 2.0]])
    with tf.GradientTape() as tape:
        nodes, _ = CNNToGraph()([feature_map, positions, scores])
        loss = tf.reduce_sum(nodes)
    expected = [feature_map[0, 0, 1].numpy().sum(), feature_map[0, 3, 2].numpy().sum()]
    np.testing.assert_allclose(tape.gradient(loss, scores)[0], expected, rtol=1e-6)


def test_cnn_to_graph_node_weights_replace_gather_and_scores(rng):
    """With a fourth input the nodes are W F (scores are already in W); positions still give
    the edges and the position features."""
    feature_map = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    positions = rng.integers(0, 4, size=(2, 3, 2)).astype("float32")
    scores = rng.uniform(size=(2, 3)).astype("float32")
    node_weights = rng.normal(size=(2, 3, 16)).astype("float32")
    layer = CNNToGraph(position_features=True)
    nodes, adjacency = layer([feature_map, positions, scores, node_weights])
    expected = np.einsum("bkl,blc->bkc", node_weights, feature_map.reshape(2, 16, 3))
    np.testing.assert_allclose(nodes[..., :3], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nodes[..., 3:], positions / 3.0, rtol=1e-6)
    _, plain_adjacency = layer([feature_map, positions, scores])
    np.testing.assert_array_equal(adjacency, plain_adjacency)


def test_graph_to_cnn_location_weights_write_each_node_where_weighted(rng):
    """With a third input the nodes are written by weight (ops.weighted_scatter); one-hot rows
    at the positions give the plain scatter."""
    nodes = rng.normal(size=(1, 2, 3)).astype("float32")
    positions = np.array([[[0, 1], [1, 0]]], "float32")
    layer = GraphToCNN(2, 2)
    weights = np.zeros((1, 2, 4), "float32")
    weights[0, 0, 1] = weights[0, 1, 2] = 1.0
    np.testing.assert_array_equal(layer([nodes, positions, weights]), layer([nodes, positions]))
    weights[0, 0, 3] = 0.5  # node 0 also half at (1, 1)
    grid = layer([nodes, positions, weights]).numpy()
    np.testing.assert_allclose(grid[0, 1, 1], 0.5 * nodes[0, 0], rtol=1e-6)


def test_graph_to_cnn_averages_collisions():
    nodes = np.array([[[2.0], [4.0], [7.0]]], "float32")
    positions = np.array([[[1, 1], [1, 1], [0, 2]]], "float32")
    grid = GraphToCNN(2, 3)([nodes, positions]).numpy()
    expected = np.zeros((1, 2, 3, 1))
    expected[0, 1, 1, 0] = 3.0
    expected[0, 0, 2, 0] = 7.0
    np.testing.assert_allclose(grid, expected)


def test_graph_to_cnn_bilinear_is_differentiable_in_positions():
    nodes = tf.constant([[[1.0, 2.0]]])
    positions = tf.Variable([[[1.25, 0.5]]])
    with tf.GradientTape() as tape:
        grid = GraphToCNN(3, 3, sampling="bilinear")([nodes, positions])
        loss = tf.reduce_sum(grid * tf.reshape(tf.range(9, dtype=tf.float32), [1, 3, 3, 1]))
    assert np.all(np.abs(tape.gradient(loss, positions).numpy()) > 0)


def test_grid_to_graph_dense_matches_numpy(rng):
    feature_map = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    nodes, adjacency = GridToGraph(normalize=False)(feature_map)
    np.testing.assert_allclose(nodes, feature_map.reshape(2, 12, 5))
    cells = np.array([[y, x] for y in range(3) for x in range(4)], "float32")
    np.testing.assert_allclose(adjacency, authors_adjacency(cells), rtol=1e-5)


def test_grid_to_graph_sparse_is_the_dense_graph_restricted_to_neighbours(rng):
    feature_map = rng.normal(size=(1, 6, 6, 2)).astype("float32")
    _, dense = GridToGraph(normalize=False)(feature_map)
    _, sparse = GridToGraph(neighbours=8, normalize=False)(feature_map)
    assert isinstance(sparse, tf.SparseTensor)
    sparse = tf.sparse.to_dense(sparse).numpy()
    cells = np.array([[y, x] for y in range(6) for x in range(6)])
    chebyshev = np.abs(cells[:, None] - cells[None]).max(-1)
    np.testing.assert_allclose(sparse, np.where(chebyshev <= 1, dense.numpy(), 0), rtol=1e-5)
    assert int(np.count_nonzero(sparse)) == 36 + 2 * (2 * 6 * 5) + 2 * 2 * 25  # self + 4-nbr + diagonals


def test_interconnect_argument_errors():
    with pytest.raises(ValueError, match="sampling='nearest' is not one of"):
        CNNToGraph(sampling="nearest")
    with pytest.raises(ValueError, match="height=0 must be a positive integer"):
        GraphToCNN(0, 4)
    with pytest.raises(ValueError, match="neighbours=0 must be None"):
        GridToGraph(neighbours=0)


@pytest.mark.parametrize("layer", [CNNToGraph(sampling="bilinear", normalize=False),
                                   GraphToCNN(4, 5, sampling="bilinear"), GridToGraph(neighbours=4)])
def test_interconnect_config_round_trip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert keras.saving.get_registered_object(f"keypoint_gnn>{type(layer).__name__}") is type(layer)
