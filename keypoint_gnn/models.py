"""Model builders: one `ModelConfig` -> classifier, autoencoder, baselines, keypoint pre-trainer.

Every keypoint model has the same skeleton (layer names in quotes):

  images -> "feature_extractor" CNN ---------------------------> F (B, h, w, C)
  images -> "detector_backbone" CNN -> "detector" -> positions (B, N, 2), scores (B, N)
  "cnn_to_graph"([F, positions, scores]) -> nodes (B, N, C), adjacency (B, N, N)
  "gnn"([nodes, adjacency]) -> nodes (B, N, C')                (absent for gnn="none")
  "graph_to_cnn"([nodes, positions]) -> G (B, h, w, C')
  classifier: "head" CNN -> logits;   autoencoder: "decoder" CNN -> image
"""
import dataclasses
import json
import math

from keypoint_gnn import gnn as gnn_lib
from keypoint_gnn import interconnects, keypoints
from keypoint_gnn._backend import keras
from keypoint_gnn._checks import check_non_negative_number
from keypoint_gnn.losses import ConfidenceWeightedMSE

RECONSTRUCTION_LOSSES = ("mse", "conf_mse")


@dataclasses.dataclass
class ModelConfig:
    """Everything that defines a keypoint-gnn model. Plain data: JSON in, JSON out.

    Beyond the paper (False reproduces it): `position_features=True` appends each keypoint's
    normalised position to its node features; `graph_residual=True` adds skip connections
    around the graph layers (see `keypoint_gnn.gnn.GCNStack` for why). `head_skip=True`
    (classifier only, default False) concatenates the feature extractor's map to the
    graph->CNN grid before the head, so that the head sees every location and the graph adds
    keypoint context on top instead of being the only path.

    Beyond the paper, against its weak spots (defaults reproduce the paper):
    - `offset_mode` ("sigmoid" | "softmax" | "dsnt", with `dsnt_resolution`, None meaning
      max(grid_cell_size, 4)): how the grid regressor bounds its in-cell offsets; with "dsnt",
      `dsnt_spread_weight` > 0 keeps each cell's heat map about `dsnt_spread` bins wide
      (DSNT's variance regularisation) and `dsnt_straight_through=True` places keypoints at
      each map's highest bin; see `keypoints.GridCoordinateRegressor`. `offset_margin` > 0
      (cell units, at most 1) lets every mode's offsets reach that far into the neighbouring
      cells, [-g, 1 + g] instead of [0, 1] (YOLOv4's grid-sensitivity fix).
      `standardize_offsets=True` (sigmoid offsets) standardises each image's offset logits
      over its cells, so that no offset common to every cell can form.
      `offset_uniformity_weight` > 0 adds that weight times the selected keypoints' in-cell
      offsets' squared Wasserstein distance to the uniform on [0, 1] to the loss.
    - `detector="perturbed_topk"`: top-N made differentiable by perturbed optimisers in
      training (`perturbed_samples` noise draws, noise scale `perturbed_sigma` relative to each
      image's score spread), over the maxima of `nms_pool_size` windows as in max-pool NMS
      (`nms_pool_size=1`: over every location, attention top-N); `perturbed_control_variate`
      (default True) subtracts a leave-one-out baseline in its gradient estimator;
      `perturbed_selection` ("marginal", default: hard forward pass, perturbed gradient;
      "slots", Cordonnier et al.'s averaged slots; "features": hard forward pass, the
      gradient of Cordonnier et al.'s blend of the candidates' features; or "keypoints": as
      "features", and the blend also moves the keypoints' positions and where the nodes are
      written back);
      `perturbed_estimator` ("sampled", default: the perturbed-optimiser estimator; or
      "threshold", marginal selection only: the inclusion probabilities' noise-free threshold
      approximation); see `keypoints.PerturbedTopK`.
    - `selection_noise` > 0 (attention and max-pool NMS): in training the selection is made on
      the raw scores plus Gaussian noise of that scale relative to each image's score spread,
      so that low-scoring locations are explored; inference is unchanged.
    - `subpixel_refinement` ("none", default; "neighbourhood"; "window"; "centre"; attention,
      max-pool NMS, and the perturbed top-k's marginal selection): each selected keypoint
      moves to the soft-argmax of the raw scores in the 3x3 cells around it ("neighbourhood")
      or in the NMS window holding it ("window", windowed detectors), in training and at
      inference; positions become fractional (bilinear sampling) and the task loss reaches
      where the keypoints lie. "centre" (windowed detectors) puts each at its window's centre.

    Units: `image_size` in image pixels; `nms_pool_size` and `grid_cell_size` in feature-map
    pixels (image pixels divided by `feature_stride`).
    """

    image_size: int = 48
    channels: int = 3
    num_classes: int = 6
    backbone_filters: tuple = (32, 64)
    detector_filters: tuple = (16, 32)
    detector: str = "maxpool_nms"
    num_keypoints: int = 32
    score_activation: str = "sigmoid"
    nms_pool_size: int = 2
    grid_cell_size: int = 2
    grid_points_per_cell: int = 2
    offset_mode: str = "sigmoid"
    dsnt_resolution: int | None = None
    dsnt_spread: float = 0.5
    dsnt_spread_weight: float = 0.0
    dsnt_straight_through: bool = False
    offset_margin: float = 0.0
    standardize_offsets: bool = False
    offset_uniformity_weight: float = 0.0
    perturbed_samples: int = 20
    perturbed_sigma: float = 0.05
    perturbed_control_variate: bool = True
    perturbed_selection: str = "marginal"
    perturbed_estimator: str = "sampled"
    selection_noise: float = 0.0
    subpixel_refinement: str = "none"
    gnn: str = "gcn"
    graph_layers: int = 4
    graph_units: int = 64
    diffpool_clusters: int = 8
    position_features: bool = True
    graph_residual: bool = True
    head_skip: bool = False
    head_filters: tuple = (64, 64)
    dropout: float = 0.2
    reconstruction_loss: str = "mse"

    def __post_init__(self):
        self.backbone_filters = tuple(self.backbone_filters)
        self.detector_filters = tuple(self.detector_filters)
        self.head_filters = tuple(self.head_filters)
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
        """Fractional positions (the regressor; the perturbed top-k's averaged slots in
        training) are sampled bilinearly, the others gathered."""
        fractional = self.detector == "grid" or self.subpixel_refinement != "none" or (
            self.detector == "perturbed_topk" and self.perturbed_selection == "slots")
        return "bilinear" if fractional else "gather"

    def validate(self):
        for name in ("image_size", "num_classes", "num_keypoints", "graph_layers", "graph_units",
                     "nms_pool_size", "grid_cell_size", "grid_points_per_cell", "diffpool_clusters"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.channels not in (1, 3):
            raise ValueError(f"channels={self.channels!r} must be 1 (greyscale) or 3 (RGB)")
        for name, choices in (
            ("detector", tuple(keypoints.DETECTORS)),
            ("gnn", gnn_lib.GNN_NAMES),
            ("score_activation", keypoints.SCORE_ACTIVATIONS),
            ("offset_mode", keypoints.OFFSET_MODES),
            ("perturbed_selection", keypoints.PERTURBED_SELECTIONS),
            ("subpixel_refinement", keypoints.SUBPIXEL_REFINEMENTS),
            ("reconstruction_loss", RECONSTRUCTION_LOSSES),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not one of {', '.join(map(repr, choices))}"
                )
        keypoints.check_dsnt_resolution(self.dsnt_resolution)
        keypoints.check_dsnt_options(self.dsnt_spread, self.dsnt_spread_weight,
                                     self.dsnt_straight_through, self.offset_mode)
        keypoints.check_offset_margin(self.offset_margin)
        keypoints.check_standardize_offsets(self.standardize_offsets, self.offset_mode)
        keypoints.check_offset_uniformity_weight(self.offset_uniformity_weight)
        keypoints.check_perturbation(self.perturbed_samples, self.perturbed_sigma,
                                     names=("perturbed_samples", "perturbed_sigma"))
        keypoints.check_perturbed_estimator(self.perturbed_estimator, self.perturbed_selection,
                                            names=("perturbed_estimator", "perturbed_selection"))
        if not self.backbone_filters or not self.detector_filters or not self.head_filters:
            raise ValueError("backbone_filters, detector_filters and head_filters must not be empty")
        if len(self.detector_filters) != len(self.backbone_filters):
            raise ValueError(
                f"detector_filters {self.detector_filters} must have as many blocks as "
                f"backbone_filters {self.backbone_filters}, so both CNNs share one resolution"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r} must be in [0, 1)")
        if self.image_size % self.feature_stride:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by the feature stride "
                f"{self.feature_stride} ({len(self.backbone_filters)} stride-2 blocks)"
            )
        size = self.feature_size
        locations = size * size
        if self.detector in ("attention", "perturbed_topk") and self.num_keypoints > locations:
            raise ValueError(
                f"num_keypoints={self.num_keypoints} exceeds the {size}x{size}={locations} "
                "locations of the feature map"
            )
        if self.detector in ("maxpool_nms", "perturbed_topk"):
            keypoints.check_pool_windows(
                self.num_keypoints, self.nms_pool_size, size, size, pool_name="nms_pool_size",
                map_name=f"feature map (image_size {self.image_size} / stride {self.feature_stride})",
            )
        if self.detector == "grid":
            if size % self.grid_cell_size:
                raise ValueError(
                    f"grid_cell_size={self.grid_cell_size} does not divide the {size}x{size} "
                    "feature map"
                )
            candidates = (size // self.grid_cell_size) ** 2 * self.grid_points_per_cell
            if self.num_keypoints > candidates:
                raise ValueError(
                    f"num_keypoints={self.num_keypoints} exceeds the {candidates} candidate points "
                    f"of the grid ({size // self.grid_cell_size}^2 cells x "
                    f"{self.grid_points_per_cell} per cell)"
                )
        check_non_negative_number("selection_noise", self.selection_noise)
        if self.selection_noise and self.detector not in ("attention", "maxpool_nms"):
            raise ValueError(f"selection_noise={self.selection_noise!r} applies to the attention "
                             f"and maxpool_nms detectors, not detector={self.detector!r}; use 0")
        refinement = self.subpixel_refinement
        if refinement != "none" and not (
                self.detector in ("attention", "maxpool_nms") or (
                    self.detector == "perturbed_topk" and self.perturbed_selection == "marginal")):
            raise ValueError(
                f"subpixel_refinement={refinement!r} applies to the attention and maxpool_nms "
                "detectors and to perturbed_topk with perturbed_selection='marginal', not "
                f"detector={self.detector!r} (perturbed_selection={self.perturbed_selection!r}); "
                "use 'none'")
        if refinement in keypoints.WINDOWED_REFINEMENTS and (
                self.detector == "attention" or self.nms_pool_size == 1):
            raise ValueError(
                f"subpixel_refinement={refinement!r} needs NMS windows (maxpool_nms or "
                f"perturbed_topk with nms_pool_size > 1), not detector={self.detector!r} with "
                f"nms_pool_size={self.nms_pool_size}; use 'neighbourhood'")
        for name in ("head_skip", "perturbed_control_variate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")
        if self.gnn == "diffpool" and self.diffpool_clusters > self.num_keypoints:
            raise ValueError(
                f"diffpool_clusters={self.diffpool_clusters} exceeds num_keypoints={self.num_keypoints}"
            )

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))


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
    common = dict(num_keypoints=config.num_keypoints, score_activation=config.score_activation,
                  name="detector", dtype="float32")
    if config.detector == "attention":
        return keypoints.AttentionTopK(selection_noise=config.selection_noise,
                                       subpixel_refinement=config.subpixel_refinement, **common)
    if config.detector == "perturbed_topk":
        return keypoints.PerturbedTopK(num_samples=config.perturbed_samples,
                                       sigma=config.perturbed_sigma,
                                       pool_size=config.nms_pool_size,
                                       control_variate=config.perturbed_control_variate,
                                       selection=config.perturbed_selection,
                                       estimator=config.perturbed_estimator,
                                       subpixel_refinement=config.subpixel_refinement,
                                       **common)
    if config.detector == "maxpool_nms":
        return keypoints.MaxPoolNMS(pool_size=config.nms_pool_size,
                                    selection_noise=config.selection_noise,
                                    subpixel_refinement=config.subpixel_refinement, **common)
    return keypoints.GridCoordinateRegressor(
        cell_size=config.grid_cell_size,
        points_per_cell=config.grid_points_per_cell,
        offset_mode=config.offset_mode,
        dsnt_resolution=config.dsnt_resolution,
        dsnt_spread=config.dsnt_spread,
        dsnt_spread_weight=config.dsnt_spread_weight,
        dsnt_straight_through=config.dsnt_straight_through,
        offset_margin=config.offset_margin,
        standardize_offsets=config.standardize_offsets,
        offset_uniformity_weight=config.offset_uniformity_weight,
        **common,
    )


