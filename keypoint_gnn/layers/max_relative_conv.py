"""Max-relative graph convolution (Vision GNN's graph conv), beyond the paper."""
from keypoint_gnn import ops
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers.neighbour_conv import NeighbourConv


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class MaxRelativeConv(NeighbourConv):
    """Max-relative graph convolution (MRConv of Li et al., "DeepGCNs"; the graph convolution of
    Vision GNN, Han et al. 2022), beyond the paper:

        x_i' = act(W [x_i || max_{j in N(i)} (x_j - x_i)] + b)

    the maximum taken per channel over node i's k neighbours N(i), given as indices (e.g.
    `ops.knn_indices`).

    Args:
      units: output channels.
      activation: applied to the output; None (the default) for the linear map alone.
      use_bias: add b.

    Input shape:
      `[nodes (B, N, F), neighbour indices (B, N, k)]`, indices int32 in [0, N).

    Output shape:
      `(B, N, units)`.

    Example:

    >>> conv = MaxRelativeConv(units=8)
    >>> neighbours = tf.constant([[[1, 2], [0, 2], [0, 1]]])
    >>> conv([tf.ones([1, 3, 4]), neighbours]).shape
    TensorShape([1, 3, 8])
    """

    def __init__(self, units, activation=None, use_bias=True, **kwargs):
        super().__init__(units, activation=activation, use_bias=use_bias, **kwargs)

    def call(self, inputs):
        nodes, indices = inputs
        neighbours = ops.gather_neighbours(nodes, indices)
        relative = tf.reduce_max(neighbours - nodes[:, :, None, :], axis=2)
        outputs = tf.matmul(tf.concat([nodes, relative], axis=-1), self.kernel)
        if self.bias is not None:
            outputs += self.bias
        return self.activation(outputs)
