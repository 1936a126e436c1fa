"""Attention top-N keypoints (paper §4.1)."""
from keypoint_gnn import ops
from keypoint_gnn._backend import keras
from keypoint_gnn.layers.detector import ScoreMapDetector


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class AttentionTopK(ScoreMapDetector):
    """Attention keypoints: a score per location, then the N highest (paper §4.1).

        s = act(conv1x1(F)),   P = argtop-N over the h*w locations of s

    Neighbouring locations score alike, so the keypoints tend to cluster (`MaxPoolNMS`
    spreads them).

    Args:
      num_keypoints: N <= h * w.
      score_activation: `"linear"` or `"sigmoid"`.

    Input shape:
      Feature map `(B, h, w, C)`.

    Output shape:
      `[positions (B, N, 2), scores (B, N), score_map (B, h, w, 1)]`; positions are integer
      valued (y, x) in feature-map pixels.

    Example:

    >>> detector = AttentionTopK(num_keypoints=32)
    >>> positions, scores, score_map = detector(tf.zeros([2, 16, 16, 8]))
    >>> positions.shape, scores.shape, score_map.shape
    (TensorShape([2, 32, 2]), TensorShape([2, 32]), TensorShape([2, 16, 16, 1]))
    """

    def __init__(self, num_keypoints, score_activation="linear", **kwargs):
        super().__init__(num_keypoints, score_activation, pool_size=None, refinement="none",
                         **kwargs)

    def select(self, raw_score_map):
        return ops.top_k_positions(raw_score_map, self.num_keypoints)

    def get_config(self):
        config = super().get_config()
        del config["pool_size"], config["refinement"]
        return config
