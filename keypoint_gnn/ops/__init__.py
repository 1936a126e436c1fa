"""Pure TensorFlow functions behind the keypoint-gnn layers, one module per topic:

- `selection`: top-k locations of a score map and large-maxpool NMS over p x p windows.
- `perturbed_top_k`: differentiable top-k (perturbed-optimiser indicators, Gaussian marginals,
  score-function gradients).
- `sampling`: features between maps and nodes (gather, bilinear sample, scatter-mean, bilinear
  splat).
- `refinement`: keypoints placed within their NMS windows (soft-argmax or centre).
- `graph`: adjacencies over keypoints and grid cells and their GCN normalisation.
- `knn`: k-nearest-neighbour graphs over node features (Vision GNN's dilated kNN) and the
  neighbours' features.
- `offsets`: the grid regressor's in-cell offsets (positions, standardisation, uniformity).

Every public function is re-exported here: `from keypoint_gnn import ops; ops.max_pool_nms`.

Conventions:
- Keypoint positions are `(y, x)` in feature-map pixel units, float32, shape `(B, N, 2)`; pixel
  `(i, j)` has its centre at position `(i, j)`. Integer-valued positions index cells directly;
  fractional ones are sampled and splatted bilinearly.
- Score maps are `(B, h, w)` or `(B, h, w, 1)`.
- Nothing here creates variables or knows about Keras.
"""
from keypoint_gnn.ops.graph import (
    gcn_normalize,
    gcn_normalize_sparse,
    grid_knn_adjacency,
    grid_neighbour_offsets,
    grid_positions,
    inverse_distance_adjacency,
    pairwise_distances,
)
from keypoint_gnn.ops.knn import (
    gather_neighbours,
    knn_distances,
    knn_indices,
)
from keypoint_gnn.ops.offsets import (
    LOGISTIC_SD,
    cell_offsets_to_positions,
    standardize_over_cells,
    wasserstein_to_uniform,
)
from keypoint_gnn.ops.perturbed_top_k import (
    gaussian_top_k_marginals,
    perturbed_top_k_indicators,
    score_function_gradient,
)
from keypoint_gnn.ops.refinement import (
    refine_in_windows,
    window_centres,
    window_soft_argmax,
)
from keypoint_gnn.ops.sampling import (
    bilinear_sample,
    bilinear_splat,
    gather_features,
    scatter_mean,
)
from keypoint_gnn.ops.selection import (
    max_pool_nms,
    top_k_positions,
    window_argmax,
    window_candidates,
)

__all__ = [
    "LOGISTIC_SD",
    "bilinear_sample",
    "bilinear_splat",
    "cell_offsets_to_positions",
    "gather_features",
    "gather_neighbours",
    "gaussian_top_k_marginals",
    "gcn_normalize",
    "gcn_normalize_sparse",
    "grid_knn_adjacency",
    "grid_neighbour_offsets",
    "grid_positions",
    "inverse_distance_adjacency",
    "knn_distances",
    "knn_indices",
    "max_pool_nms",
    "pairwise_distances",
    "perturbed_top_k_indicators",
    "refine_in_windows",
    "scatter_mean",
    "score_function_gradient",
    "standardize_over_cells",
    "top_k_positions",
    "wasserstein_to_uniform",
    "window_argmax",
    "window_candidates",
    "window_centres",
    "window_soft_argmax",
]
