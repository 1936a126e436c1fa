"""GraphToCNN (paper §6): nodes written back into a zero grid, averaged where they collide,
against NumPy."""
import numpy as np
import pytest

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers import GraphToCNN


def test_graph_to_cnn_averages_collisions():
    nodes = np.array([[[2.0], [4.0], [7.0]]], "float32")
    positions = np.array([[[1, 1], [1, 1], [0, 2]]], "float32")
    grid = GraphToCNN(2, 3)([nodes, positions]).numpy()
    expected = np.zeros((1, 2, 3, 1))
    expected[0, 1, 1, 0] = 3.0
    expected[0, 0, 2, 0] = 7.0
    np.testing.assert_allclose(grid, expected)


def test_graph_to_cnn_bilinear_splats_a_node_over_its_four_cells():
    # (0.25, 1.5) on a 3x3 map: rows 0/1 weigh 0.75/0.25, columns 1/2 0.5/0.5; each cell's
    # total weight is below 1, so it keeps its share of the node.
    grid = GraphToCNN(3, 3, sampling="bilinear")([tf.constant([[[8.0]]]), tf.constant([[[0.25, 1.5]]])])
    expected = np.zeros((3, 3))
    expected[0, 1:] = 0.75 * 0.5 * 8.0
    expected[1, 1:] = 0.25 * 0.5 * 8.0
    np.testing.assert_allclose(grid[0, ..., 0], expected, rtol=1e-6)


def test_graph_to_cnn_bilinear_is_differentiable_in_positions():
    nodes = tf.constant([[[1.0, 2.0]]])
    positions = tf.Variable([[[1.25, 0.5]]])
    with tf.GradientTape() as tape:
        grid = GraphToCNN(3, 3, sampling="bilinear")([nodes, positions])
        loss = tf.reduce_sum(grid * tf.reshape(tf.range(9, dtype=tf.float32), [1, 3, 3, 1]))
    assert np.all(np.abs(tape.gradient(loss, positions).numpy()) > 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"height": 0, "width": 4}, "height=0 must be a positive integer"),
    ({"height": 4, "width": 2.5}, "width=2.5 must be a positive integer"),
    ({"height": 4, "width": 4, "sampling": "nearest"}, "sampling='nearest' is not one of"),
])
def test_graph_to_cnn_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GraphToCNN(**kwargs)


def test_graph_to_cnn_config_round_trip():
    layer = GraphToCNN(4, 5, sampling="bilinear")
    clone = GraphToCNN.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.height, clone.width, clone.sampling) == (4, 5, "bilinear")
    assert keras.saving.get_registered_object("keypoint_gnn>GraphToCNN") is GraphToCNN
