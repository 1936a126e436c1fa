"""ModelConfig and its sections as plain data: defaults, dict and JSON round trips, type and
rule checks whose errors name the field path, nested updates, and command-line values."""
import dataclasses
import json
import typing

import pytest

from keypoint_gnn import rules
from keypoint_gnn.config import (
    BackboneConfig,
    DetectorConfig,
    GraphConfig,
    HeadConfig,
    ModelConfig,
)
from keypoint_gnn.sections import ConfigError, parse_text, set_path

# The flat ModelConfig's defaults before the redesign, at their new paths; fields added since
# (backbone, GAT and ViG settings) and diffpool_loss_weight (0 by measurement, issue 23) at theirs.
OLD_DEFAULTS = {
    "image_size": 48,
    "channels": 3,
    "num_classes": 6,
    "backbone": {"kind": "conv", "filters": [32, 64], "widths": [32, 64, 128, 256],
                 "depths": [1, 1, 1, 1], "stem_filters": 32, "stem_stride": 1, "tap_stride": None,
                 "weights": None},
    "detector": {
        "kind": "maxpool_nms", "num_keypoints": 32, "score_activation": "sigmoid", "source": "image",
        "filters": [16, 32], "pool_size": 2, "refinement": "none", "cell_size": 2,
        "points_per_cell": 2, "standardize_offsets": False, "offset_uniformity_weight": 0.0,
        "perturbed_samples": 20, "perturbed_sigma": 0.05, "perturbed_selection": "marginal",
        "perturbed_estimator": "sampled",
    },
    "graph": {"kind": "gcn", "layers": 4, "units": 64, "diffpool_clusters": 8,
              "position_features": True, "residual": True,
              "diffpool_loss_weight": 0.0, "attn_heads": 4,
              "knn": 8, "knn_dilation": 1, "vig_conv": "max_relative", "drop_path": 0.0,
              "position_weight": 1.0},
    "head": {"filters": [64, 64], "dropout": 0.2, "reconstruction_loss": "mse",
             "pooling": "flatten", "fuse": "none", "decoder_width": 64, "decoder_spread": 2},
}

# A config that differs from the defaults in every section and in tuple fields.
CUSTOM = {
    "image_size": 64, "channels": 1, "num_classes": 10, "backbone": {"filters": [8, 16, 32]},
    "detector": {"kind": "perturbed_topk", "num_keypoints": 12, "filters": [4, 8, 8],
                 "pool_size": 2, "refinement": "window", "perturbed_estimator": "threshold",
                 "perturbed_sigma": 0.5},
    "graph": {"kind": "diffpool", "layers": 2, "units": 16, "diffpool_clusters": 4,
              "residual": False},
    "head": {"filters": [32], "dropout": 0.0, "reconstruction_loss": "conf_mse"},
}


def error_of(call):
    """The ConfigError `call` raises, as text."""
    with pytest.raises(ConfigError) as info:
        call()
    assert isinstance(info.value, ValueError)  # callers may catch ValueError
    return str(info.value)


# --- defaults ------------------------------------------------------------------------------

def test_defaults_equal_the_old_flat_defaults():
    config = ModelConfig()
    assert config.to_dict() == OLD_DEFAULTS
    # The headline settings, spelled out.
    assert config.image_size == 48 and config.detector.num_keypoints == 32
    assert config.detector.kind == "maxpool_nms" and config.detector.score_activation == "sigmoid"
    assert (config.graph.kind, config.graph.layers, config.graph.units) == ("gcn", 4, 64)
    assert config.graph.residual is True and config.graph.position_features is True
    assert config.head.filters == (64, 64) and config.head.dropout == 0.2
    assert config.feature_stride == 4 and config.feature_size == 12
    assert config.sampling == "gather"


def test_sections_are_their_own_defaults():
    config = ModelConfig()
    assert config.detector == DetectorConfig()
    assert config.graph == GraphConfig()
    assert config.head == HeadConfig()
    assert ModelConfig(detector={}, graph={}, head={}) == config


def test_section_defaults_are_not_shared_between_configs():
    first, second = ModelConfig(), ModelConfig()
    assert first.detector is not second.detector
    first.detector.num_keypoints = 8
    assert second.detector.num_keypoints == 32


# --- dict and JSON -------------------------------------------------------------------------

