"""AttentionTopK (paper §4.1): the N highest-scoring locations, against NumPy."""
import numpy as np
import pytest

from keypoint_gnn.layers import AttentionTopK
from tests.layers.helpers_detectors import set_score_conv


@pytest.mark.parametrize("activation", ["linear", "sigmoid"])
def test_attention_top_k_selects_highest_scores(rng, activation):
    feature_map = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    detector = AttentionTopK(num_keypoints=5, score_activation=activation)
    set_score_conv(detector, feature_map)
    positions, scores, score_map = detector(feature_map)
    for b in range(2):
        flat = feature_map[b, :, :, 0].ravel()
        order = np.argsort(-flat)[:5]
        np.testing.assert_array_equal(positions[b], np.stack([order // 6, order % 6], -1))
        expected = flat[order] if activation == "linear" else 1 / (1 + np.exp(-flat[order]))
        np.testing.assert_allclose(scores[b], expected, rtol=1e-5)
    assert score_map.shape == (2, 6, 6, 1)


@pytest.mark.parametrize("kwargs", [{"pool_size": 2}, {"pool_size": 2, "refinement": "window"}])
def test_attention_top_k_has_no_windows_to_configure(kwargs):
    """AttentionTopK selects over every location: NMS window options are refused rather than
    accepted, used in the forward pass, and then dropped by get_config."""
    with pytest.raises((TypeError, ValueError)):
        AttentionTopK(num_keypoints=4, **kwargs)
