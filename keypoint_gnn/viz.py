"""Figures: keypoints on images, reconstructions, training curves, offset histograms (PNG).

Everything draws on `matplotlib.figure.Figure` objects rendered by the Agg backend, never
through `pyplot`: no global backend switch, no open windows, no figures left in memory, and it
works on headless machines and in threads. `keypoints_image_summary` needs no matplotlib at all
and returns uint8 arrays for `tf.summary.image`.

Conventions: images are `(B, H, W, C)` floats in [0, 1] with C = 1 (greyscale) or 3 (RGB);
keypoints and parts are `(B, N, 2)` (y, x) in image pixels, pixel centres at integers (convert
detector output with `metrics.feature_to_image_pixels`).
"""
import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from keypoint_gnn.metrics import border_fraction

KEYPOINT_COLOUR = "red"
PART_COLOUR = "lime"
_RED = np.array([255, 0, 0], dtype=np.uint8)


def _check_images(images, name="images"):
    """(B, H, W, C) with C in {1, 3} -> float array clipped to [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{name} must have shape (B, H, W, C) with C = 1 or 3, got shape {images.shape}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{name} hold no images (B=0)")
    if images.dtype == np.uint8:
        images = images / 255.0
    return np.clip(images.astype(np.float64), 0.0, 1.0)


def _check_points(points, batch, name):
    """(B, N, 2) (y, x) for a batch of `batch` images."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[-1] != 2 or points.shape[0] != batch:
        raise ValueError(
            f"{name} must have shape (B, N, 2) = ({batch}, N, 2) holding (y, x) image pixels, "
            f"got shape {points.shape}"
        )
    return points


def _show(axes, image):
    """imshow with pixel centres at integer coordinates (matplotlib's default extent)."""
    if image.shape[-1] == 1:
        axes.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        axes.imshow(image, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_xlim(-0.5, image.shape[1] - 0.5)
    axes.set_ylim(image.shape[0] - 0.5, -0.5)


def _dot_sizes(scores, count, height):
    """Marker areas (points^2): fixed, or growing with the score when scores are given."""
    base = max(4.0, 400.0 / max(height, 1))
    if scores is None:
        return np.full(count, base)
    scores = np.asarray(scores, dtype=np.float64)
    span = scores.max() - scores.min() if scores.size else 0.0
    relative = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
    return base * (0.3 + 1.7 * relative)


def _draw_points(axes, positions, scores=None, parts=None, height=32):
    if parts is not None:
        valid = np.all(np.isfinite(parts), axis=-1)
        axes.scatter(parts[valid, 1], parts[valid, 0], s=_dot_sizes(None, 1, height) * 6,
                     facecolors="none", edgecolors=PART_COLOUR, linewidths=1.0)
    axes.scatter(positions[:, 1], positions[:, 0], s=_dot_sizes(scores, len(positions), height),
                 c=KEYPOINT_COLOUR, linewidths=0)


def _save(figure, path):
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=100)
    return path


def draw_keypoints(images, positions, path, *, scores=None, parts=None, ncols=8, title=None,
                   captions=None):
    """A grid of images with keypoints as red dots and true parts as green circles.

    The paper's figures 4, 5 and 8.

    Args:
      images: (B, H, W, C) float in [0, 1] (or uint8), C = 1 or 3.
      positions: (B, N, 2) keypoints (y, x) in image pixels.
      path: PNG file to write; parent directories are created.
      scores: optional (B, N); a larger dot means a higher score within the image.
      parts: optional (B, P, 2) true parts (y, x) in image pixels; NaN rows are padding.
      ncols: images per row.
      title: optional figure title.
      captions: optional list of B strings written under each image (e.g. "pred cat / true
        dog").

    Returns:
      path.
    """
    images = _check_images(images)
    batch, height = images.shape[0], images.shape[1]
    if captions is not None and len(captions) != batch:
        raise ValueError(f"captions has {len(captions)} entries, images {batch}: one per image")
    positions = _check_points(positions, batch, "positions")
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != positions.shape[:2]:
            raise ValueError(f"scores must have shape {positions.shape[:2]} (B, N), got {scores.shape}")
    if parts is not None:
        parts = _check_points(parts, batch, "parts")
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols={ncols!r} must be a positive integer")
    ncols = min(ncols, batch)
    nrows = math.ceil(batch / ncols)
    row_height = 1.6 if captions is None else 1.9  # room for two caption lines
    figure = Figure(figsize=(1.6 * ncols, row_height * nrows + (0.4 if title else 0.0)))
    grid = figure.subplots(nrows, ncols, squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index >= batch:
            axes.axis("off")
            continue
        _show(axes, images[index])
        _draw_points(axes, positions[index],
                     None if scores is None else scores[index],
                     None if parts is None else parts[index], height)
        if captions is not None:
            axes.set_title(captions[index], fontsize=6)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def draw_reconstructions(originals, positions, reconstructions, path, *, n=8):
    """Three rows: originals, originals with their keypoints, reconstructions (paper figs 9, 12).

    Args:
      originals: (B, H, W, C) float in [0, 1], C = 1 or 3.
      positions: (B, N, 2) keypoints (y, x) in image pixels.
      reconstructions: (B, H, W, C), the autoencoder's output.
      path: PNG file to write.
      n: number of images shown (the first min(n, B)).

    Returns:
      path.
    """
    originals = _check_images(originals, "originals")
    reconstructions = _check_images(reconstructions, "reconstructions")
    if reconstructions.shape != originals.shape:
        raise ValueError(
            f"reconstructions {reconstructions.shape} must have the shape of originals "
            f"{originals.shape}"
        )
    positions = _check_points(positions, originals.shape[0], "positions")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} must be a positive number of images")
    count = min(n, originals.shape[0])
    figure = Figure(figsize=(1.6 * count, 1.6 * 3 + 0.3))
    grid = figure.subplots(3, count, squeeze=False)
    labels = ("original", "keypoints", "reconstruction")
    for column in range(count):
        _show(grid[0, column], originals[column])
        _show(grid[1, column], originals[column])
        _draw_points(grid[1, column], positions[column], height=originals.shape[1])
        _show(grid[2, column], reconstructions[column])
    for row, label in enumerate(labels):
        grid[row, 0].set_ylabel(label)
    figure.tight_layout()
    return _save(figure, path)


