"""GATStack (beyond the paper) against NumPy, in batch and mixed mode, plain and residual;
its GAT layer against Spektral's; unknown batch size, gradients, .keras and SavedModel round
trips; the GNN registry."""
import numpy as np
import pytest

from keypoint_gnn import gnn, ops, registry
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.config import GraphConfig
from keypoint_gnn.layers import GATStack


def numpy_gat_layer(conv, x, adjacency):
    """One averaged-heads GAT layer with the conv's weights: attention logits
    LeakyReLU_0.2(a_self . W x_i + a_neigh . W x_j) over the j with A_ij != 0 or j = i,
    softmax over j, heads averaged, bias, relu."""
    kernel = conv.kernel.numpy()  # (F, H, C)
    attn_self, attn_neigh = conv.attn_kernel_self.numpy(), conv.attn_kernel_neighs.numpy()
    edges = (adjacency != 0) | np.eye(adjacency.shape[-1], dtype=bool)
    heads = []
    for h in range(kernel.shape[1]):
        z = x @ kernel[:, h]  # (B, N, C)
        logits = z @ attn_self[:, h] + np.swapaxes(z @ attn_neigh[:, h], -1, -2)  # (B, N, N)
        logits = np.where(logits > 0, logits, 0.2 * logits)
        logits = np.where(edges, logits, -np.inf)
        alpha = np.exp(logits - logits.max(-1, keepdims=True))
        alpha /= alpha.sum(-1, keepdims=True)
        heads.append(alpha @ z)
    return np.maximum(np.mean(heads, axis=0) + conv.bias.numpy(), 0)


def numpy_gat_stack(stack, nodes, adjacency):
    x = nodes @ stack.projection.kernel.numpy() if stack.residual else nodes
    for conv in stack.convs:
        update = numpy_gat_layer(conv, x, adjacency)
        x = x + update if stack.residual else update
    return x


def _keypoint_graph(rng):
    """Batch mode: CNNToGraph's (2, 16, 16) graph over random keypoints, nonzero everywhere."""
    return ops.inverse_distance_adjacency(rng.integers(0, 8, size=(2, 16, 2)).astype("float32"))


def _grid_graph(rng):
    """Mixed mode: one sparse (16, 16) graph over a 4x4 grid (8 neighbours), shared by the
    batch: most pairs are not edges."""
    return ops.grid_knn_adjacency(4, 4, 8)


