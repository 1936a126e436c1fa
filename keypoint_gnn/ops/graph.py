"""Graphs over keypoints and grid cells: distance-based adjacencies, GCN normalisation (dense
and sparse) and the grid k-nearest-neighbour adjacency.
"""
from keypoint_gnn._backend import tf


def pairwise_distances(positions):
    """Euclidean distances between keypoints: (B, N, 2) -> (B, N, N)."""
    positions = tf.cast(positions, tf.float32)
    diff = positions[:, :, None, :] - positions[:, None, :, :]
    # sqrt has an infinite gradient at 0 (the diagonal), so keep it off zero.
    squared = tf.reduce_sum(tf.square(diff), axis=-1)
    return tf.sqrt(tf.maximum(squared, 1e-12))


def inverse_distance_adjacency(positions):
    """Edge weights from keypoint distances, as in the authors' interconnect code.

    w_ij = 1 / (1 + d_ij) for i != j, divided by the largest off-diagonal weight of the graph;
    the diagonal is set to that maximum (1 after division), so every node keeps a self loop.

    Args:
      positions: (B, N, 2).

    Returns:
      (B, N, N) float32, symmetric, entries in (0, 1].
    """
    distances = pairwise_distances(positions)
    weights = 1.0 / (1.0 + distances)
    num = tf.shape(positions)[1]
    eye = tf.eye(num, dtype=weights.dtype)
    off_diagonal = weights * (1.0 - eye)
    largest = tf.reduce_max(off_diagonal, axis=[1, 2], keepdims=True)
    largest = tf.where(largest > 0, largest, tf.ones_like(largest))
    return off_diagonal / largest + eye


def gcn_normalize(adjacency, add_self_loops=False):
    """Symmetric GCN normalisation D^-1/2 A D^-1/2 (Kipf & Welling 2017).

    Args:
      adjacency: (..., N, N) non-negative weights.
      add_self_loops: add the identity first (A + I). Adjacencies from
        `inverse_distance_adjacency` already carry self loops.

    Returns:
      (..., N, N); rows of isolated nodes stay zero.
    """
    if add_self_loops:
        adjacency = adjacency + tf.eye(tf.shape(adjacency)[-1], dtype=adjacency.dtype)
    degree = tf.reduce_sum(adjacency, axis=-1)
    inv_sqrt = tf.where(degree > 0, tf.math.rsqrt(tf.maximum(degree, 1e-12)), tf.zeros_like(degree))
    return adjacency * inv_sqrt[..., :, None] * inv_sqrt[..., None, :]


def grid_positions(height, width):
    """Every cell of an (height, width) map as a position: (height * width, 2) float32 (y, x)."""
    y, x = tf.meshgrid(tf.range(height), tf.range(width), indexing="ij")
    return tf.cast(tf.reshape(tf.stack([y, x], axis=-1), [-1, 2]), tf.float32)


def grid_neighbour_offsets(k):
    """The k grid offsets nearest to (0, 0), excluding it; ties broken row-major.

    Returns a Python list of (dy, dx).
    """
    if k < 1:
        raise ValueError(f"k={k} must be a positive number of neighbours")
    radius = 1
    while (2 * radius + 1) ** 2 - 1 < k:
        radius += 1
    offsets = [
        (dy, dx)
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
        if (dy, dx) != (0, 0)
    ]
    offsets.sort(key=lambda o: (o[0] ** 2 + o[1] ** 2, o[0], o[1]))
    return offsets[:k]


def grid_knn_adjacency(height, width, k):
    """Sparse adjacency joining each cell to its k nearest grid neighbours (plus itself).

    Edge weights follow `inverse_distance_adjacency`: 1 / (1 + d) divided by the largest
    off-diagonal weight, self loops 1. Memory grows linearly with height * width.

    Returns:
      tf.SparseTensor (h*w, h*w) float32, canonically ordered.
    """
    offsets = grid_neighbour_offsets(k)
    y, x = tf.meshgrid(tf.range(height), tf.range(width), indexing="ij")
    y = tf.reshape(y, [-1])
    x = tf.reshape(x, [-1])
    nodes = tf.range(height * width)
    rows, cols, weights = [nodes], [nodes], [tf.ones([height * width])]
    largest = 1.0 / (1.0 + min((dy * dy + dx * dx) ** 0.5 for dy, dx in offsets))
    for dy, dx in offsets:
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        rows.append(tf.boolean_mask(nodes, inside))
        cols.append(tf.boolean_mask(ny * width + nx, inside))
        weight = (1.0 / (1.0 + (dy * dy + dx * dx) ** 0.5)) / largest
        weights.append(tf.fill(tf.shape(rows[-1]), weight))
    indices = tf.cast(tf.stack([tf.concat(rows, 0), tf.concat(cols, 0)], axis=1), tf.int64)
    sparse = tf.SparseTensor(indices, tf.concat(weights, 0), [height * width, height * width])
    return tf.sparse.reorder(sparse)


def gcn_normalize_sparse(adjacency):
    """D^-1/2 A D^-1/2 for a tf.SparseTensor that already has self loops."""
    degree = tf.sparse.reduce_sum(adjacency, axis=-1)
    inv_sqrt = tf.math.rsqrt(degree)
    rows, cols = adjacency.indices[:, 0], adjacency.indices[:, 1]
    values = adjacency.values * tf.gather(inv_sqrt, rows) * tf.gather(inv_sqrt, cols)
    return tf.SparseTensor(adjacency.indices, values, adjacency.dense_shape)
