"""The keypoint detectors' shared base (paper §4).

Every detector takes the detector CNN's feature map `(B, h, w, C)` and returns the same three
tensors:

- `positions` `(B, N, 2)`: keypoints as (y, x) in feature-map pixels, float32;
- `scores` `(B, N)`: the activated keypoint scores (linear or sigmoid), which the CNN->graph
  interconnect multiplies into the node features so that the task loss reaches the detector;
- `score_map` `(B, h, w, 1)`: the activated score map, for conf-MSE and for drawing.
"""
from keypoint_gnn import ops, rules
from keypoint_gnn._backend import keras, tf


class KeypointDetector(keras.layers.Layer):
    """Base class: the score activation, the input check and the config.

    A subclass implements `call(feature_map, training=None)` and, to be built from a
    `ModelConfig`, `section_kwargs(detector_config)`: the constructor arguments it takes from
    `ModelConfig.detector` besides `num_keypoints` and `score_activation`.

    Args:
      num_keypoints: N, keypoints per image.
      score_activation: `"linear"` or `"sigmoid"` (the paper's ablation, §4.1 and Table 1).
    """

    def __init__(self, num_keypoints, score_activation="linear", **kwargs):
        super().__init__(**kwargs)
        rules.check_positive_int("num_keypoints", num_keypoints)
        rules.check_choice("score_activation", score_activation, rules.SCORE_ACTIVATIONS)
        self.num_keypoints = num_keypoints
        self.score_activation = score_activation

    @classmethod
    def from_section(cls, detector_config, **kwargs):
        """The detector a `ModelConfig.detector` section describes."""
        return cls(num_keypoints=detector_config.num_keypoints,
                   score_activation=detector_config.score_activation,
                   **cls.section_kwargs(detector_config), **kwargs)

    @classmethod
    def section_kwargs(cls, detector_config):
        return {}

    def activate(self, raw_scores):
        if self.score_activation == "sigmoid":
            return tf.sigmoid(raw_scores)
        return raw_scores

    def _check_input_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 4:
            raise ValueError(
                f"{type(self).__name__} expects a feature map (B, h, w, C), got shape {input_shape}"
            )
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_keypoints=self.num_keypoints, score_activation=self.score_activation)
        return config


class ScoreMapDetector(KeypointDetector):
    """A 1x1 convolution scores every location; a subclass's `select` picks N of them.

    `pool_size` (the detectors with NMS windows) and `refinement` say where each selected
    keypoint is placed, in training and at inference (beyond the paper): `"none"` at its cell;
    `"window"` at the soft-argmax of the raw scores over the NMS window holding it
    (`ops.refine_in_windows`, as ALIKED refines keypoints: fractional, differentiable
    positions); `"centre"` at the window's centre (`ops.window_centres`: a lattice the selection
    chooses from, with the window's mean feature under bilinear sampling and no position
    gradient). The selection and the scores are the cell's either way.

    Args:
      num_keypoints: N.
      score_activation: `"linear"` or `"sigmoid"`.
      pool_size: p, the NMS window side in feature-map pixels, or None (no windows).
      refinement: `"none"`, `"window"` or `"centre"` (the last two need p > 1).
    """

    def __init__(self, num_keypoints, score_activation="linear", pool_size=None,
                 refinement="none", **kwargs):
        super().__init__(num_keypoints, score_activation, **kwargs)
        if pool_size is not None:
            rules.check_positive_int("pool_size", pool_size)
        rules.check_refinement(refinement, pool_size)
        self.pool_size = pool_size
        self.refinement = refinement

    def build(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        height, width = int(input_shape[1]), int(input_shape[2])
        rules.check_locations(self.num_keypoints, height, width)
        if self.pool_size is not None:
            rules.check_pool_windows(self.num_keypoints, self.pool_size, height, width)
        self.score_conv = keras.layers.Conv2D(1, 1, name="score", dtype=self.dtype_policy)
        self.score_conv.build(input_shape)
        super().build(input_shape)

    def raw_score_map(self, feature_map):
        return tf.cast(self.score_conv(feature_map), tf.float32)

    def select(self, raw_score_map):
        """(B, h, w, 1) raw scores -> positions (B, N, 2), their raw scores (B, N)."""
        raise NotImplementedError

    def place(self, raw_score_map, positions):
        """The selected cells -> where the keypoints go, as `refinement` says."""
        if self.refinement == "window":
            return ops.refine_in_windows(raw_score_map, positions, self.pool_size)
        if self.refinement == "centre":
            return ops.window_centres(raw_score_map, positions, self.pool_size)
        return positions

    def call(self, feature_map, training=None):
        raw = self.raw_score_map(feature_map)
        positions, raw_scores = self.select(raw)
        return self.place(raw, positions), self.activate(raw_scores), self.activate(raw)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, refinement=self.refinement)
        return config
