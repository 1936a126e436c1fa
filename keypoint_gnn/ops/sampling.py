"""Moving features between maps and nodes: gathering and bilinear sampling (map -> nodes),
scatter-mean and bilinear splatting (nodes -> map).
"""
from keypoint_gnn._backend import tf


def gather_features(feature_map, positions):
    """Features at integer-valued positions.

    Args:
      feature_map: (B, h, w, C).
      positions: (B, N, 2) (y, x); rounded to the nearest cell and clipped to the map.

    Returns:
      (B, N, C).
    """
    index = _round_clip(positions, tf.shape(feature_map)[1], tf.shape(feature_map)[2])
    return tf.gather_nd(feature_map, index, batch_dims=1)


def _round_clip(positions, height, width):
    """(B, N, 2) float -> (B, N, 2) int32 cell indices inside [0, h-1] x [0, w-1]."""
    index = tf.cast(tf.round(positions), tf.int32)
    upper = tf.stack([height - 1, width - 1])
    return tf.clip_by_value(index, 0, upper)


def _bilinear_corners(positions, height, width):
    """The four cells around each fractional position and their bilinear weights.

    Positions are clipped to [0, h-1] x [0, w-1] first, so the weights always sum to 1.

    Returns:
      corners (B, N, 4, 2) int32 (y, x); weights (B, N, 4) float32.
    """
    positions = tf.cast(positions, tf.float32)
    y = tf.clip_by_value(positions[..., 0], 0.0, tf.cast(height - 1, tf.float32))
    x = tf.clip_by_value(positions[..., 1], 0.0, tf.cast(width - 1, tf.float32))
    y0 = tf.floor(y)
    x0 = tf.floor(x)
    dy = y - y0
    dx = x - x0
    y0 = tf.cast(y0, tf.int32)
    x0 = tf.cast(x0, tf.int32)
    y1 = tf.minimum(y0 + 1, height - 1)
    x1 = tf.minimum(x0 + 1, width - 1)
    corners = tf.stack(
        [tf.stack([y0, x0], -1), tf.stack([y0, x1], -1), tf.stack([y1, x0], -1), tf.stack([y1, x1], -1)],
        axis=-2,
    )
    weights = tf.stack([(1 - dy) * (1 - dx), (1 - dy) * dx, dy * (1 - dx), dy * dx], axis=-1)
    return corners, weights


def bilinear_sample(feature_map, positions):
    """Features at fractional positions, interpolated bilinearly.

    Differentiable with respect to both the feature map and the positions.

    Args:
      feature_map: (B, h, w, C).
      positions: (B, N, 2) (y, x), clipped to the map.

    Returns:
      (B, N, C).
    """
    corners, weights = _bilinear_corners(
        positions, tf.shape(feature_map)[1], tf.shape(feature_map)[2]
    )
    batch, num = tf.shape(corners)[0], tf.shape(corners)[1]
    values = tf.gather_nd(feature_map, tf.reshape(corners, [batch, num * 4, 2]), batch_dims=1)
    values = tf.reshape(values, [batch, num, 4, tf.shape(feature_map)[3]])
    weights = tf.cast(weights, values.dtype)
    return tf.reduce_sum(values * weights[..., None], axis=2)


def _batch_indices(cell_index):
    """(B, M, 2) int32 (y, x) -> (B, M, 3) int32 (b, y, x) for scatter_nd."""
    batch, num = tf.shape(cell_index)[0], tf.shape(cell_index)[1]
    batch_index = tf.broadcast_to(tf.range(batch)[:, None, None], [batch, num, 1])
    return tf.concat([batch_index, cell_index], axis=-1)


def _scatter_normalised(values, weights, cell_index, height, width):
    """Scatter weighted values; divide each cell by max(total weight, 1).

    With unit weights this is the mean of the values landing on a cell (the authors' graph->CNN
    rule); with bilinear weights an isolated node keeps its weighted contribution, so gradients
    still reach its position, while collisions are averaged.
    """
    indices = _batch_indices(cell_index)
    batch = tf.shape(values)[0]
    channels = tf.shape(values)[-1]
    weights = tf.cast(weights, values.dtype)
    # expand_dims, not weights[..., None]: with batch and node count both dynamic (a TFLite export
    # with a dynamic batch) the converter cannot lower a new-axis strided slice to a builtin op.
    total = tf.scatter_nd(indices, values * tf.expand_dims(weights, -1),
                          [batch, height, width, channels])
    weight_sum = tf.scatter_nd(indices, weights, [batch, height, width])
    return total / tf.maximum(weight_sum, 1.0)[..., None]


def scatter_mean(nodes, positions, height, width):
    """Writes node features into a zero (B, height, width, C) map at their nearest cells.

    Nodes that land on the same cell are averaged.

    Args:
      nodes: (B, N, C).
      positions: (B, N, 2) (y, x); rounded and clipped to the map.

    Returns:
      (B, height, width, C).
    """
    cell_index = _round_clip(positions, height, width)
    weights = tf.ones(tf.shape(nodes)[:2], dtype=nodes.dtype)
    return _scatter_normalised(nodes, weights, cell_index, height, width)


def bilinear_splat(nodes, positions, height, width):
    """Writes node features into a zero map, spread bilinearly over the 4 nearest cells.

    Each cell is divided by max(sum of weights, 1): overlapping nodes are averaged, an isolated
    node keeps its bilinear share (so the result is differentiable in the positions).

    Returns:
      (B, height, width, C).
    """
    corners, weights = _bilinear_corners(positions, height, width)
    batch, num = tf.shape(nodes)[0], tf.shape(nodes)[1]
    channels = tf.shape(nodes)[2]
    values = tf.reshape(tf.repeat(nodes[:, :, None, :], 4, axis=2), [batch, num * 4, channels])
    return _scatter_normalised(
        values,
        tf.reshape(weights, [batch, num * 4]),
        tf.reshape(corners, [batch, num * 4, 2]),
        height,
        width,
    )
