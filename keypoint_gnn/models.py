"""Model builders: one `ModelConfig` -> classifier, autoencoder, plain CNN, keypoint pre-trainer.

Every keypoint model has the same skeleton (layer names in quotes):

  images -> "feature_extractor" CNN ---------------------------> F (B, h, w, C)
  images -> "detector_backbone" CNN -> "detector" -> positions (B, N, 2), scores (B, N)
  "cnn_to_graph"([F, positions, scores]) -> nodes (B, N, C), adjacency (B, N, N)
  "gnn"([nodes, adjacency]) -> nodes (B, N, C')                (absent for graph.kind="none")
  "graph_to_cnn"([nodes, positions]) -> G (B, h, w, C')
  classifier: "head" CNN -> logits;   autoencoder: "decoder" CNN -> image

Which detector and GNN class each config name builds is `keypoint_gnn.registry`.
"""
import math

from keypoint_gnn import layers, registry
from keypoint_gnn._backend import keras
from keypoint_gnn.config import ModelConfig

__all__ = [
    "ModelConfig",
    "build_autoencoder",
    "build_classifier",
    "build_keypoint_pretrainer",
    "build_plain_cnn",
    "custom_objects",
    "detector_model",
    "keypoint_model",
    "reconstruction_loss_for",
]


def _conv_blocks(filters, name, final_activation="relu"):
    """Each block: 3x3 conv, then a stride-2 3x3 conv (halves the resolution); every conv is
    followed by batch normalisation (synchronised across replicas, so that a mirrored run
    computes the same statistics as one device; moving-average momentum 0.9) and a ReLU.

    The detector's CNN ends without a ReLU: a score map computed from rectified features can
    be zero everywhere, and then no gradient reaches the detector.
    """
    layers = []
    for i, width in enumerate(filters):
        last = i == len(filters) - 1
        for suffix, strides in (("a", 1), ("b", 2)):
            layers += [
                keras.layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False,
                                    name=f"conv{i}{suffix}"),
                # momentum 0.9, not Keras's 0.99: with a few hundred steps (2 epochs of 10k
                # images) the 0.99 moving statistics still lag and test accuracy collapses.
                keras.layers.BatchNormalization(momentum=0.9, synchronized=True, name=f"bn{i}{suffix}"),
            ]
            if not (last and suffix == "b" and final_activation is None):
                layers.append(keras.layers.ReLU(name=f"relu{i}{suffix}"))
    return keras.Sequential(layers, name=name)


def _make_detector(config):
    detector_class = registry.detector_class(config.detector.kind)
    return detector_class.from_section(config.detector, name="detector", dtype="float32")


def _image_input(config):
    return keras.Input((config.image_size, config.image_size, config.channels), name="images")


def _keypoint_graph(config, images):
    """The shared trunk: both CNNs, the detector, the interconnects and the GNN
    -> G (graph->CNN grid), score map."""
    features = _conv_blocks(config.backbone_filters, "feature_extractor")(images)
    detector_features = _conv_blocks(config.detector.filters, "detector_backbone", None)(images)
    positions, scores, score_map = _make_detector(config)(detector_features)
    graph = config.graph
    nodes, adjacency = layers.CNNToGraph(
        sampling=config.sampling,
        normalize=graph.kind in registry.NORMALIZED_ADJACENCY_GNNS,
        position_features=graph.position_features,
        name="cnn_to_graph",
    )([features, positions, scores])
    gnn_class = registry.gnn_class(graph.kind)
    if gnn_class is not None:
        nodes = gnn_class.from_section(graph, name="gnn")([nodes, adjacency])
    size = config.feature_size
    grid = layers.GraphToCNN(size, size, sampling=config.sampling, name="graph_to_cnn")(
        [nodes, positions])
    return grid, score_map


def _classifier_head(config, grid):
    x = grid
    for i, width in enumerate(config.head.filters):
        strides = 2 if i == len(config.head.filters) - 1 and config.feature_size >= 4 else 1
        x = keras.layers.Conv2D(width, 3, strides=strides, padding="same", activation="relu",
                                name=f"head_conv{i}")(x)
    # Flatten, not global pooling: the class can depend on where things are in the map.
    x = keras.layers.Flatten(name="head_flatten")(x)
    if config.head.dropout:
        x = keras.layers.Dropout(config.head.dropout, name="head_dropout")(x)
    return keras.layers.Dense(config.num_classes, name="logits", dtype="float32")(x)


def build_classifier(config):
    """Keypoint-GNN image classifier (paper Table 1); outputs logits (B, num_classes).

    `graph.kind="none"` gives the paper's "CNN only" row: keypoints, no graph network.
    """
    images = _image_input(config)
    grid, _ = _keypoint_graph(config, images)
    logits = _classifier_head(config, grid)
    return keras.Model(images, logits, name=f"{model_name(config)}_classifier")