@pytest.mark.parametrize("values", [{}, CUSTOM], ids=["defaults", "custom"])
def test_dict_round_trip_restores_tuples(values):
    config = ModelConfig.from_dict(values)
    as_dict = config.to_dict()
    assert set(as_dict) == {"image_size", "channels", "num_classes", "backbone",
                            "detector", "graph", "head"}
    assert isinstance(as_dict["detector"], dict)
    assert isinstance(as_dict["backbone"]["filters"], list)
    assert isinstance(as_dict["head"]["filters"], list)
    restored = ModelConfig.from_dict(as_dict)
    assert restored == config
    assert isinstance(restored.backbone.filters, tuple)
    assert isinstance(restored.detector.filters, tuple)
    assert isinstance(restored.head.filters, tuple)
    assert isinstance(restored.detector, DetectorConfig)


@pytest.mark.parametrize("values", [{}, CUSTOM], ids=["defaults", "custom"])
def test_json_round_trip(values):
    config = ModelConfig.from_dict(values)
    text = config.to_json()
    assert json.loads(text) == config.to_dict()
    restored = ModelConfig.from_json(text)
    assert restored == config
    assert restored.detector.filters == tuple(config.detector.filters)
    assert restored.to_json() == text


def test_from_dict_applies_only_the_given_fields():
    config = ModelConfig.from_dict({"detector": {"kind": "grid"}})
    assert config.detector.kind == "grid"
    assert config.detector.num_keypoints == 32 and config.graph == GraphConfig()


def test_from_dict_converts_integers_for_float_fields():
    config = ModelConfig.from_dict({"head": {"dropout": 0}, "detector": {"perturbed_sigma": 1}})
    assert config.head.dropout == 0.0 and isinstance(config.head.dropout, float)
    assert isinstance(config.detector.perturbed_sigma, float)


def test_from_dict_takes_section_instances():
    detector = DetectorConfig(kind="grid")
    assert ModelConfig.from_dict({"detector": detector}).detector == detector
    assert ModelConfig(detector=detector).detector is detector


def test_sub_sections_accept_dicts():
    config = ModelConfig(detector={"kind": "grid"}, graph={"kind": "none"})
    assert isinstance(config.detector, DetectorConfig) and config.detector.kind == "grid"
    assert isinstance(config.graph, GraphConfig) and config.graph.kind == "none"
    assert config == ModelConfig(detector=DetectorConfig(kind="grid"),
                                 graph=GraphConfig(kind="none"))


def test_from_json_rejects_text_that_is_not_json():
    message = error_of(lambda: ModelConfig.from_json("{detector: grid}"))
    assert message.startswith("not valid JSON")


@pytest.mark.parametrize("values, parts", [
    ({"detector": {"nope": 1}},
     ["unknown field detector.nope", "valid fields of detector", "kind, num_keypoints"]),
    ({"graph": {"gnn": "gcn"}}, ["unknown field graph.gnn", "valid fields of graph", "layers"]),
    ({"nope": 1}, ["unknown field nope", "valid fields of ModelConfig", "image_size"]),
    # Old flat names are unknown now.
    ({"num_keypoints": 16}, ["unknown field num_keypoints", "detector"]),
    ({"head": {"head_skip": True}}, ["unknown field head.head_skip", "dropout"]),
])
def test_unknown_field_names_its_path_and_the_valid_fields(values, parts):
    message = error_of(lambda: ModelConfig.from_dict(values))
    for part in parts:
        assert part in message


@pytest.mark.parametrize("values, message", [
    ({"backbone": {"filters": "ab"}}, "backbone.filters='ab' must be a list of integers"),
    ({"backbone": {"filters": [32, "64"]}}, "backbone.filters=[32, '64'] must be a list of integers"),
    ({"backbone": {"filters": [32, True]}}, "backbone.filters=[32, True] must be a list of integers"),
    ({"head": {"dropout": "high"}}, "head.dropout='high' must be a number"),
    ({"head": {"dropout": True}}, "head.dropout=True must be a number"),
    ({"head": {"dropout": float("nan")}}, "head.dropout=nan must be a finite number"),
    ({"detector": {"perturbed_sigma": float("inf")}},
     "detector.perturbed_sigma=inf must be a finite number"),
    ({"detector": {"num_keypoints": 2.5}}, "detector.num_keypoints=2.5 must be an integer"),
    ({"detector": {"num_keypoints": "16"}}, "detector.num_keypoints='16' must be an integer"),
    ({"detector": {"num_keypoints": True}}, "detector.num_keypoints=True must be an integer"),
    ({"image_size": False}, "image_size=False must be an integer"),
    ({"graph": {"residual": 1}}, "graph.residual=1 must be true or false"),
    ({"graph": {"position_features": "yes"}},
     "graph.position_features='yes' must be true or false"),
    ({"detector": {"kind": 3}}, "detector.kind=3 must be a string"),
    ({"head": {"reconstruction_loss": None}}, "head.reconstruction_loss=None must be a string"),
])
def test_wrong_type_names_the_path_and_the_type(values, message):
    assert error_of(lambda: ModelConfig.from_dict(values)) == message


