"""keypoint_gnn.ops.knn: ViG's (dilated) kNN graph against a hand-worked graph and a float64
brute force, ties, the relative-position term and the argument errors."""
import numpy as np
import pytest

from keypoint_gnn import ops
from keypoint_gnn._backend import tf
from tests.ops import brute_force_knn

# Four unit vectors at 0, 90, 180 and 270 degrees and (2, 2) at 45 degrees. Normalised, the
# squared distances are 2 - 2 cos(angle): 45 degrees 2 - sqrt(2) = 0.59, 90 degrees 2,
# 135 degrees 3.41, 180 degrees 4. Unnormalised, node 4 would be the farthest from node 0.
COMPASS = np.array([[[1, 0], [0, 1], [-1, 0], [0, -1], [2, 2]]], "float32")


def test_hand_worked_neighbours_and_ties():
    # Node 0: 4 (0.59), then 1 and 3 tie at 2 -> 1, the lower index. Node 2: 1 and 3 tie at 2.
    # Node 4: 0 and 1 tie at 0.59.
    indices = ops.knn_indices(tf.constant(COMPASS), k=2)
    assert indices.dtype == tf.int32
    np.testing.assert_array_equal(indices[0], [[4, 1], [4, 0], [1, 3], [0, 2], [0, 1]])


def test_hand_worked_dilation():
    # The 4 nearest of node 0 in order: 4, 1, 3 (tie broken by index), 2; every 2nd: 4, 3.
    indices = ops.knn_indices(tf.constant(COMPASS), k=2, dilation=2)
    np.testing.assert_array_equal(indices[0], [[4, 3], [4, 2], [1, 4], [0, 4], [0, 2]])


def test_position_term_changes_the_neighbours():
    # Node 0's feature neighbour is 4 (0.59); 4 is 2 away in squared position, 3 is 0.01 away:
    # 0.59 + 2 = 2.59 > 2 + 0.01 = 2.01, so 3 becomes the nearest.
    positions = np.array([[[0, 0], [1, 0], [0, 1], [0, 0.1], [1, 1]]], "float32")
    features = tf.constant(COMPASS)
    assert ops.knn_indices(features, k=1)[0, 0, 0] == 4
    assert ops.knn_indices(features, k=1, positions=positions)[0, 0, 0] == 4  # weight 0
    near = ops.knn_indices(features, k=1, positions=positions, position_weight=1.0)
    assert near[0, 0, 0] == 3
    np.testing.assert_array_equal(near, brute_force_knn(COMPASS, 1, 1, positions, 1.0))


def test_self_is_excluded_when_every_distance_is_zero():
    # Nodes with zero features (zero scores) are all at distance 0, themselves included.
    indices = ops.knn_indices(tf.zeros([2, 4, 3]), k=3)
    np.testing.assert_array_equal(indices[1], [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])


@pytest.mark.parametrize("k, dilation, position_weight", [(1, 1, 0.0), (3, 1, 0.0), (3, 2, 0.0),
                                                          (2, 3, 0.5), (4, 1, 2.0)])
def test_matches_brute_force(rng, k, dilation, position_weight):
    features = rng.normal(size=(3, 13, 5)).astype("float32")
    positions = rng.uniform(size=(3, 13, 2)).astype("float32")
    indices = ops.knn_indices(tf.constant(features), k, dilation, positions, position_weight)
    expected = brute_force_knn(features, k, dilation, positions, position_weight)
    np.testing.assert_array_equal(indices, expected)


def test_distances_are_normalised_feature_distances(rng):
    features = rng.normal(size=(2, 6, 4)).astype("float32")
    unit = features / np.linalg.norm(features, axis=-1, keepdims=True)
    expected = ((unit[:, :, None] - unit[:, None]) ** 2).sum(-1)
    np.testing.assert_allclose(ops.knn_distances(features), expected, atol=1e-5)


def test_unknown_batch_size():
    knn = tf.function(lambda x: ops.knn_indices(x, k=2, dilation=2),
                      input_signature=[tf.TensorSpec([None, 5, 2], tf.float32)])
    assert knn.get_concrete_function().output_shapes.as_list() == [None, 5, 2]
    np.testing.assert_array_equal(knn(tf.constant(COMPASS)), ops.knn_indices(COMPASS, 2, 2))


def test_gather_neighbours():
    nodes = tf.constant([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]]])
    indices = tf.constant([[[1, 2], [0, 0], [1, 0]], [[2, 1], [2, 0], [0, 1]]])
    np.testing.assert_array_equal(ops.gather_neighbours(nodes, indices)[..., 0],
                                  [[[2, 3], [1, 1], [2, 1]], [[6, 5], [6, 4], [4, 5]]])


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "k=0 must be a positive integer"),
    ({"k": 2, "dilation": 0}, "dilation=0 must be a positive integer"),
    ({"k": 5}, r"k=5 x dilation=1 must be below the N=5 nodes"),
    ({"k": 2, "dilation": 3}, r"k=2 x dilation=3 must be below the N=5 nodes"),
    ({"k": 2, "positions": COMPASS[..., :2], "position_weight": -1.0},
     "position_weight=-1.0 must be a finite number >= 0"),
])
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ops.knn_indices(tf.constant(COMPASS), **kwargs)
