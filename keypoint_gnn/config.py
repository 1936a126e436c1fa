"""`ModelConfig`: everything that defines a keypoint-gnn model, as plain data.

    ModelConfig(image_size, channels, num_classes, backbone=BackboneConfig(...),
                detector=DetectorConfig(...), graph=GraphConfig(...), head=HeadConfig(...))

JSON in, JSON out (`to_dict`, `from_dict`); imports no layer. Each rule is checked once, with
the functions of `keypoint_gnn.rules` that the layers use too; errors name the field path.
Units: `image_size` in image pixels; `pool_size` and `cell_size` in feature-map pixels (image
pixels divided by `feature_stride`, the stride of the backbone stage the detector and the graph
tap).

Configs written before the backbone section (a top-level `backbone_filters`) still load:
`ModelConfig.from_dict` reads it as `backbone.filters`.
"""
import dataclasses

from keypoint_gnn import registry, rules
from keypoint_gnn.sections import ConfigError, Section, check_type


def _section_error(section, check, *args, **kwargs):
    """Runs a `rules` check, naming the field by its path in the config."""
    try:
        check(*args, **kwargs)
    except ValueError as error:
        raise ConfigError(f"{section}.{error}") from None


@dataclasses.dataclass
class BackboneConfig(Section):
    """The feature extractor CNN, and the stage the keypoint detector and the graph tap.

    kind: "conv" (the paper's: per entry of `filters`, a 3x3 conv and a stride-2 3x3 conv),
    "resnet" (basic residual blocks: a stem of `stem_filters` channels at stride `stem_stride`
    1, 2 or 4, then one stage per entry of `widths`, `depths` blocks each, stage i > 0 halving
    the resolution), or a tf_keras.applications network without its top, "resnet50",
    "efficientnetb0" or "mobilenetv3small" (RGB images of at least 32 pixels; built with
    weights=None, never downloaded).
    tap_stride: null taps the deepest stage, or the stride (image pixels per feature-map
    pixel) of the stage to tap. ResNet stages after the tap run after the graph->CNN grid, as
    the first part of the head, so the whole depth is used; an applications network is cut at
    the tap. "conv" taps its last block only.
    weights: null, or a Keras .h5 weights file loaded by layer name (mismatching layers
    skipped) into the backbone when a model is built: for applications a `include_top=False`
    file of that network (e.g. Keras's ImageNet "notop" files), else the `save_weights` of a
    feature extractor built from the same section.
    """

    kind: str = "conv"
    filters: tuple = (32, 64)
    widths: tuple = (32, 64, 128, 256)
    depths: tuple = (1, 1, 1, 1)
    stem_filters: int = 32
    stem_stride: int = 1
    tap_stride: int | None = None
    weights: str | None = None

    def __post_init__(self):
        for name in ("filters", "widths", "depths"):
            setattr(self, name, tuple(getattr(self, name)))
        rules.check_choice("kind", self.kind, registry.BACKBONES)
        rules.check_filters("filters", self.filters)
        rules.check_stages(self.widths, self.depths)
        rules.check_positive_int("stem_filters", self.stem_filters)
        rules.check_choice("stem_stride", self.stem_stride, rules.STEM_STRIDES)
        if self.tap_stride is not None:
            rules.check_positive_int("tap_stride", self.tap_stride)
        rules.check_tap_stride(self.tap_stride, self.stage_strides, self.kind)
        rules.check_weights_path(self.weights)

    @property
    def application(self):
        """Whether this is a tf_keras.applications network."""
        return self.kind in registry.APPLICATION_BACKBONES

    @property
    def stage_strides(self):
        """The strides the detector and the graph can tap, ascending."""
        if self.kind == "conv":
            return (2 ** len(self.filters),)
        if self.kind == "resnet":
            return tuple(self.stem_stride * 2 ** i for i in range(len(self.widths)))
        return registry.application_strides(self.kind)

    @property
    def feature_stride(self):
        """Image pixels per pixel of the tapped feature map."""
        return self.tap_stride or self.stage_strides[-1]

    @property
    def tap_stage(self):
        """Index of the tapped stage in `stage_strides`."""
        return self.stage_strides.index(self.feature_stride)


