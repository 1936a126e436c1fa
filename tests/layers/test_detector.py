"""The detectors' shared base (KeypointDetector, ScoreMapDetector): score activation, input and
argument checks, keypoint placement within NMS windows (refinement "window" and "centre"),
config round trips and `from_section`. Each detector's own selection: test_<layer>.py."""
import numpy as np
import pytest

from keypoint_gnn import registry
from keypoint_gnn._backend import tf
from keypoint_gnn.config import DetectorConfig
from keypoint_gnn.layers import (
    AttentionTopK,
    GridCoordinateRegressor,
    KeypointDetector,
    MaxPoolNMS,
    PerturbedTopK,
)
from tests.layers.helpers_detectors import set_score_conv, window_soft_argmax

DETECTOR_CLASSES = [AttentionTopK, MaxPoolNMS, PerturbedTopK, GridCoordinateRegressor]
CLASS_IDS = [cls.__name__ for cls in DETECTOR_CLASSES]

# --- score activation and input checks ---------------------------------------------------------


@pytest.mark.parametrize("cls", DETECTOR_CLASSES, ids=CLASS_IDS)
def test_sigmoid_activation_squashes_scores_and_score_map_only(rng, cls):
    """Same weights, "sigmoid" against "linear": the same keypoints, sigmoid(scores) and
    sigmoid(score map) (NumPy)."""
    feature_map = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    linear, squashed = (cls(num_keypoints=4, score_activation=activation)
                        for activation in ("linear", "sigmoid"))
    linear(feature_map)
    squashed(feature_map)
    squashed.set_weights(linear.get_weights())
    positions, scores, score_map = (t.numpy() for t in linear(feature_map))
    moved, squashed_scores, squashed_map = (t.numpy() for t in squashed(feature_map))
    np.testing.assert_array_equal(moved, positions)
    np.testing.assert_allclose(squashed_scores, 1 / (1 + np.exp(-scores)), rtol=1e-5)
    np.testing.assert_allclose(squashed_map, 1 / (1 + np.exp(-score_map)), rtol=1e-5)
    assert score_map.min() < 0 < score_map.max()  # linear scores: not already in (0, 1)


@pytest.mark.parametrize("cls", DETECTOR_CLASSES, ids=CLASS_IDS)
def test_detector_rejects_wrong_rank(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__} expects a feature map \(B, h, w, C\)"):
        cls(num_keypoints=2)(tf.zeros([1, 8, 8]))


@pytest.mark.parametrize("cls", DETECTOR_CLASSES, ids=CLASS_IDS)
@pytest.mark.parametrize("kwargs, message", [
    ({"num_keypoints": 0}, "num_keypoints=0 must be a positive integer"),
    ({"num_keypoints": 2.0}, "num_keypoints=2.0 must be a positive integer"),
    ({"num_keypoints": 4, "score_activation": "relu"},
     "score_activation='relu' is not one of 'linear', 'sigmoid'"),
])
def test_shared_argument_errors(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [MaxPoolNMS, PerturbedTopK], ids=["MaxPoolNMS", "PerturbedTopK"])
@pytest.mark.parametrize("pool_size", [0, 2.0])
def test_pool_size_must_be_a_positive_integer(cls, pool_size):
    with pytest.raises(ValueError, match=f"pool_size={pool_size!r} must be a positive integer"):
        cls(num_keypoints=4, pool_size=pool_size)


@pytest.mark.parametrize("make, message", [
    (lambda: AttentionTopK(num_keypoints=65), "num_keypoints=65 exceeds the 8x8=64 locations"),
    (lambda: PerturbedTopK(num_keypoints=65), "num_keypoints=65 exceeds the 8x8=64 locations"),
    (lambda: MaxPoolNMS(num_keypoints=2, pool_size=3),
     "pool_size=3 does not divide the feature map height 8"),
    (lambda: PerturbedTopK(num_keypoints=2, pool_size=3),
     "pool_size=3 does not divide the feature map height 8"),
    (lambda: MaxPoolNMS(num_keypoints=5, pool_size=4),
     ("num_keypoints=5 exceeds the 4 4x4 windows of the 8x8 feature map: use at most 4 keypoints "
     "or a smaller pool_size")),
    (lambda: PerturbedTopK(num_keypoints=5, pool_size=4),
     ("num_keypoints=5 exceeds the 4 4x4 windows of the 8x8 feature map: use at most 4 keypoints "
     "or a smaller pool_size")),
], ids=["attention_locations", "perturbed_locations", "nms_divides", "perturbed_divides",
        "nms_windows", "perturbed_windows"])