def _image_input(config):
    return keras.Input((config.image_size, config.image_size, config.channels), name="images")


def _keypoint_graph(config, images):
    """The shared trunk: both CNNs, the detector, the interconnects and the GNN
    -> G (graph->CNN grid), score map, feature map."""
    features = _conv_blocks(config.backbone_filters, "feature_extractor")(images)
    detector_features = _conv_blocks(config.detector_filters, "detector_backbone", None)(images)
    # Further detector outputs, if any: the nodes' weights over the map (feature blending),
    # then where they are written back (keypoint blending).
    positions, scores, score_map, *blend = _make_detector(config)(detector_features)
    nodes, adjacency = interconnects.CNNToGraph(
        sampling=config.sampling,
        normalize=gnn_lib.needs_normalized_adjacency(config.gnn),
        position_features=config.position_features,
        name="cnn_to_graph",
    )([features, positions, scores, *blend[:1]])
    graph_net = gnn_lib.build_gnn(
        config.gnn, config.graph_units, config.graph_layers, config.diffpool_clusters,
        residual=config.graph_residual,
    )
    if graph_net is not None:
        nodes = graph_net([nodes, adjacency])
    size = config.feature_size
    grid = interconnects.GraphToCNN(size, size, sampling=config.sampling, name="graph_to_cnn")(
        [nodes, positions, *blend[1:]]
    )
    return grid, score_map, features


