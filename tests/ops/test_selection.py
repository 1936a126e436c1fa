"""keypoint_gnn.ops.selection: top-k locations and large-maxpool NMS against NumPy and
hand-worked maps."""
import numpy as np
import pytest

from keypoint_gnn import ops
from keypoint_gnn._backend import tf


def test_top_k_positions_matches_numpy(rng):
    score_map = rng.normal(size=(3, 5, 7, 1)).astype("float32")
    positions, scores = ops.top_k_positions(tf.constant(score_map), 6)
    for b in range(3):
        flat = score_map[b, :, :, 0].ravel()
        order = np.argsort(-flat)[:6]
        np.testing.assert_allclose(scores[b], flat[order], rtol=1e-6)
        np.testing.assert_array_equal(positions[b], np.stack([order // 7, order % 7], -1))


def test_top_k_rejects_more_keypoints_than_locations():
    with pytest.raises(ValueError, match="num_keypoints=17 exceeds the 4x4=16 locations"):
        ops.top_k_positions(tf.zeros([1, 4, 4, 1]), 17)


def test_max_pool_nms_hand_worked():
    score_map = np.array(
        [[0, 1, 0, 0],
         [9, 0, 0, 5],
         [0, 0, 7, 0],
         [2, 0, 0, 8]], dtype="float32")[None, :, :, None]
    # Windows: top-left max 9 at (1,0); top-right 5 at (1,3); bottom-left 2 at (3,0);
    # bottom-right 8 at (3,3) (7 at (2,2) is suppressed by 8 in the same window).
    positions, scores = ops.max_pool_nms(tf.constant(score_map), pool_size=2, k=3)
    np.testing.assert_array_equal(scores[0], [9, 8, 5])
    np.testing.assert_array_equal(positions[0], [[1, 0], [3, 3], [1, 3]])
    # The window maxima and where they were, per window.
    window_max, window_positions = ops.window_argmax(tf.constant(score_map), 2)
    np.testing.assert_array_equal(window_max[0], [[9, 5], [2, 8]])
    np.testing.assert_array_equal(window_positions[0], [[[1, 0], [1, 3]], [[3, 0], [3, 3]]])
    # The same windows as candidates, row-major over the windows; pool 1: every location.
    scores, positions = ops.window_candidates(tf.constant(score_map), 2)
    np.testing.assert_array_equal(scores[0], [9, 5, 2, 8])
    np.testing.assert_array_equal(positions[0], [[1, 0], [1, 3], [3, 0], [3, 3]])
    scores, positions = ops.window_candidates(tf.constant(score_map), 1)
    np.testing.assert_array_equal(scores[0], score_map.ravel())
    np.testing.assert_array_equal(positions[0], np.stack(np.divmod(np.arange(16), 4), axis=1))


def test_max_pool_nms_one_keypoint_per_window(rng):
    score_map = rng.normal(size=(2, 8, 8)).astype("float32")
    positions, scores = ops.max_pool_nms(tf.constant(score_map), pool_size=4, k=4)
    for b in range(2):
        windows = {(int(y) // 4, int(x) // 4) for y, x in positions[b].numpy()}
        assert len(windows) == 4
        for (y, x), s in zip(positions[b].numpy().astype(int), scores[b].numpy()):
            wy, wx = y // 4 * 4, x // 4 * 4
            assert s == score_map[b, wy:wy + 4, wx:wx + 4].max() == score_map[b, y, x]


@pytest.mark.parametrize("pool_size,k,message", [
    (3, 1, "pool_size=3 does not divide the feature map height 8"),
    (4, 5, "num_keypoints=5 exceeds the 2x2=4 pooling windows"),
])
def test_max_pool_nms_bad_values(pool_size, k, message):
    with pytest.raises(ValueError, match=message):
        ops.max_pool_nms(tf.zeros([1, 8, 8, 1]), pool_size, k)
