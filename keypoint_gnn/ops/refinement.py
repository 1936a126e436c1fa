"""Keypoints placed within the NMS windows holding them: the soft-argmax of the window's scores
(sub-pixel refinement, as ALIKED) or the window's centre.
"""
from keypoint_gnn._backend import tf
from keypoint_gnn.ops.sampling import _round_clip
from keypoint_gnn.ops.selection import _check_divides, _squeeze_score_map, _windows
from keypoint_gnn.rules import check_positive_int


def window_soft_argmax(score_map, pool_size):
    """Soft-argmax of each non-overlapping p x p window: sum_j softmax_j(s_j) c_j over the
    window's p*p locations c_j. Flat scores give the window's centre; one dominant score,
    its location.

    Args:
      score_map: (B, h, w) or (B, h, w, 1) raw scores (logits); h and w divisible by p.
      pool_size: p.

    Returns:
      (B, h/p, w/p, 2) float32 (y, x) in unpooled feature-map pixels.
    """
    scores = tf.cast(_squeeze_score_map(score_map), tf.float32)
    weights = tf.nn.softmax(_windows(scores, pool_size), axis=-1)  # (B, rows, cols, p*p)
    local = tf.range(pool_size * pool_size)
    offsets = tf.cast(tf.stack([local // pool_size, local % pool_size], axis=-1), tf.float32)
    rows, cols = weights.shape[1], weights.shape[2]
    starts = tf.cast(tf.stack(tf.meshgrid(tf.range(rows), tf.range(cols), indexing="ij"), -1),
                     tf.float32) * pool_size  # (rows, cols, 2)
    return starts + tf.einsum("brcj,jk->brck", weights, offsets)


def refine_in_windows(score_map, positions, pool_size):
    """Sub-pixel refinement within NMS windows: each keypoint moves to the soft-argmax of the
    p x p window holding it (`window_soft_argmax`), so it stays inside its window.

    Args:
      score_map: (B, h, w) or (B, h, w, 1) raw scores; h and w divisible by p.
      positions: (B, N, 2) (y, x), rounded and clipped to the map.
      pool_size: p.

    Returns:
      (B, N, 2) float32 refined positions.
    """
    check_positive_int("pool_size", pool_size)
    centres = window_soft_argmax(score_map, pool_size)
    height, width = tf.shape(centres)[1] * pool_size, tf.shape(centres)[2] * pool_size
    window = _round_clip(positions, height, width) // pool_size
    return tf.gather_nd(centres, window, batch_dims=1)


def window_centres(score_map, positions, pool_size):
    """Each keypoint -> the centre of the p x p NMS window holding it: a fixed lattice of
    window centres, chosen by the selection. Bilinear sampling there gives the window's mean
    feature. The positions carry no gradient (they depend on the selection only).

    Args:
      score_map: (B, h, w) or (B, h, w, 1); only its size is used (h and w divisible by p).
      positions: (B, N, 2) (y, x), rounded and clipped to the map.
      pool_size: p.

    Returns:
      (B, N, 2) float32 window centres.
    """
    check_positive_int("pool_size", pool_size)
    score_map = _squeeze_score_map(score_map)
    _check_divides(pool_size, score_map.shape[1], score_map.shape[2])
    height, width = tf.shape(score_map)[1], tf.shape(score_map)[2]
    window = _round_clip(positions, height, width) // pool_size
    return tf.cast(window * pool_size, tf.float32) + (pool_size - 1) / 2


