"""Edge convolution (DGCNN), beyond the paper."""
from keypoint_gnn import ops
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers.neighbour_conv import NeighbourConv


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class EdgeConv(NeighbourConv):
    """Edge convolution (Wang et al. 2019, "Dynamic Graph CNN", §3.1; one of Vision GNN's graph
    convs), beyond the paper:

        x_i' = max_{j in N(i)} act(W [x_i || x_j - x_i] + b)

    an edge feature per neighbour, the maximum taken per channel over node i's k neighbours
    N(i), given as indices (e.g. `ops.knn_indices`). Computed as act(W_c x_i + b + W_r x_j)
    with W = [W_x; W_r] and W_c = W_x - W_r: each node is projected once, before the gather.

    Args:
      units: output channels.
      activation: applied to each edge feature before the maximum (DGCNN: ReLU).
      use_bias: add b.

    Input shape:
      `[nodes (B, N, F), neighbour indices (B, N, k)]`, indices int32 in [0, N).

    Output shape:
      `(B, N, units)`.

    Example:

    >>> conv = EdgeConv(units=8)
    >>> neighbours = tf.constant([[[1, 2], [0, 2], [0, 1]]])
    >>> conv([tf.ones([1, 3, 4]), neighbours]).shape
    TensorShape([1, 3, 8])
    """

    def __init__(self, units, activation="relu", use_bias=True, **kwargs):
        super().__init__(units, activation=activation, use_bias=use_bias, **kwargs)

    def call(self, inputs):
        nodes, indices = inputs
        channels = nodes.shape[-1]
        own, relative = self.kernel[:channels], self.kernel[channels:]
        centre = tf.matmul(nodes, own - relative)  # W_c x_i
        if self.bias is not None:
            centre += self.bias
        neighbours = ops.gather_neighbours(tf.matmul(nodes, relative), indices)  # W_r x_j
        return tf.reduce_max(self.activation(centre[:, :, None, :] + neighbours), axis=2)