def _classifier_head(config, grid):
    x = grid
    for i, width in enumerate(config.head_filters):
        strides = 2 if i == len(config.head_filters) - 1 and config.feature_size >= 4 else 1
        x = keras.layers.Conv2D(width, 3, strides=strides, padding="same", activation="relu",
                                name=f"head_conv{i}")(x)
    # Flatten, not global pooling: the class can depend on where things are in the map.
    x = keras.layers.Flatten(name="head_flatten")(x)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, name="head_dropout")(x)
    return keras.layers.Dense(config.num_classes, name="logits", dtype="float32")(x)


def build_classifier(config):
    """Keypoint-GNN image classifier (paper Table 1); outputs logits (B, num_classes).

    `config.gnn="none"` gives the paper's "CNN only" row: keypoints, no graph network.
    """
    images = _image_input(config)
    grid, _, features = _keypoint_graph(config, images)
    if config.head_skip:
        grid = keras.layers.Concatenate(name="head_skip")([grid, features])
    logits = _classifier_head(config, grid)
    return keras.Model(images, logits, name=f"keypoint_{config.detector}_{config.gnn}_classifier")


def _decoder(config, grid):
    x = grid
    for i, width in enumerate(reversed(config.backbone_filters)):
        x = keras.layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu",
                                         name=f"decoder_up{i}")(x)
    return keras.layers.Conv2D(config.channels, 3, padding="same", activation="sigmoid",
                               name="reconstruction", dtype="float32")(x)


