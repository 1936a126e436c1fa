"""GridToGraph: every feature-map location a node, with the dense inverse-distance graph or
its k-nearest-neighbour restriction, against NumPy."""
import numpy as np
import pytest

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers import GridToGraph
from tests.ops import authors_adjacency, numpy_gcn_normalize


@pytest.mark.parametrize("normalize", [False, True])
def test_grid_to_graph_dense_matches_numpy(rng, normalize):
    feature_map = rng.normal(size=(2, 3, 4, 5)).astype("float32")
    nodes, adjacency = GridToGraph(normalize=normalize)(feature_map)
    np.testing.assert_allclose(nodes, feature_map.reshape(2, 12, 5))
    cells = np.array([[y, x] for y in range(3) for x in range(4)], "float32")
    expected = authors_adjacency(cells)
    np.testing.assert_allclose(adjacency, numpy_gcn_normalize(expected) if normalize else expected,
                               rtol=1e-5)


@pytest.mark.parametrize("normalize", [False, True])
def test_grid_to_graph_sparse_is_the_dense_graph_restricted_to_neighbours(rng, normalize):
    feature_map = rng.normal(size=(1, 6, 6, 2)).astype("float32")
    _, dense = GridToGraph(normalize=False)(feature_map)
    _, sparse = GridToGraph(neighbours=8, normalize=normalize)(feature_map)
    assert isinstance(sparse, tf.SparseTensor)
    sparse = tf.sparse.to_dense(sparse).numpy()
    cells = np.array([[y, x] for y in range(6) for x in range(6)])
    chebyshev = np.abs(cells[:, None] - cells[None]).max(-1)
    expected = np.where(chebyshev <= 1, dense.numpy(), 0)
    np.testing.assert_allclose(sparse, numpy_gcn_normalize(expected) if normalize else expected,
                               rtol=1e-5)
    assert int(np.count_nonzero(sparse)) == 36 + 2 * (2 * 6 * 5) + 2 * 2 * 25  # self + 4-nbr + diagonals


@pytest.mark.parametrize("neighbours", [0, -1, 2.0])
def test_grid_to_graph_rejects_bad_neighbours(neighbours):
    with pytest.raises(ValueError, match=f"neighbours={neighbours!r} must be None"):
        GridToGraph(neighbours=neighbours)


def test_grid_to_graph_needs_a_known_map_size():
    with pytest.raises(ValueError, match="GridToGraph expects a feature map"):
        GridToGraph().build((None, None, 4, 3))


def test_grid_to_graph_config_round_trip():
    layer = GridToGraph(neighbours=4, normalize=False)
    clone = GridToGraph.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.neighbours, clone.normalize) == (4, False)
    assert keras.saving.get_registered_object("keypoint_gnn>GridToGraph") is GridToGraph
