"""`ModelConfig`: everything that defines a keypoint-gnn model, as plain data.

    ModelConfig(image_size, channels, num_classes, backbone_filters,
                detector=DetectorConfig(...), graph=GraphConfig(...), head=HeadConfig(...))

JSON in, JSON out (`to_dict`, `from_dict`); imports no layer. Each rule is checked once, with
the functions of `keypoint_gnn.rules` that the layers use too; errors name the field path.
Units: `image_size` in image pixels; `pool_size` and `cell_size` in feature-map pixels (image
pixels divided by `feature_stride`).
"""
import dataclasses

from keypoint_gnn import registry, rules
from keypoint_gnn.sections import ConfigError, Section


def _section_error(section, check, *args, **kwargs):
    """Runs a `rules` check, naming the field by its path in the config."""
    try:
        check(*args, **kwargs)
    except ValueError as error:
        raise ConfigError(f"{section}.{error}") from None


@dataclasses.dataclass
class DetectorConfig(Section):
    """The keypoint detector (paper §4) and how its keypoints are placed.

    kind: "maxpool_nms" (§4.3), "attention" (§4.1), "grid" (§4.2) or "perturbed_topk"
    (differentiable top-N, beyond the paper); num_keypoints: N; score_activation: "linear" or
    "sigmoid"; filters: the detector CNN's channels per block. Windowed detectors
    (maxpool_nms, perturbed_topk): pool_size, the NMS window, and refinement ("none", "window":
    soft-argmax in the window, "centre": the window's centre). Grid: cell_size,
    points_per_cell, standardize_offsets, offset_uniformity_weight. Perturbed top-k:
    perturbed_samples, perturbed_sigma, perturbed_selection ("marginal" | "slots"),
    perturbed_estimator ("sampled" | "threshold"). See the layers' docstrings.
    """

    kind: str = "maxpool_nms"
    num_keypoints: int = 32
    score_activation: str = "sigmoid"
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
    each node's normalised position appended to its features."""

    kind: str = "gcn"
    layers: int = 4
    units: int = 64
    diffpool_clusters: int = 8
    position_features: bool = True
    residual: bool = True

    def __post_init__(self):
        rules.check_choice("kind", self.kind, tuple(registry.GNNS))
        for name in ("layers", "units", "diffpool_clusters"):
            rules.check_positive_int(name, getattr(self, name))


@dataclasses.dataclass
class HeadConfig(Section):
    """The CNN after the graph->CNN grid: filters (classifier head convolutions), dropout
    before the logits, and the autoencoder's reconstruction_loss ("mse" or "conf_mse", §8)."""

    filters: tuple = (64, 64)
    dropout: float = 0.2
    reconstruction_loss: str = "mse"

    def __post_init__(self):
        self.filters = tuple(self.filters)
        rules.check_filters("filters", self.filters)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r} must be in [0, 1)")
        rules.check_choice("reconstruction_loss", self.reconstruction_loss,
                           rules.RECONSTRUCTION_LOSSES)


@dataclasses.dataclass
class ModelConfig(Section):
    """Everything that defines a keypoint-gnn model; the builders in `keypoint_gnn.models`
    take it. `image_size`, `channels` (1 or 3) and `num_classes` come from the data set;
    `backbone_filters` are the feature extractor's channels per stride-2 block."""

    image_size: int = 48
    channels: int = 3
    num_classes: int = 6
    backbone_filters: tuple = (32, 64)
    detector: DetectorConfig = dataclasses.field(default_factory=DetectorConfig)
    graph: GraphConfig = dataclasses.field(default_factory=GraphConfig)
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)

    def __post_init__(self):
        self.backbone_filters = tuple(self.backbone_filters)
        for name, cls in (("detector", DetectorConfig), ("graph", GraphConfig),
                          ("head", HeadConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls.from_dict(getattr(self, name), f"{name}."))
        self.validate()

    @property
    def feature_stride(self):
        """Image pixels per feature-map pixel: each backbone block halves the resolution."""
        return 2 ** len(self.backbone_filters)

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
        rules.check_filters("backbone_filters", self.backbone_filters)
        detector = self.detector
        if len(detector.filters) != len(self.backbone_filters):
            raise ConfigError(
                f"detector.filters {list(detector.filters)} must have as many blocks as "
                f"backbone_filters {list(self.backbone_filters)}, so both CNNs share one "
                "resolution")
        if self.image_size % self.feature_stride:
            raise ConfigError(
                f"image_size={self.image_size} is not divisible by the feature stride "
                f"{self.feature_stride} ({len(self.backbone_filters)} stride-2 blocks)")
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

    def with_data(self, *, image_size, channels, num_classes):
        """This config for a data set's image size, channels and classes."""
        return dataclasses.replace(self, image_size=image_size, channels=channels,
                                   num_classes=num_classes)
