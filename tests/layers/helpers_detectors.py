"""Shared helpers and NumPy references for the detector layer tests (tests/layers/test_*)."""

import numpy as np

from tests.ops import numpy_gaussian_top_k_marginals  # noqa: F401  (re-exported for the layer tests)


def set_score_conv(detector, feature_map):
    """Makes the 1x1 score conv the identity on channel 0, so the raw score map is known:
    channel 0 of `feature_map`."""
    detector(feature_map)
    kernel = np.zeros(detector.score_conv.kernel.shape, "float32")
    kernel[0, 0, 0, 0] = 1.0
    detector.score_conv.kernel.assign(kernel)
    detector.score_conv.bias.assign([0.0])


def window_maxima(score_map, pool_size):
    """NumPy: (h, w) -> each p x p window's maximum (n,) and its (y, x) position (n, 2),
    windows row-major."""
    maxima, positions = [], []
    for r in range(0, score_map.shape[0], pool_size):
        for c in range(0, score_map.shape[1], pool_size):
            window = score_map[r:r + pool_size, c:c + pool_size]
            y, x = np.unravel_index(np.argmax(window), window.shape)
            maxima.append(window[y, x])
            positions.append((r + y, c + x))
    return np.array(maxima), np.array(positions, "float32")


def window_soft_argmax(scores, position, pool_size):
    """NumPy: the soft-argmax of the p x p window of (h, w) raw scores that holds `position`."""
    y0, x0 = (np.round(position).astype(int) // pool_size) * pool_size
    cells = [(y0 + i, x0 + j) for i in range(pool_size) for j in range(pool_size)]
    weights = np.exp([scores[c] for c in cells])
    return (weights / weights.sum()) @ np.array(cells, dtype=np.float64)
