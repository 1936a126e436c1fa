"""Pure TensorFlow functions behind the keypoint-gnn layers.

Conventions:
- Keypoint positions are `(y, x)` in feature-map pixel units, float32, shape `(B, N, 2)`; pixel
  `(i, j)` has its centre at position `(i, j)`. Integer-valued positions index cells directly;
  fractional ones are sampled and splatted bilinearly.
- Score maps are `(B, h, w)` or `(B, h, w, 1)`.
- Nothing here creates variables or knows about Keras.
"""
import math

from keypoint_gnn._backend import tf
from keypoint_gnn._checks import check_positive_int


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


def refine_positions(score_map, positions, radius=1):
    """Sub-pixel refinement: each keypoint moves to the soft-argmax of the scores around it.

    For a keypoint at cell p (its position rounded) and the offsets d of the
    (2r+1) x (2r+1) window (only those that land on the map),

      p' = p + sum_d softmax_d(s(p + d)) d,

    a local spatial soft-argmax (as in DSNT, Nibali et al. 2018, applied around a detected
    peak): p' stays within r cells of p, lies at p when the neighbours score alike on every
    side, and is differentiable in the scores, so the task loss reaches where the keypoint is,
    not only which cell holds it.

    Args:
      score_map: (B, h, w) or (B, h, w, 1) raw scores (logits: the softmax's temperature is
        the scores' own scale).
      positions: (B, N, 2) (y, x), rounded to the nearest cell and clipped to the map.
      radius: r >= 1, window half-side in cells.

    Returns:
      (B, N, 2) float32 refined positions.
    """
    check_positive_int("radius", radius)
    scores = tf.cast(_squeeze_score_map(score_map), tf.float32)
    height, width = tf.shape(scores)[1], tf.shape(scores)[2]
    span = tf.range(-radius, radius + 1)
    offsets = tf.reshape(tf.stack(tf.meshgrid(span, span, indexing="ij"), axis=-1), [-1, 2])
    centre = _round_clip(positions, height, width)  # (B, N, 2)
    cells = centre[:, :, None, :] + offsets  # (B, N, K, 2)
    inside = tf.reduce_all((cells >= 0) & (cells < tf.stack([height, width])), axis=-1)
    values = tf.gather_nd(scores, tf.clip_by_value(cells, 0, tf.stack([height - 1, width - 1])),
                          batch_dims=1)  # (B, N, K)
    weights = tf.nn.softmax(tf.where(inside, values, tf.fill(tf.shape(values), -1e9)), axis=-1)
    shift = tf.einsum("bnk,kc->bnc", weights, tf.cast(offsets, tf.float32))
    return tf.cast(centre, tf.float32) + shift


def location_weights(weights, positions, height, width):
    """Per-node weights over candidate locations -> per-node weights over the whole map.

      W[b, k, y_j * w + x_j] = weights[b, k, j],   0 at locations holding no candidate,

    so that `weighted_features(F, W)[b, k] = sum_j weights[b, k, j] F[b, y_j, x_j]`. Built with
    one `tf.scatter_nd` per batch (memory B * h*w * N, not B * n * h*w).

    Args:
      weights: (B, N, n) float, one row per node.
      positions: (B, n, 2) the candidates' (y, x), integer-valued and distinct within an image
        (rounded and clipped to the map; candidates sharing a location add up).
      height, width: the map's size.

    Returns:
      (B, N, height * width).
    """
    index = _round_clip(positions, height, width)
    flat = index[..., 0] * width + index[..., 1]  # (B, n)
    batch = tf.broadcast_to(tf.range(tf.shape(flat)[0])[:, None], tf.shape(flat))
    per_location = tf.scatter_nd(
        tf.stack([batch, flat], axis=-1),
        tf.transpose(weights, [0, 2, 1]),  # (B, n, N)
        tf.stack([tf.shape(weights)[0], height * width, tf.shape(weights)[1]]),
    )
    return tf.transpose(per_location, [0, 2, 1])


