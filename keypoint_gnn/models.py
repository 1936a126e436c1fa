"""Model builders: one `ModelConfig` -> classifier, autoencoder, plain CNN, keypoint pre-trainer.

Every keypoint model has the same skeleton (layer names in quotes):

  images -> "feature_extractor" (backbone up to its tap) ------> F (B, h, w, C)
  images -> "detector_backbone" CNN -> "detector" -> positions (B, N, 2), scores (B, N)
            (detector.source="features": "detector" reads F, no detector CNN)
  "cnn_to_graph"([F, positions, scores]) -> nodes (B, N, C), adjacency (B, N, N)
  "gnn"([nodes, adjacency]) -> nodes (B, N, C')                (absent for graph.kind="none")
        ([nodes, adjacency, positions / h] for registry.POSITION_GNNS, e.g. "vig")
  "graph_to_cnn"([nodes, positions]) -> G (B, h, w, C')
  classifier: ["head_fuse" G ++ F] -> ["late_stages": ResNet stages after the tap]
              -> "head" CNN -> logits;   autoencoder: "decoder" CNN -> image

h = image_size / feature_stride. Which detector, GNN and backbone each config name builds is
`keypoint_gnn.registry`; the backbones are `keypoint_gnn.backbones`.
"""
import math

from keypoint_gnn import backbones, layers, registry, rules
from keypoint_gnn._backend import keras
from keypoint_gnn.backbones.resnet import resnet_param_count
from keypoint_gnn.config import ModelConfig

__all__ = [
    "ModelConfig",
    "build_autoencoder",
    "build_classifier",
    "build_keypoint_pretrainer",
    "build_plain_autoencoder",
    "build_plain_cnn",
    "custom_objects",
    "decoder_widths",
    "detector_model",
    "graph_numbers",
    "keypoint_model",
    "reconstruction_loss_for",
]


def _make_detector(config):
    detector_class = registry.detector_class(config.detector.kind)
    return detector_class.from_section(config.detector, name="detector", dtype="float32")


def _image_input(config):
    return keras.Input((config.image_size, config.image_size, config.channels), name="images")


def _detector_features(config, images, features):
    """What the detector reads: its own CNN on the image, or the tapped backbone features."""
    if config.detector.source == "features":
        return features
    return backbones.conv_blocks(config.detector.filters, "detector_backbone", None)(images)


def _keypoint_graph(config, images):
    """The shared trunk: both CNNs, the detector, the interconnects and the GNN
    -> G (graph->CNN grid), score map, F (the tapped backbone features)."""
    features = backbones.feature_extractor(config)(images)
    detector_features = _detector_features(config, images, features)
    positions, scores, score_map = _make_detector(config)(detector_features)
    graph = config.graph
    nodes, adjacency = layers.CNNToGraph(
        sampling=config.sampling,
        normalize=graph.kind in registry.NORMALIZED_ADJACENCY_GNNS,
        position_features=graph.position_features,
        name="cnn_to_graph",
    )([features, positions, scores])
    size = config.feature_size
    gnn_class = registry.gnn_class(graph.kind)
    if gnn_class is not None:
        gnn_inputs = [nodes, adjacency]
        if graph.kind in registry.POSITION_GNNS:
            gnn_inputs.append(keras.layers.Rescaling(1.0 / size, name="node_positions")(positions))
        nodes = gnn_class.from_section(graph, name="gnn")(gnn_inputs)
    grid = layers.GraphToCNN(size, size, sampling=config.sampling, name="graph_to_cnn")(
        [nodes, positions])
    return grid, score_map, features


def _classifier_head(config, x):
    """(B, s, s, C) -> logits: the head convolutions (the last one stride 2 on maps of 4 or
    more), then flatten (the class can depend on where things are in the map) or global
    average pooling, dropout and the logits."""
    head = config.head
    size = x.shape[1]
    for i, width in enumerate(head.filters):
        strides = 2 if i == len(head.filters) - 1 and size >= 4 else 1
        x = keras.layers.Conv2D(width, 3, strides=strides, padding="same", activation="relu",
                                name=f"head_conv{i}")(x)
    if head.pooling == "average":
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    else:
        x = keras.layers.Flatten(name="head_flatten")(x)
    return _logits(config, x)


