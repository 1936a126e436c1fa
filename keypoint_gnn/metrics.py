"""Keypoint quality measures, in plain NumPy (no TensorFlow).

The paper's weak spots are measurable: attention top-N piles keypoints into clusters
(`redundancy`, `mean_nearest_neighbour_distance`), the coordinate regressor's offsets collapse
onto cell borders (`border_fraction`), and keypoints may or may not land on the object parts
that matter (`hit_rate`, `coverage`), and a detector may stop looking at the image and put
the same keypoints into every image (`fixed_position_share`).

Conventions:
- Positions are `(B, N, 2)` arrays of (y, x). Any unit works as long as positions, parts,
  `radius` and `min_distance` share it; `feature_to_image_pixels` converts feature-map pixels
  (as returned by the detectors) to image pixels.
- Parts are `(B, P, 2)` (y, x) in the same unit. Images with fewer parts pad with NaN rows,
  which are ignored.
- Every measure returns a Python float, so a report can be written as JSON directly.
"""
import math

import numpy as np


def _as_positions(name, positions):
    """Checks a (B, N, 2) array of (y, x) and returns it as float64."""
    array = np.asarray(positions, dtype=np.float64)
    if array.ndim != 3 or array.shape[-1] != 2:
        raise ValueError(
            f"{name} must have shape (B, N, 2) holding (y, x), got shape {array.shape}"
        )
    return array


def _check_non_negative(name, value):
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r} must be a finite, non-negative distance")


def _pairwise_distances(a, b):
    """(B, N, 2), (B, P, 2) -> (B, N, P) Euclidean distances."""
    return np.sqrt(np.sum(np.square(a[:, :, None, :] - b[:, None, :, :]), axis=-1))


def _check_same_batch(positions, parts):
    if positions.shape[0] != parts.shape[0]:
        raise ValueError(
            f"positions hold {positions.shape[0]} images but parts hold {parts.shape[0]}; "
            "both need one row per image"
        )


def redundancy(positions, min_distance):
    """Share of keypoint pairs closer than `min_distance`, averaged over images.

    For each image, the fraction of the N(N-1)/2 pairs i < j with distance < `min_distance`;
    then the mean over the B images. 0 means no two keypoints crowd each other, 1 means all of
    them sit within `min_distance` of each other. An image with fewer than two keypoints has
    no pairs and counts as 0.

    Args:
      positions: (B, N, 2) (y, x), any unit.
      min_distance: distance in the unit of `positions`, >= 0.

    Returns:
      float in [0, 1].
    """
    positions = _as_positions("positions", positions)
    _check_non_negative("min_distance", min_distance)
    num = positions.shape[1]
    if num < 2 or positions.shape[0] == 0:
        return 0.0
    distances = _pairwise_distances(positions, positions)
    upper = np.triu(np.ones((num, num), dtype=bool), k=1)
    close = (distances < min_distance) & upper
    pairs = num * (num - 1) / 2
    return float(np.mean(close.sum(axis=(1, 2)) / pairs))


def mean_nearest_neighbour_distance(positions):
    """Mean distance from each keypoint to its nearest other keypoint in the same image.

    Averaged over all B * N keypoints. Small values with many keypoints mean clusters.

    Args:
      positions: (B, N, 2) (y, x), N >= 2, any unit.

    Returns:
      float, in the unit of `positions`.
    """
    positions = _as_positions("positions", positions)
    if positions.shape[1] < 2:
        raise ValueError(
            f"mean_nearest_neighbour_distance needs at least 2 keypoints per image, got "
            f"N={positions.shape[1]}"
        )
    if positions.shape[0] == 0:
        raise ValueError("positions hold no images (B=0)")
    distances = _pairwise_distances(positions, positions)
    num = positions.shape[1]
    distances[:, np.arange(num), np.arange(num)] = np.inf
    return float(np.mean(np.min(distances, axis=-1)))


def _nearest_part_distances(positions, parts):
    """(B, N) distance from each keypoint to its nearest valid part (inf if there is none)."""
    distances = _pairwise_distances(positions, parts)
    valid = np.all(np.isfinite(parts), axis=-1)  # (B, P): NaN rows are padding
    distances = np.where(valid[:, None, :], distances, np.inf)
    if parts.shape[1] == 0:
        return np.full(positions.shape[:2], np.inf)
    return np.min(distances, axis=-1)