def _decoder(config, grid):
    x = grid
    for i, width in enumerate(reversed(config.backbone_filters)):
        x = keras.layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu",
                                         name=f"decoder_up{i}")(x)
    return keras.layers.Conv2D(config.channels, 3, padding="same", activation="sigmoid",
                               name="reconstruction", dtype="float32")(x)


def build_autoencoder(config):
    """Keypoint-GNN autoencoder (paper §8, Table 2): images -> reconstructed images in [0, 1].

    With `config.head.reconstruction_loss="conf_mse"` the model adds conf-MSE itself (compile with
    `loss=None`); with `"mse"` compile with `loss="mse"`. `reconstruction_loss_for(config)`
    gives the right argument.
    """
    images = _image_input(config)
    grid, score_map = _keypoint_graph(config, images)
    reconstructions = _decoder(config, grid)
    if config.head.reconstruction_loss == "conf_mse":
        reconstructions = layers.ConfidenceWeightedMSE(name="conf_mse")([images, reconstructions, score_map])
    return keras.Model(images, reconstructions, name=f"{model_name(config)}_autoencoder")


def reconstruction_loss_for(config):
    """The `loss` argument of `compile` for an autoencoder built from `config`."""
    return None if config.head.reconstruction_loss == "conf_mse" else "mse"


def _plain_cnn(config, width_multiplier):
    images = _image_input(config)
    scale = lambda filters: tuple(max(1, round(f * width_multiplier)) for f in filters)
    x = _conv_blocks(scale(config.backbone_filters), "feature_extractor")(images)
    head_config = config.replace(head=config.head.replace(filters=scale(config.head.filters)))
    logits = _classifier_head(head_config, x)
    return keras.Model(images, logits, name="plain_cnn_classifier")


def build_plain_cnn(config, target_params=None):
    """A plain CNN classifier (backbone + head, no keypoints, no graph).

    With `target_params`, its widths are scaled so that its parameter count is the closest
    to `target_params` (within 5% or the nearest reachable): the model a user would pick
    instead of the keypoint model at equal size.
    """
    if target_params is None:
        return _plain_cnn(config, 1.0)
    low, high = 0.05, 16.0
    best = None
    for _ in range(30):
        middle = math.sqrt(low * high)
        model = _plain_cnn(config, middle)
        count = model.count_params()
        if best is None or abs(count - target_params) < abs(best.count_params() - target_params):
            best = model
        if abs(count - target_params) <= 0.02 * target_params:
            break
        if count < target_params:
            low = middle
        else:
            high = middle
    return best


def keypoint_model(model):
    """A model sharing `model`'s layers that returns its [positions, scores, score_map].

    Positions are (y, x) in feature-map pixels; multiply by `ModelConfig.feature_stride` (and
    add stride/2 - 0.5) for image pixels.
    """
    detector = model.get_layer("detector")
    return keras.Model(model.inputs, detector.output[:3], name="keypoints")


def detector_model(model):
    """The detector branch alone (detector CNN + detector layer), for saving/loading its
    pre-trained weights between models built from the same config."""
    backbone = model.get_layer("detector_backbone")
    detector = model.get_layer("detector")
    images = keras.Input(model.input_shape[1:], name="images")
    outputs = detector(backbone(images))
    return keras.Model(images, outputs, name="detector_branch")


def build_keypoint_pretrainer(config):
    """The coordinate regressor's branch, returning raw cell predictions for pre-training
    on SIFT/ORB targets: images -> (B, L, M, h, 3) as (y offset, x offset, confidence logit).

    Requires `config.detector.kind="grid"`. Its layers carry the classifier's names, so
    `detector_model(pretrainer)` weights load into `detector_model(classifier)`.
    """
    if config.detector.kind != "grid":
        raise ValueError(
            "keypoint pre-training needs detector.kind='grid' (the coordinate regressor), got "
            f"detector.kind={config.detector.kind!r}")
    images = _image_input(config)
    detector_features = _conv_blocks(config.detector.filters, "detector_backbone", None)(images)
    cells = _make_detector(config)(detector_features, return_cells=True)
    return keras.Model(images, cells, name="keypoint_pretrainer")


def custom_objects():
    """Objects to pass to `keras.models.load_model` (they are also registered by name)."""
    return {name: getattr(layers, name) for name in layers.__all__}


def model_name(config):
    """"keypoint_<detector>_<gnn>", the name models and exports carry by default."""
    return f"keypoint_{config.detector.kind}_{config.graph.kind}"
