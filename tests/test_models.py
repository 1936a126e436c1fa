"""Every model variant: unknown batch, a training step under XLA, gradients to the detector,
and identical outputs after .keras and SavedModel round trips."""
import itertools

import numpy as np
import pytest

import keypoint_gnn as kg
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.keypoint_targets import pretraining_loss

TINY = dict(image_size=16, channels=3, num_classes=3, backbone_filters=(8,), detector_filters=(4,),
            num_keypoints=6, nms_pool_size=2, grid_cell_size=2, grid_points_per_cell=2,
            graph_units=8, graph_layers=2, diffpool_clusters=3, head_filters=(8,))
# The default suite runs a subset that has every detector, GNN and score activation and every
# detector with two GNNs (the default model among them); `make test-all` runs all 18.
DEFAULT_SUITE_VARIANTS = {
    ("attention", "gcn", "sigmoid"), ("attention", "none", "linear"),
    ("maxpool_nms", "gcn", "sigmoid"), ("maxpool_nms", "diffpool", "linear"),
    ("grid", "gcn", "linear"), ("grid", "diffpool", "sigmoid"),
}
VARIANTS = [
    variant if variant in DEFAULT_SUITE_VARIANTS else pytest.param(*variant, marks=pytest.mark.slow)
    for variant in itertools.product(["attention", "maxpool_nms", "grid"],
                                     ["gcn", "diffpool", "none"], ["linear", "sigmoid"])
]


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("detector,gnn,activation", VARIANTS)
def test_classifier_variant(tmp_path, rng, detector, gnn, activation):
    config = kg.ModelConfig(detector=detector, gnn=gnn, score_activation=activation, **TINY)
    model = kg.build_classifier(config)
    assert model.input_shape == (None, 16, 16, 3)
    images = rng.uniform(size=(4, 16, 16, 3)).astype("float32")
    labels = np.array([0, 1, 2, 1])

    # Gradient of the task loss reaches the detector's weights (and, for the regressor, the
    # offset channels that produce the coordinates).
    detector_layer = model.get_layer("detector")
    with tf.GradientTape() as tape:
        loss = _loss()(labels, model(images, training=True))
    kernel = detector_layer.cell_conv.kernel if detector == "grid" else detector_layer.score_conv.kernel
    gradient = tape.gradient(loss, kernel).numpy()
    assert np.abs(gradient).sum() > 0
    if detector == "grid":
        offset_channels = gradient.reshape(gradient.shape[:-1] + (-1, 3))[..., :2]
        assert np.abs(offset_channels).sum() > 0

    _check_fit_and_round_trips(model, images, labels, tmp_path)


def _check_fit_and_round_trips(model, images, labels, tmp_path):
    """A training step under XLA, predictions with unknown batch, and identical outputs after
    .keras and SavedModel round trips; returns the model loaded from .keras."""
    model.compile(optimizer="adam", loss=_loss(), jit_compile=True)
    history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    reference = model.predict(images, batch_size=3, verbose=0)  # batches of 3 and 1
    assert reference.shape == (4, 3)

    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(restored.predict(images, verbose=0), reference, rtol=1e-5, atol=1e-6)

    model.save(tmp_path / "savedmodel", save_format="tf")
    serving = tf.saved_model.load(str(tmp_path / "savedmodel")).signatures["serving_default"]
    (served,) = serving(images=tf.constant(images)).values()
    np.testing.assert_allclose(served.numpy(), reference, rtol=1e-5, atol=1e-6)
    return restored


