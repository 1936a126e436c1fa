"""Dense CNN-to-graph interconnect: every feature-map location is a node."""
from keypoint_gnn import ops
from keypoint_gnn._backend import keras, tf


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class GridToGraph(keras.layers.Layer):
    """Dense CNN-to-graph interconnect: every feature-map location is a node (paper §1, the
    introduction's dense variant; no model of the paper's tables uses it).

    All images share one grid graph, so the adjacency is a single `(h*w, h*w)` matrix
    (Spektral's "mixed" mode), with the inverse-distance weights of `CNNToGraph`:

    - `neighbours=None`: dense adjacency over all pairs; memory grows as (h*w)^2, fine at
      16x16 (65k entries), impossible at 128x128 (268M).
    - `neighbours=k`: a `tf.SparseTensor` joining each cell to its k nearest grid neighbours;
      memory grows linearly with h*w.

    Args:
      neighbours: None for the dense graph, or k >= 1 for the sparse one.
      normalize: apply D^-1/2 A D^-1/2.

    Input shape:
      Feature map `(B, h, w, C)` with known h and w.

    Output shape:
      `[nodes (B, h*w, C), adjacency (h*w, h*w)]` (dense tensor or SparseTensor).

    Example:

    >>> nodes, adjacency = GridToGraph(neighbours=4)(tf.ones([2, 8, 8, 3]))
    >>> nodes.shape, adjacency.dense_shape.numpy().tolist()
    (TensorShape([2, 64, 3]), [64, 64])
    """

    def __init__(self, neighbours=None, normalize=True, **kwargs):
        super().__init__(**kwargs)
        if neighbours is not None and (not isinstance(neighbours, int) or neighbours < 1):
            raise ValueError(f"neighbours={neighbours!r} must be None (dense) or a positive integer")
        self.neighbours = neighbours
        self.normalize = normalize

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 4 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                f"GridToGraph expects a feature map (B, h, w, C) with known h and w, got {input_shape}"
            )
        self.map_height, self.map_width = int(input_shape[1]), int(input_shape[2])
        super().build(input_shape)

    def adjacency(self):
        height, width = self.map_height, self.map_width
        if self.neighbours is None:
            dense = ops.inverse_distance_adjacency(ops.grid_positions(height, width)[None])[0]
            return ops.gcn_normalize(dense) if self.normalize else dense
        sparse = ops.grid_knn_adjacency(height, width, self.neighbours)
        return ops.gcn_normalize_sparse(sparse) if self.normalize else sparse

    def call(self, feature_map):
        nodes = tf.reshape(feature_map, [-1, self.map_height * self.map_width, feature_map.shape[-1]])
        return nodes, self.adjacency()

    def get_config(self):
        config = super().get_config()
        config.update(neighbours=self.neighbours, normalize=self.normalize)
        return config
