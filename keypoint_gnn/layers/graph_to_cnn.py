"""Graph-to-CNN interconnect (paper §6)."""
from keypoint_gnn import ops, rules
from keypoint_gnn._backend import keras


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class GraphToCNN(keras.layers.Layer):
    """Graph-to-CNN interconnect (paper §6): nodes are written back into a zero grid.

    Writes the node features at their keypoint locations in a zero tensor with
    `tf.scatter_nd`; nodes landing on the same cell are averaged (the authors' rule):

        G[c] = mean_{i : round(p_i) = c} X_i,   G[c] = 0 where no keypoint lands

    Args:
      height, width: size of the output map (the feature map the positions refer to).
      sampling: `"gather"` (nearest cell) or `"bilinear"` (splat over the four nearest cells,
        each cell divided by max(total weight, 1); differentiable in the positions).

    Input shape:
      `[nodes (B, N, C), positions (B, N, 2)]`, positions (y, x) in feature-map pixels.

    Output shape:
      `(B, height, width, C)`.

    Example:

    >>> layer = GraphToCNN(4, 4)
    >>> grid = layer([tf.ones([1, 2, 3]), tf.constant([[[0., 0.], [2., 3.]]])])
    >>> grid.shape, float(tf.reduce_sum(grid))
    (TensorShape([1, 4, 4, 3]), 6.0)
    """

    def __init__(self, height, width, sampling="gather", **kwargs):
        super().__init__(**kwargs)
        rules.check_positive_int("height", height)
        rules.check_positive_int("width", width)
        rules.check_choice("sampling", sampling, rules.SAMPLING_MODES)
        self.height = height
        self.width = width
        self.sampling = sampling

    def call(self, inputs):
        nodes, positions = inputs
        if self.sampling == "bilinear":
            return ops.bilinear_splat(nodes, positions, self.height, self.width)
        return ops.scatter_mean(nodes, positions, self.height, self.width)

    def get_config(self):
        config = super().get_config()
        config.update(height=self.height, width=self.width, sampling=self.sampling)
        return config