@dataclasses.dataclass
class DetectorConfig(Section):
    """The keypoint detector (paper §4) and how its keypoints are placed.

    kind: "maxpool_nms" (§4.3), "attention" (§4.1), "grid" (§4.2) or "perturbed_topk"
    (differentiable top-N, beyond the paper); num_keypoints: N; score_activation: "linear" or
    "sigmoid"; source: what the detector reads, "image" (its own CNN beside the feature
    extractor, the paper's) or "features" (the tapped backbone features: no second CNN);
    filters: the detector CNN's channels per block (source "image"). Windowed detectors
    (maxpool_nms, perturbed_topk): pool_size, the NMS window, and refinement ("none", "window":
    soft-argmax in the window, "centre": the window's centre). Grid: cell_size,
    points_per_cell, standardize_offsets, offset_uniformity_weight. Perturbed top-k:
    perturbed_samples, perturbed_sigma, perturbed_selection ("marginal" | "slots"),
    perturbed_estimator ("sampled" | "threshold"). See the layers' docstrings.
    """

    kind: str = "maxpool_nms"
    num_keypoints: int = 32
    score_activation: str = "sigmoid"
    source: str = "image"
    filters: tuple = (16, 32)
    pool_size: int = 2
    refinement: str = "none"
    cell_size: int = 2
    points_per_cell: int = 2
    standardize_offsets: bool = False
    offset_uniformity_weight: float = 0.0
    perturbed_samples: int = 20
    perturbed_sigma: float = 0.05
    perturbed_selection: str = "marginal"
    perturbed_estimator: str = "sampled"

    def __post_init__(self):
        self.filters = tuple(self.filters)
        rules.check_choice("kind", self.kind, tuple(registry.DETECTORS))
        for name in ("num_keypoints", "pool_size", "cell_size", "points_per_cell"):
            rules.check_positive_int(name, getattr(self, name))
        rules.check_choice("score_activation", self.score_activation, rules.SCORE_ACTIVATIONS)
        rules.check_choice("source", self.source, rules.DETECTOR_SOURCES)
        rules.check_filters("filters", self.filters)
        rules.check_refinement(self.refinement, self.pool_size if self.windowed else None)
        rules.check_non_negative_number("offset_uniformity_weight", self.offset_uniformity_weight)
        # Every kind: a stored value must be valid whichever detector later reads it.
        rules.check_perturbed(self.perturbed_samples, self.perturbed_sigma,
                              self.perturbed_selection, self.perturbed_estimator,
                              self.refinement if self.kind == "perturbed_topk" else "none",
                              prefix="perturbed_")

    @property
    def windowed(self):
        return self.kind in registry.WINDOWED_DETECTORS

    @property
    def fractional(self):
        """Whether positions are fractional (sampled bilinearly): the regressor's, refined or
        centred ones, and the averaged slots of the perturbed top-k in training."""
        return self.kind == "grid" or self.refinement != "none" or (
            self.kind == "perturbed_topk" and self.perturbed_selection == "slots")


@dataclasses.dataclass
class GraphConfig(Section):
    """The graph network (paper §7): kind "gcn" (a GCNConv stack), "diffpool" or "none" (the
    paper's "CNN only"); layers, units, diffpool_clusters. Beyond the paper (on by default,
    both False reproduce it): residual skips around the graph layers and position_features,
    each node's normalised position appended to its features.
    kind "gat" (beyond the paper): a GATConv stack, attn_heads attention heads per layer,
    averaged. diffpool_loss_weight (>= 0) scales both of DiffPool's auxiliary losses (link
    prediction and entropy); 1.0 is Spektral's unweighted losses (Ying et al.'s DiffPool, which
    the paper's DiffPool presets keep). The default 0 trains the assignment by the task loss
    alone: on the built-in set (3 seeds) weights 1 / 0.1 / 0 gave 50.2 / 68.8 / 72.2% mean test
    accuracy, the unweighted losses dominating the task loss (docs/research-log.md).
    kind "vig" (beyond the paper): Vision GNN blocks (`ViGStack`) over kNN graphs rebuilt from
    the node features in every block: knn neighbours per node, every knn_dilation-th of the
    knn x knn_dilation nearest (their product below detector.num_keypoints), vig_conv
    "max_relative" or "edge", drop_path (per-sample rate in [0, 1) on the residual branches)
    and position_weight (>= 0, weight of the squared distance between the keypoints' positions,
    normalised to [0, 1], in the kNN ranking)."""

    kind: str = "gcn"
    layers: int = 4
    units: int = 64
    diffpool_clusters: int = 8
    position_features: bool = True
    residual: bool = True
    diffpool_loss_weight: float = 0.0
    attn_heads: int = 4
    knn: int = 8
    knn_dilation: int = 1
    vig_conv: str = "max_relative"
    drop_path: float = 0.0
    position_weight: float = 1.0

    def __post_init__(self):
        rules.check_choice("kind", self.kind, tuple(registry.GNNS))
        rules.check_non_negative_number("diffpool_loss_weight", self.diffpool_loss_weight)
        rules.check_positive_int("attn_heads", self.attn_heads)
        rules.check_positive_int("knn", self.knn)
        rules.check_positive_int("knn_dilation", self.knn_dilation)
        rules.check_choice("vig_conv", self.vig_conv, tuple(registry.VIG_CONVS))
        rules.check_rate("drop_path", self.drop_path)
        rules.check_non_negative_number("position_weight", self.position_weight)
        for name in ("layers", "units", "diffpool_clusters"):
            rules.check_positive_int(name, getattr(self, name))