def test_non_object_config_is_rejected():
    assert error_of(lambda: ModelConfig.from_dict([1])) == (
        "ModelConfig must be an object of fields, not [1]")
    assert "not valid JSON" not in error_of(lambda: ModelConfig.from_json("[1]"))


def test_non_object_section_names_its_path():
    # sections.Section.from_dict writes the section's prefix "detector." into the message.
    assert error_of(lambda: ModelConfig.from_dict({"detector": 3})) == (
        "detector must be an object of fields, not 3")


# --- choices and rules ---------------------------------------------------------------------

def _choices(values):
    return ", ".join(map(repr, values))


@pytest.mark.parametrize("values, message", [
    ({"detector": {"kind": "x"}},
     "detector.kind='x' is not one of 'attention', 'maxpool_nms', 'grid', 'perturbed_topk'"),
    ({"graph": {"kind": "gin"}},
     "graph.kind='gin' is not one of 'gcn', 'diffpool', 'gat', 'vig', 'none'"),
    ({"graph": {"vig_conv": "gcn"}}, "graph.vig_conv='gcn' is not one of 'max_relative', 'edge'"),
    ({"detector": {"score_activation": "tanh"}},
     "detector.score_activation='tanh' is not one of 'linear', 'sigmoid'"),
    ({"detector": {"refinement": "neighbourhood"}},  # removed in the redesign
     "detector.refinement='neighbourhood' is not one of 'none', 'window', 'centre'"),
    ({"head": {"reconstruction_loss": "l1"}},
     "head.reconstruction_loss='l1' is not one of 'mse', 'conf_mse'"),
    ({"detector": {"kind": "perturbed_topk", "perturbed_selection": "features"}},  # removed
     "detector.perturbed_selection='features' is not one of 'marginal', 'slots'"),
    ({"detector": {"kind": "perturbed_topk", "perturbed_estimator": "exact"}},
     "detector.perturbed_estimator='exact' is not one of 'sampled', 'threshold'"),
])
def test_bad_choice_names_the_path_and_the_valid_values(values, message):
    assert error_of(lambda: ModelConfig.from_dict(values)) == message
    assert error_of(lambda: ModelConfig(**values)) == message  # dict sections, same check


def test_choice_messages_list_the_rules_module_choices():
    message = error_of(lambda: ModelConfig(detector={"refinement": "x"}))
    assert message.endswith(_choices(rules.REFINEMENTS))
    message = error_of(lambda: ModelConfig(head={"reconstruction_loss": "x"}))
    assert message.endswith(_choices(rules.RECONSTRUCTION_LOSSES))