def test_score_map_detector_configuration_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()(tf.zeros([1, 8, 8, 4]))


# --- placement within NMS windows: refinement ---------------------------------------------------


@pytest.mark.parametrize("refinement", [True, "neighbourhood", "subpixel"])
def test_unknown_refinement_is_refused(refinement):
    with pytest.raises(ValueError, match=f"refinement={refinement!r} is not one of 'none', "
                                         "'window', 'centre'"):
        MaxPoolNMS(num_keypoints=4, refinement=refinement)


@pytest.mark.parametrize("refinement", ["window", "centre"])
@pytest.mark.parametrize("make, message", [
    (lambda refine: MaxPoolNMS(num_keypoints=4, pool_size=1, refinement=refine),
     r"needs NMS windows .* not pool_size=1 \(one location per window\)"),
    (lambda refine: PerturbedTopK(num_keypoints=4, selection="marginal", refinement=refine),
     r"needs NMS windows .* not pool_size=1 \(one location per window\)"),
    (lambda refine: PerturbedTopK(num_keypoints=4, selection="slots", pool_size=2,
                                  refinement=refine),
     "needs (perturbed_)?selection='marginal', not 'slots'"),
], ids=["nms_pool_1", "perturbed_pool_1", "perturbed_slots"])
def test_windowed_refinement_needs_windows_and_hard_selection(make, message, refinement):
    with pytest.raises(ValueError, match=f"refinement={refinement!r} {message}"):
        make(refinement)


# The detectors with NMS windows (2x2), each as a factory of its refinement.
WINDOWED = {
    "maxpool_nms": lambda refine: MaxPoolNMS(num_keypoints=5, pool_size=2, refinement=refine),
    "perturbed_sampled": lambda refine: PerturbedTopK(num_keypoints=5, pool_size=2, num_samples=4,
                                                      selection="marginal", refinement=refine),
    "perturbed_threshold": lambda refine: PerturbedTopK(num_keypoints=5, pool_size=2,
                                                        selection="marginal",
                                                        estimator="threshold",
                                                        refinement=refine),
}


def _plain_and_placed(name, refinement, feature_map):
    """The detector without refinement and with it, both scoring channel 0 of the map."""
    plain, placed = (WINDOWED[name](refine) for refine in ("none", refinement))
    set_score_conv(plain, feature_map)
    set_score_conv(placed, feature_map)
    return plain, placed


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_window_refinement_moves_the_selected_keypoints(rng, name):
    """Refined positions = the NumPy soft-argmax of the raw scores over the NMS window of the
    unrefined detector's keypoints (same weights), in training and at inference; the scores and
    the score map are the unrefined ones."""
    feature_map = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    plain, refined = _plain_and_placed(name, "window", feature_map)
    for training in (False, True):
        tf.random.set_seed(7)  # the same noise for both, should a selection draw any
        positions, scores, score_map = plain(feature_map, training=training)
        tf.random.set_seed(7)
        moved, moved_scores, moved_map = refined(feature_map, training=training)
        np.testing.assert_allclose(moved_scores, scores, rtol=1e-6)
        np.testing.assert_allclose(moved_map, score_map, rtol=1e-6)
        for b in range(2):
            expected = [window_soft_argmax(feature_map[b, :, :, 0], p, 2)
                        for p in positions[b].numpy()]
            np.testing.assert_allclose(moved[b], expected, rtol=1e-5, atol=1e-5)
        # Fractional, and within one cell of the selected cell.
        assert np.abs(moved.numpy() - np.round(moved.numpy())).max() > 1e-3
        assert np.abs(moved.numpy() - positions.numpy()).max() < 1.0