@dataclasses.dataclass
class HeadConfig(Section):
    """The CNN after the graph->CNN grid: fuse ("none", or "concat": the grid concatenated with
    the tapped backbone features, beyond the paper), filters (classifier head convolutions;
    empty for none),
    pooling before the logits ("flatten", the paper's: the class may depend on where things
    are; or "average", global average pooling), dropout before the logits, and the
    autoencoder's reconstruction_loss ("mse" or "conf_mse", §8) and decoder: decoder_spread
    3x3 convolutions of decoder_width channels at the grid's resolution, dilated 1, 2, 4, ...
    (the scattered grid is zero away from the keypoints: L layers spread every node's
    features 2**L - 1 cells),
    then one bilinear 2x upsampling + 3x3 convolution per halving of the feature stride, the
    width halved each time (at least 16)."""

    filters: tuple = (64, 64)
    dropout: float = 0.2
    reconstruction_loss: str = "mse"
    pooling: str = "flatten"
    fuse: str = "none"
    decoder_width: int = 64
    decoder_spread: int = 2

    def __post_init__(self):
        self.filters = tuple(self.filters)
        if self.filters:  # empty: no head convolutions (a ResNet's late stages are the head)
            rules.check_filters("filters", self.filters)
        rules.check_choice("pooling", self.pooling, rules.HEAD_POOLINGS)
        rules.check_choice("fuse", self.fuse, rules.HEAD_FUSIONS)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r} must be in [0, 1)")
        rules.check_choice("reconstruction_loss", self.reconstruction_loss,
                           rules.RECONSTRUCTION_LOSSES)
        rules.check_positive_int("decoder_width", self.decoder_width)
        if not isinstance(self.decoder_spread, int) or self.decoder_spread < 0:
            raise ValueError(f"decoder_spread={self.decoder_spread!r} must be an integer >= 0")


