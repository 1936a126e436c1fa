"""The public Keras layers of keypoint-gnn, in one namespace."""
from keypoint_gnn.gnn import DiffPoolUnpool, GCNStack
from keypoint_gnn.interconnects import CNNToGraph, GraphToCNN, GridToGraph
from keypoint_gnn.keypoints import (AttentionTopK, GridCoordinateRegressor, KeypointDetector,
                                    MaxPoolNMS, PerturbedTopK)
from keypoint_gnn.losses import ConfidenceWeightedMSE

__all__ = [
    "AttentionTopK",
    "PerturbedTopK",
    "MaxPoolNMS",
    "GridCoordinateRegressor",
    "KeypointDetector",
    "CNNToGraph",
    "GraphToCNN",
    "GridToGraph",
    "GCNStack",
    "DiffPoolUnpool",
    "ConfidenceWeightedMSE",
]