@pytest.mark.parametrize("values, message", [
    ({"detector": {"num_keypoints": 0}}, "detector.num_keypoints=0 must be a positive integer"),
    ({"graph": {"layers": 0}}, "graph.layers=0 must be a positive integer"),
    ({"graph": {"units": -4}}, "graph.units=-4 must be a positive integer"),
    ({"graph": {"diffpool_loss_weight": -0.5}},
     "graph.diffpool_loss_weight=-0.5 must be a finite number >= 0"),
    ({"graph": {"attn_heads": 0}}, "graph.attn_heads=0 must be a positive integer"),
    ({"graph": {"knn": 0}}, "graph.knn=0 must be a positive integer"),
    ({"graph": {"knn_dilation": 0}}, "graph.knn_dilation=0 must be a positive integer"),
    ({"graph": {"drop_path": 1.0}}, "graph.drop_path=1.0 must be a number in [0, 1)"),
    ({"graph": {"position_weight": -0.5}}, "graph.position_weight=-0.5 must be a finite number >= 0"),
    ({"image_size": 0}, "image_size=0 must be a positive integer"),
    ({"num_classes": 0}, "num_classes=0 must be a positive integer"),
    ({"channels": 4}, "channels=4 must be 1 (greyscale) or 3 (RGB)"),
    ({"head": {"dropout": 1.0}}, "head.dropout=1.0 must be in [0, 1)"),
    ({"head": {"dropout": -0.1}}, "head.dropout=-0.1 must be in [0, 1)"),
    ({"head": {"filters": [8, 0]}},
     "head.filters=(8, 0) must be a non-empty list of positive integers (channels per block)"),
    ({"detector": {"filters": [16, 0]}},
     "detector.filters=(16, 0) must be a non-empty list of positive integers"),
    ({"detector": {"offset_uniformity_weight": -1.0}},
     "detector.offset_uniformity_weight=-1.0 must be a finite number >= 0"),
    ({"detector": {"kind": "perturbed_topk", "perturbed_samples": 0}},
     "detector.perturbed_samples=0 must be a positive integer"),
    ({"detector": {"kind": "perturbed_topk", "perturbed_sigma": 0.0}},
     "detector.perturbed_sigma=0.0 must be a finite number > 0"),
    ({"detector": {"kind": "perturbed_topk", "perturbed_sigma": -0.1}},
     "detector.perturbed_sigma=-0.1 must be a finite number >= 0"),
])
def test_bad_value_names_the_path(values, message):
    assert error_of(lambda: ModelConfig.from_dict(values)).startswith(message)


@pytest.mark.parametrize("detector, message", [
    ({"perturbed_samples": 0}, "detector.perturbed_samples=0 must be a positive integer"),
    ({"perturbed_selection": "soft"}, "detector.perturbed_selection='soft' is not one of"),
])
def test_perturbed_fields_are_checked_for_every_detector_kind(detector, message):
    """The flat config checked these for every detector; now only for perturbed_topk, so a
    config (and its JSON) can hold an invalid perturbed_* value until the kind changes."""
    assert error_of(lambda: ModelConfig(detector=detector)).startswith(message)


@pytest.mark.parametrize("values, parts", [
    # NMS windows at 48 px: a 12x12 feature map holds 36 2x2 windows.
    ({"detector": {"num_keypoints": 40}},
     ["detector.num_keypoints=40", "exceeds the 36 2x2 windows", "12x12",
      "image_size 48 / stride 4", "at most 36 keypoints"]),
    ({"detector": {"kind": "perturbed_topk", "num_keypoints": 40}},
     ["detector.num_keypoints=40", "36 2x2 windows"]),
    ({"detector": {"pool_size": 3, "num_keypoints": 20}},
     ["detector.num_keypoints=20", "exceeds the 16 3x3 windows"]),
    ({"detector": {"pool_size": 5}},
     ["detector.pool_size=5 does not divide the feature map (image_size 48 / stride 4)", "12"]),
    ({"detector": {"kind": "attention", "num_keypoints": 200}},
     ["detector.num_keypoints=200 exceeds the 12x12=144 locations"]),
    ({"detector": {"kind": "perturbed_topk", "num_keypoints": 200}},
     ["detector.num_keypoints=200 exceeds the 12x12=144 locations"]),
    ({"detector": {"kind": "grid", "cell_size": 5}},
     ["detector.cell_size=5 does not divide the feature map", "12"]),
    ({"detector": {"kind": "grid", "num_keypoints": 100}},
     ["detector.num_keypoints=100 exceeds the 72 candidate points", "6x6 cells x 2 points"]),
    ({"image_size": 50},
     ["image_size=50 is not divisible by the feature stride 4 (2 stride-2 blocks)"]),
    ({"image_size": 52, "backbone": {"filters": [8, 8, 8]}, "detector": {"filters": [8, 8, 8]}},
     ["image_size=52 is not divisible by the feature stride 8 (3 stride-2 blocks)"]),
    ({"detector": {"filters": [16]}},
     ["detector.filters [16] must have as many blocks as backbone.filters [32, 64]"]),
    ({"backbone": {"filters": [8, 16, 32]}},
     ["detector.filters [16, 32] must have as many blocks as backbone.filters [8, 16, 32]"]),
    ({"graph": {"kind": "diffpool", "diffpool_clusters": 64}},
     ["graph.diffpool_clusters=64 exceeds detector.num_keypoints=32"]),
    ({"detector": {"num_keypoints": 4}, "graph": {"kind": "diffpool"}},
     ["graph.diffpool_clusters=8 exceeds detector.num_keypoints=4"]),
    ({"detector": {"num_keypoints": 8}, "graph": {"kind": "vig"}},  # k >= N
     ["graph.knn=8 x graph.knn_dilation=1 must be below detector.num_keypoints=8"]),
    ({"graph": {"kind": "vig", "knn": 8, "knn_dilation": 4}},
     ["graph.knn=8 x graph.knn_dilation=4 must be below detector.num_keypoints=32",
      "ranks 32 other keypoints"]),
    ({"detector": {"kind": "attention", "refinement": "centre"}},
     ["detector.refinement='centre' needs NMS windows", "not a detector without NMS windows",
      "use 'none'"]),
    ({"detector": {"kind": "grid", "refinement": "window"}},
     ["detector.refinement='window' needs NMS windows", "not a detector without NMS windows"]),
    ({"detector": {"pool_size": 1, "refinement": "window"}},
     ["detector.refinement='window' needs NMS windows", "not pool_size=1"]),
    ({"detector": {"kind": "perturbed_topk", "perturbed_estimator": "threshold",
                   "perturbed_selection": "slots"}},
     ["detector.perturbed_estimator='threshold' needs perturbed_selection='marginal'",
      "not 'slots'"]),
    ({"detector": {"kind": "perturbed_topk", "refinement": "centre",
                   "perturbed_selection": "slots"}},
     ["detector.refinement='centre' needs perturbed_selection='marginal'", "not 'slots'"]),
])
def test_cross_section_rules_name_the_fields(values, parts):
    message = error_of(lambda: ModelConfig.from_dict(values))
    for part in parts:
        assert part in message