@dataclasses.dataclass
class ModelConfig(Section):
    """Everything that defines a keypoint-gnn model; the builders in `keypoint_gnn.models`
    take it. `image_size`, `channels` (1 or 3) and `num_classes` come from the data set;
    `backbone` is the feature extractor (`BackboneConfig`)."""

    image_size: int = 48
    channels: int = 3
    num_classes: int = 6
    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    detector: DetectorConfig = dataclasses.field(default_factory=DetectorConfig)
    graph: GraphConfig = dataclasses.field(default_factory=GraphConfig)
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)

    def __post_init__(self):
        for name, cls in (("backbone", BackboneConfig), ("detector", DetectorConfig),
                          ("graph", GraphConfig), ("head", HeadConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls.from_dict(getattr(self, name), f"{name}."))
        self.validate()

    @classmethod
    def from_dict(cls, values, path=""):
        return super().from_dict(upgrade(values, path), path)

    @property
    def feature_stride(self):
        """Image pixels per feature-map pixel at the backbone's tap (the detector's and the
        graph's map)."""
        return self.backbone.feature_stride

    @property
    def feature_size(self):
        return self.image_size // self.feature_stride

    @property
    def sampling(self):
        """How the interconnects read and write the keypoints: "bilinear" or "gather"."""
        return "bilinear" if self.detector.fractional else "gather"

    def validate(self):
        for name in ("image_size", "num_classes"):
            rules.check_positive_int(name, getattr(self, name))
        if self.channels not in (1, 3):
            raise ConfigError(f"channels={self.channels!r} must be 1 (greyscale) or 3 (RGB)")
        backbone, detector = self.backbone, self.detector
        if backbone.application:
            try:
                rules.check_application_input(backbone.kind, self.image_size, self.channels)
            except ValueError as error:
                raise ConfigError(str(error)) from None
        self._check_detector_resolution()
        if self.image_size % self.feature_stride:
            raise ConfigError(
                f"image_size={self.image_size} is not divisible by the feature stride "
                f"{self.feature_stride} ({self._stride_origin()})")
        size = self.feature_size
        if detector.kind in ("attention", "perturbed_topk"):
            _section_error("detector", rules.check_locations, detector.num_keypoints, size, size)
        if detector.windowed:
            _section_error("detector", rules.check_pool_windows, detector.num_keypoints,
                           detector.pool_size, size, size,
                           map_name=f"feature map (image_size {self.image_size} / stride "
                                    f"{self.feature_stride})")
        if detector.kind == "grid":
            _section_error("detector", rules.check_grid_cells, detector.num_keypoints,
                           detector.cell_size, detector.points_per_cell, size, size)
        if self.graph.kind == "diffpool" and self.graph.diffpool_clusters > detector.num_keypoints:
            raise ConfigError(f"graph.diffpool_clusters={self.graph.diffpool_clusters} exceeds "
                              f"detector.num_keypoints={detector.num_keypoints}")
        graph = self.graph
        if graph.kind == "vig" and graph.knn * graph.knn_dilation >= detector.num_keypoints:
            raise ConfigError(
                f"graph.knn={graph.knn} x graph.knn_dilation={graph.knn_dilation} must be below "
                f"detector.num_keypoints={detector.num_keypoints} (each keypoint ranks "
                f"{graph.knn * graph.knn_dilation} other keypoints)")

    def _stride_origin(self):
        backbone = self.backbone
        if backbone.kind == "conv":
            return f"{len(backbone.filters)} stride-2 blocks"
        which = (f"backbone.tap_stride={backbone.tap_stride}" if backbone.tap_stride
                 else "the deepest stage")
        return f"backbone {backbone.kind!r}, {which}"

    def _check_detector_resolution(self):
        """The detector CNN (source "image") must end at the tap's resolution: one stride-2
        block per halving."""
        backbone, detector = self.backbone, self.detector
        if detector.source != "image":
            return
        if backbone.kind == "conv":
            if len(detector.filters) != len(backbone.filters):
                raise ConfigError(
                    f"detector.filters {list(detector.filters)} must have as many blocks as "
                    f"backbone.filters {list(backbone.filters)}, so both CNNs share one "
                    "resolution")
            return
        blocks = self.feature_stride.bit_length() - 1  # strides are powers of 2
        if blocks == 0:
            raise ConfigError(
                f"detector.source='image' needs a tapped feature map smaller than the image, "
                f"not stride 1 ({self._stride_origin()}): set detector.source='features' or "
                "a larger backbone.tap_stride")
        if len(detector.filters) != blocks:
            raise ConfigError(
                f"detector.filters {list(detector.filters)} must have {blocks} blocks, one per "
                f"halving of the feature stride {self.feature_stride} ({self._stride_origin()}), "
                "so both CNNs share one resolution; or set detector.source='features'")

    def with_data(self, *, image_size, channels, num_classes):
        """This config for a data set's image size, channels and classes."""
        return dataclasses.replace(self, image_size=image_size, channels=channels,
                                   num_classes=num_classes)


def upgrade(values, path=""):
    """A ModelConfig dict with the names of earlier versions moved to their current paths:
    `backbone_filters` -> `backbone.filters`. Other values are returned as they are."""
    if not isinstance(values, dict) or "backbone_filters" not in values:
        return values
    values = dict(values)
    filters = check_type(f"{path}backbone_filters", values.pop("backbone_filters"), tuple)
    backbone = values.get("backbone", {})
    if isinstance(backbone, BackboneConfig):
        backbone = backbone.to_dict()
    if isinstance(backbone, dict):
        given = backbone.get("filters")
        if given is not None and tuple(given) != filters:
            raise ConfigError(
                f"{path}backbone_filters={list(filters)} (the old name of "
                f"{path}backbone.filters) conflicts with {path}backbone.filters="
                f"{list(given)}: give one")
        values["backbone"] = {**backbone, "filters": filters}
    return values
