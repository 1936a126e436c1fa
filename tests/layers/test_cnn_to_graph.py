"""CNNToGraph (paper §5) against NumPy: gathered or sampled features times the scores, the
authors' inverse-distance adjacency, position features."""
import numpy as np
import pytest

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers import CNNToGraph
from tests.ops import authors_adjacency, naive_bilinear, numpy_gcn_normalize


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


def test_cnn_to_graph_bilinear(rng):
    feature_map = rng.normal(size=(1, 5, 5, 2)).astype("float32")
    positions = rng.uniform(0, 4, size=(1, 3, 2)).astype("float32")
    scores = np.ones((1, 3), "float32")
    nodes, _ = CNNToGraph(sampling="bilinear")([feature_map, positions, scores])
    for n in range(3):
        np.testing.assert_allclose(nodes[0, n], naive_bilinear(feature_map[0], *positions[0, n]), rtol=1e-5)


@pytest.mark.parametrize("dtype, atol", [("float32", 1e-6), ("mixed_bfloat16", 1e-2)])
def test_cnn_to_graph_position_features(rng, dtype, atol):
    """The appended features are the positions over the map's extent (h-1, w-1) = (4, 6), also
    under a mixed policy, where the layer computes in bfloat16 (what `--mixed-precision` gives
    on a CPU)."""
    feature_map = rng.normal(size=(2, 5, 7, 3)).astype("float32")
    positions = np.stack([rng.integers(0, 5, size=(2, 4)), rng.integers(0, 7, size=(2, 4))],
                         axis=-1).astype("float32")
    scores = rng.uniform(size=(2, 4)).astype("float32")
    nodes, adjacency = CNNToGraph(position_features=True, dtype=dtype)([feature_map, positions, scores])
    compute_dtype = tf.bfloat16 if dtype == "mixed_bfloat16" else tf.float32
    assert nodes.dtype == compute_dtype and adjacency.dtype == compute_dtype
    assert nodes.shape == (2, 4, 5)
    np.testing.assert_allclose(tf.cast(nodes[..., 3:], tf.float32), positions / [4.0, 6.0], atol=atol)


def test_cnn_to_graph_scores_carry_gradient(rng):
    feature_map = tf.constant(rng.normal(size=(1, 4, 4, 2)).astype("float32"))
    positions = tf.constant([[[0.0, 1.0], [3.0, 2.0]]])
    scores = tf.Variable([[0.5, 2.0]])
    with tf.GradientTape() as tape:
        nodes, _ = CNNToGraph()([feature_map, positions, scores])
        loss = tf.reduce_sum(nodes)
    expected = [feature_map[0, 0, 1].numpy().sum(), feature_map[0, 3, 2].numpy().sum()]
    np.testing.assert_allclose(tape.gradient(loss, scores)[0], expected, rtol=1e-6)


def test_cnn_to_graph_rejects_an_unknown_sampling():
    with pytest.raises(ValueError, match="sampling='nearest' is not one of"):
        CNNToGraph(sampling="nearest")


@pytest.mark.parametrize("kwargs", [
    {},
    {"sampling": "bilinear", "normalize": False, "position_features": True},
])
def test_cnn_to_graph_config_round_trip(kwargs):
    layer = CNNToGraph(**kwargs)
    clone = CNNToGraph.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert {key: clone.get_config()[key] for key in kwargs} == kwargs
    assert keras.saving.get_registered_object("keypoint_gnn>CNNToGraph") is CNNToGraph
