"""CNN<->graph interconnect layers (paper §5, §6 and the introduction's dense variant)."""
from keypoint_gnn import ops
from keypoint_gnn._backend import keras, tf

SAMPLING_MODES = ("gather", "bilinear")


def _check_sampling(sampling):
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling={sampling!r} is not one of {SAMPLING_MODES}")


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class CNNToGraph(keras.layers.Layer):
    """CNN-to-graph interconnect (paper §5).

    The feature vectors at the N keypoints become the nodes, scaled by the keypoint scores so
    that the task loss reaches the detector; the edges carry the inverse Euclidean distance
    between keypoints, as in the authors' code:

        X_i = s_i * F[p_i]      ([s_i * F[p_i], p_i / (h-1, w-1)] with `position_features`)
        A_ij = (1 / (1 + |p_i - p_j|)) / max_{k != l} (1 / (1 + |p_k - p_l|)),   A_ii = 1

    and, with `normalize=True`, A <- D^-1/2 A D^-1/2 (the GCN filter, computed in TensorFlow).

    With `position_features=True` (beyond the paper) each node also carries its position
    scaled to [0, 1], (y / (h - 1), x / (w - 1)), so that the GNN can relate where the parts
    are and not only what they look like.

    **Input**: `[feature_map (B, h, w, C), positions (B, N, 2), scores (B, N)]`; positions
    (y, x) in feature-map pixels. Optionally a fourth tensor, `node_weights (B, N, h*w)` (from
    `PerturbedTopK(selection="features")` or `"keypoints"`): the nodes are then X_k = sum_l W_kl F_l
    (`ops.weighted_features`), which already carry the scores; `positions` still give the
    edges and the position features.
    **Output**: `[nodes (B, N, C) or (B, N, C + 2), adjacency (B, N, N)]`.

    Arguments:
      sampling: `"gather"` (`tf.gather_nd` at the rounded positions) or `"bilinear"` (for the
        fractional positions of the coordinate regressor; differentiable in the positions).
      normalize: apply the GCN normalisation to the adjacency (Spektral's `GCNConv` expects
        it; `DiffPool` normalises on its own).
      position_features: append the normalised (y, x) of each keypoint to its features.
    """

    def __init__(self, sampling="gather", normalize=True, position_features=False, **kwargs):
        super().__init__(**kwargs)
        _check_sampling(sampling)
        self.sampling = sampling
        self.normalize = normalize
        self.position_features = position_features

    def call(self, inputs):
        feature_map, positions, scores, *node_weights = inputs
        if node_weights:  # the scores are already in the weights
            nodes = ops.weighted_features(feature_map, node_weights[0])
        else:
            sample = ops.bilinear_sample if self.sampling == "bilinear" else ops.gather_features
            nodes = sample(feature_map, positions)
            nodes = nodes * tf.cast(scores, nodes.dtype)[..., None]
        if self.position_features:
            extent = tf.cast(tf.maximum(tf.shape(feature_map)[1:3] - 1, 1), positions.dtype)
            nodes = tf.concat([nodes, tf.cast(positions / extent, nodes.dtype)], axis=-1)
        adjacency = ops.inverse_distance_adjacency(positions)
        if self.normalize:
            adjacency = ops.gcn_normalize(adjacency)
        return nodes, tf.cast(adjacency, nodes.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(sampling=self.sampling, normalize=self.normalize,
                      position_features=self.position_features)
        return config


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class GraphToCNN(keras.layers.Layer):
    """Graph-to-CNN interconnect (paper §6).

    Writes the node features back at their keypoint locations in a zero tensor with
    `tf.scatter_nd`; nodes landing on the same cell are averaged (the authors' rule).

    **Input**: `[nodes (B, N, C), positions (B, N, 2)]`. Optionally a third tensor,
    `location_weights (B, N, height*width)` (from `PerturbedTopK(selection="keypoints")`): node
    k is then written at every location l with weight W_kl (`ops.weighted_scatter`), which for
    one-hot rows is the scatter at the positions and passes the detector a gradient for where
    each node is written.
    **Output**: `(B, height, width, C)`.

    Arguments:
      height, width: size of the output map (the feature map the positions refer to).
      sampling: `"gather"` (nearest cell) or `"bilinear"` (splat over the four nearest cells,
        each cell divided by max(total weight, 1); differentiable in the positions).
    """

    def __init__(self, height, width, sampling="gather", **kwargs):
        super().__init__(**kwargs)
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        _check_sampling(sampling)
        self.height = height
        self.width = width
        self.sampling = sampling

    def call(self, inputs):
        nodes, positions, *location_weights = inputs
        if location_weights:
            return ops.weighted_scatter(nodes, location_weights[0], self.height, self.width)
        if self.sampling == "bilinear":
            return ops.bilinear_splat(nodes, positions, self.height, self.width)
        return ops.scatter_mean(nodes, positions, self.height, self.width)

    def get_config(self):
        config = super().get_config()
        config.update(height=self.height, width=self.width, sampling=self.sampling)
        return config


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class GridToGraph(keras.layers.Layer):
    """Dense CNN-to-graph interconnect: every feature-map location is a node (introduction).

    All images share one grid graph, so the adjacency is a single `(h*w, h*w)` matrix
    (Spektral's "mixed" mode):

    - `neighbours=None`: dense inverse-distance adjacency over all pairs; memory grows as
      (h*w)^2, which is fine at 16x16 (65k entries) and impossible at 128x128 (268M).
    - `neighbours=k`: a `tf.SparseTensor` joining each cell to its k nearest grid neighbours,
      with the same edge weights; memory grows linearly with h*w.

    **Input**: feature map `(B, h, w, C)`.
    **Output**: `[nodes (B, h*w, C), adjacency (h*w, h*w)]` (dense tensor or SparseTensor),
    GCN-normalised when `normalize=True`.

    Arguments:
      neighbours: None for the dense graph, or k >= 1 for the sparse one.
      normalize: apply D^-1/2 A D^-1/2.
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
