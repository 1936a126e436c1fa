"""The grid regressor's in-cell offsets: offsets to map positions, offset logits standardised
over an image's cells, and the distance of offsets to the uniform distribution.
"""
from keypoint_gnn._backend import tf


def cell_offsets_to_positions(offsets, cell_size):
    """Converts in-cell offsets to map positions.

    Args:
      offsets: (B, L, M, h, 2) (y, x) in [0, 1] within each cell of cell_size pixels.
      cell_size: cell side in feature-map pixels.

    Returns:
      (B, L * M * h, 2) positions in feature-map pixels; offset 0 is the cell's top/left edge,
      1 its bottom/right edge (pixel centres are at integer positions, so edges are at -0.5).
    """
    rows, cols, per_cell = offsets.shape[1], offsets.shape[2], offsets.shape[3]
    cell_y = tf.range(rows, dtype=offsets.dtype)[:, None, None]
    cell_x = tf.range(cols, dtype=offsets.dtype)[None, :, None]
    y = (cell_y + offsets[..., 0]) * cell_size - 0.5
    x = (cell_x + offsets[..., 1]) * cell_size - 0.5
    return tf.reshape(tf.stack([y, x], axis=-1), [-1, rows * cols * per_cell, 2])


# Standard deviation of the standard logistic distribution, pi / sqrt(3): a logit with that
# spread around 0 has a sigmoid uniform on (0, 1).
LOGISTIC_SD = 1.8137993642342178


def standardize_over_cells(logits, epsilon=1e-3):
    """Standardises each image's offset logits over its cells, then scales them by pi/sqrt(3).

    a'[b, l, m, k, c] = (a - mean_lm a[b, :, :, k, c]) / sqrt(var_lm a[b, :, :, k, c] + eps)
                        * pi / sqrt(3)

    per image b, point slot k and axis c. The mean and spread over the cells are fixed: no
    common shift (the same offset in every cell) can survive, and with logistic-shaped logits
    sigmoid(a') is uniform on (0, 1). Within an image the cells keep their order.

    Args:
      logits: (B, L, M, h, 2) offset logits.
      epsilon: added to the variance; a map of one cell (or equal logits) gives 0, offset 0.5.

    Returns:
      (B, L, M, h, 2), same dtype.
    """
    if logits.shape.rank != 5:
        raise ValueError(f"standardize_over_cells expects (B, L, M, h, 2) logits, got shape "
                         f"{logits.shape}")
    mean, variance = tf.nn.moments(logits, axes=[1, 2], keepdims=True)
    return (logits - mean) * tf.math.rsqrt(variance + epsilon) * LOGISTIC_SD


def wasserstein_to_uniform(values):
    """Squared 2-Wasserstein distance between each column's sample and the uniform on [0, 1].

    For the n values of a column sorted, x_(1) <= ... <= x_(n), the empirical quantile function
    is x_(i) on ((i-1)/n, i/n], and the uniform's is u, so

      W2^2 = int_0^1 (Q(u) - u)^2 du = 1/n sum_i (x_(i) - (i - 0.5)/n)^2 + 1/(12 n^2)

    exactly (the last term: the uniform's spread inside each 1/n step, the distance of a
    perfectly spread sample). It is 0 only in the limit of a uniform sample, grows as the values
    pile up anywhere (at the borders, at the centre, on a lattice), and is differentiable
    almost everywhere: the gradient moves each value towards its quantile (i - 0.5)/n.

    Args:
      values: (n, d) float, n >= 1 samples of d variables (e.g. the y and x in-cell offsets of
        n keypoints).

    Returns:
      (d,) distances, same dtype.
    """
    if values.shape.rank != 2:
        raise ValueError(f"wasserstein_to_uniform expects (n, d) values, got shape {values.shape}")
    count = tf.shape(values)[0]
    sorted_values = tf.sort(values, axis=0)
    n = tf.cast(count, values.dtype)
    quantiles = (tf.cast(tf.range(count), values.dtype) + 0.5) / n
    return (tf.reduce_mean(tf.square(sorted_values - quantiles[:, None]), axis=0)
            + 1.0 / (12.0 * tf.square(n)))


