"""SIFT/ORB keypoints as targets for pre-training the grid coordinate regressor (paper §4.2).

The paper pre-trains the coordinate regressor on SIFT/ORB keypoints before training the whole
model. The pipeline here:

  image (H, W, C) -> `detect_keypoints` -> (K, 3) (y, x, response) in image pixels
                  -> `assign_to_cells`  -> (L, M, h, 3) (y offset, x offset, presence)
  batch -> `cell_targets` (B, L, M, h, 3);  tf.data -> `targets_dataset` (images, targets)
  `pretraining_loss(targets, build_keypoint_pretrainer(config)(images))`

Units and conventions. Image pixel (i, j) has its centre at (i, j) (OpenCV's convention for
`KeyPoint.pt`), so its edges are at i - 0.5 and i + 0.5. A cell of m image pixels with index
(r, c) spans [r*m - 0.5, (r+1)*m - 0.5] in y; a keypoint at y has the in-cell offset

  offset_y = (y + 0.5 - r*m) / m  in [0, 1],

which is the inverse of `ops.cell_offsets_to_positions` (position = (r + offset) * m - 0.5).
Offsets are relative to the cell, so the same numbers hold in image pixels and in feature-map
pixels: the pre-trainer's cells are `config.detector.cell_size` feature-map pixels, i.e.
`pretraining_cell_size(config) = cell_size * feature_stride` image pixels.
"""
import cv2
import numpy as np

from keypoint_gnn._backend import tf

METHODS = ("sift", "orb")
DEFAULT_MAX_KEYPOINTS = 256
# OpenCV's SIFT reports the same location once per dominant orientation; closer than this
# (image pixels) counts as the same keypoint.
_DUPLICATE_DISTANCE = 0.5


def _check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(map(repr, METHODS))}")