def _curve_groups(history):
    """Pairs each training metric with its validation twin: [(name, [keys])]."""
    groups = []
    for key in history:
        if key.startswith("val_") and key[4:] in history:
            continue
        keys = [key]
        if not key.startswith("val_") and f"val_{key}" in history:
            keys.append(f"val_{key}")
        groups.append((key.removeprefix("val_"), keys))
    # Loss first: it is the curve everyone looks for.
    groups.sort(key=lambda group: group[0] != "loss")
    return groups


def plot_curves(history, path):
    """Training curves, one subplot per metric with its validation twin.

    Args:
      history: a Keras `History.history` dict, e.g. {"loss": [...], "val_loss": [...],
        "accuracy": [...], "val_accuracy": [...]}, one value per epoch.
      path: PNG file to write.

    Returns:
      path.
    """
    if not isinstance(history, dict) or not history:
        raise ValueError(f"history must be a non-empty dict of per-epoch values (History.history), "
                         f"got {history!r}")
    for key, values in history.items():
        if np.ndim(values) != 1 or len(values) == 0:
            raise ValueError(f"history[{key!r}] must be a non-empty list of per-epoch values, "
                             f"got {values!r}")
    groups = _curve_groups(history)
    figure = Figure(figsize=(4.0 * len(groups), 3.2))
    grid = figure.subplots(1, len(groups), squeeze=False)
    for axes, (name, keys) in zip(grid.flat, groups):
        for key in keys:
            values = np.asarray(history[key], dtype=np.float64)
            epochs = np.arange(1, len(values) + 1)
            axes.plot(epochs, values, marker="o", markersize=3,
                      label="validation" if key.startswith("val_") else "training")
        axes.set_title(name)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend()
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def plot_offset_histogram(offsets, path, bins=20):
    """Histograms of the in-cell y and x offsets, border fraction in the title.

    Shows whether the coordinate regressor's offsets collapse onto the cell borders (peaks at
    0 and 1) or spread over the cell.

    Args:
      offsets: (..., 2) (y, x) in [0, 1] relative to the cell.
      path: PNG file to write.
      bins: histogram bins per cell side.

    Returns:
      path.
    """
    fraction = border_fraction(offsets)  # validates shape and range
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins={bins!r} must be a positive integer")
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1, 2)
    figure = Figure(figsize=(8.0, 3.2))
    grid = figure.subplots(1, 2, squeeze=False)
    for axes, axis, name in zip(grid.flat, (0, 1), ("y offset", "x offset")):
        axes.hist(offsets[:, axis], bins=bins, range=(0.0, 1.0), color="tab:blue")
        axes.set_xlabel(name)
        axes.set_ylabel("keypoints")
    figure.suptitle(f"{offsets.shape[0]} keypoints; {100 * fraction:.1f}% within 0.1 of a cell "
                    f"border (uniform: 36%)")
    figure.tight_layout()
    return _save(figure, path)


def keypoints_image_summary(images, positions, *, cross_size=1):
    """Images with keypoints drawn as red crosses, for TensorBoard (no matplotlib).

    Each keypoint is rounded to the nearest pixel, which is set to pure red (255, 0, 0), as are
    the `cross_size` pixels on each side of it horizontally and vertically (cross_size 0 draws
    a single pixel). Keypoints outside the image or NaN are skipped.

    Args:
      images: (B, H, W, C) float in [0, 1] (or uint8), C = 1 or 3.
      positions: (B, N, 2) keypoints (y, x) in image pixels.
      cross_size: arm length of each cross in pixels, >= 0.

    Returns:
      uint8 (B, H, W, 3), ready for `tf.summary.image`.
    """
    images = _check_images(images)
    batch, height, width = images.shape[:3]
    positions = _check_points(positions, batch, "positions")
    if not isinstance(cross_size, int) or cross_size < 0:
        raise ValueError(f"cross_size={cross_size!r} must be a non-negative integer")
    canvas = np.round(images * 255.0).astype(np.uint8)
    if canvas.shape[-1] == 1:
        canvas = np.repeat(canvas, 3, axis=-1)
    arms = [(0, 0)] + [(s * d, 0) for d in range(1, cross_size + 1) for s in (-1, 1)] \
        + [(0, s * d) for d in range(1, cross_size + 1) for s in (-1, 1)]
    for b in range(batch):
        finite = np.all(np.isfinite(positions[b]), axis=-1)
        centres = np.round(positions[b][finite]).astype(np.int64)
        inside = ((centres[:, 0] >= 0) & (centres[:, 0] < height)
                  & (centres[:, 1] >= 0) & (centres[:, 1] < width))
        for dy, dx in arms:
            y = centres[inside, 0] + dy
            x = centres[inside, 1] + dx
            keep = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            canvas[b, y[keep], x[keep]] = _RED
    return canvas


__all__ = [
    "draw_keypoints",
    "draw_reconstructions",
    "keypoints_image_summary",
    "plot_curves",
    "plot_offset_histogram",
]