@pytest.mark.parametrize("graph", [_keypoint_graph, _grid_graph], ids=["batch-dense", "mixed-sparse"])
@pytest.mark.parametrize("residual, num_layers, heads", [(False, 2, 1), (True, 2, 3)])
def test_gat_stack_matches_numpy(rng, graph, residual, num_layers, heads):
    nodes = rng.normal(size=(2, 16, 3)).astype("float32")
    adjacency = graph(rng)
    stack = GATStack(units=4, num_layers=num_layers, attn_heads=heads, residual=residual)
    output = stack([nodes, adjacency]).numpy()
    dense = tf.sparse.to_dense(adjacency) if isinstance(adjacency, tf.SparseTensor) else adjacency
    assert output.shape == (2, 16, 4)
    np.testing.assert_allclose(output, numpy_gat_stack(stack, nodes, dense.numpy()),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("graph", [_keypoint_graph, _grid_graph], ids=["batch-dense", "mixed-sparse"])
def test_matmul_gat_conv_equals_spektrals_dense_path(rng, graph):
    """With more than one head (where Spektral's einsums do not crash oneDNN) the rewritten
    dense path gives Spektral's output and attention coefficients."""
    nodes = tf.constant(rng.normal(size=(2, 16, 3)).astype("float32"))
    adjacency = graph(rng)
    adjacency = tf.sparse.to_dense(adjacency) if isinstance(adjacency, tf.SparseTensor) else adjacency
    conv = gnn.gat_conv(4, 3, "relu", "gat", None)
    conv([nodes, adjacency])
    for ours, spektrals in zip(conv._call_dense(nodes, adjacency),
                               gnn.GATConv._call_dense(conv, nodes, adjacency)):
        assert ours.shape == spektrals.shape
        np.testing.assert_allclose(ours.numpy(), spektrals.numpy(), rtol=1e-5, atol=1e-6)


def test_attention_kernels_start_apart():
    """Spektral's shared unseeded initializer would give both attention kernels one value."""
    conv = gnn.gat_conv(4, 3, "relu", "gat", None)
    conv([tf.ones([2, 5, 3]), tf.ones([2, 5, 5])])
    assert not np.allclose(conv.attn_kernel_self.numpy(), conv.attn_kernel_neighs.numpy())


def test_keypoint_graph_lets_every_keypoint_attend_to_all(rng):
    """CNNToGraph's adjacency has no zero entry, so no pair is masked: the output equals that
    of a graph with every edge, whatever the weights."""
    nodes = rng.normal(size=(2, 16, 3)).astype("float32")
    adjacency = _keypoint_graph(rng)
    assert np.all(adjacency.numpy() > 0)
    stack = GATStack(units=4, num_layers=2, attn_heads=2)
    np.testing.assert_allclose(stack([nodes, adjacency]).numpy(),
                               stack([nodes, tf.ones_like(adjacency)]).numpy(), rtol=1e-6)


def _graph_model(stack, num_nodes=6, channels=3):
    nodes = keras.Input((num_nodes, channels), name="nodes")
    adjacency = keras.Input((num_nodes, num_nodes), name="adjacency")
    return keras.Model([nodes, adjacency], stack([nodes, adjacency]))


def _graph_batch(rng, batch=3, num_nodes=6, channels=3):
    nodes = rng.normal(size=(batch, num_nodes, channels)).astype("float32")
    positions = rng.integers(0, 8, size=(batch, num_nodes, 2)).astype("float32")
    return nodes, ops.inverse_distance_adjacency(positions).numpy()


def test_unknown_batch_size_and_gradients_reach_every_weight(rng):
    model = _graph_model(GATStack(units=5, num_layers=2, attn_heads=2, residual=True))
    assert model.output_shape == (None, 6, 5)
    nodes, adjacency = _graph_batch(rng)
    target_weights = tf.constant(rng.normal(size=(3, 6, 5)).astype("float32"))
    with tf.GradientTape() as tape:
        output = model([nodes, adjacency])
        loss = tf.reduce_sum(output * target_weights)
    assert output.shape == (3, 6, 5)
    variables = model.trainable_variables
    # projection; per layer: kernel, both attention kernels, bias
    assert len(variables) == 1 + 2 * 4
    for variable, gradient in zip(variables, tape.gradient(loss, variables)):
        assert gradient is not None and np.abs(gradient.numpy()).sum() > 0, variable.name


def test_keras_and_saved_model_round_trips_are_identical(tmp_path, rng):
    model = _graph_model(GATStack(units=5, num_layers=2, attn_heads=2, residual=True))
    nodes, adjacency = _graph_batch(rng)
    reference = model.predict([nodes, adjacency], batch_size=2, verbose=0)  # batches of 2 and 1

    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(restored.layers[-1], GATStack)
    np.testing.assert_allclose(restored.predict([nodes, adjacency], verbose=0), reference,
                               rtol=1e-5, atol=1e-6)

    model.save(tmp_path / "savedmodel", save_format="tf")
    serving = tf.saved_model.load(str(tmp_path / "savedmodel")).signatures["serving_default"]
    (served,) = serving(nodes=tf.constant(nodes), adjacency=tf.constant(adjacency)).values()
    np.testing.assert_allclose(served.numpy(), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"units": 8, "num_layers": 2, "attn_heads": 0}, "attn_heads=0 must be a positive integer"),
    ({"units": 8, "num_layers": 0}, "num_layers=0 must be a positive integer"),
    ({"units": 0, "num_layers": 2}, "units=0 must be a positive integer"),
])
def test_gat_stack_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GATStack(**kwargs)


def test_gat_stack_from_section_and_config_round_trip():
    stack = GATStack.from_section(GraphConfig(kind="gat", layers=3, units=8, attn_heads=2,
                                              residual=False))
    assert (stack.units, stack.num_layers, stack.attn_heads, stack.residual) == (8, 3, 2, False)
    assert len(stack.convs) == 3 and stack.projection is None
    assert all(conv.attn_heads == 2 and not conv.concat_heads and conv.dropout_rate == 0
               for conv in stack.convs)
    clone = GATStack.from_config(stack.get_config())
    assert clone.get_config() == stack.get_config()
    assert keras.saving.get_registered_object("keypoint_gnn>GATStack") is GATStack


def test_registry_gat_takes_the_raw_adjacency():
    assert registry.gnn_class("gat") is GATStack
    assert "gat" not in registry.NORMALIZED_ADJACENCY_GNNS
    assert GraphConfig().attn_heads == 4