@pytest.mark.parametrize("values", [
    {"detector": {"num_keypoints": 36}},  # exactly the 36 windows
    {"detector": {"kind": "attention", "num_keypoints": 144}},
    {"detector": {"kind": "grid", "num_keypoints": 72}},
    {"detector": {"kind": "perturbed_topk", "pool_size": 1, "perturbed_selection": "slots"}},
    {"detector": {"kind": "perturbed_topk", "perturbed_estimator": "threshold",
                  "refinement": "centre"}},
    {"detector": {"num_keypoints": 8}, "graph": {"kind": "diffpool", "diffpool_clusters": 8}},
    {"graph": {"kind": "vig", "knn": 31}},  # 31 of the 32 other keypoints
    {"detector": {"num_keypoints": 4}, "graph": {"kind": "gcn"}},  # knn=8 matters for "vig" only
    {"image_size": 56, "backbone": {"filters": [8, 8, 8]},  # 7x7 map: all 49 locations
     "detector": {"kind": "attention", "filters": [4, 4, 4], "num_keypoints": 49}},
])
def test_valid_edge_cases_are_accepted(values):
    config = ModelConfig.from_dict(values)
    assert ModelConfig.from_dict(config.to_dict()) == config


# --- updated, replace, with_data ------------------------------------------------------------

def test_updated_merges_nested_changes():
    base = ModelConfig.from_dict({"detector": {"num_keypoints": 16, "score_activation": "linear"},
                                  "graph": {"units": 32}})
    config = base.updated({"detector": {"kind": "grid"}, "head": {"dropout": 0.5}})
    assert config.detector.kind == "grid"
    assert config.detector.num_keypoints == 16 and config.detector.score_activation == "linear"
    assert config.graph.units == 32 and config.head.dropout == 0.5
    assert config.head.filters == (64, 64)
    # The original is unchanged.
    assert base.detector.kind == "maxpool_nms" and base.head.dropout == 0.2
    assert base.updated({}) == base


def test_updated_replaces_lists_and_top_level_fields():
    config = ModelConfig().updated({"backbone": {"filters": [8, 8, 8]}, "image_size": 64,
                                    "detector": {"filters": (4, 4, 4), "num_keypoints": 16}})
    assert config.backbone.filters == (8, 8, 8) and config.detector.filters == (4, 4, 4)
    assert config.feature_stride == 8 and config.feature_size == 8
    assert config.detector.num_keypoints == 16 and config.detector.kind == "maxpool_nms"


