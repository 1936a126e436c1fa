"""Large-maxpool non-max suppression (paper §4.3)."""
from keypoint_gnn import ops
from keypoint_gnn._backend import keras
from keypoint_gnn.layers.detector import ScoreMapDetector


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class MaxPoolNMS(ScoreMapDetector):
    """Large-maxpool non-max suppression (paper §4.3).

    Max-pools the score map with non-overlapping p x p windows, keeps where each maximum was
    in the unpooled map, then takes the N windows whose maxima score highest:

        s = act(conv1x1(F)),   P = argtop-N over windows W of (argmax_{l in W} s_l)

    No two keypoints share a window, which spreads them over the image. The paper uses p = 8 or
    16 image pixels. With `refinement` each keypoint is then placed within its window
    (see `ScoreMapDetector`).

    Args:
      num_keypoints: N <= (h/p)(w/p).
      pool_size: p, window side in feature-map pixels; must divide h and w.
      score_activation: `"linear"` or `"sigmoid"`.
      refinement: `"none"`, `"window"` (soft-argmax in the window) or `"centre"`.

    Input shape:
      Feature map `(B, h, w, C)`.

    Output shape:
      `[positions (B, N, 2), scores (B, N), score_map (B, h, w, 1)]`; positions are (y, x) in
      feature-map pixels, integer valued unless refined.

    Example:

    >>> detector = MaxPoolNMS(num_keypoints=8, pool_size=4)
    >>> positions, scores, _ = detector(tf.random.normal([2, 16, 16, 8]))
    >>> positions.shape
    TensorShape([2, 8, 2])
    >>> windows = positions.numpy() // 4     # one keypoint per 4x4 window
    >>> all(len({tuple(w) for w in image}) == 8 for image in windows)
    True
    """

    def __init__(self, num_keypoints, pool_size=2, score_activation="linear", refinement="none",
                 **kwargs):
        super().__init__(num_keypoints, score_activation, pool_size=pool_size,
                         refinement=refinement, **kwargs)

    @classmethod
    def section_kwargs(cls, detector_config):
        return {"pool_size": detector_config.pool_size, "refinement": detector_config.refinement}

    def select(self, raw_score_map):
        return ops.max_pool_nms(raw_score_map, self.pool_size, self.num_keypoints)
