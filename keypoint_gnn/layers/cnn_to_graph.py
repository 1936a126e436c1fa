"""CNN-to-graph interconnect (paper §5)."""
from keypoint_gnn import ops, rules
from keypoint_gnn._backend import keras, tf


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class CNNToGraph(keras.layers.Layer):
    """CNN-to-graph interconnect (paper §5): keypoint features become graph nodes.

    The feature vectors at the N keypoints become the nodes, scaled by the keypoint scores so
    that the task loss reaches the detector; the edges carry the inverse Euclidean distance
    between keypoints, as in the authors' code:

        X_i = s_i * F[p_i]      ([s_i * F[p_i], p_i / (h-1, w-1)] with `position_features`)
        A_ij = (1 / (1 + |p_i - p_j|)) / max_{k != l} (1 / (1 + |p_k - p_l|)),   A_ii = 1

    and, with `normalize=True`, A <- D^-1/2 A D^-1/2 (the GCN filter). With
    `position_features=True` (beyond the paper) each node also carries its position scaled to
    [0, 1], so the GNN can relate where the parts are and not only what they look like.

    Args:
      sampling: `"gather"` (the features at the rounded positions) or `"bilinear"` (for
        fractional positions; differentiable in the positions).
      normalize: apply the GCN normalisation to the adjacency (Spektral's `GCNConv` expects
        it; `DiffPool` normalises on its own).
      position_features: append each keypoint's normalised (y, x) to its features.

    Input shape:
      `[feature_map (B, h, w, C), positions (B, N, 2), scores (B, N)]`, positions (y, x) in
      feature-map pixels.

    Output shape:
      `[nodes (B, N, C) or (B, N, C + 2), adjacency (B, N, N)]`.

    Example:

    >>> layer = CNNToGraph(position_features=True)
    >>> positions = tf.constant([[[0., 0.], [3., 4.]]])
    >>> nodes, adjacency = layer([tf.ones([1, 8, 8, 16]), positions, tf.ones([1, 2])])
    >>> nodes.shape, adjacency.shape
    (TensorShape([1, 2, 18]), TensorShape([1, 2, 2]))
    """

    def __init__(self, sampling="gather", normalize=True, position_features=False, **kwargs):
        super().__init__(**kwargs)
        rules.check_choice("sampling", sampling, rules.SAMPLING_MODES)
        self.sampling = sampling
        self.normalize = normalize
        self.position_features = position_features

    def call(self, inputs):
        feature_map, positions, scores = inputs
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
