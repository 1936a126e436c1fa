"""Hard keypoint selection from score maps: the top-k locations, and large-maxpool non-max
suppression over non-overlapping p x p windows (window max and argmax, one candidate per window).
"""
from keypoint_gnn._backend import tf


def _squeeze_score_map(score_map):
    """(B, h, w, 1) or (B, h, w) -> (B, h, w)."""
    if score_map.shape.rank == 4:
        if score_map.shape[-1] not in (1, None):
            raise ValueError(
                f"score map must have 1 channel, got shape {score_map.shape}"
            )
        return score_map[..., 0]
    if score_map.shape.rank != 3:
        raise ValueError(
            f"score map must have shape (B, h, w) or (B, h, w, 1), got {score_map.shape}"
        )
    return score_map


def top_k_positions(score_map, k):
    """Top-k locations of a score map.

    Args:
      score_map: (B, h, w) or (B, h, w, 1).
      k: number of locations, at most h * w.

    Returns:
      positions (B, k, 2) float32 (y, x), integer-valued; scores (B, k), highest first.
    """
    score_map = _squeeze_score_map(score_map)
    height, width = score_map.shape[1], score_map.shape[2]
    if height is not None and width is not None and k > height * width:
        raise ValueError(
            f"num_keypoints={k} exceeds the {height}x{width}={height * width} locations "
            "of the feature map"
        )
    width_t = tf.shape(score_map)[2]
    flat = tf.reshape(score_map, [tf.shape(score_map)[0], -1])
    scores, flat_index = tf.math.top_k(flat, k=k, sorted=True)
    positions = tf.stack([flat_index // width_t, flat_index % width_t], axis=-1)
    return tf.cast(positions, tf.float32), scores


def _check_divides(pool_size, height, width):
    for name, size in (("height", height), ("width", width)):
        if size is not None and size % pool_size:
            raise ValueError(
                f"pool_size={pool_size} does not divide the feature map {name} {size}; "
                f"use a divisor of {size}"
            )


def _windows(score_map, pool_size):
    """(B, h, w) -> (B, h/p, w/p, p*p): each non-overlapping p x p window's values, row-major
    within the window. Built from reshapes (XLA, TFLite)."""
    height, width = score_map.shape[1], score_map.shape[2]
    _check_divides(pool_size, height, width)
    rows, cols = height // pool_size, width // pool_size
    windows = tf.reshape(score_map, [-1, rows, pool_size, cols, pool_size])
    windows = tf.transpose(windows, [0, 1, 3, 2, 4])
    return tf.reshape(windows, [-1, rows, cols, pool_size * pool_size])


def window_argmax(score_map, pool_size):
    """Max and argmax of each non-overlapping pool_size x pool_size window.

    A large max-pool that remembers where its maximum was, relative to the unpooled map
    (paper §4.3). Built from reshapes so that it runs under XLA and converts to TFLite.

    Args:
      score_map: (B, h, w) or (B, h, w, 1); h and w divisible by pool_size.
      pool_size: window side in feature-map pixels.

    Returns:
      window_max (B, h/p, w/p); positions (B, h/p, w/p, 2) float32 (y, x) of each window's
      maximum in unpooled feature-map pixels.
    """
    score_map = _squeeze_score_map(score_map)
    height, width = score_map.shape[1], score_map.shape[2]
    rows, cols = height // pool_size, width // pool_size
    windows = _windows(score_map, pool_size)
    window_max = tf.reduce_max(windows, axis=-1)
    local = tf.argmax(windows, axis=-1, output_type=tf.int32)
    row_start = tf.range(rows, dtype=tf.int32)[:, None] * pool_size
    col_start = tf.range(cols, dtype=tf.int32)[None, :] * pool_size
    y = row_start + local // pool_size
    x = col_start + local % pool_size
    positions = tf.cast(tf.stack([y, x], axis=-1), tf.float32)
    return window_max, positions


def window_candidates(score_map, pool_size):
    """Each window's maximum as a candidate keypoint, flattened row-major over the windows.

    Args:
      score_map: (B, h, w) or (B, h, w, 1), h and w static and divisible by pool_size.
      pool_size: window side (1: every location is a candidate).

    Returns:
      scores (B, n), positions (B, n, 2) float32 (y, x) in unpooled pixels; n = (h/p)(w/p).
    """
    window_max, window_positions = window_argmax(score_map, pool_size)
    count = window_max.shape[1] * window_max.shape[2]
    return tf.reshape(window_max, [-1, count]), tf.reshape(window_positions, [-1, count, 2])


def max_pool_nms(score_map, pool_size, k):
    """Large-maxpool non-max suppression: window maxima, then the top k windows.

    No two keypoints share a pooling window.

    Returns:
      positions (B, k, 2) float32 (y, x) in unpooled pixels; scores (B, k), highest first.
    """
    window_max, window_positions = window_argmax(score_map, pool_size)
    rows, cols = window_max.shape[1], window_max.shape[2]
    if k > rows * cols:
        raise ValueError(
            f"num_keypoints={k} exceeds the {rows}x{cols}={rows * cols} pooling windows "
            f"of size {pool_size}; lower num_keypoints or pool_size"
        )
    batch = tf.shape(window_max)[0]
    scores, flat_index = tf.math.top_k(tf.reshape(window_max, [batch, -1]), k=k)
    positions = tf.gather(tf.reshape(window_positions, [batch, -1, 2]), flat_index, batch_dims=1)
    return positions, scores
