"""Tests of keypoint_gnn.ops, one module per ops module, and the plain NumPy references that
more than one test module checks against (the layer tests import them from here)."""
import math

import numpy as np


def naive_bilinear(feature_map, y, x):
    """One (h, w, C) map at one fractional (y, x), clipped to the map, by the textbook formula."""
    h, w, _ = feature_map.shape
    y = min(max(y, 0.0), h - 1)
    x = min(max(x, 0.0), w - 1)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    dy, dx = y - y0, x - x0
    return ((1 - dy) * (1 - dx) * feature_map[y0, x0] + (1 - dy) * dx * feature_map[y0, x1]
            + dy * (1 - dx) * feature_map[y1, x0] + dy * dx * feature_map[y1, x1])


def authors_adjacency(positions):
    """The authors' rule, written as a loop: 1/(1+d), over the largest off-diagonal, diag = 1."""
    n = len(positions)
    weights = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                weights[i, j] = 1.0 / (1.0 + np.linalg.norm(positions[i] - positions[j]))
    weights /= weights.max()
    np.fill_diagonal(weights, 1.0)
    return weights


def numpy_gcn_normalize(adjacency):
    """D^-1/2 A D^-1/2 of one (N, N) adjacency with positive degrees."""
    degree = adjacency.sum(-1)
    return adjacency / np.sqrt(degree[:, None] * degree[None, :])


def normal_cdf(x):
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(x) / math.sqrt(2.0)))


def numpy_perturbed_top_k(scores, k, sigma, noise):
    """Reference: (B, S, k, n) sampled hard indicators, sorted by index, and their mean."""
    batch, samples, num = noise.shape
    sigma = np.broadcast_to(np.asarray(sigma, "float64").reshape(-1), (batch,))
    hard = np.zeros((batch, samples, k, num))
    for b in range(batch):
        for s in range(samples):
            chosen = np.sort(np.argsort(-(scores[b] + sigma[b] * noise[b, s]))[:k])
            hard[b, s, np.arange(k), chosen] = 1.0
    return hard, hard.mean(axis=1)


def numpy_matched_top_k(scores, k, sigma, noise, reference):
    """Reference: (B, S, k, n) sampled hard indicators with slots matched to `reference`
    (B, k): its candidates keep their slots, the sample's other picks fill the rest in index
    order; and their mean."""
    batch, samples, num = noise.shape
    sigma = np.broadcast_to(np.asarray(sigma, "float64").reshape(-1), (batch,))
    hard = np.zeros((batch, samples, k, num))
    for b in range(batch):
        for s in range(samples):
            chosen = set(np.argsort(-(scores[b] + sigma[b] * noise[b, s]))[:k].tolist())
            newcomers = iter(sorted(chosen - set(reference[b].tolist())))
            for slot, candidate in enumerate(reference[b]):
                hard[b, s, slot, candidate if candidate in chosen else next(newcomers)] = 1.0
    return hard, hard.mean(axis=1)


def numpy_gaussian_top_k_marginals(scores, k, sigma):
    """Reference: Phi((s - tau) / sigma) with tau from a float64 bisection on sum = k, per row;
    also returns tau."""
    sigma = np.broadcast_to(np.asarray(sigma, "float64").reshape(-1), (len(scores),))
    marginals, taus = [], []
    for row, scale in zip(scores, sigma):
        low, high = row.min() - 40 * scale, row.max() + 40 * scale
        for _ in range(200):
            middle = (low + high) / 2
            low, high = (middle, high) if normal_cdf((row - middle) / scale).sum() > k else (low, middle)
        taus.append((low + high) / 2)
        marginals.append(normal_cdf((row - taus[-1]) / scale))
    return np.array(marginals), np.array(taus)


def brute_force_knn(features, k, dilation=1, positions=None, position_weight=0.0):
    """Reference: (B, N, k) neighbour indices by a float64 loop over every pair: squared
    distance between the L2-normalised rows (+ position_weight * squared position distance),
    self excluded, a stable sort (equal distances: lower index first), every dilation-th of the
    k * dilation nearest."""
    batch, num, _ = features.shape
    indices = np.zeros((batch, num, k), "int64")
    for b in range(batch):
        rows = features[b].astype("float64")
        norms = np.linalg.norm(rows, axis=-1, keepdims=True)
        unit = rows / np.where(norms > 0, norms, 1.0)
        for i in range(num):
            distances = np.array([np.sum((unit[i] - unit[j]) ** 2) for j in range(num)])
            if positions is not None:
                distances += position_weight * np.array(
                    [np.sum((positions[b, i] - positions[b, j]) ** 2) for j in range(num)])
            distances[i] = np.inf
            indices[b, i] = np.argsort(distances, kind="stable")[:k * dilation:dilation]
    return indices
