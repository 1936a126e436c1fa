"""DiffPoolUnpool (paper §7): pooled to k clusters, convolved, unpooled back to every node,
checked against the selection matrix and coarse nodes it computes."""
import numpy as np
import pytest

from keypoint_gnn import ops
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


def test_diffpool_rejects_more_clusters_than_nodes():
    with pytest.raises(ValueError, match="clusters=9 exceeds the 6 nodes"):
        DiffPoolUnpool(units=4, clusters=9)([tf.zeros([1, 6, 3]), tf.zeros([1, 6, 6])])


def test_diffpool_from_section_and_config_round_trip():
    block = DiffPoolUnpool.from_section(GraphConfig(kind="diffpool", layers=3, units=8,
                                                    diffpool_clusters=4, residual=True))
    assert (block.units, block.clusters, block.num_layers, block.residual) == (8, 4, 3, True)
    assert block.coarse.num_layers == 2 and block.skip is not None
    clone = DiffPoolUnpool.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
    assert keras.saving.get_registered_object("keypoint_gnn>DiffPoolUnpool") is DiffPoolUnpool