def hit_rate(positions, parts, radius):
    """Share of keypoints within `radius` (inclusive) of some true part.

    Pooled over all B * N keypoints. Measures precision: how many keypoints are on parts.

    Args:
      positions: (B, N, 2) (y, x).
      parts: (B, P, 2) (y, x) in the same unit; NaN rows are padding.
      radius: distance in that unit, >= 0.

    Returns:
      float in [0, 1]; 0 when there are no keypoints.
    """
    positions = _as_positions("positions", positions)
    parts = _as_positions("parts", parts)
    _check_same_batch(positions, parts)
    _check_non_negative("radius", radius)
    if positions.shape[0] * positions.shape[1] == 0:
        return 0.0
    return float(np.mean(_nearest_part_distances(positions, parts) <= radius))


def coverage(positions, parts, radius):
    """Share of true parts with a keypoint within `radius` (inclusive).

    Pooled over all valid (non-NaN) parts of the batch. Measures recall: how many parts the
    keypoints find.

    Args:
      positions: (B, N, 2) (y, x).
      parts: (B, P, 2) (y, x) in the same unit; NaN rows are padding.
      radius: distance in that unit, >= 0.

    Returns:
      float in [0, 1]; 0 when there are no valid parts.
    """
    positions = _as_positions("positions", positions)
    parts = _as_positions("parts", parts)
    _check_same_batch(positions, parts)
    _check_non_negative("radius", radius)
    valid = np.all(np.isfinite(parts), axis=-1)
    if not valid.any():
        return 0.0
    if positions.shape[1] == 0:
        return 0.0
    nearest_keypoint = np.min(_pairwise_distances(parts, positions), axis=-1)  # (B, P)
    return float(np.mean(nearest_keypoint[valid] <= radius))