@pytest.mark.parametrize("changes, message", [
    ({"detector": {"kind": "sift"}}, "detector.kind='sift' is not one of"),
    ({"detector": {"nope": 1}}, "unknown field detector.nope"),
    ({"graph": {"layers": "4"}}, "graph.layers='4' must be an integer"),
    ({"detector": {"num_keypoints": 40}}, "detector.num_keypoints=40 exceeds the 36"),
])
def test_updated_checks_the_result(changes, message):
    assert message in error_of(lambda: ModelConfig().updated(changes))


def test_replace_changes_top_level_fields_and_validates():
    config = ModelConfig().replace(num_classes=10, graph=GraphConfig(kind="none"))
    assert config.num_classes == 10 and config.graph.kind == "none"
    assert "image_size=50 is not divisible" in error_of(lambda: ModelConfig().replace(image_size=50))


def test_with_data_sets_the_data_fields_only():
    base = ModelConfig.from_dict(CUSTOM)
    config = base.with_data(image_size=128, channels=3, num_classes=2)
    assert (config.image_size, config.channels, config.num_classes) == (128, 3, 2)
    assert config.detector == base.detector and config.graph == base.graph
    assert config.head == base.head and config.backbone == base.backbone
    assert base.image_size == 64  # unchanged
    assert config.feature_size == 16


@pytest.mark.parametrize("data, message", [
    ({"image_size": 50, "channels": 3, "num_classes": 6}, "image_size=50 is not divisible"),
    ({"image_size": 16, "channels": 3, "num_classes": 6}, "detector.num_keypoints=32 exceeds the 4"),
    ({"image_size": 48, "channels": 2, "num_classes": 6}, "channels=2 must be 1"),
])
def test_with_data_checks_the_config_for_the_data(data, message):
    assert message in error_of(lambda: ModelConfig().with_data(**data))


def test_with_data_takes_keywords_only():
    with pytest.raises(TypeError):
        ModelConfig().with_data(48, 3, 6)


# --- derived properties -------------------------------------------------------------------

@pytest.mark.parametrize("detector, sampling", [
    ({"kind": "maxpool_nms"}, "gather"),
    ({"kind": "attention"}, "gather"),
    ({"kind": "perturbed_topk"}, "gather"),  # marginal: hard selections
    ({"kind": "grid"}, "bilinear"),
    ({"kind": "maxpool_nms", "refinement": "window"}, "bilinear"),
    ({"kind": "maxpool_nms", "refinement": "centre"}, "bilinear"),
    ({"kind": "perturbed_topk", "refinement": "window"}, "bilinear"),
    ({"kind": "perturbed_topk", "perturbed_selection": "slots"}, "bilinear"),
    ({"kind": "maxpool_nms", "perturbed_selection": "slots"}, "gather"),  # not a perturbed kind
])
def test_sampling_is_bilinear_for_fractional_positions(detector, sampling):
    config = ModelConfig(detector=detector)
    assert config.sampling == sampling
    assert config.detector.fractional == (sampling == "bilinear")
    assert sampling in rules.SAMPLING_MODES


@pytest.mark.parametrize("kind, windowed", [
    ("maxpool_nms", True), ("perturbed_topk", True), ("attention", False), ("grid", False)])
def test_windowed_detectors(kind, windowed):
    assert DetectorConfig(kind=kind).windowed is windowed


@pytest.mark.parametrize("backbone, stride, size", [((32,), 2, 24), ((32, 64), 4, 12),
                                                    ((8, 8, 8), 8, 6)])
def test_feature_stride_and_size(backbone, stride, size):
    config = ModelConfig(backbone={"filters": backbone}, detector={"filters": (4,) * len(backbone),
                                                              "num_keypoints": 4})
    assert (config.feature_stride, config.feature_size) == (stride, size)


def test_field_paths_list_every_leaf_with_its_type():
    paths = dict(ModelConfig.field_paths())
    assert paths["detector.num_keypoints"] is int
    assert paths["head.dropout"] is float
    assert paths["graph.residual"] is bool
    assert paths["backbone.filters"] is tuple
    assert "detector" not in paths
    leaves = sum(len(dataclasses.fields(cls))
                 for cls in (BackboneConfig, DetectorConfig, GraphConfig, HeadConfig))
    assert len(paths) == leaves + 3


# --- command-line values -------------------------------------------------------------------