@pytest.mark.parametrize("refinement", ["window", "centre"])
@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_flat_scores_place_keypoints_at_window_centres(name, refinement):
    """Equal scores: the soft-argmax of a window is its centre. Ties go to the lower index, so
    the 5 keypoints are the first 5 of the 2x3 windows of a 4x6 map, row-major."""
    positions, _, _ = WINDOWED[name](refinement)(tf.zeros([1, 4, 6, 3]))
    np.testing.assert_allclose(sorted(map(tuple, positions[0].numpy())),
                               [(0.5, 0.5), (0.5, 2.5), (0.5, 4.5), (2.5, 0.5), (2.5, 2.5)],
                               atol=1e-6)


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_centre_refinement_puts_keypoints_at_their_window_centres(rng, name):
    """The same selection and scores as without refinement; each keypoint at the centre of the
    2x2 window holding it (NumPy), in training and at inference; no gradient to positions."""
    feature_map = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    plain, centred = _plain_and_placed(name, "centre", feature_map)
    for training in (False, True):
        tf.random.set_seed(3)
        positions, scores, _ = plain(feature_map, training=training)
        tf.random.set_seed(3)
        with tf.GradientTape() as tape:
            moved, moved_scores, _ = centred(feature_map, training=training)
            total = tf.reduce_sum(moved)
        np.testing.assert_allclose(moved_scores, scores, rtol=1e-6)
        np.testing.assert_array_equal(moved, positions.numpy() // 2 * 2 + 0.5)
        assert tape.gradient(total, centred.score_conv.kernel) is None


@pytest.mark.parametrize("name", sorted(WINDOWED))
def test_window_refinement_gives_positions_a_gradient(rng, name):
    """Without refinement the positions are indices (no gradient); with it a loss on the
    positions alone reaches the score convolution."""
    feature_map = tf.constant(rng.normal(size=(2, 8, 8, 3)).astype("float32"))
    upstream = rng.normal(size=(2, 5, 2)).astype("float32")
    for refine in ("none", "window"):
        detector = WINDOWED[name](refine)
        detector(feature_map)
        with tf.GradientTape() as tape:
            positions = detector(feature_map, training=True)[0]
            total = tf.reduce_sum(positions * upstream)
        gradient = tape.gradient(total, detector.score_conv.kernel)
        if refine != "none":
            assert np.all(np.isfinite(gradient)) and np.abs(gradient.numpy()).sum() > 0
        else:
            assert gradient is None or np.abs(gradient.numpy()).sum() == 0


# --- configuration: get_config / from_config, from_section -------------------------------------

CONFIGURED = [
    (AttentionTopK, {"num_keypoints": 3}),
    (AttentionTopK, {"num_keypoints": 3, "score_activation": "sigmoid"}),
    (MaxPoolNMS, {"num_keypoints": 3}),
    (MaxPoolNMS, {"num_keypoints": 3, "pool_size": 4, "score_activation": "sigmoid"}),
    (MaxPoolNMS, {"num_keypoints": 3, "pool_size": 2, "refinement": "window"}),
    (MaxPoolNMS, {"num_keypoints": 3, "pool_size": 2, "refinement": "centre"}),
    (PerturbedTopK, {"num_keypoints": 3}),
    (PerturbedTopK, {"num_keypoints": 3, "score_activation": "sigmoid", "num_samples": 7,
                     "sigma": 0.2}),
    (PerturbedTopK, {"num_keypoints": 3, "num_samples": 5, "pool_size": 2}),
    (PerturbedTopK, {"num_keypoints": 3, "num_samples": 5, "selection": "marginal"}),
    (PerturbedTopK, {"num_keypoints": 3, "pool_size": 2, "selection": "marginal",
                     "estimator": "threshold"}),
    (PerturbedTopK, {"num_keypoints": 3, "pool_size": 2, "selection": "marginal",
                     "refinement": "centre"}),
    (PerturbedTopK, {"num_keypoints": 3, "pool_size": 2, "selection": "marginal",
                     "refinement": "window"}),
    (GridCoordinateRegressor, {"num_keypoints": 3}),
    (GridCoordinateRegressor, {"num_keypoints": 3, "cell_size": 2, "points_per_cell": 3,
                               "score_activation": "sigmoid"}),
    (GridCoordinateRegressor, {"num_keypoints": 3, "cell_size": 2, "standardize_offsets": True}),
    (GridCoordinateRegressor, {"num_keypoints": 3, "cell_size": 2,
                               "offset_uniformity_weight": 0.5}),
]


@pytest.mark.parametrize("cls, kwargs", CONFIGURED,
                         ids=[f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CONFIGURED)])
