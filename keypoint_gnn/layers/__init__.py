"""The public Keras layers of keypoint-gnn, one per module.

| layer | paper | module |
|---|---|---|
| `AttentionTopK` | §4.1 attention keypoints | attention_topk |
| `GridCoordinateRegressor` | §4.2 grid coordinate regression | grid_regressor |
| `MaxPoolNMS` | §4.3 large-maxpool NMS | maxpool_nms |
| `PerturbedTopK` | beyond: differentiable top-N | perturbed_topk |
| `CNNToGraph` | §5 CNN-to-graph | cnn_to_graph |
| `GCNStack` | §7 GCN | gcn_stack |
| `DiffPoolUnpool` | §7 DiffPool | diffpool_unpool |
| `GATStack` | beyond: graph attention | gat_stack |
| `ViGStack` | beyond: Vision GNN blocks (kNN graphs from the features) | vig_stack |
| `MaxRelativeConv` | beyond: max-relative graph conv (ViG) | max_relative_conv |
| `EdgeConv` | beyond: edge conv (DGCNN) | edge_conv |
| `DropPath` | beyond: per-sample stochastic depth | drop_path |
| `GraphToCNN` | §6 graph-to-CNN | graph_to_cnn |
| `GridToGraph` | introduction: dense grid graph | grid_to_graph |
| `ConfidenceWeightedMSE` | §8 conf-MSE | confidence_weighted_mse |

Detectors share `KeypointDetector` (score activation, config) and `ScoreMapDetector` (score
map, selection, placement within NMS windows) from `detector`.
"""
from keypoint_gnn.layers.attention_topk import AttentionTopK
from keypoint_gnn.layers.cnn_to_graph import CNNToGraph
from keypoint_gnn.layers.confidence_weighted_mse import ConfidenceWeightedMSE
from keypoint_gnn.layers.detector import KeypointDetector, ScoreMapDetector
from keypoint_gnn.layers.diffpool_unpool import DiffPoolUnpool
from keypoint_gnn.layers.drop_path import DropPath
from keypoint_gnn.layers.edge_conv import EdgeConv
from keypoint_gnn.layers.gat_stack import GATStack
from keypoint_gnn.layers.gcn_stack import GCNStack
from keypoint_gnn.layers.graph_to_cnn import GraphToCNN
from keypoint_gnn.layers.grid_regressor import GridCoordinateRegressor
from keypoint_gnn.layers.grid_to_graph import GridToGraph
from keypoint_gnn.layers.max_relative_conv import MaxRelativeConv
from keypoint_gnn.layers.maxpool_nms import MaxPoolNMS
from keypoint_gnn.layers.perturbed_topk import PerturbedTopK
from keypoint_gnn.layers.vig_stack import ViGStack

__all__ = [
    "AttentionTopK",
    "CNNToGraph",
    "ConfidenceWeightedMSE",
    "DiffPoolUnpool",
    "DropPath",
    "EdgeConv",
    "GATStack",
    "GCNStack",
    "GraphToCNN",
    "GridCoordinateRegressor",
    "GridToGraph",
    "KeypointDetector",
    "MaxPoolNMS",
    "MaxRelativeConv",
    "PerturbedTopK",
    "ScoreMapDetector",
    "ViGStack",
]
