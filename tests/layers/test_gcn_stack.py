"""GCNStack (paper §7) against NumPy, in batch and mixed mode, plain and residual; the GNN
registry."""
import numpy as np
import pytest

from keypoint_gnn import ops, registry
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.config import GraphConfig
from keypoint_gnn.layers import DiffPoolUnpool, GCNStack


def numpy_gcn_stack(stack, nodes, adjacency):
    """The stack's forward pass with its own weights: X <- relu(Â X W + b), each update added to
    its input and the input first projected (no bias) when residual. Â is (B, N, N) or (N, N)."""
    x = nodes @ stack.projection.kernel.numpy() if stack.residual else nodes
    for conv in stack.convs:
        update = np.maximum(adjacency @ x @ conv.kernel.numpy() + conv.bias.numpy(), 0)
        x = x + update if stack.residual else update
    return x


def _normalized_keypoint_graph(rng):
    """Batch mode: a (2, 16, 16) GCN-normalised graph over random keypoints."""
    positions = rng.integers(0, 8, size=(2, 16, 2)).astype("float32")
    return ops.gcn_normalize(ops.inverse_distance_adjacency(positions))


def _normalized_grid_graph(rng):
    """Mixed mode: one sparse (16, 16) graph over a 4x4 grid, shared by the batch."""
    return ops.gcn_normalize_sparse(ops.grid_knn_adjacency(4, 4, 8))


@pytest.mark.parametrize("graph", [_normalized_keypoint_graph, _normalized_grid_graph],
                         ids=["batch-dense", "mixed-sparse"])
@pytest.mark.parametrize("residual, num_layers", [(False, 2), (True, 3)])
def test_gcn_stack_matches_numpy(rng, graph, residual, num_layers):
    nodes = rng.normal(size=(2, 16, 3)).astype("float32")
    adjacency = graph(rng)
    stack = GCNStack(units=4, num_layers=num_layers, residual=residual)
    output = stack([nodes, adjacency]).numpy()
    dense = tf.sparse.to_dense(adjacency) if isinstance(adjacency, tf.SparseTensor) else adjacency
    assert output.shape == (2, 16, 4)
    np.testing.assert_allclose(output, numpy_gcn_stack(stack, nodes, dense.numpy()), rtol=1e-4, atol=1e-5)


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


@pytest.mark.parametrize("kwargs, message", [
    ({"units": 8, "num_layers": 0}, "num_layers=0 must be a positive integer"),
    ({"units": 0, "num_layers": 2}, "units=0 must be a positive integer"),
])
def test_gcn_stack_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GCNStack(**kwargs)


def test_gcn_stack_from_section_and_config_round_trip():
    stack = GCNStack.from_section(GraphConfig(layers=3, units=8, residual=False))
    assert (stack.units, stack.num_layers, stack.residual, len(stack.convs)) == (8, 3, False, 3)
    assert stack.projection is None
    clone = GCNStack.from_config(stack.get_config())
    assert clone.get_config() == stack.get_config()
    assert keras.saving.get_registered_object("keypoint_gnn>GCNStack") is GCNStack


@pytest.mark.parametrize("kind, cls", [("gcn", GCNStack), ("diffpool", DiffPoolUnpool), ("none", None)])
def test_registry_gnn_class(kind, cls):
    assert registry.gnn_class(kind) is cls


def test_only_the_gcn_takes_a_normalized_adjacency():
    assert registry.NORMALIZED_ADJACENCY_GNNS == ("gcn",)
    assert set(registry.NORMALIZED_ADJACENCY_GNNS) <= set(registry.GNNS)