@pytest.mark.parametrize("text, field_type, expected", [
    ("3", int, 3),
    (" 7 ", int, 7),
    ("-2", int, -2),
    ("0.5", float, 0.5),
    ("1e-3", float, 0.001),
    ("2", float, 2.0),
    ("true", bool, True),
    ("Yes", bool, True),
    ("on", bool, True),
    ("1", bool, True),
    ("false", bool, False),
    ("OFF", bool, False),
    ("no", bool, False),
    ("0", bool, False),
    ("32,64", tuple, (32, 64)),
    ("[32, 64]", tuple, (32, 64)),
    ("(8,)", tuple, (8,)),
    ("8", tuple, (8,)),
    ("centre", str, "centre"),
    ("none", int | None, None),
    ("NULL", typing.Optional[int], None),  # noqa: UP045 (both spellings)
    ("5", int | None, 5),
    ("null", float | None, None),
    ("1.5", float | None, 1.5),
    ("none", str | None, None),
])
def test_parse_text(text, field_type, expected):
    value = parse_text("x.y", text, field_type)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text, field_type, message", [
    ("abc", int, "detector.num_keypoints='abc' must be an integer"),
    ("3.0", int, "detector.num_keypoints='3.0' must be an integer"),
    ("", int, "detector.num_keypoints='' must be an integer"),
    ("none", int, "detector.num_keypoints='none' must be an integer"),
    ("abc", int | None, "detector.num_keypoints='abc' must be an integer or null"),
    ("x", float, "detector.num_keypoints='x' must be a number"),
    ("maybe", bool, "detector.num_keypoints='maybe' must be true or false"),
    ("2", bool, "detector.num_keypoints='2' must be true or false"),
    ("a,b", tuple, "detector.num_keypoints='a,b' must be a list of integers"),
    ("1.5,2", tuple, "detector.num_keypoints='1.5,2' must be a list of integers"),
])
def test_parse_text_errors_name_the_path_and_the_type(text, field_type, message):
    assert error_of(lambda: parse_text("detector.num_keypoints", text, field_type)) == message


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_parse_text_rejects_non_finite_floats(text):
    message = error_of(lambda: parse_text("head.dropout", text, float))
    assert message == f"head.dropout={float(text)!r} must be a finite number"


def test_set_path_parses_by_the_field_type_and_merges():
    values = {"graph": {"units": 8}, "detector": {"kind": "grid"}}
    updated = set_path(ModelConfig, values, "detector.num_keypoints=16")
    assert updated == {"graph": {"units": 8}, "detector": {"kind": "grid", "num_keypoints": 16}}
    assert values == {"graph": {"units": 8}, "detector": {"kind": "grid"}}  # not changed
    updated = set_path(ModelConfig, updated, " graph.residual =false")
    updated = set_path(ModelConfig, updated, "backbone.filters=8,16")
    updated = set_path(ModelConfig, updated, "head.dropout=0.5")
    config = ModelConfig.from_dict(updated)
    assert config.graph.residual is False and config.graph.units == 8
    assert config.backbone.filters == (8, 16) and config.head.dropout == 0.5
    assert config.detector.kind == "grid" and config.detector.num_keypoints == 16


def test_set_path_keeps_the_text_after_the_first_equals_sign():
    assert set_path(ModelConfig, {}, "detector.kind=a=b") == {"detector": {"kind": "a=b"}}


@pytest.mark.parametrize("assignment, parts", [
    ("detector.nope=1", ["unknown field 'detector.nope'", "--set 'detector.nope=1'"]),
    ("graph.gnn=gcn", ["unknown field 'graph.gnn'", "--set 'graph.gnn=gcn'"]),
    ("num_keypoints=16", ["unknown field 'num_keypoints'", "detector.num_keypoints"]),
    ("detector=grid", ["unknown field 'detector'"]),
])
def test_set_path_unknown_path_names_the_path(assignment, parts):
    message = error_of(lambda: set_path(ModelConfig, {}, assignment))
    for part in parts:
        assert part in message


@pytest.mark.parametrize("assignment", ["detector.num_keypoints", "=3", ""])
def test_set_path_needs_path_equals_value(assignment):
    message = error_of(lambda: set_path(ModelConfig, {}, assignment))
    assert f"--set {assignment!r} must be PATH=VALUE" in message


def test_set_path_bad_value_names_the_path():
    assert error_of(lambda: set_path(ModelConfig, {}, "detector.num_keypoints=abc")) == (
        "detector.num_keypoints='abc' must be an integer")
    assert error_of(lambda: set_path(ModelConfig, {}, "head.dropout=nan")) == (
        "head.dropout=nan must be a finite number")