def weighted_features(feature_map, node_weights):
    """Node features as weighted sums of feature-map locations.

    Args:
      feature_map: (B, h, w, C).
      node_weights: (B, N, h*w), e.g. from `location_weights`.

    Returns:
      (B, N, C): sum_l node_weights[b, k, l] F[b, l] (row-major locations).
    """
    shape = tf.shape(feature_map)
    flat = tf.reshape(feature_map, [shape[0], shape[1] * shape[2], shape[3]])
    return tf.einsum("bkl,blc->bkc", tf.cast(node_weights, flat.dtype), flat)


def weighted_scatter(nodes, node_weights, height, width):
    """Writes node features into a map with per-node weights over its locations.

      G[b, l] = sum_k W[b, k, l] X[b, k] / max(sum_k W[b, k, l], 1)

    The divisor is not differentiated. With one-hot rows W (distinct locations, as
    `location_weights` gives for a hard selection) this is `scatter_mean`, and dG/dW[b, k, l] =
    X[b, k] at every location l: what writing node k there instead would change.

    Args:
      nodes: (B, N, C).
      node_weights: (B, N, height * width), row-major locations.
      height, width: the map's size.

    Returns:
      (B, height, width, C).
    """
    node_weights = tf.cast(node_weights, nodes.dtype)
    total = tf.stop_gradient(tf.maximum(tf.reduce_sum(node_weights, axis=1), 1.0))  # (B, h*w)
    flat = tf.einsum("bkl,bkc->blc", node_weights, nodes) / total[..., None]
    return tf.reshape(flat, [tf.shape(nodes)[0], height, width, tf.shape(nodes)[2]])


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


def widen_offsets(offsets, margin):
    """Stretches in-cell offsets from [0, 1] to [-margin, 1 + margin].

    offset' = (1 + 2 * margin) * offset - margin

    A cell's keypoint may then reach `margin` cells into its neighbours (YOLOv4's "eliminate
    grid sensitivity", Bochkovskiy et al. 2020; YOLOv5's 2 * sigmoid - 0.5 is margin 0.5), so
    the cell border is an ordinary position inside the range, not its saturated end.

    Args:
      offsets: (..., 2) (y, x) in [0, 1].
      margin: float >= 0, in cell units; 0 returns `offsets` unchanged.

    Returns:
      (..., 2) offsets in [-margin, 1 + margin], cell units (0: the cell's top/left edge).
    """
    if margin == 0:
        return offsets
    return (1.0 + 2.0 * margin) * offsets - margin


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


def soft_argmax_offsets(logits, size):
    """Spatial soft-argmax of a size x size heat map inside a cell (DSNT, Nibali et al. 2018).

    offset = sum_ij softmax(logits)_ij * ((i + 0.5) / s, (j + 0.5) / s)

    the expected bin centre under the softmax, so that gradients reach every bin and the offset
    moves smoothly inside the cell. Bin i * s + j is row (y) i, column (x) j.

    Args:
      logits: (..., s * s) unnormalised heat-map logits, row-major.
      size: s, bins per cell side.

    Returns:
      (..., 2) (y, x) offsets in [0.5 / s, 1 - 0.5 / s], relative to the cell (0 its top/left
      edge, 1 its bottom/right edge): a bin centre is as close to a border as they can get.
    """
    _check_heatmap_logits("soft_argmax_offsets", logits, size)
    probabilities = tf.nn.softmax(logits, axis=-1)
    return tf.tensordot(probabilities, _bin_centres(size, probabilities.dtype), axes=1)


def argmax_offsets_straight_through(logits, size):
    """The centre of each heat map's highest bin, with the soft-argmax's gradient.

    forward:  ((i* + 0.5) / s, (j* + 0.5) / s), (i*, j*) = argmax of the logits
    backward: d soft_argmax_offsets / d logits (straight-through estimator)

    The soft-argmax of a spread-out map lies near the cell centre whatever its peak; the
    argmax does not, so a keypoint sits where its heat map peaks in training and inference
    alike, while the task loss still reaches every bin. Ties go to the first bin.

    Args:
      logits: (..., s * s) heat-map logits, row-major.
      size: s.

    Returns:
      (..., 2) (y, x) bin centres in cell units.
    """
    soft = soft_argmax_offsets(logits, size)
    best = tf.argmax(logits, axis=-1)
    hard = tf.gather(_bin_centres(size, soft.dtype), best)
    return soft + tf.stop_gradient(hard - soft)