def border_fraction(offsets, margin=0.1):
    """Share of keypoints whose in-cell offset lies within `margin` of a cell border.

    A keypoint counts when its y or its x offset is < `margin` or > 1 - `margin`. Offsets
    spread uniformly over the cell give 1 - (1 - 2 * margin)^2 (36% for margin 0.1); the
    paper's sigmoid offsets collapsing onto the borders give close to 100%.

    Args:
      offsets: (..., 2) (y, x) offsets in [0, 1] relative to the cell, e.g. the regressor's
        (B, L, M, h, 2) cell predictions.
      margin: width of the border band as a fraction of the cell side, in [0, 0.5].

    Returns:
      float in [0, 1].
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    if offsets.ndim < 1 or offsets.shape[-1] != 2:
        raise ValueError(f"offsets must have shape (..., 2) holding (y, x), got {offsets.shape}")
    if not 0.0 <= margin <= 0.5:
        raise ValueError(f"margin={margin!r} must be in [0, 0.5] (a fraction of the cell side)")
    if offsets.size == 0:
        raise ValueError("offsets are empty; there are no keypoints to measure")
    if np.any(~np.isfinite(offsets)) or offsets.min() < 0.0 or offsets.max() > 1.0:
        raise ValueError(
            f"offsets must lie in [0, 1] within the cell, got values in "
            f"[{np.nanmin(offsets)}, {np.nanmax(offsets)}]"
        )
    near_border = (offsets < margin) | (offsets > 1.0 - margin)
    return float(np.mean(np.any(near_border, axis=-1)))


def fixed_position_share(positions, bin_size):
    """Share of keypoints that sit at the detector's N most frequent positions.

    Positions are binned to squares of side `bin_size`; over all B images, the N bins that
    hold the most keypoints are the detector's "usual" positions, and the result is the share
    of the B * N keypoints inside them. 1 means the detector puts the same N keypoints into
    every image, whatever it shows (a fixed lattice); keypoints that follow the image content
    give values towards the floor of about 1 / B (no position repeats). Detectors restricted
    to a few candidate positions (attention top-N on an h x w map) have a floor of about
    N / (h * w) even when their choice follows the content.

    Args:
      positions: (B, N, 2) (y, x), any unit.
      bin_size: bin side in that unit, > 0.

    Returns:
      float in (0, 1]; 0 when there are no keypoints.
    """
    positions = _as_positions("positions", positions)
    if not (isinstance(bin_size, (int, float)) and math.isfinite(bin_size) and bin_size > 0):
        raise ValueError(f"bin_size={bin_size!r} must be a positive finite number")
    total = positions.shape[0] * positions.shape[1]
    if total == 0:
        return 0.0
    bins = np.floor(positions.reshape(-1, 2) / bin_size).astype(np.int64)
    _, counts = np.unique(bins, axis=0, return_counts=True)
    most = np.sort(counts)[::-1][:positions.shape[1]]
    return float(most.sum() / total)


def selection_overlap(selected, reference):
    """Mean share of each image's selected indices that are also in its reference selection.

    Args:
      selected, reference: (B, N) integer indices (e.g. the grid regressor's selected point
        slots for an image and for a uniform-noise image); order within a row does not matter.

    Returns:
      float in [0, 1]: mean over images of |selected ∩ reference| / N; 0 when B or N is 0.
    """
    selected = np.asarray(selected)
    reference = np.asarray(reference)
    if selected.ndim != 2 or selected.shape != reference.shape:
        raise ValueError(f"selected and reference must both be (B, N) index arrays of one "
                         f"shape, got {selected.shape} and {reference.shape}")
    if selected.size == 0:
        return 0.0
    shared = [np.intersect1d(a, b).size for a, b in zip(selected, reference)]
    return float(np.mean(shared) / selected.shape[1])


def keypoint_report(positions, parts=None, *, radius, min_distance, offsets=None,
                    position_bin=None):
    """All keypoint measures in one JSON-serialisable dict.

    Args:
      positions: (B, N, 2) (y, x), any unit.
      parts: optional (B, P, 2) (y, x) in the same unit; without it `hit_rate` and `coverage`
        are left out.
      radius: hit/coverage radius in that unit.
      min_distance: redundancy distance in that unit.
      offsets: optional (..., 2) in-cell offsets in [0, 1] of the coordinate regressor; with
        them the report includes `border_fraction`.
      position_bin: optional bin side for `fixed_position_share`, in the unit of `positions`;
        with it the report includes that share.

    Returns:
      dict of floats/ints: num_images, keypoints_per_image, redundancy,
      mean_nearest_neighbour_distance (if N >= 2), and hit_rate, coverage, border_fraction,
      fixed_position_share when their inputs are given.
    """
    positions = _as_positions("positions", positions)
    _check_non_negative("radius", radius)
    report = {
        "num_images": int(positions.shape[0]),
        "keypoints_per_image": int(positions.shape[1]),
        "redundancy": redundancy(positions, min_distance),
    }
    if positions.shape[1] >= 2 and positions.shape[0] > 0:
        report["mean_nearest_neighbour_distance"] = mean_nearest_neighbour_distance(positions)
    if parts is not None:
        report["hit_rate"] = hit_rate(positions, parts, radius)
        report["coverage"] = coverage(positions, parts, radius)
    if offsets is not None:
        report["border_fraction"] = border_fraction(offsets)
    if position_bin is not None:
        report["fixed_position_share"] = fixed_position_share(positions, position_bin)
    return report


def feature_to_image_pixels(positions, stride):
    """Feature-map positions to image pixels, pixel centres at integers in both.

    Feature pixel p covers image pixels [p * stride, (p + 1) * stride - 1]; its centre is at
    p * stride + (stride - 1) / 2.

    Args:
      positions: array (..., 2) (y, x) in feature-map pixels.
      stride: image pixels per feature-map pixel (`ModelConfig.feature_stride`), >= 1.

    Returns:
      float64 array of the same shape, in image pixels.
    """
    if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride={stride!r} must be a positive integer (image pixels per "
                         "feature-map pixel)")
    return np.asarray(positions, dtype=np.float64) * stride + (stride - 1) / 2.0


def psnr(mse, max_value=1.0):
    """Peak signal-to-noise ratio in decibels: 10 * log10(max_value^2 / mse).

    Args:
      mse: mean squared error (a float, or an array of per-image values), >= 0, in the squared
        unit of the pixel values.
      max_value: largest possible pixel value (1 for images in [0, 1], 255 for uint8), > 0.

    Returns:
      float (or float array) in dB; inf where mse is 0.
    """
    if not max_value > 0:
        raise ValueError(f"max_value={max_value!r} must be positive (1.0 for [0, 1] images)")
    mse = np.asarray(mse, dtype=np.float64)
    if np.any(~(mse >= 0)):
        raise ValueError(f"mse must be non-negative, got {mse if mse.ndim == 0 else mse.min()}")
    with np.errstate(divide="ignore"):
        value = 10.0 * np.log10(max_value**2 / mse)
    return float(value) if value.ndim == 0 else value


__all__ = [
    "border_fraction",
    "coverage",
    "feature_to_image_pixels",
    "hit_rate",
    "keypoint_report",
    "mean_nearest_neighbour_distance",
    "psnr",
    "redundancy",
]