def _logits(config, x):
    if config.head.dropout:
        x = keras.layers.Dropout(config.head.dropout, name="head_dropout")(x)
    return keras.layers.Dense(config.num_classes, name="logits", dtype="float32")(x)


def build_classifier(config):
    """Keypoint-GNN image classifier (paper Table 1); outputs logits (B, num_classes).

    `graph.kind="none"` gives the paper's "CNN only" row: keypoints, no graph network. With
    `head.fuse="concat"` the head also sees the tapped backbone features beside the grid; a
    "resnet" backbone tapped before its deepest stage runs its later stages on the grid
    ("late_stages") before the head.
    """
    images = _image_input(config)
    grid, _, features = _keypoint_graph(config, images)
    x = grid
    if config.head.fuse == "concat":
        x = keras.layers.Concatenate(name="head_fuse")([grid, features])
    late = backbones.late_stages(config, x.shape[-1])
    if late is not None:
        x = late(x)
    logits = _classifier_head(config, x)
    return keras.Model(images, logits, name=f"{model_name(config)}_classifier")


def decoder_widths(config):
    """Channels of the decoder's blocks: `decoder_spread` at the grid's resolution, then one
    per 2x upsampling up to the image (log2 of the feature stride), halving down to 16."""
    head = config.head
    upsamplings = int(math.log2(config.feature_stride))
    spread = [head.decoder_width] * head.decoder_spread
    return spread, [max(16, head.decoder_width // 2 ** (i + 1)) for i in range(upsamplings)]


def _conv_bn_relu(x, width, name, dilation=1):
    x = keras.layers.Conv2D(width, 3, padding="same", dilation_rate=dilation, use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _decoder(config, grid):
    """(B, h, h, C) -> (B, S, S, channels) in [0, 1]: spread convolutions at h, dilated 1, 2,
    4, ... (layer i reaches 2**i cells further: L layers spread each node 2**L - 1 cells), then
    bilinear 2x upsampling + conv per stride halving (`decoder_widths`), a 3x3 sigmoid
    output."""
    spread, upsampling = decoder_widths(config)
    x = grid
    for i, width in enumerate(spread):
        x = _conv_bn_relu(x, width, f"decoder_spread{i}", dilation=2 ** i)
    for i, width in enumerate(upsampling):
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"decoder_up{i}")(x)
        x = _conv_bn_relu(x, width, f"decoder_block{i}")
    return keras.layers.Conv2D(config.channels, 3, padding="same", activation="sigmoid",
                               name="reconstruction", dtype="float32")(x)


def _check_autoencoder(config):
    if config.head.fuse != "none":
        raise ValueError(
            f"head.fuse={config.head.fuse!r}: the autoencoder decodes the keypoint graph only "
            "(fusing the backbone features would let the image skip the keypoints); use 'none'")


def build_autoencoder(config):
    """Keypoint-GNN autoencoder (paper §8, Table 2): images -> reconstructed images in [0, 1].

    The decoder (`_decoder`) reads only the graph->CNN grid: the image reaches it through the
    N keypoints' node features and positions and nothing else (`head.fuse` other than "none"
    is refused). With `config.head.reconstruction_loss="conf_mse"` the model adds conf-MSE
    itself (compile with `loss=None`); with `"mse"` compile with `loss="mse"`.
    `reconstruction_loss_for(config)` gives the right argument. Every backbone kind works: the
    decoder upsamples from the tapped stage's stride.
    """
    _check_autoencoder(config)
    images = _image_input(config)
    grid, score_map, _ = _keypoint_graph(config, images)
    reconstructions = _decoder(config, grid)
    if config.head.reconstruction_loss == "conf_mse":
        reconstructions = layers.ConfidenceWeightedMSE(name="conf_mse")([images, reconstructions, score_map])
    return keras.Model(images, reconstructions, name=f"{model_name(config)}_autoencoder")


def graph_numbers(model):
    """Numbers a keypoint model's graph hands to the graph->CNN grid (for the autoencoder:
    everything the decoder gets): N node vectors of C channels plus N (y, x) positions."""
    nodes_shape, _ = model.get_layer("graph_to_cnn").input_shape
    keypoints, channels = int(nodes_shape[1]), int(nodes_shape[2])
    return keypoints * channels + 2 * keypoints


PLAIN_BOTTLENECKS = ("at-least", "at-most")


def build_plain_autoencoder(config, bottleneck_numbers, bottleneck="at-least"):
    """The convolutional autoencoder a user would pick instead: the same backbone up to the
    tapped stage, a 1x1 convolution down to k channels, and the keypoint autoencoder's
    decoder. MSE only; its `bottleneck` layer's output is the code.

    The h x h x k code is sized against `bottleneck_numbers` (the keypoint graph's,
    `graph_numbers`): "at-least" takes the fewest k holding at least as many numbers (the
    reference is never given fewer), "at-most" the most k holding no more (never given
    more); the two bracket the graph when h x h does not divide its count."""
    channels = plain_bottleneck_channels(config.feature_size, bottleneck_numbers, bottleneck)
    images = _image_input(config)
    features = backbones.feature_extractor(config)(images)
    code = keras.layers.Conv2D(channels, 1, name="bottleneck")(features)
    reconstructions = _decoder(config, code)
    return keras.Model(images, reconstructions, name=f"plain_{config.backbone.kind}_autoencoder")


def plain_bottleneck_channels(size, bottleneck_numbers, bottleneck="at-least"):
    """Channels k of `build_plain_autoencoder`'s size x size x k code (see there); ValueError
    when "at-most" leaves less than one channel."""
    rules.check_positive_int("bottleneck_numbers", bottleneck_numbers)
    rules.check_choice("bottleneck", bottleneck, PLAIN_BOTTLENECKS)
    if bottleneck == "at-least":
        return max(1, math.ceil(bottleneck_numbers / (size * size)))
    channels = bottleneck_numbers // (size * size)
    if channels < 1:
        raise ValueError(f"bottleneck='at-most': a {size}x{size} map holds more than the graph's "
                         f"{bottleneck_numbers} numbers in one channel; use 'at-least'")
    return channels


def reconstruction_loss_for(config):
    """The `loss` argument of `compile` for an autoencoder built from `config`."""
    return None if config.head.reconstruction_loss == "conf_mse" else "mse"


def _plain_cnn(config, width_multiplier):
    images = _image_input(config)
    def scale(filters):
        return backbones.scale_widths(filters, width_multiplier)

    x = backbones.conv_blocks(scale(config.backbone.filters), "feature_extractor")(images)
    head_config = config.replace(head=config.head.replace(filters=scale(config.head.filters)))
    logits = _classifier_head(head_config, x)
    return keras.Model(images, logits, name="plain_cnn_classifier")


def _plain_backbone(config, width_multiplier=1.0, hidden_units=0):
    """The backbone's ordinary classifier: the whole backbone, global average pooling, an
    optional hidden dense layer (ReLU), dropout and the logits."""
    images = _image_input(config)
    x = backbones.plain_feature_extractor(config, width_multiplier)(images)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    if hidden_units:
        x = keras.layers.Dense(hidden_units, activation="relu", name="head_hidden")(x)
    logits = _logits(config, x)
    return keras.Model(images, logits, name=f"plain_{config.backbone.kind}_classifier")


def _plain_resnet_params(config, width_multiplier):
    section = config.backbone
    widths = backbones.scale_widths(section.widths, width_multiplier)
    stem_filters = backbones.scale_widths((section.stem_filters,), width_multiplier)[0]
    return (resnet_param_count(config.channels, stem_filters, widths, section.depths)
            + (widths[-1] + 1) * config.num_classes)


def _closest_multiplier(count, target_params, steps=60):
    """The width multiplier in [1/20, 16] whose `count(multiplier)` is closest to
    `target_params`, by bisection (counts grow with the multiplier, up to rounding)."""
    low, high = 0.05, 16.0
    best = None
    for _ in range(steps):
        middle = math.sqrt(low * high)
        params = count(middle)
        if best is None or abs(params - target_params) < abs(best[1] - target_params):
            best = (middle, params)
        if params == target_params:
            break
        if params < target_params:
            low = middle
        else:
            high = middle
    return best[0]


def build_plain_cnn(config, target_params=None):
    """A plain CNN classifier (backbone + head, no keypoints, no graph): the model a user would
    pick instead of the keypoint model at equal size.

    backbone.kind "conv": the conv blocks and the keypoint model's head CNN; with
    `target_params` all widths are scaled so that the parameter count is the closest to
    `target_params` (within 2% where the widths allow, else the nearest reachable).

    "resnet": the whole ResNet (every stage), global average pooling, dropout, dense logits;
    with `target_params` its stem and stage widths are scaled (the counts are computed without
    building, `resnet_param_count`) to the closest count: within 2% from about 10k parameters
    up (one channel of the widest stage is under 1% there).

    Applications ("resnet50", ...): the same network (cut at the same tap as the keypoint
    model), global average pooling and dense logits. Their widths are fixed: the plain model
    is the closest reachable, smaller than the keypoint model by its detector, GNN and head
    (at 64 px, 10 classes: under 5% for ResNet50 and EfficientNetB0, 12% for
    MobileNetV3Small; see tests/test_backbones.py). A gap of at least one hidden layer as wide as the pooled
    features is filled by such a layer (dense, ReLU) before the logits, as in MobileNetV3's own
    top; a narrower one would be a bottleneck, so none is added.
    """
    kind = config.backbone.kind
    if kind == "conv":
        return _plain_conv(config, target_params)
    if target_params is None:
        return _plain_backbone(config)
    if kind == "resnet":
        multiplier = _closest_multiplier(lambda m: _plain_resnet_params(config, m),
                                         target_params)
        return _plain_backbone(config, multiplier)
    plain = _plain_backbone(config)
    features = plain.get_layer("head_pool").output_shape[-1]
    backbone_params = plain.count_params() - (features + 1) * config.num_classes
    # (features + 1) h + (h + 1) classes parameters after the pooling, for h hidden units.
    hidden = (target_params - backbone_params - config.num_classes) // (
        features + 1 + config.num_classes)
    # Only as wide as the features or wider: a narrower layer is a bottleneck, not a head.
    return _plain_backbone(config, hidden_units=hidden) if hidden >= features else plain


def _plain_conv(config, target_params):
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
    """The detector branch alone (detector CNN, or the feature extractor for
    `detector.source="features"`, + detector layer), for saving/loading its pre-trained
    weights between models built from the same config."""
    names = {layer.name for layer in model.layers}
    backbone = model.get_layer(
        "detector_backbone" if "detector_backbone" in names else "feature_extractor")
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
    features = (backbones.feature_extractor(config)(images)
                if config.detector.source == "features" else None)
    detector_features = _detector_features(config, images, features)
    cells = _make_detector(config)(detector_features, return_cells=True)
    return keras.Model(images, cells, name="keypoint_pretrainer")


def custom_objects():
    """Objects to pass to `keras.models.load_model` (they are also registered by name)."""
    objects = {name: getattr(layers, name) for name in layers.__all__}
    objects["ImageNetPreprocessing"] = backbones.ImageNetPreprocessing
    return objects


def model_name(config):
    """"keypoint_<detector>_<gnn>", the name models and exports carry by default;
    "keypoint_<backbone>_<detector>_<gnn>" for a backbone other than "conv"."""
    backbone = "" if config.backbone.kind == "conv" else f"{config.backbone.kind}_"
    return f"keypoint_{backbone}{config.detector.kind}_{config.graph.kind}"
