"""Grid coordinate regression of keypoints (paper §4.2)."""
from keypoint_gnn import ops, rules
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers.detector import KeypointDetector


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class GridCoordinateRegressor(KeypointDetector):
    """Grid coordinate regression (paper §4.2).

    The map is divided into L x M cells of m x m pixels; a convolution with kernel m and
    stride m predicts, for each cell, h keypoints as (y offset, x offset, confidence logit),
    offsets = sigmoid(a) in [0, 1] within the cell; the N most confident are kept:

        position = (cell index + offset) * m - 0.5    (feature-map pixels, centres at integers)

    Positions are fractional: the interconnects sample and splat them bilinearly, so the task
    loss reaches the coordinates as well as the confidences. The authors pre-train the
    regressor on SIFT/ORB keypoints (`trainers.pretrain_keypoints`).

    Two options (beyond the paper) keep the offsets from collapsing onto a common in-cell
    position: `standardize_offsets=True` standardises each image's offset logits over its
    cells and scales them by pi/sqrt(3) before the sigmoid (`ops.standardize_over_cells`), so
    no offset common to every cell can form; `offset_uniformity_weight` = w > 0 adds
    w * W2^2(selected offsets, U[0, 1]) to the loss (`ops.wasserstein_to_uniform`, via
    `add_loss`), pulling the selected keypoints' in-cell positions towards a uniform spread.

    Args:
      num_keypoints: N <= L*M*h.
      cell_size: m, in feature-map pixels (the paper's 8 or 16 image pixels divided by the
        feature extractor's stride); must divide h and w.
      points_per_cell: h.
      score_activation: `"linear"` or `"sigmoid"`.
      standardize_offsets: standardise each image's offset logits over its cells.
      offset_uniformity_weight: weight of the selected offsets' distance to the uniform; 0 off.

    Input shape:
      Feature map `(B, h, w, C)`.

    Output shape:
      `[positions (B, N, 2), scores (B, N), score_map (B, h, w, 1)]`, the score map holding
      each cell's highest activated confidence. With `return_cells=True`: the cell predictions
      `(B, L, M, h, 3)` as (y offset, x offset, confidence logit), for pre-training.

    Example:

    >>> detector = GridCoordinateRegressor(num_keypoints=16, cell_size=4, points_per_cell=2)
    >>> positions, scores, score_map = detector(tf.zeros([2, 16, 16, 8]))
    >>> positions.shape, detector(tf.zeros([2, 16, 16, 8]), return_cells=True).shape
    (TensorShape([2, 16, 2]), TensorShape([2, 4, 4, 2, 3]))
    """

    # The XLA graph section (`keypoint_gnn.xla`) compiles `detect`, not `call`: a loss added
    # inside a compiled function could not be read by the training step outside it.
    xla_method = "detect"

    def __init__(self, num_keypoints, cell_size=4, points_per_cell=2, score_activation="linear",
                 standardize_offsets=False, offset_uniformity_weight=0.0, **kwargs):
        super().__init__(num_keypoints, score_activation, **kwargs)
        rules.check_positive_int("cell_size", cell_size)
        rules.check_positive_int("points_per_cell", points_per_cell)
        rules.check_bool("standardize_offsets", standardize_offsets)
        rules.check_non_negative_number("offset_uniformity_weight", offset_uniformity_weight)
        self.cell_size = cell_size
        self.points_per_cell = points_per_cell
        self.standardize_offsets = standardize_offsets
        self.offset_uniformity_weight = offset_uniformity_weight

    @classmethod
    def section_kwargs(cls, detector_config):
        return {"cell_size": detector_config.cell_size,
                    "points_per_cell": detector_config.points_per_cell,
                    "standardize_offsets": detector_config.standardize_offsets,
                    "offset_uniformity_weight": detector_config.offset_uniformity_weight}

    def build(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        rules.check_grid_cells(self.num_keypoints, self.cell_size, self.points_per_cell,
                               int(input_shape[1]), int(input_shape[2]))
        self.cell_conv = keras.layers.Conv2D(3 * self.points_per_cell, self.cell_size,
                                             strides=self.cell_size, name="cells",
                                             dtype=self.dtype_policy)
        self.cell_conv.build(input_shape)
        super().build(input_shape)

    @property
    def penalized(self):
        """Whether `call` adds a loss (the offset uniformity)."""
        return self.offset_uniformity_weight > 0

    def _cells(self, feature_map):
        """Offsets (B, L, M, h, 2) in [0, 1] and confidence logits (B, L, M, h), float32."""
        raw = tf.cast(self.cell_conv(feature_map), tf.float32)
        shape = tf.shape(raw)
        raw = tf.reshape(raw, [shape[0], shape[1], shape[2], self.points_per_cell, 3])
        offset_logits = raw[..., :2]
        if self.standardize_offsets:
            offset_logits = ops.standardize_over_cells(offset_logits)
        return tf.sigmoid(offset_logits), raw[..., 2]

    def call(self, feature_map, return_cells=False):
        outputs, penalty = self.detect(feature_map, return_cells)
        if self.penalized and not return_cells:
            self.add_loss(penalty)
        return outputs

    def detect(self, feature_map, return_cells=False):
        """`call`'s outputs and the weighted uniformity penalty that `call` adds as a loss
        (0 when not `penalized`)."""
        offsets, logits = self._cells(feature_map)
        if return_cells:
            return tf.concat([offsets, logits[..., None]], axis=-1), tf.zeros([])
        rows, cols = offsets.shape[1], offsets.shape[2]
        candidates = ops.cell_offsets_to_positions(offsets, self.cell_size)
        flat_logits = tf.reshape(logits, [-1, rows * cols * self.points_per_cell])
        raw_scores, index = tf.math.top_k(flat_logits, k=self.num_keypoints)
        positions = tf.gather(candidates, index, batch_dims=1)
        penalty = tf.zeros([])
        if self.penalized:
            flat_offsets = tf.reshape(offsets, [-1, rows * cols * self.points_per_cell, 2])
            selected = tf.reshape(tf.gather(flat_offsets, index, batch_dims=1), [-1, 2])
            penalty = self.offset_uniformity_weight * tf.reduce_mean(
                ops.wasserstein_to_uniform(selected))
        cell_best = tf.reduce_max(self.activate(logits), axis=-1, keepdims=True)
        score_map = tf.repeat(tf.repeat(cell_best, self.cell_size, axis=1), self.cell_size, axis=2)
        return (positions, self.activate(raw_scores), score_map), penalty

    def get_config(self):
        config = super().get_config()
        config.update(cell_size=self.cell_size, points_per_cell=self.points_per_cell,
                      standardize_offsets=self.standardize_offsets,
                      offset_uniformity_weight=self.offset_uniformity_weight)
        return config