def _check_heatmap_logits(name, logits, size):
    if logits.shape[-1] is not None and logits.shape[-1] != size * size:
        raise ValueError(
            f"{name} expects {size}x{size}={size * size} logits per heat map, got "
            f"last dimension {logits.shape[-1]}"
        )


def _bin_centres(size, dtype):
    """(s * s, 2) (y, x) centres of the bins of an s x s heat map, in cell units, row-major."""
    centres = (tf.range(size, dtype=dtype) + 0.5) / size
    return tf.stack([tf.repeat(centres, size), tf.tile(centres, [size])], axis=-1)


def heatmap_spread(logits, size):
    """Standard deviation of a softmax heat map along y and x, in bins (DSNT's spread).

    sd_y = s * sqrt(sum_ij p_ij y_ij^2 - (sum_ij p_ij y_ij)^2), likewise for x, with p the
    softmax of the logits and (y_ij, x_ij) the bin centres in cell units as in
    `soft_argmax_offsets`. A one-hot map has spread 0; a flat one sqrt((s^2 - 1) / 12).

    Args:
      logits: (..., s * s) heat-map logits, row-major.
      size: s, bins per cell side.

    Returns:
      (..., 2) (y, x) standard deviations in bins, >= 0.
    """
    _check_heatmap_logits("heatmap_spread", logits, size)
    probabilities = tf.nn.softmax(logits, axis=-1)
    centres = _bin_centres(size, probabilities.dtype) * size
    mean = tf.tensordot(probabilities, centres, axes=1)
    second = tf.tensordot(probabilities, tf.square(centres), axes=1)
    # sqrt has an infinite slope at 0: the small floor keeps a one-hot map's gradient finite.
    return tf.sqrt(tf.maximum(second - tf.square(mean), 0.0) + 1e-6)


def heatmap_spread_penalty(logits, size, target):
    """DSNT's variance regularisation (Nibali et al. 2018, §4.2), on the standard deviation:

      penalty = mean over heat maps of (sd_y - target)^2 + (sd_x - target)^2   (bins)

    It keeps each cell's heat map as concentrated as `target` bins, so that the soft-argmax
    lands where the map peaks instead of being pulled to the cell centre by a spread-out map.

    Args:
      logits: (..., s * s) heat-map logits.
      size: s.
      target: wanted standard deviation in bins, >= 0.

    Returns:
      scalar.
    """
    spread = heatmap_spread(logits, size)
    return tf.reduce_mean(tf.reduce_sum(tf.square(spread - target), axis=-1))


def presence_logit(logits):
    """Logit that a keypoint is present under a softmax with a "no keypoint" bin (SuperPoint,
    DeTone et al. 2018): the last of the K + 1 logits is the dustbin.

    log((1 - p_dustbin) / p_dustbin) = logsumexp(logits[:-1]) - logits[-1]

    Args:
      logits: (..., K + 1).

    Returns:
      (...); sigmoid of it is 1 - p_dustbin.
    """
    return tf.reduce_logsumexp(logits[..., :-1], axis=-1) - logits[..., -1]