def build_autoencoder(config):
    """Keypoint-GNN autoencoder (paper §8, Table 2): images -> reconstructed images in [0, 1].

    With `config.reconstruction_loss="conf_mse"` the model adds conf-MSE itself (compile with
    `loss=None`); with `"mse"` compile with `loss="mse"`. `reconstruction_loss_for(config)`
    gives the right argument.
    """
    images = _image_input(config)
    if config.head_skip:
        raise ValueError("head_skip=True applies to classifiers only: an autoencoder whose "
                         "decoder saw the feature map could skip the keypoints altogether")
    grid, score_map, _ = _keypoint_graph(config, images)
    reconstructions = _decoder(config, grid)
    if config.reconstruction_loss == "conf_mse":
        reconstructions = ConfidenceWeightedMSE(name="conf_mse")([images, reconstructions, score_map])
    return keras.Model(images, reconstructions,
                       name=f"keypoint_{config.detector}_{config.gnn}_autoencoder")


def reconstruction_loss_for(config):
    """The `loss` argument of `compile` for an autoencoder built from `config`."""
    return None if config.reconstruction_loss == "conf_mse" else "mse"


def _plain_cnn(config, width_multiplier):
    images = _image_input(config)
    scale = lambda filters: tuple(max(1, int(round(f * width_multiplier))) for f in filters)  # noqa: E731
    x = _conv_blocks(scale(config.backbone_filters), "feature_extractor")(images)
    head_config = config.replace(head_filters=scale(config.head_filters))
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