def test_detector_config_round_trip(cls, kwargs):
    """get_config holds every constructor argument given; from_config rebuilds the same layer."""
    layer = cls(**kwargs, name="detector")
    config = layer.get_config()
    assert {key: config[key] for key in kwargs} == kwargs
    restored = cls.from_config(config)
    assert type(restored) is cls and restored.name == "detector"
    assert restored.get_config() == config
    for key, value in kwargs.items():
        assert getattr(restored, key) == value


def test_attention_config_has_no_window_options():
    config = AttentionTopK(num_keypoints=3).get_config()
    assert "pool_size" not in config and "refinement" not in config


# Layer attribute <- DetectorConfig field, per kind (besides num_keypoints, score_activation).
SECTION_FIELDS = {
    "attention": {},
    "maxpool_nms": {"pool_size": "pool_size", "refinement": "refinement"},
    "perturbed_topk": {"num_samples": "perturbed_samples", "sigma": "perturbed_sigma",
                       "pool_size": "pool_size", "selection": "perturbed_selection",
                       "estimator": "perturbed_estimator", "refinement": "refinement"},
    "grid": {"cell_size": "cell_size", "points_per_cell": "points_per_cell",
             "standardize_offsets": "standardize_offsets",
             "offset_uniformity_weight": "offset_uniformity_weight"},
}
SECTION_CLASSES = {"attention": AttentionTopK, "maxpool_nms": MaxPoolNMS,
                   "perturbed_topk": PerturbedTopK, "grid": GridCoordinateRegressor}


def test_section_tables_cover_every_registered_detector():
    assert set(SECTION_FIELDS) == set(SECTION_CLASSES) == set(registry.DETECTORS)


@pytest.mark.parametrize("kind", sorted(SECTION_CLASSES))
def test_from_section_takes_the_detector_config_values(rng, kind):
    """Non-default values everywhere: each reaches the layer built from the section, through
    the registry's class and through the class itself; keyword arguments pass through."""
    section = DetectorConfig(
        kind=kind, num_keypoints=3, score_activation="linear", pool_size=4,
        refinement="window" if kind in registry.WINDOWED_DETECTORS else "none",
        cell_size=4, points_per_cell=3, standardize_offsets=True, offset_uniformity_weight=0.25,
        perturbed_samples=7, perturbed_sigma=0.3, perturbed_selection="marginal",
        perturbed_estimator="threshold")
    for cls in (registry.detector_class(kind), SECTION_CLASSES[kind]):
        detector = cls.from_section(section, name="detector")
        assert type(detector) is SECTION_CLASSES[kind] and isinstance(detector, KeypointDetector)
        assert detector.name == "detector"
        expected = {"num_keypoints": 3, "score_activation": "linear",
                    **{attribute: getattr(section, field)
                       for attribute, field in SECTION_FIELDS[kind].items()}}
        assert {key: getattr(detector, key) for key in expected} == expected
        assert {key: detector.get_config()[key] for key in expected} == expected
    positions, scores, score_map = detector(rng.normal(size=(1, 8, 8, 3)).astype("float32"))
    assert positions.shape == (1, 3, 2) and scores.shape == (1, 3)
    assert score_map.shape == (1, 8, 8, 1)