def _hard_top_k_indicators(perturbed_scores, k, depth, reference=None):
    """(B, S, n) -> (B, S, k, n) one-hot rows of the top-k locations.

    Without `reference`, in increasing index order: sorting gives each slot a stable meaning
    across samples (Cordonnier et al.), so that the mean over samples is a soft selection per
    slot rather than a blur of ranks. With `reference` (B, k), slots matched to it: slot j
    holds reference[j] whenever the sample selects it, and the sample's other picks fill the
    remaining slots in increasing index order.
    """
    _, index = tf.math.top_k(perturbed_scores, k=k, sorted=False)
    if reference is None:
        return tf.one_hot(tf.sort(index, axis=-1), depth, dtype=perturbed_scores.dtype)
    chosen = tf.reduce_max(tf.one_hot(index, depth, dtype=tf.int32), axis=-2)  # (B, S, n)
    reference = tf.broadcast_to(tf.cast(reference, tf.int32)[:, None, :], tf.shape(index))
    kept = tf.gather(chosen, reference, batch_dims=2) > 0  # (B, S, k)
    in_reference = tf.reduce_max(tf.one_hot(reference, depth, dtype=tf.int32), axis=-2)
    newcomer = chosen * (1 - in_reference)  # picked by the sample, not by the reference
    # Newcomers first, each group in index order.
    newcomers = tf.argsort((1 - newcomer) * depth + tf.range(depth), axis=-1, stable=True)[..., :k]
    rank = tf.maximum(tf.cumsum(tf.cast(~kept, tf.int32), axis=-1) - 1, 0)
    slots = tf.where(kept, reference, tf.gather(newcomers, rank, batch_dims=2))
    return tf.one_hot(slots, depth, dtype=perturbed_scores.dtype)


def perturbed_top_k_indicators(scores, k, num_samples, sigma, noise=None, control_variate=False,
                               reference=None):
    """Differentiable top-k by perturbed optimisers (Berthet et al. 2020; Cordonnier et al.,
    CVPR 2021, "Differentiable Patch Selection for Image Recognition", §3).

    Forward: the mean of hard top-k indicators of the perturbed scores,

      Y = 1/S sum_s topk(scores + sigma * Z_s),  Z_s ~ N(0, I),  Y: (B, k, n),

    where topk(.) is a (k, n) matrix with one 1 per row at the selected locations, sorted by
    location index. Backward: the perturbed-optimiser Jacobian (Berthet et al., Prop. 3.1)
    on the same noise,

      dY/dscores = 1/(S sigma) sum_s topk(scores + sigma Z_s) Z_s^T     ((k, n) x n outer product)

    so the vector-Jacobian product for an upstream gradient G (B, k, n) is
    1/(S sigma) sum_s <G, topk(scores + sigma Z_s)> Z_s. (The first public release of
    Cordonnier et al.'s code took an elementwise product here; the outer product is the estimator.)

    With `control_variate=True` (and S >= 2) each sample's weight w_s = <G, topk(...)> is
    replaced by w_s - mean_{t != s} w_t (a leave-one-out baseline, independent of Z_s, so the
    estimate stays unbiased). When the samples mostly agree, w_s is nearly the same for every s
    and the plain estimator is dominated by mean(w) * sum_s Z_s / (S sigma), zero-mean noise of
    size |mean(w)| / (sigma sqrt(S)); the baseline removes that term.

    Args:
      scores: (B, n) float.
      k: locations to select, <= n.
      num_samples: S >= 1, noise draws.
      sigma: noise scale > 0 in the unit of `scores`: a float, or a tensor of shape () or (B,)
        (one scale per row).
      noise: optional (B, S, n) standard normal draws (for deterministic tests); drawn with
        `tf.random.normal` when None.
      control_variate: subtract the leave-one-out mean weight in the backward pass.
      reference: optional (B, k) int indices of a reference selection (the unperturbed top-k,
        say), distinct per row. Slots then follow it instead of the index order: slot j holds
        reference[j] in every sample that selects it, and the candidates a sample picks
        instead fill the slots it dropped, in index order. With sorted slots one swap shifts
        every slot between the two candidates; matched, it changes only the dropped slot. The
        estimator is the same: with the reference held fixed, slots are a function of the
        perturbed scores alone.

    Returns:
      (B, k, n) indicators in [0, 1]; each row sums to 1, each column to at most 1.
    """
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} must be a positive integer")
    if isinstance(sigma, (int, float)) and not sigma > 0:
        raise ValueError(f"sigma={sigma!r} must be a positive noise scale")
    scores = tf.convert_to_tensor(scores)
    num = scores.shape[1]
    if num is not None and k > num:
        raise ValueError(f"k={k} exceeds the {num} scores to select from")
    depth = num if num is not None else tf.shape(scores)[1]
    if reference is not None:
        reference = tf.convert_to_tensor(reference)
        if reference.shape.rank != 2 or reference.shape[1] not in (None, k):
            raise ValueError(f"reference of shape {reference.shape} must be (batch, k={k}) "
                             "indices of a selection")
    if noise is None:
        noise = tf.random.normal(
            tf.stack([tf.shape(scores)[0], num_samples, tf.shape(scores)[1]]), dtype=scores.dtype
        )
    noise = tf.cast(noise, scores.dtype)
    sigma = tf.convert_to_tensor(sigma, dtype_hint=scores.dtype)  # a float64 Python float stays float64
    sigma = tf.reshape(tf.cast(sigma, scores.dtype), [-1, 1])  # () or (B,) -> (1 or B, 1)

    @tf.custom_gradient
    def select(scores):
        samples = _hard_top_k_indicators(scores[:, None, :] + sigma[:, :, None] * noise, k, depth,
                                         reference)

        def gradient(upstream):
            # Each sample's weight is the first-order loss of its selection: the same estimator
            # as the score-function gradient of sampled losses.
            weight = tf.einsum("bkn,bskn->bs", upstream, samples)
            return score_function_gradient(weight, noise, sigma,
                                           leave_one_out=control_variate and num_samples > 1)

        return tf.reduce_mean(samples, axis=1), gradient

    return select(scores)


