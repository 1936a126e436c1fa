"""MaxPoolNMS (paper §4.3): the N best maxima of non-overlapping windows, against NumPy."""
import numpy as np
import pytest

from keypoint_gnn.layers import MaxPoolNMS
from tests.layers.helpers_detectors import set_score_conv, window_maxima


def test_max_pool_nms_layer_selects_window_maxima(rng):
    feature_map = rng.normal(size=(1, 8, 8, 2)).astype("float32")
    detector = MaxPoolNMS(num_keypoints=4, pool_size=4)
    set_score_conv(detector, feature_map)
    positions, scores, _ = detector(feature_map)
    channel = feature_map[0, :, :, 0]
    maxima = sorted((channel[r:r + 4, c:c + 4].max() for r in (0, 4) for c in (0, 4)), reverse=True)
    np.testing.assert_allclose(scores[0], maxima, rtol=1e-6)
    for (y, x), s in zip(positions[0].numpy().astype(int), scores[0].numpy()):
        assert channel[y, x] == pytest.approx(s)


@pytest.mark.parametrize("pool_size, num_keypoints", [(2, 6), (4, 3)])
def test_max_pool_nms_takes_the_best_windows_one_keypoint_each(rng, pool_size, num_keypoints):
    """The N highest window maxima (NumPy), highest first, at most one keypoint per window."""
    feature_map = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    detector = MaxPoolNMS(num_keypoints=num_keypoints, pool_size=pool_size,
                          score_activation="sigmoid")
    set_score_conv(detector, feature_map)
    positions, scores, _ = (t.numpy() for t in detector(feature_map))
    for b in range(2):
        maxima, candidates = window_maxima(feature_map[b, :, :, 0], pool_size)
        best = np.argsort(-maxima, kind="stable")[:num_keypoints]
        np.testing.assert_array_equal(positions[b], candidates[best])
        np.testing.assert_allclose(scores[b], 1 / (1 + np.exp(-maxima[best])), rtol=1e-6)
        assert len({tuple(window) for window in positions[b] // pool_size}) == num_keypoints
