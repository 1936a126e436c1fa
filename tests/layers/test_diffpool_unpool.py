"""DiffPoolUnpool (paper §7): pooled to k clusters, convolved, unpooled back to every node,
checked against the selection matrix and coarse nodes it computes; its auxiliary losses against
NumPy, scaled by `loss_weight`."""
import numpy as np
import pytest

from keypoint_gnn import gnn, ops
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.config import GraphConfig
from keypoint_gnn.layers import DiffPoolUnpool


@pytest.mark.parametrize("residual", [False, True])
def test_diffpool_unpool_is_selection_times_coarse_nodes(rng, residual):
    """X' = S X_c (+ the input's linear projection when residual), S a soft assignment; with
    one layer X_c is DiffPool's own output."""
    nodes = rng.normal(size=(2, 6, 3)).astype("float32")
    adjacency = ops.inverse_distance_adjacency(rng.integers(0, 8, size=(2, 6, 2)).astype("float32"))
    block = DiffPoolUnpool(units=4, clusters=3, num_layers=1, residual=residual)
    output = block([nodes, adjacency]).numpy()
    coarse, _, selection = block.pool([nodes, adjacency])
    expected = np.einsum("bnk,bkc->bnc", selection, coarse)
    if residual:
        expected = expected + nodes @ block.skip.kernel.numpy() + block.skip.bias.numpy()
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(selection.numpy().sum(-1), 1.0, rtol=1e-5)  # soft assignment
    assert output.shape == (2, 6, 4)
    assert len(block.losses) == 2  # link prediction and entropy


def numpy_diffpool_losses(adjacency, selection):
    """Spektral's DiffPool losses from S (B, N, k): the batch means of the link prediction loss
    ||A - S S^T||_F (the raw adjacency, no self loops added, not divided by N^2) and of the
    entropy mean_i -sum_k S_ik log(S_ik + 1e-7)."""
    link = np.sqrt(((adjacency - selection @ np.swapaxes(selection, 1, 2)) ** 2).sum(axis=(1, 2)))
    entropy = -(selection * np.log(selection + 1e-7)).sum(-1).mean(-1)
    return np.array([link.mean(), entropy.mean()])


def _graph(rng):
    nodes = rng.normal(size=(2, 6, 3)).astype("float32")
    adjacency = ops.inverse_distance_adjacency(rng.integers(0, 8, size=(2, 6, 2)).astype("float32"))
    return nodes, adjacency


def test_unweighted_losses_are_spektrals_link_prediction_and_entropy(rng):
    nodes, adjacency = _graph(rng)
    block = DiffPoolUnpool(units=4, clusters=3, num_layers=2)
    block([nodes, adjacency])
    losses = np.array([float(loss) for loss in block.losses])
    _, _, selection = block.pool([nodes, adjacency])
    expected = numpy_diffpool_losses(adjacency.numpy(), selection.numpy())
    assert np.all(expected > 0.1)  # both terms present, so the scaling below means something
    np.testing.assert_allclose(losses, expected, rtol=1e-5)


@pytest.mark.parametrize("loss_weight", [0.1, 0.0, 2.5])
def test_loss_weight_scales_both_losses(rng, loss_weight):
    """Same weights, same graph: each loss is loss_weight times the unweighted one, and the
    layer's output does not change."""
    nodes, adjacency = _graph(rng)
    unweighted = DiffPoolUnpool(units=4, clusters=3, num_layers=2)
    reference_output = unweighted([nodes, adjacency]).numpy()
    reference = np.array([float(loss) for loss in unweighted.losses])
    weighted = DiffPoolUnpool(units=4, clusters=3, num_layers=2, loss_weight=loss_weight)
    weighted([nodes, adjacency])
    weighted.set_weights(unweighted.get_weights())
    output = weighted([nodes, adjacency]).numpy()
    losses = np.array([float(loss) for loss in weighted.losses])
    assert len(losses) == 2 and weighted.pool.loss_weight == loss_weight
    np.testing.assert_allclose(losses, loss_weight * reference, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(output, reference_output)


def test_weighted_diffpool_config_round_trip():
    """Spektral's DiffPool config lacks the activation; the weighted one keeps it and the
    weight, and has no per-instance `call` left for SavedModel export to trip on."""
    pool = gnn.diff_pool(3, 4, "tanh", "pool", None, loss_weight=0.25)
    assert "call" not in vars(pool)
    config = pool.get_config()
    assert (config["loss_weight"], config["activation"], config["k"]) == (0.25, "tanh", 3)
    clone = gnn.WeightedDiffPool.from_config(config)
    assert clone.get_config() == config
    assert keras.saving.get_registered_object("keypoint_gnn>WeightedDiffPool") is gnn.WeightedDiffPool


@pytest.mark.parametrize("loss_weight", [-0.5, float("nan"), "1"])
def test_negative_loss_weight_is_refused(loss_weight):
    with pytest.raises(ValueError, match=r"loss_weight=.* must be a finite number >= 0"):
        DiffPoolUnpool(units=4, clusters=3, loss_weight=loss_weight)


def test_diffpool_rejects_more_clusters_than_nodes():
    with pytest.raises(ValueError, match="clusters=9 exceeds the 6 nodes"):
        DiffPoolUnpool(units=4, clusters=9)([tf.zeros([1, 6, 3]), tf.zeros([1, 6, 6])])


def test_diffpool_from_section_and_config_round_trip():
    block = DiffPoolUnpool.from_section(GraphConfig(kind="diffpool", layers=3, units=8,
                                                    diffpool_clusters=4, residual=True,
                                                    diffpool_loss_weight=0.25))
    assert (block.units, block.clusters, block.num_layers, block.residual) == (8, 4, 3, True)
    assert block.loss_weight == block.pool.loss_weight == 0.25
    assert block.coarse.num_layers == 2 and block.skip is not None
    clone = DiffPoolUnpool.from_config(block.get_config())
    assert clone.get_config() == block.get_config() and clone.pool.loss_weight == 0.25
    assert keras.saving.get_registered_object("keypoint_gnn>DiffPoolUnpool") is DiffPoolUnpool