def _normal_cdf(x):
    return 0.5 * tf.math.erfc(-x / math.sqrt(2.0))


def gaussian_top_k_marginals(scores, k, sigma, iterations=60):
    """Each score's probability of being among the top k once Gaussian noise perturbs the
    scores, in the threshold approximation, with a noise-free gradient (beyond Cordonnier et
    al.: the perturbed top-k's inclusion probabilities without sampling).

      m_i = Phi((scores_i - tau) / sigma),   tau such that sum_i m_i = k,

    Phi the standard normal CDF. It treats the k-th largest perturbed score as a fixed
    threshold tau, which it nearly is when n is large; the exact inclusion probabilities
    E[sum_j topk(scores + sigma Z)_j] (what `perturbed_top_k_indicators` estimates by
    sampling) also sum to k. tau is found by bisection (no gradient flows through the
    iterations); the gradient is the implicit function's,

      d tau / d scores_j = phi_j / sum_l phi_l,   phi_j = Phi'((scores_j - tau) / sigma),
      d m_i / d scores_j = phi_i / sigma * (delta_ij - phi_j / sum_l phi_l),

    exact and deterministic, so the variance that limits the sampled estimator is gone.
    `sigma` is a constant here (no gradient).

    Args:
      scores: (B, n) float.
      k: 1 <= k <= n.
      sigma: noise scale > 0 in the unit of `scores`: a float, or a tensor of shape () or (B,).
      iterations: bisection steps; each halves the bracket, which starts n-independent at
        (max - min of the row) + 20 sigma wide.

    Returns:
      (B, n) probabilities in [0, 1]; each row sums to k (to the bisection's precision).
    """
    if isinstance(sigma, (int, float)) and not sigma > 0:
        raise ValueError(f"sigma={sigma!r} must be a positive noise scale")
    scores = tf.convert_to_tensor(scores)
    num = scores.shape[1]
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or (num is not None and k > num):
        raise ValueError(f"k={k!r} must be an integer in [1, {num}] (the scores to select from)")
    sigma = tf.convert_to_tensor(sigma, dtype_hint=scores.dtype)  # a Python float stays exact
    sigma = tf.stop_gradient(tf.reshape(tf.cast(sigma, scores.dtype), [-1, 1]))
    fixed = tf.stop_gradient(scores)
    target = tf.cast(k, scores.dtype)

    def selected(tau):
        return tf.reduce_sum(_normal_cdf((fixed - tau) / sigma), axis=1, keepdims=True)

    def bisect(step, low, high):
        middle = 0.5 * (low + high)
        too_many = selected(middle) > target  # the threshold must rise
        return step + 1, tf.where(too_many, middle, low), tf.where(too_many, high, middle)

    low = tf.reduce_min(fixed, axis=1, keepdims=True) - 10.0 * sigma  # selects ~n >= k
    high = tf.reduce_max(fixed, axis=1, keepdims=True) + 10.0 * sigma  # selects ~0 <= k
    _, low, high = tf.while_loop(lambda step, *_: step < iterations, bisect,
                                 (tf.constant(0), low, high))
    tau = 0.5 * (low + high)
    density = tf.exp(-0.5 * tf.square((fixed - tau) / sigma))  # Phi' up to a constant factor
    share = density / tf.maximum(tf.reduce_sum(density, axis=1, keepdims=True),
                                 tf.cast(1e-30, scores.dtype))
    # Same value as tau; its gradient is the implicit function's d tau / d scores.
    tau = tau + tf.reduce_sum(share * (scores - fixed), axis=1, keepdims=True)
    return _normal_cdf((scores - tau) / sigma)


