"""Seeded, class-stratified division of example indices into splits."""
from __future__ import annotations

import numpy as np


def check_fractions(validation_fraction: float, test_fraction: float) -> None:
    """Raises ValueError unless both fractions lie in (0, 1) and sum to less than 1."""
    for name, value in (("validation_fraction", validation_fraction),
                        ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise ValueError(f"{name}={value} must be in the open interval (0, 1)")
    if validation_fraction + test_fraction >= 1:
        raise ValueError(
            f"validation_fraction={validation_fraction} + test_fraction={test_fraction} must be "
            "below 1, to leave examples for training")


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int,
                     remainder: str = "train", allow_empty: bool = False) -> dict[str, np.ndarray]:
    """Divides indices class by class, so that each split has the classes' proportions.

    Args:
      labels: (N,) integer class of each example.
      fractions: {split name: fraction of each class}, e.g. {"validation": 0.1}; every class
        gives round(fraction * class size) examples to the split.
      seed: seed of the NumPy permutation; equal seeds give equal splits.
      remainder: name of the split that receives what the fractions leave.
      allow_empty: return empty splits instead of raising (the sources do, and
        `keypoint_gnn.data.checks` then says which class or split is too small, and why).

    Returns:
      {split name: sorted int64 indices into `labels`}, disjoint, covering all of them.

    Raises:
      ValueError: when a split would be empty, unless `allow_empty`.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen: dict[str, list[np.ndarray]] = {name: [] for name in (*fractions, remainder)}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for name, fraction in fractions.items():
            count = round(fraction * len(members))
            chosen[name].append(members[start:start + count])
            start += count
        chosen[remainder].append(members[start:])
    result = {name: np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
              for name, parts in chosen.items()}
    for name, indices in result.items():
        if len(indices) == 0 and not allow_empty:
            raise ValueError(
                f"split {name!r} would be empty: {len(labels)} examples are too few for "
                f"fractions {fractions}; add examples or raise the fraction")
    return result


def limit_examples(indices: np.ndarray, max_examples: int | None, seed: int) -> np.ndarray:
    """At most `max_examples` of `indices`, a seeded random subset kept in original order."""
    if max_examples is None or len(indices) <= max_examples:
        return indices
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(indices, size=max_examples, replace=False))