def _to_grey_uint8(image):
    """(H, W), (H, W, 1) or (H, W, 3) float in [0, 1] or uint8 -> (H, W) uint8 greyscale."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (1, 3):
        pass
    elif image.ndim != 2:
        raise ValueError(
            f"image must have shape (H, W, C) with C = 1 or 3, or (H, W), got shape {image.shape}"
        )
    if image.dtype != np.uint8:
        image = image.astype(np.float32)
        if image.size and (np.nanmax(image) > 1.0 + 1e-6 or np.nanmin(image) < -1e-6):
            raise ValueError(
                f"float images must lie in [0, 1], got values in [{np.nanmin(image)}, "
                f"{np.nanmax(image)}]; pass uint8 for 0..255 images"
            )
        image = np.round(np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0).astype(np.uint8)
    if image.ndim == 3:
        image = image[..., 0] if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(image)


def _make_detector(method, height, width, max_keypoints):
    if method == "sift":
        # Precise upscaling removes OpenCV's default quarter-pixel shift of SIFT positions;
        # OpenCV releases before the option existed fall back to the shifted positions.
        try:
            return cv2.SIFT_create(enable_precise_upscale=True)
        except (TypeError, cv2.error):
            return cv2.SIFT_create()
    # ORB finds nothing within edgeThreshold pixels of the border, which with the default 31
    # is all of a small image; scale the border (and the matching patch) with the image.
    patch = int(np.clip(min(height, width) // 8, 7, 31))
    return cv2.ORB_create(nfeatures=int(max_keypoints), edgeThreshold=patch, patchSize=patch)


def _suppress_duplicates(keypoints, min_distance):
    """Keeps the strongest of keypoints closer than min_distance. Input sorted by response."""
    kept = []
    for index in range(len(keypoints)):
        if kept:
            gaps = keypoints[kept, :2] - keypoints[index, :2]
            if np.min(np.sum(gaps * gaps, axis=-1)) < min_distance**2:
                continue
        kept.append(index)
    return keypoints[kept]


def detect_keypoints(image, method="sift", max_keypoints=DEFAULT_MAX_KEYPOINTS):
    """SIFT or ORB keypoints of one image.

    The image is converted to uint8 greyscale for OpenCV. SIFT runs with precise upscaling (its
    positions are sub-pixel); ORB's positions come from its scale pyramid and are accurate to
    about a pixel. Keypoints at the same place (SIFT's several orientations) are kept once.

    Args:
      image: (H, W, C) with C = 1 or 3 (RGB), or (H, W); float in [0, 1] or uint8.
      method: `"sift"` or `"orb"`.
      max_keypoints: keep at most this many, the strongest.

    Returns:
      float32 (K, 3): (y, x, response) with y, x in image pixels (pixel centres at integers),
      sorted by response, highest first; K may be 0 (e.g. a blank image).
    """
    _check_method(method)
    _check_positive_int("max_keypoints", max_keypoints)
    grey = _to_grey_uint8(image)
    detector = _make_detector(method, grey.shape[0], grey.shape[1], max_keypoints)
    found = detector.detect(grey, None)
    keypoints = np.array([(k.pt[1], k.pt[0], k.response) for k in found], dtype=np.float32)
    keypoints = keypoints.reshape(-1, 3)
    keypoints = keypoints[np.argsort(-keypoints[:, 2], kind="stable")]
    keypoints = _suppress_duplicates(keypoints, _DUPLICATE_DISTANCE)
    return keypoints[:max_keypoints]


def assign_to_cells(keypoints, height, width, cell_size_px, points_per_cell):
    """Distributes keypoints over the cells of a grid: each cell keeps its h strongest.

    A keypoint at (y, x) image pixels lies in cell (r, c) = floor((y + 0.5) / m), floor((x + 0.5)
    / m) with in-cell offsets ((y + 0.5) / m - r, (x + 0.5) / m - c) in [0, 1]. A keypoint on
    the image's bottom/right edge goes to the last cell with offset 1; keypoints outside the
    image are ignored. Within a cell, slot 0 holds the strongest keypoint, slot 1 the next, ...

    Args:
      keypoints: (K, 3) (y, x, response), y and x in image pixels.
      height, width: image size in pixels, multiples of `cell_size_px`.
      cell_size_px: m, cell side in image pixels.
      points_per_cell: h, slots per cell.

    Returns:
      float32 (L, M, h, 3), L = height / m, M = width / m: (y offset, x offset, 1.0) per
      filled slot, (0, 0, 0) per empty slot.
    """
    _check_positive_int("cell_size_px", cell_size_px)
    _check_positive_int("points_per_cell", points_per_cell)
    _check_divisible(height, width, cell_size_px)
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (K, 3) holding (y, x, response), got "
                         f"{keypoints.shape}")
    rows, cols = height // cell_size_px, width // cell_size_px
    targets = np.zeros((rows, cols, points_per_cell, 3), dtype=np.float32)
    edge_y = keypoints[:, 0] + 0.5  # continuous coordinates, image edges at 0 and height
    edge_x = keypoints[:, 1] + 0.5
    inside = (edge_y >= 0) & (edge_y <= height) & (edge_x >= 0) & (edge_x <= width)
    edge_y, edge_x, response = edge_y[inside], edge_x[inside], keypoints[inside, 2]
    row = np.minimum(np.floor(edge_y / cell_size_px).astype(np.int64), rows - 1)
    col = np.minimum(np.floor(edge_x / cell_size_px).astype(np.int64), cols - 1)
    offset_y = np.clip(edge_y / cell_size_px - row, 0.0, 1.0)
    offset_x = np.clip(edge_x / cell_size_px - col, 0.0, 1.0)
    # Sort by cell, then by response (strongest first); a keypoint's rank within its cell is
    # its index minus the index where its cell starts.
    cell = row * cols + col
    order = np.lexsort((-response, cell))
    cell_sorted = cell[order]
    rank = np.arange(len(order)) - np.searchsorted(cell_sorted, cell_sorted, side="left")
    keep = order[rank < points_per_cell]
    slot = rank[rank < points_per_cell]
    targets[row[keep], col[keep], slot] = np.stack(
        [offset_y[keep], offset_x[keep], np.ones(len(keep))], axis=-1
    )
    return targets


def _check_divisible(height, width, cell_size_px):
    for name, size in (("height", height), ("width", width)):
        if size % cell_size_px:
            raise ValueError(
                f"image {name} {size} is not divisible by cell_size_px={cell_size_px}; use a "
                f"cell size that divides both {height} and {width}"
            )


def cell_targets(images, cell_size_px, points_per_cell, method="sift",
                 max_keypoints=DEFAULT_MAX_KEYPOINTS):
    """Pre-training targets of a batch: detect keypoints per image, assign them to cells.

    Args:
      images: (B, H, W, C), C = 1 or 3, float in [0, 1] or uint8; H, W multiples of m.
      cell_size_px: m, cell side in image pixels (`pretraining_cell_size(config)`).
      points_per_cell: h (`config.detector.points_per_cell`).
      method: `"sift"` or `"orb"`.
      max_keypoints: keypoints detected per image before assignment.

    Returns:
      float32 (B, H/m, W/m, h, 3): (y offset, x offset, presence) as in `assign_to_cells`.
    """
    _check_method(method)
    _check_positive_int("cell_size_px", cell_size_px)
    _check_positive_int("points_per_cell", points_per_cell)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"images must have shape (B, H, W, C) with C = 1 or 3, got shape {images.shape}"
        )
    height, width = images.shape[1], images.shape[2]
    _check_divisible(height, width, cell_size_px)
    return np.stack(
        [
            assign_to_cells(detect_keypoints(image, method, max_keypoints), height, width,
                            cell_size_px, points_per_cell)
            for image in images
        ]
    ).reshape(images.shape[0], height // cell_size_px, width // cell_size_px, points_per_cell, 3)


def pretraining_cell_size(config):
    """Cell side in image pixels of the pre-trainer built from `config` (a `ModelConfig`)."""
    return config.detector.cell_size * config.feature_stride


def pretraining_loss(y_true, y_pred):
    """Loss of the coordinate regressor's cell predictions against SIFT/ORB targets.

    loss = mean over all slots of BCE(sigmoid(logit), presence)
         + sum over filled slots of |offset_pred - offset_true|^2 / max(#filled slots, 1)

    The first term teaches the confidence where keypoints are; the second, the mean squared
    Euclidean offset error in cell units, is only taken where a target keypoint exists (it is
    0, with zero gradient, for empty slots and for a batch without keypoints). Slots are
    matched in fixed order: predicted slot j learns the target in slot j, i.e. the j-th
    strongest keypoint of the cell (no permutation matching).

    Args:
      y_true: (B, L, M, h, 3) targets (y offset, x offset, presence) from `cell_targets`.
      y_pred: (B, L, M, h, 3) pre-trainer output (y offset in [0, 1], x offset in [0, 1],
        confidence logit).

    Returns:
      scalar float32; usable as `model.compile(loss=pretraining_loss)`.
    """
    y_true = tf.cast(y_true, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    if y_pred.shape[-1] != 3:
        raise ValueError(f"pretraining_loss expects 3 channels per slot (y offset, x offset, "
                         f"confidence logit), got {y_pred.shape[-1]}")
    confidence = tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=y_true[..., 2], logits=y_pred[..., 2])
    )
    presence = y_true[..., 2]
    error = tf.reduce_sum(tf.square(y_pred[..., :2] - y_true[..., :2]), axis=-1)
    return confidence + tf.reduce_sum(error * presence) / tf.maximum(tf.reduce_sum(presence), 1.0)


def targets_dataset(images_dataset, cell_size_px, points_per_cell, method="sift",
                    max_keypoints=DEFAULT_MAX_KEYPOINTS):
    """Maps a tf.data dataset of image batches to (images, targets) for `model.fit`.

    Keypoint detection runs OpenCV on the host CPU through `tf.numpy_function`: the dataset
    cannot be serialised into a graph (e.g. a SavedModel) and does not run on accelerators, and
    each batch costs a few milliseconds per image. Cache the result (`.cache()`) when the same
    images are seen for several epochs.

    Args:
      images_dataset: elements are image batches (B, H, W, C), or tuples whose first entry is
        one (e.g. (images, labels)); other entries are dropped.
      cell_size_px, points_per_cell, method, max_keypoints: as in `cell_targets`.

    Returns:
      tf.data.Dataset of (images, targets (B, H/m, W/m, h, 3) float32).
    """
    _check_method(method)
    _check_positive_int("cell_size_px", cell_size_px)
    _check_positive_int("points_per_cell", points_per_cell)
    spec = images_dataset.element_spec
    image_spec = spec[0] if isinstance(spec, (tuple, list)) else spec
    if not isinstance(image_spec, tf.TensorSpec) or image_spec.shape.rank != 4:
        raise ValueError(
            f"images_dataset must yield image batches (B, H, W, C) or tuples starting with one, "
            f"got element_spec {spec}"
        )
    batch, height, width = image_spec.shape[0], image_spec.shape[1], image_spec.shape[2]
    if height is not None and width is not None:
        _check_divisible(height, width, cell_size_px)
    rows = None if height is None else height // cell_size_px
    cols = None if width is None else width // cell_size_px

    def compute(images):
        return cell_targets(images, cell_size_px, points_per_cell, method, max_keypoints)

    def add_targets(*element):
        images = element[0]
        targets = tf.numpy_function(compute, [images], tf.float32, stateful=False)
        targets.set_shape([batch, rows, cols, points_per_cell, 3])
        return images, targets

    return images_dataset.map(add_targets, num_parallel_calls=tf.data.AUTOTUNE)


__all__ = [
    "METHODS",
    "assign_to_cells",
    "cell_targets",
    "detect_keypoints",
    "pretraining_cell_size",
    "pretraining_loss",
    "targets_dataset",
]
