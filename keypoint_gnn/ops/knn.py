"""k-nearest-neighbour graphs over node features, rebuilt per layer as in Vision GNN (Han et al.
2022), and the neighbours' features gathered for a graph convolution.
"""
from keypoint_gnn._backend import tf
from keypoint_gnn.rules import check_knn, check_non_negative_number


def knn_distances(features, positions=None, position_weight=0.0):
    """The distances `knn_indices` ranks: squared Euclidean distances between the L2-normalised
    feature vectors, plus `position_weight * |p_i - p_j|^2` when positions are given.

    Args:
      features: (B, N, F).
      positions: None or (B, N, 2), e.g. (y, x) normalised to [0, 1].
      position_weight: weight of the squared position distance.

    Returns:
      (B, N, N) float32, diagonal included (about 0).
    """
    features = tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)
    squared_norms = tf.reduce_sum(tf.square(features), axis=-1)
    inner = tf.matmul(features, features, transpose_b=True)
    distances = squared_norms[:, :, None] - 2.0 * inner + squared_norms[:, None, :]
    if positions is not None and position_weight:
        positions = tf.cast(positions, tf.float32)
        difference = positions[:, :, None, :] - positions[:, None, :, :]
        distances += float(position_weight) * tf.reduce_sum(tf.square(difference), axis=-1)
    return distances


def knn_indices(features, k, dilation=1, positions=None, position_weight=0.0):
    """Each node's k nearest other nodes, ViG's (dilated) kNN graph.

        d_ij = |x_i / |x_i| - x_j / |x_j||^2 + position_weight * |p_i - p_j|^2

    The node itself is never among its neighbours (its distance is set to +inf). With
    `dilation` d > 1 the k * d nearest are ranked and every d-th is kept (ranks 0, d, 2d, ...),
    ViG's dilated kNN: the same k neighbours reach further. Equal distances are ranked by the
    lower node index first (`tf.math.top_k`'s order). The indices carry no gradient.

    Args:
      features: (B, N, F); B may be unknown.
      k: neighbours per node, k >= 1.
      dilation: d >= 1; k * d must be below N.
      positions: None or (B, N, 2) (the relative-position term), e.g. normalised to [0, 1].
      position_weight: weight >= 0 of the squared position distance.

    Returns:
      (B, N, k) int32, nearest first.
    """
    check_knn(k, dilation, features.shape[1])
    check_non_negative_number("position_weight", position_weight)
    distances = tf.stop_gradient(knn_distances(features, positions, position_weight))
    num_nodes = tf.shape(distances)[1]
    diagonal = tf.eye(num_nodes, dtype=tf.bool)
    distances = tf.where(diagonal, tf.constant(float("inf")), distances)
    _, nearest = tf.math.top_k(-distances, k=k * dilation)
    return nearest[:, :, ::dilation]


def gather_neighbours(nodes, indices):
    """The neighbours' features: (B, N, F) nodes, (B, N, k) indices -> (B, N, k, F)."""
    return tf.gather(nodes, indices, batch_dims=1)