def score_function_gradient(losses, noise, sigma, leave_one_out=True):
    """Zeroth-order gradient of a perturbed selection's expected loss, from sampled losses.

    For any selection rule topN(.) and loss L, the perturbed loss E_Z[L(topN(r + sigma Z))],
    Z ~ N(0, I), is smooth in the scores r, and (score-function identity, Berthet et al. 2020,
    Prop. 3.1 with F = L o topN)

      d/dr E_Z[L(topN(r + sigma Z))] = E_Z[L(topN(r + sigma Z)) Z] / sigma,

    estimated over S draws with the leave-one-out baseline b_s = mean_{t != s} L_t, which does
    not depend on Z_s and so keeps the estimate unbiased:

      g = 1/(S sigma) sum_s (L_s - b_s) Z_s.

    Unlike the perturbed-optimiser Jacobian it needs no gradient of L: the losses of the sampled
    selections themselves rate them, swaps that a linearisation misses included.

    `perturbed_top_k_indicators`' backward pass is this estimator with the first-order loss
    of each sample in place of L_s.

    Args:
      losses: (B, S) loss of each sampled selection, S >= 2 (S >= 1 without the baseline).
      noise: (B, S, n) the standard normal draws Z that made them.
      sigma: noise scale > 0 in the unit of the scores: a float, or a tensor of shape (), (B,)
        or (B, 1).
      leave_one_out: subtract the baseline b_s (False: the plain estimator, b_s = 0).

    Returns:
      (B, n) gradient estimate (no gradient flows through it).
    """
    losses = tf.stop_gradient(tf.convert_to_tensor(losses))
    noise = tf.stop_gradient(tf.cast(noise, losses.dtype))
    samples = losses.shape[1]
    fewest = 2 if leave_one_out else 1
    if losses.shape.rank != 2 or noise.shape.rank != 3 or samples is None or samples < fewest:
        raise ValueError(f"losses of shape {losses.shape} and noise of shape {noise.shape} must "
                         f"be (batch, S) and (batch, S, n) with S >= {fewest} samples")
    if noise.shape[1] not in (None, samples):
        raise ValueError(f"noise has {noise.shape[1]} samples per image, losses {samples}")
    if isinstance(sigma, (int, float)) and not sigma > 0:
        raise ValueError(f"sigma={sigma!r} must be a positive noise scale")
    sigma = tf.stop_gradient(tf.reshape(tf.cast(sigma, losses.dtype), [-1, 1]))
    if leave_one_out:
        total = tf.reduce_sum(losses, axis=1, keepdims=True)
        losses = losses - (total - losses) / (samples - 1)
    return tf.einsum("bs,bsn->bn", losses, noise) / (samples * sigma)