def build_keypoint_pretrainer(config, heatmaps=False):
    """The coordinate regressor's branch, returning raw cell predictions for pre-training
    on SIFT/ORB targets: images -> (B, L, M, h, 3) as (y offset, x offset, confidence logit).

    With `heatmaps=True` (offset modes "softmax" and "dsnt") each slot also carries its b x b
    heat-map logits, (B, L, M, h, 3 + b*b), and `keypoint_targets.pretraining_loss` trains
    the heat maps by cross-entropy on the target's bin instead of the offsets by squared error.

    Requires `config.detector="grid"`. Its layers carry the classifier's names, so
    `detector_model(pretrainer)` weights load into `detector_model(classifier)`.
    """
    if config.detector != "grid":
        raise ValueError(
            f"keypoint pre-training needs detector='grid' (the coordinate regressor), got "
            f"detector={config.detector!r}"
        )
    if heatmaps and config.offset_mode == "sigmoid":
        raise ValueError("heat-map pre-training needs offset_mode 'softmax' or 'dsnt'; "
                         "offset_mode='sigmoid' has no heat map")
    images = _image_input(config)
    detector_features = _conv_blocks(config.detector_filters, "detector_backbone", None)(images)
    cells = _make_detector(config)(detector_features,
                                   return_cells="heatmaps" if heatmaps else True)
    return keras.Model(images, cells, name="keypoint_pretrainer")


def custom_objects():
    """Objects to pass to `keras.models.load_model` (they are also registered by name)."""
    from keypoint_gnn import gnn as gnn_module
    from keypoint_gnn.interconnects import CNNToGraph, GraphToCNN, GridToGraph
    from keypoint_gnn.keypoints import (
        AttentionTopK,
        GridCoordinateRegressor,
        MaxPoolNMS,
        PerturbedTopK,
    )

    return {
        cls.__name__: cls
        for cls in (AttentionTopK, PerturbedTopK, MaxPoolNMS, GridCoordinateRegressor, CNNToGraph,
                    GraphToCNN, GridToGraph, gnn_module.GCNStack, gnn_module.DiffPoolUnpool,
                    ConfidenceWeightedMSE)
    }
