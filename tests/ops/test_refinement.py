"""keypoint_gnn.ops.refinement: keypoints placed within their NMS windows (soft-argmax or
centre), against NumPy and hand-worked windows."""
import numpy as np
import pytest

from keypoint_gnn import ops
from keypoint_gnn._backend import tf


def test_window_soft_argmax_hand_worked():
    # One 2x2 window with scores ln 1, ln 2 / ln 3, ln 4: weights 0.1, 0.2 / 0.3, 0.4,
    # y = 0.3 + 0.4 = 0.7, x = 0.2 + 0.4 = 0.6; the second window is flat: its centre.
    scores = np.log(np.array([[[1, 2, 1, 1], [3, 4, 1, 1]]], "float32"))
    centres = ops.window_soft_argmax(tf.constant(scores), 2)
    np.testing.assert_allclose(centres[0, 0], [[0.7, 0.6], [0.5, 2.5]], rtol=1e-6)


def test_refine_in_windows_matches_numpy(rng):
    scores = rng.normal(scale=2.0, size=(2, 6, 9)).astype("float32")
    positions = np.array([[[0, 0], [5, 8], [2, 4], [3, 3]],
                          [[1, 7], [4, 2], [5, 5], [0, 4]]], "float32")
    refined = ops.refine_in_windows(tf.constant(scores), tf.constant(positions), 3)
    for b in range(2):
        for n, (y, x) in enumerate(positions[b].astype(int)):
            y0, x0 = y // 3 * 3, x // 3 * 3
            cells = [(y0 + i, x0 + j) for i in range(3) for j in range(3)]
            weights = np.exp([scores[b][c] for c in cells].copy())
            expected = weights / weights.sum() @ np.array(cells, dtype=np.float64)
            np.testing.assert_allclose(refined[b, n], expected, rtol=1e-5)


def test_window_centres_hand_worked():
    # 3x3 windows on a 6x9 map: cell (4, 7) lies in window (1, 2), centre (4, 7); cell (0, 5)
    # in window (0, 1), centre (1, 4); (5.4, -0.6) rounds and clips to (5, 0): centre (4, 1).
    positions = tf.constant([[[4.0, 7.0], [0.0, 5.0], [5.4, -0.6]]])
    centres = ops.window_centres(tf.zeros([1, 6, 9, 1]), positions, 3)
    np.testing.assert_array_equal(centres, [[[4, 7], [1, 4], [4, 1]]])
    # Even windows: the centre lies between cells, where bilinear sampling is the mean.
    centres = ops.window_centres(tf.zeros([1, 4, 4]), tf.constant([[[3.0, 0.0]]]), 2)
    np.testing.assert_array_equal(centres, [[[2.5, 0.5]]])


@pytest.mark.parametrize("place", [ops.window_centres, ops.refine_in_windows])
@pytest.mark.parametrize("pool_size, message", [
    (0, "pool_size=0 must be a positive integer"),
    (3, "pool_size=3 does not divide the feature map height 4"),
])
def test_window_placement_bad_pool_size(place, pool_size, message):
    with pytest.raises(ValueError, match=message):
        place(tf.zeros([1, 4, 4]), tf.zeros([1, 1, 2]), pool_size)