# Beyond the paper: the differentiable top-k, selection noise and the regressor's expectation
# offsets.
# Marked slow: options another default-suite variant also exercises (the marginal selection
# and the threshold estimator: the window-refined threshold variant; standardised offsets and
# widened offsets: the two grid rows around; window centres: the refined variant's windows and
# bilinear sampling, and test_centre_refinement_model_places_keypoints_at_window_centres),
# and options whose layers and ops tests/test_keypoints.py and tests/test_ops.py check on their
# own (selection noise: its selection, inference, gradient and config round trip; the slots and
# keypoints selections: forward passes and gradients against NumPy, save/load), to keep the
# default suite under ten minutes.
BEYOND_PAPER_VARIANTS = [
    pytest.param(dict(detector="perturbed_topk", score_activation="sigmoid", perturbed_samples=8,
                      perturbed_sigma=0.5), marks=pytest.mark.slow),
    pytest.param(dict(detector="perturbed_topk", score_activation="linear", gnn="diffpool",
                      nms_pool_size=1, perturbed_selection="slots",
                      perturbed_control_variate=False), marks=pytest.mark.slow),
    pytest.param(dict(detector="perturbed_topk", perturbed_estimator="threshold",
                      perturbed_sigma=0.5), marks=pytest.mark.slow),
    dict(detector="perturbed_topk", perturbed_estimator="threshold", subpixel_refinement="window"),
    pytest.param(dict(detector="maxpool_nms", subpixel_refinement="centre"),
                 marks=pytest.mark.slow),
    pytest.param(dict(detector="perturbed_topk", perturbed_selection="keypoints",
                      position_features=True), marks=pytest.mark.slow),
    pytest.param(dict(detector="maxpool_nms", selection_noise=1.0), marks=pytest.mark.slow),
    dict(detector="grid", offset_mode="softmax", offset_margin=0.5),
    pytest.param(dict(detector="grid", standardize_offsets=True, offset_margin=0.25),
                 marks=pytest.mark.slow),
    dict(detector="grid", standardize_offsets=True, offset_uniformity_weight=1.0),
    dict(detector="grid", offset_mode="dsnt", dsnt_resolution=3, score_activation="linear",
         dsnt_spread_weight=0.1, dsnt_straight_through=True),
]


@pytest.mark.parametrize("changes", BEYOND_PAPER_VARIANTS,
                         ids=lambda c: "-".join(str(v) for v in c.values()))
def test_beyond_paper_variant(tmp_path, rng, changes):
    config = kg.ModelConfig(**{**TINY, "gnn": "gcn", **changes})
    assert kg.ModelConfig.from_json(config.to_json()) == config
    model = kg.build_classifier(config)
    detector_layer = model.get_layer("detector")
    assert model.input_shape == (None, 16, 16, 3)
    images = rng.uniform(size=(4, 16, 16, 3)).astype("float32")
    labels = np.array([0, 1, 2, 1])

    with tf.GradientTape() as tape:
        loss = _loss()(labels, model(images, training=True))
    if config.detector == "grid":
        gradient = tape.gradient(loss, detector_layer.cell_conv.kernel).numpy()
        per_point = gradient.reshape(gradient.shape[:-1] + (2, detector_layer.channels_per_point))
        assert np.abs(per_point[..., :-1]).sum() > 0  # the heat-map bins that make the offsets
    else:
        assert detector_layer.pool_size == config.nms_pool_size
        # Training positions: the hard selection ("marginal") or fractional slot means ("slots").
        positions = detector_layer(model.get_layer("detector_backbone")(images), training=True)[0]
        assert positions.shape == (4, 6, 2)
        gradient = tape.gradient(loss, detector_layer.score_conv.kernel).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).sum() > 0
    # The regressor's penalties reach the model's losses, hence model.fit's.
    penalties = config.detector == "grid" and config.offset_uniformity_weight > 0
    assert len(detector_layer.losses) == int(penalties or config.dsnt_spread_weight > 0)

    restored = _check_fit_and_round_trips(model, images, labels, tmp_path)
    assert restored.get_layer("detector").get_config() == detector_layer.get_config()


@pytest.mark.parametrize("offset_mode", ["softmax", "dsnt"])
def test_pretrainer_with_expectation_offsets(rng, offset_mode):
    config = kg.ModelConfig(detector="grid", offset_mode=offset_mode, **TINY)
    pretrainer = kg.build_keypoint_pretrainer(config)
    images = rng.uniform(size=(2, 16, 16, 3)).astype("float32")
    targets = np.zeros((2, 4, 4, 2, 3), "float32")
    targets[:, 1, 2, 0] = [0.2, 0.9, 1.0]
    with tf.GradientTape() as tape:
        cells = pretrainer(images, training=True)
        loss = pretraining_loss(targets, cells)
    assert cells.shape == (2, 4, 4, 2, 3)
    assert np.all((cells[..., :2] > 0) & (cells[..., :2] < 1))
    kernel = pretrainer.get_layer("detector").cell_conv.kernel
    assert np.isfinite(float(loss)) and np.abs(tape.gradient(loss, kernel).numpy()).sum() > 0


