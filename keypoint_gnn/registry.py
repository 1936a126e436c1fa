"""Which layer class each config name builds: a new detector or GNN is a class plus an entry.

Plain data (class names, resolved lazily), so that `ModelConfig` can list and check the names
without importing a layer.
"""
DETECTORS = {  # ModelConfig.detector.kind -> class in keypoint_gnn.layers
    "attention": "AttentionTopK",
    "maxpool_nms": "MaxPoolNMS",
    "grid": "GridCoordinateRegressor",
    "perturbed_topk": "PerturbedTopK",
}
WINDOWED_DETECTORS = ("maxpool_nms", "perturbed_topk")  # select within NMS windows (pool_size)

GNNS = {  # ModelConfig.graph.kind -> class, or None: the paper's "CNN only" row
    "gcn": "GCNStack",
    "diffpool": "DiffPoolUnpool",
    "none": None,
}
NORMALIZED_ADJACENCY_GNNS = ("gcn",)  # expect a GCN-normalised adjacency from CNNToGraph


def _layer_class(name):
    from keypoint_gnn import layers

    return getattr(layers, name)


def detector_class(kind):
    return _layer_class(DETECTORS[kind])


def gnn_class(kind):
    """The GNN layer class for `kind`, or None for "none"."""
    return None if GNNS[kind] is None else _layer_class(GNNS[kind])
