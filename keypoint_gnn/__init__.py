"""keypoint-gnn: keypoint-based, CNN-assisted image representation learning with GNNs.

Implements Lohan, Wrat and Sethi (2021), "Keypoints-based, CNN assisted image representation
learning using graph neural networks": a keypoint detector and a feature extractor look at the
image side by side, the features at the keypoints become graph nodes, a GNN processes the
graph, and the nodes are written back into a feature map for a CNN head.

Importing this package selects tf_keras (TF_USE_LEGACY_KERAS=1) before `tf.keras` is first used.
"""
# isort: off
from keypoint_gnn._backend import check_legacy_keras, keras  # noqa: F401  (must come first)
# isort: on
from keypoint_gnn import layers  # noqa: E402
from keypoint_gnn.config import DetectorConfig, GraphConfig, HeadConfig, ModelConfig  # noqa: E402
from keypoint_gnn.layers import ConfidenceWeightedMSE  # noqa: E402
from keypoint_gnn.losses import conf_mse  # noqa: E402
from keypoint_gnn.models import (  # noqa: E402
    build_autoencoder,
    build_classifier,
    build_keypoint_pretrainer,
    build_plain_autoencoder,
    build_plain_cnn,
    custom_objects,
    keypoint_model,
)
from keypoint_gnn.presets import PRESETS, preset  # noqa: E402

__version__ = "0.2.0"

__all__ = [
    "PRESETS",
    "ConfidenceWeightedMSE",
    "DetectorConfig",
    "GraphConfig",
    "HeadConfig",
    "ModelConfig",
    "build_autoencoder",
    "build_classifier",
    "build_keypoint_pretrainer",
    "build_plain_autoencoder",
    "build_plain_cnn",
    "conf_mse",
    "custom_objects",
    "keras",
    "keypoint_model",
    "layers",
    "preset",
]
