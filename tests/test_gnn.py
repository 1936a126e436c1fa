"""Graph networks: GCN against NumPy, DiffPool unpooling, errors."""
import numpy as np
import pytest

from keypoint_gnn import ops
from keypoint_gnn._backend import tf
from keypoint_gnn.gnn import DiffPoolUnpool, GCNStack, build_gnn


def test_gcn_stack_matches_numpy(rng):
    nodes = rng.normal(size=(2, 5, 3)).astype("float32")
    positions = rng.integers(0, 8, size=(2, 5, 2)).astype("float32")
    adjacency = ops.gcn_normalize(ops.inverse_distance_adjacency(positions)).numpy()
    stack = GCNStack(units=4, num_layers=2)
    output = stack([nodes, adjacency]).numpy()
    expected = nodes
    for conv in stack.convs:
        expected = np.maximum(adjacency @ expected @ conv.kernel.numpy() + conv.bias.numpy(), 0)
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-5)


def test_gcn_stack_mixed_mode_with_sparse_adjacency(rng):
    nodes = rng.normal(size=(2, 16, 3)).astype("float32")
    sparse = ops.gcn_normalize_sparse(ops.grid_knn_adjacency(4, 4, 8))
    stack = GCNStack(units=4, num_layers=1)
    output = stack([nodes, sparse]).numpy()
    dense = tf.sparse.to_dense(sparse).numpy()
    conv = stack.convs[0]
    expected = np.maximum(dense @ nodes @ conv.kernel.numpy() + conv.bias.numpy(), 0)
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-5)


def test_diffpool_unpool_returns_selection_times_coarse_nodes(rng):
    nodes = rng.normal(size=(2, 6, 3)).astype("float32")
    adjacency = ops.inverse_distance_adjacency(rng.integers(0, 8, size=(2, 6, 2)).astype("float32"))
    block = DiffPoolUnpool(units=4, clusters=3, num_layers=1)
    output = block([nodes, adjacency]).numpy()
    coarse, _, selection = block.pool([nodes, adjacency])
    np.testing.assert_allclose(output, np.einsum("bnk,bkc->bnc", selection, coarse), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(selection.numpy().sum(-1), 1.0, rtol=1e-5)  # soft assignment
    assert output.shape == (2, 6, 4)
    assert len(block.losses) == 2  # link prediction and entropy


def test_diffpool_rejects_more_clusters_than_nodes():
    with pytest.raises(ValueError, match="clusters=9 exceeds the 6 nodes"):
        DiffPoolUnpool(units=4, clusters=9)([tf.zeros([1, 6, 3]), tf.zeros([1, 6, 6])])


def test_build_gnn_names():
    assert isinstance(build_gnn("gcn", 8, 4), GCNStack)
    assert isinstance(build_gnn("diffpool", 8, 2), DiffPoolUnpool)
    assert build_gnn("none", 8, 4) is None
    with pytest.raises(ValueError, match="gnn='gat' is not one of 'gcn', 'diffpool', 'none'"):
        build_gnn("gat", 8, 4)


def test_gcn_stack_rejects_zero_layers():
    with pytest.raises(ValueError, match="num_layers=0 must be a positive integer"):
        GCNStack(units=8, num_layers=0)


def test_residual_gcn_stack_matches_numpy(rng):
    nodes = rng.normal(size=(2, 5, 3)).astype("float32")
    adjacency = ops.gcn_normalize(ops.inverse_distance_adjacency(
        rng.integers(0, 8, size=(2, 5, 2)).astype("float32"))).numpy()
    stack = GCNStack(units=4, num_layers=3, residual=True)
    output = stack([nodes, adjacency]).numpy()
    expected = nodes @ stack.projection.kernel.numpy()
    for conv in stack.convs:
        expected = expected + np.maximum(adjacency @ expected @ conv.kernel.numpy() + conv.bias.numpy(), 0)
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-5)


def test_residual_keeps_nodes_apart_on_a_dense_graph(rng):
    """Over-smoothing: a plain deep GCN on the dense keypoint graph makes all nodes alike."""
    nodes = rng.normal(size=(1, 32, 8)).astype("float32")
    adjacency = ops.gcn_normalize(ops.inverse_distance_adjacency(
        rng.integers(0, 12, size=(1, 32, 2)).astype("float32")))

    def spread(residual):
        tf.keras.utils.set_random_seed(1)
        output = GCNStack(units=8, num_layers=6, residual=residual, activation=None)([nodes, adjacency])
        return float(tf.reduce_mean(tf.math.reduce_std(output, axis=1)) / tf.reduce_mean(tf.abs(output)))

    assert spread(True) > 2 * spread(False)


def test_diffpool_residual_adds_projected_input(rng):
    nodes = rng.normal(size=(2, 6, 3)).astype("float32")
    adjacency = ops.inverse_distance_adjacency(rng.integers(0, 8, size=(2, 6, 2)).astype("float32"))
    block = DiffPoolUnpool(units=4, clusters=3, num_layers=1, residual=True)
    output = block([nodes, adjacency]).numpy()
    coarse, _, selection = block.pool([nodes, adjacency])
    skip = nodes @ block.skip.kernel.numpy() + block.skip.bias.numpy()
    np.testing.assert_allclose(output, np.einsum("bnk,bkc->bnc", selection, coarse) + skip, rtol=1e-4, atol=1e-5)