def test_heatmap_pretrainer_appends_the_heat_map_logits(rng):
    config = kg.ModelConfig(detector="grid", offset_mode="dsnt", dsnt_resolution=3, **TINY)
    pretrainer = kg.build_keypoint_pretrainer(config, heatmaps=True)
    images = rng.uniform(size=(2, 16, 16, 3)).astype("float32")
    cells = pretrainer(images).numpy()
    assert cells.shape == (2, 4, 4, 2, 3 + 9)
    heat = cells[..., 3:].astype("float64")
    probabilities = np.exp(heat - heat.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    centres = (np.arange(3) + 0.5) / 3
    expected_y = probabilities.reshape(heat.shape[:-1] + (3, 3)).sum(-1) @ centres
    np.testing.assert_allclose(cells[..., 0], expected_y, atol=1e-5)  # offsets from the same maps
    with pytest.raises(ValueError, match="offset_mode='sigmoid' has no heat map"):
        kg.build_keypoint_pretrainer(config.replace(offset_mode="sigmoid"), heatmaps=True)


# conf_mse exercises the model-added loss; plain mse differs only in compile's loss argument.
@pytest.mark.parametrize("loss", [pytest.param("mse", marks=pytest.mark.slow), "conf_mse"])
def test_autoencoder_trains_and_round_trips(tmp_path, rng, loss):
    config = kg.ModelConfig(detector="maxpool_nms", gnn="gcn", reconstruction_loss=loss, **TINY)
    model = kg.build_autoencoder(config)
    images = rng.uniform(size=(4, 16, 16, 3)).astype("float32")
    model.compile(optimizer="adam", loss=kg.models.reconstruction_loss_for(config), metrics=["mse"],
                  jit_compile=True)
    history = model.fit(images, images, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    reconstructions = model.predict(images, verbose=0)
    assert reconstructions.shape == images.shape
    assert reconstructions.min() >= 0 and reconstructions.max() <= 1
    model.save(tmp_path / "ae.keras")
    restored = keras.models.load_model(tmp_path / "ae.keras")
    np.testing.assert_allclose(restored.predict(images, verbose=0), reconstructions, rtol=1e-5, atol=1e-6)


def test_conf_mse_matches_numpy(rng):
    images = rng.uniform(size=(2, 4, 4, 3)).astype("float32")
    reconstructions = rng.uniform(size=(2, 4, 4, 3)).astype("float32")
    confidence = rng.uniform(size=(2, 4, 4, 1)).astype("float32")
    confidence[1] = 0.0  # no confidence: plain MSE
    error = ((images - reconstructions) ** 2).mean(-1)
    weighted = (confidence[0, ..., 0] * error[0]).sum() / confidence[0].sum()
    expected = (weighted + error[1].mean()) / 2
    np.testing.assert_allclose(kg.conf_mse(images, reconstructions, confidence), expected, rtol=1e-5)


def test_conf_mse_hand_worked():
    images = np.zeros((1, 2, 2, 1), "float32")
    reconstructions = np.array([[[[1.0], [0.0]], [[0.0], [0.0]]]], "float32")
    confidence = np.array([[[[3.0], [1.0]], [[0.0], [0.0]]]], "float32")
    assert float(kg.conf_mse(images, reconstructions, confidence)) == pytest.approx(3.0 / 4.0)


def test_plain_cnn_matches_parameter_count():
    config = kg.ModelConfig()
    target = kg.build_classifier(config).count_params()
    plain = kg.build_plain_cnn(config, target_params=target)
    assert abs(plain.count_params() - target) <= 0.05 * target
    assert not any(layer.name == "detector" for layer in plain.layers)


def test_keypoint_model_shares_layers(rng):
    model = kg.build_classifier(kg.ModelConfig(**TINY))
    positions, scores, score_map = kg.keypoint_model(model)(rng.uniform(size=(2, 16, 16, 3)))
    assert positions.shape == (2, 6, 2) and scores.shape == (2, 6) and score_map.shape == (2, 8, 8, 1)


def test_centre_refinement_model_places_keypoints_at_window_centres(rng):
    """In the whole model (max-pool NMS, 2x2 windows on the 8x8 map) every keypoint lies at
    a window centre, and a training step runs."""
    config = kg.ModelConfig(**TINY, subpixel_refinement="centre")
    model = kg.build_classifier(config)
    images = rng.uniform(size=(2, 16, 16, 3)).astype("float32")
    positions = kg.keypoint_model(model)(images)[0].numpy()
    np.testing.assert_array_equal(positions % 2, np.full_like(positions, 0.5))
    assert len({tuple(p) for p in positions[0]}) == positions.shape[1]  # distinct windows
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    loss = model.train_on_batch(images, np.array([0, 1]))
    assert np.isfinite(loss)


def test_pretrained_detector_weights_transfer(tmp_path, rng):
    config = kg.ModelConfig(detector="grid", **TINY)
    pretrainer = kg.build_keypoint_pretrainer(config)
    images = rng.uniform(size=(2, 16, 16, 3)).astype("float32")
    assert pretrainer(images).shape == (2, 4, 4, 2, 3)
    kg.models.detector_model(pretrainer).save_weights(tmp_path / "detector.weights.h5")
    classifier = kg.build_classifier(config)
    kg.models.detector_model(classifier).load_weights(tmp_path / "detector.weights.h5")
    for a, b in zip(kg.models.detector_model(pretrainer).weights, kg.models.detector_model(classifier).weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="needs detector='grid'"):
        kg.build_keypoint_pretrainer(config.replace(detector="attention"))


@pytest.mark.parametrize("changes, message", [
    (dict(detector="sift"), "detector='sift' is not one of"),
    (dict(gnn="gat"), "gnn='gat' is not one of"),
    (dict(score_activation="tanh"), "score_activation='tanh' is not one of"),
    (dict(channels=4), "channels=4 must be 1"),
    (dict(image_size=50), "image_size=50 is not divisible by the feature stride 4"),
    (dict(detector="attention", num_keypoints=200), "num_keypoints=200 exceeds the 12x12=144 locations"),
    (dict(detector="maxpool_nms", num_keypoints=40), "num_keypoints=40 exceeds the 36 pooling windows"),
    (dict(detector="maxpool_nms", nms_pool_size=5), "nms_pool_size=5 does not divide the 12x12"),
    (dict(detector="grid", grid_cell_size=5), "grid_cell_size=5 does not divide"),
    (dict(gnn="diffpool", diffpool_clusters=64), "diffpool_clusters=64 exceeds num_keypoints=32"),
    (dict(num_keypoints=0), "num_keypoints=0 must be a positive integer"),
    (dict(reconstruction_loss="l1"), "reconstruction_loss='l1' is not one of"),
    (dict(detector="grid", offset_mode="tanh"), "offset_mode='tanh' is not one of 'sigmoid', 'softmax', 'dsnt'"),
    (dict(dsnt_resolution=1), "dsnt_resolution=1 must be None"),
    (dict(offset_mode="dsnt", dsnt_spread=float("inf")), "dsnt_spread=inf must be a finite number >= 0"),
    (dict(detector="grid", dsnt_spread_weight=0.1),
     "dsnt_spread_weight=0.1 applies to offset_mode='dsnt' only, not offset_mode='sigmoid'"),
    (dict(dsnt_straight_through=1), "dsnt_straight_through=1 must be True or False"),
    (dict(detector="grid", offset_margin=2), r"offset_margin=2 must be in \[0, 1\]"),
    (dict(offset_mode="softmax", standardize_offsets=True),
     "standardize_offsets=True applies to offset_mode='sigmoid' only, not offset_mode='softmax'"),
    (dict(offset_uniformity_weight=-1.0), r"offset_uniformity_weight=-1.0 must be a finite number >= 0"),
    (dict(perturbed_samples=0), "perturbed_samples=0 must be a positive integer"),
    (dict(head_skip="yes"), "head_skip='yes' must be True or False"),
    (dict(perturbed_selection="soft"), "perturbed_selection='soft' is not one of 'slots', 'marginal'"),
    (dict(perturbed_control_variate=1), "perturbed_control_variate=1 must be True or False"),
    (dict(perturbed_estimator="exact"),
     "perturbed_estimator='exact' is not one of 'sampled', 'threshold'"),
    (dict(perturbed_estimator="threshold", perturbed_selection="slots"),
     ("perturbed_estimator='threshold' needs perturbed_selection='marginal', not "
      "perturbed_selection='slots'")),
    (dict(perturbed_sigma=0.0), "perturbed_sigma=0.0 must be a finite noise scale > 0"),
    (dict(selection_noise=-1.0), "selection_noise=-1.0 must be a finite number >= 0"),
    (dict(detector="perturbed_topk", selection_noise=1.0),
     ("selection_noise=1.0 applies to the attention and maxpool_nms detectors, not "
      "detector='perturbed_topk'")),
    (dict(perturbed_sigma=-0.1), "perturbed_sigma=-0.1 must be a finite noise scale > 0"),
    (dict(detector="grid", subpixel_refinement="neighbourhood"),
     ("subpixel_refinement='neighbourhood' applies to the attention and maxpool_nms detectors "
      "and to perturbed_topk with perturbed_selection='marginal', not detector='grid'")),
    (dict(detector="perturbed_topk", perturbed_selection="features",
          subpixel_refinement="neighbourhood"),
     r"not detector='perturbed_topk' \(perturbed_selection='features'\)"),
    (dict(detector="attention", subpixel_refinement="window"),
     "subpixel_refinement='window' needs NMS windows .* not detector='attention'"),
    (dict(nms_pool_size=1, subpixel_refinement="window"),
     "subpixel_refinement='window' needs NMS windows .* with nms_pool_size=1"),
    (dict(detector="attention", subpixel_refinement="centre"),
     "subpixel_refinement='centre' needs NMS windows .* not detector='attention'"),
    (dict(subpixel_refinement=True), "subpixel_refinement=True is not one of 'none'"),
    (dict(detector="perturbed_topk", num_keypoints=200), "num_keypoints=200 exceeds the 12x12=144"),
    (dict(detector="perturbed_topk", num_keypoints=40), "num_keypoints=40 exceeds the 36 pooling windows"),
    (dict(detector="perturbed_topk", nms_pool_size=5),
     r"nms_pool_size=5 does not divide the 12x12 feature map \(image_size 48 / stride 4\); valid: 1, 2, 3, 4, 6, 12"),
])
def test_bad_configuration_names_the_value(changes, message):
    with pytest.raises(ValueError, match=message):
        kg.ModelConfig(**changes)


def test_subpixel_refinement_samples_bilinearly():
    assert kg.ModelConfig().sampling == "gather"
    assert kg.ModelConfig(subpixel_refinement="window").sampling == "bilinear"
    assert kg.ModelConfig(subpixel_refinement="centre").sampling == "bilinear"
    assert kg.ModelConfig(detector="attention",
                          subpixel_refinement="neighbourhood").sampling == "bilinear"


def test_config_json_round_trip_and_unknown_field():
    config = kg.ModelConfig(detector="grid", graph_layers=5)
    assert kg.ModelConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['layers'\]"):
        kg.ModelConfig.from_dict({"layers": 3})


@pytest.mark.parametrize("shape, message", [((2, 16, 16), "ndim=4"), ((2, 16, 16, 1), "axis -1")])
def test_model_rejects_images_of_wrong_rank_or_channels(shape, message):
    model = kg.build_classifier(kg.ModelConfig(**TINY))
    with pytest.raises(ValueError, match=message):
        model(np.zeros(shape, "float32"))


def test_legacy_keras_is_selected():
    import tf_keras

    assert tf.keras.Model is tf_keras.Model
    kg.check_legacy_keras()


def test_keras3_already_loaded_gives_clear_error():
    import subprocess
    import sys

    code = ("import tensorflow as tf; tf.keras.Model\n"
            "try:\n    import keypoint_gnn\nexcept RuntimeError as e:\n    print(e)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in __import__("os").environ.items() if k != "TF_USE_LEGACY_KERAS"})
    assert "needs tf_keras" in result.stdout and "Keras 3" in result.stdout


def test_head_skip_feeds_the_feature_map_beside_the_graph_grid(tmp_path, rng):
    config = kg.ModelConfig(**{**TINY, "gnn": "gcn", "head_skip": True})
    model = kg.build_classifier(config)
    without = kg.build_classifier(config.replace(head_skip=False))
    features = model.get_layer("feature_extractor").output
    grid = model.get_layer("graph_to_cnn").output
    skip = model.get_layer("head_skip")
    assert skip.output.shape[-1] == grid.shape[-1] + features.shape[-1]
    # Only the first head convolution grows: by its kernel over the feature channels.
    conv = model.get_layer("head_conv0")
    extra = conv.kernel.shape[0] * conv.kernel.shape[1] * features.shape[-1] * conv.filters
    assert model.count_params() - without.count_params() == extra
    images = rng.uniform(size=(4, 16, 16, 3)).astype("float32")
    labels = np.array([0, 1, 2, 1])
    with tf.GradientTape() as tape:
        loss = _loss()(labels, model(images, training=True))
    gradient = tape.gradient(loss, model.get_layer("detector").score_conv.kernel)
    assert np.abs(gradient.numpy()).sum() > 0  # the keypoint path still trains
    _check_fit_and_round_trips(model, images, labels, tmp_path)


def test_head_skip_is_refused_for_the_autoencoder():
    config = kg.ModelConfig(**{**TINY, "head_skip": True})
    with pytest.raises(ValueError, match="head_skip=True applies to classifiers only"):
        kg.build_autoencoder(config)


def test_input_dependence_of_a_detector_that_ignores_the_image():
    from keypoint_gnn import training

    config = kg.ModelConfig(**{**TINY, "detector": "grid"})
    model = kg.build_classifier(config)
    detector = model.get_layer("detector")
    detector.cell_conv.kernel.assign(np.zeros(detector.cell_conv.kernel.shape, "float32"))
    # Slot 0: offsets (0.9, 0.1), logit 2 (selected); slot 1: (0.5, 0.5), logit -2.
    logit = lambda p: np.log(p / (1 - p))
    detector.cell_conv.bias.assign(np.array([logit(0.9), logit(0.1), 2.0, 0.0, 0.0, -2.0], "float32"))
    images = np.random.default_rng(0).uniform(size=(4, 16, 16, 3)).astype("float32")
    report = training.input_dependence(model, config, images)
    assert report["noise_selection_overlap"] == 1.0
    assert report["offset_std_across_images"] == pytest.approx(0.0, abs=1e-6)
    # Half the slots at 0.9 / 0.1, half at 0.5: a standard deviation of 0.2 on each axis.
    assert report["offset_std_across_slots"] == pytest.approx(0.2, abs=1e-5)


def test_input_dependence_of_a_detector_that_reads_the_image():
    from keypoint_gnn import training

    keras.utils.set_random_seed(0)
    config = kg.ModelConfig(**{**TINY, "detector": "grid"})
    model = kg.build_classifier(config)
    images = np.zeros((4, 16, 16, 3), "float32")
    for i, (y, x) in enumerate([(0, 0), (0, 10), (10, 0), (6, 6)]):  # a bright square each
        images[i, y:y + 6, x:x + 6] = 1.0
    report = training.input_dependence(model, config, images)
    assert report["noise_selection_overlap"] < 1.0
    assert report["offset_std_across_images"] > 0.0


def test_offset_quality_measures_widened_offsets_in_their_cells():
    from keypoint_gnn import training

    config = kg.ModelConfig(**{**TINY, "detector": "grid", "offset_margin": 0.5})
    model = kg.build_classifier(config)
    detector = model.get_layer("detector")
    # Zero kernel; bias: y offset 2 * sigmoid(logit(0.725)) - 0.5 = 0.95 (near the bottom
    # border), x offset 2 * sigmoid(logit(0.025)) - 0.5 = -0.45 (0.55 into the left neighbour).
    detector.cell_conv.kernel.assign(np.zeros(detector.cell_conv.kernel.shape, "float32"))
    # Slot 0 of each cell (confidence logit 2, selected); slot 1 at the centre (logit -2).
    bias = np.array([np.log(0.725 / 0.275), np.log(0.025 / 0.975), 2.0, 0.0, 0.0, -2.0], "float32")
    detector.cell_conv.bias.assign(bias)
    images = np.random.default_rng(0).uniform(size=(3, 16, 16, 3)).astype("float32")
    quality, offsets = training.offset_quality(model, config, images)
    assert offsets.shape == (3, config.num_keypoints, 2)
    np.testing.assert_allclose(offsets[..., 0], 0.95, atol=1e-5)
    np.testing.assert_allclose(offsets[..., 1], -0.45, atol=1e-5)
    assert quality["border_fraction"] == 1.0  # in-cell (0.95, 0.55): y near a border
    assert quality["border_fraction_all_slots"] == 0.5  # slot 1 sits at the cell centre
    assert quality["range_end_fraction"] == 1.0  # x within 0.1 of the range's end -0.5
