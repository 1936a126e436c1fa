"""keypoint-gnn: keypoint-based, CNN-assisted image representation learning with GNNs.

Implements Lohan, Wrat and Sethi (2021), "Keypoints-based, CNN assisted image representation
learning using graph neural networks": a keypoint detector and a feature extractor look at the
image side by side, the features at the keypoints become graph nodes, a GNN processes the
graph, and the nodes are written back into a feature map for a CNN head.

Importing this package selects tf_keras (TF_USE_LEGACY_KERAS=1) before `tf.keras` is first used.
"""
from keypoint_gnn._backend import check_legacy_keras, keras  # noqa: F401  (must come first)
from keypoint_gnn import layers  # noqa: E402
from keypoint_gnn.losses import ConfidenceWeightedMSE, conf_mse  # noqa: E402
from keypoint_gnn.models import (  # noqa: E402
    ModelConfig,
    build_autoencoder,
    build_classifier,
    build_keypoint_pretrainer,
    build_plain_cnn,
    custom_objects,
    keypoint_model,
)

__version__ = "0.1.0"

__all__ = [
    "ModelConfig",
    "build_classifier",
    "build_autoencoder",
    "build_plain_cnn",
    "build_keypoint_pretrainer",
    "keypoint_model",
    "custom_objects",
    "conf_mse",
    "ConfidenceWeightedMSE",
    "layers",
    "keras",
]
