"""Every model variant: unknown batch, a training step under XLA, gradients to the detector,
and identical outputs after .keras and SavedModel round trips."""
import itertools

import numpy as np
import pytest

import keypoint_gnn as kg
from keypoint_gnn._backend import keras, tf

TINY = kg.ModelConfig(
    image_size=16, channels=3, num_classes=3, backbone={"filters": (8,)},
    detector={"filters": (4,), "num_keypoints": 6, "pool_size": 2, "cell_size": 2,
              "points_per_cell": 2},
    graph={"units": 8, "layers": 2, "diffpool_clusters": 3},
    head={"filters": (8,)},
)
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


def tiny(detector=None, graph=None, head=None):
    """TINY with nested changes to its sections."""
    changes = {name: section for name, section in
               (("detector", detector), ("graph", graph), ("head", head)) if section}
    return TINY.updated(changes)


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("detector,gnn,activation", VARIANTS)
def test_classifier_variant(tmp_path, rng, detector, gnn, activation):
    config = tiny(detector={"kind": detector, "score_activation": activation},
                  graph={"kind": gnn})
    model = kg.build_classifier(config)
    assert model.name == f"keypoint_{detector}_{gnn}_classifier"
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


# Beyond the paper: the differentiable top-k, window refinement and the regressor's offset
# standardisation and uniformity penalty.
# Marked slow: options another default-suite variant also exercises (the marginal selection
# and the threshold estimator: the window-refined threshold variant; window centres: the
# refined variant's windows and bilinear sampling, and
# test_centre_refinement_model_places_keypoints_at_window_centres), and the slots selection,
# whose layer and ops have tests of their own, to keep the default suite under ten minutes.
BEYOND_PAPER_VARIANTS = [
    pytest.param(dict(detector=dict(kind="perturbed_topk", score_activation="sigmoid",
                                    perturbed_samples=8, perturbed_sigma=0.5)),
                 marks=pytest.mark.slow),
    pytest.param(dict(detector=dict(kind="perturbed_topk", score_activation="linear", pool_size=1,
                                    perturbed_selection="slots"),
                      graph=dict(kind="diffpool")), marks=pytest.mark.slow),
    pytest.param(dict(detector=dict(kind="perturbed_topk", perturbed_estimator="threshold",
                                    perturbed_sigma=0.5)), marks=pytest.mark.slow),
    dict(detector=dict(kind="perturbed_topk", perturbed_estimator="threshold",
                       refinement="window")),
    pytest.param(dict(detector=dict(kind="maxpool_nms", refinement="centre")),
                 marks=pytest.mark.slow),
    dict(detector=dict(kind="grid", standardize_offsets=True, offset_uniformity_weight=1.0)),
]


def _variant_id(changes):
    return "-".join(f"{value}" for section in changes.values() for value in section.values())


@pytest.mark.parametrize("changes", BEYOND_PAPER_VARIANTS, ids=_variant_id)
def test_beyond_paper_variant(tmp_path, rng, changes):
    config = tiny(**changes)
    assert config.graph.kind == changes.get("graph", {}).get("kind", "gcn")
    assert kg.ModelConfig.from_json(config.to_json()) == config
    model = kg.build_classifier(config)
    detector_layer = model.get_layer("detector")
    assert model.input_shape == (None, 16, 16, 3)
    images = rng.uniform(size=(4, 16, 16, 3)).astype("float32")
    labels = np.array([0, 1, 2, 1])

    with tf.GradientTape() as tape:
        loss = _loss()(labels, model(images, training=True))
    if config.detector.kind == "grid":
        gradient = tape.gradient(loss, detector_layer.cell_conv.kernel).numpy()
        per_point = gradient.reshape(gradient.shape[:-1] + (config.detector.points_per_cell, 3))
        assert np.abs(per_point[..., :2]).sum() > 0  # the offset channels
    else:
        assert detector_layer.pool_size == config.detector.pool_size
        assert detector_layer.refinement == config.detector.refinement
        # Training positions: the hard selection ("marginal") or fractional slot means ("slots").
        positions = detector_layer(model.get_layer("detector_backbone")(images), training=True)[0]
        assert positions.shape == (4, 6, 2)
        gradient = tape.gradient(loss, detector_layer.score_conv.kernel).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).sum() > 0
    # The regressor's penalty reaches the model's losses, hence model.fit's.
    penalized = config.detector.kind == "grid" and config.detector.offset_uniformity_weight > 0
    assert len(detector_layer.losses) == int(penalized)

    restored = _check_fit_and_round_trips(model, images, labels, tmp_path)
    assert restored.get_layer("detector").get_config() == detector_layer.get_config()


# conf_mse exercises the model-added loss; plain mse differs only in compile's loss argument.
@pytest.mark.parametrize("loss", [pytest.param("mse", marks=pytest.mark.slow), "conf_mse"])
def test_autoencoder_trains_and_round_trips(tmp_path, rng, loss):
    config = tiny(head={"reconstruction_loss": loss})
    assert (config.detector.kind, config.graph.kind) == ("maxpool_nms", "gcn")
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


@pytest.mark.parametrize("loss, expected", [("mse", "mse"), ("conf_mse", None)])
def test_reconstruction_loss_for(loss, expected):
    assert kg.models.reconstruction_loss_for(tiny(head={"reconstruction_loss": loss})) == expected


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


def test_model_name_is_detector_kind_and_graph_kind():
    assert kg.models.model_name(kg.ModelConfig()) == "keypoint_maxpool_nms_gcn"
    assert kg.models.model_name(tiny(detector={"kind": "grid"}, graph={"kind": "none"})) == (
        "keypoint_grid_none")


def test_keypoint_model_shares_layers(rng):
    model = kg.build_classifier(TINY)
    positions, scores, score_map = kg.keypoint_model(model)(rng.uniform(size=(2, 16, 16, 3)))
    assert positions.shape == (2, 6, 2) and scores.shape == (2, 6) and score_map.shape == (2, 8, 8, 1)


def test_centre_refinement_model_places_keypoints_at_window_centres(rng):
    """In the whole model (max-pool NMS, 2x2 windows on the 8x8 map) every keypoint lies at
    a window centre, and a training step runs."""
    config = tiny(detector={"refinement": "centre"})
    assert config.sampling == "bilinear"
    model = kg.build_classifier(config)
    images = rng.uniform(size=(2, 16, 16, 3)).astype("float32")
    positions = kg.keypoint_model(model)(images)[0].numpy()
    np.testing.assert_array_equal(positions % 2, np.full_like(positions, 0.5))
    assert len({tuple(p) for p in positions[0]}) == positions.shape[1]  # distinct windows
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    loss = model.train_on_batch(images, np.array([0, 1]))
    assert np.isfinite(loss)


def test_pretrained_detector_weights_transfer(tmp_path, rng):
    config = tiny(detector={"kind": "grid"})
    pretrainer = kg.build_keypoint_pretrainer(config)
    images = rng.uniform(size=(2, 16, 16, 3)).astype("float32")
    cells = pretrainer(images)
    assert cells.shape == (2, 4, 4, 2, 3)
    assert np.all((cells[..., :2] > 0) & (cells[..., :2] < 1))  # sigmoid offsets
    kg.models.detector_model(pretrainer).save_weights(tmp_path / "detector.weights.h5")
    classifier = kg.build_classifier(config)
    kg.models.detector_model(classifier).load_weights(tmp_path / "detector.weights.h5")
    for a, b in zip(kg.models.detector_model(pretrainer).weights, kg.models.detector_model(classifier).weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="needs detector.kind='grid'.*detector.kind='attention'"):
        kg.build_keypoint_pretrainer(config.updated({"detector": {"kind": "attention"}}))


@pytest.mark.parametrize("shape, message", [((2, 16, 16), "ndim=4"), ((2, 16, 16, 1), "axis -1")])
def test_model_rejects_images_of_wrong_rank_or_channels(shape, message):
    model = kg.build_classifier(TINY)
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


def _logit(p):
    return np.log(p / (1 - p))


def _constant_grid_model(slot0_offsets):
    """The TINY grid classifier with a zero cell kernel: every cell predicts slot 0 at
    `slot0_offsets` with confidence logit 2 (selected) and slot 1 at the centre, logit -2."""
    config = tiny(detector={"kind": "grid"})
    model = kg.build_classifier(config)
    detector = model.get_layer("detector")
    detector.cell_conv.kernel.assign(np.zeros(detector.cell_conv.kernel.shape, "float32"))
    y, x = slot0_offsets
    detector.cell_conv.bias.assign(
        np.array([_logit(y), _logit(x), 2.0, 0.0, 0.0, -2.0], "float32"))
    return model, config


def test_input_dependence_of_a_detector_that_ignores_the_image():
    from keypoint_gnn import training

    model, config = _constant_grid_model((0.9, 0.1))
    images = np.random.default_rng(0).uniform(size=(4, 16, 16, 3)).astype("float32")
    report = training.input_dependence(model, config, images)
    assert report["noise_selection_overlap"] == 1.0
    assert report["offset_std_across_images"] == pytest.approx(0.0, abs=1e-6)
    # Half the slots at 0.9 / 0.1, half at 0.5: a standard deviation of 0.2 on each axis.
    assert report["offset_std_across_slots"] == pytest.approx(0.2, abs=1e-5)


def test_input_dependence_of_a_detector_that_reads_the_image():
    from keypoint_gnn import training

    keras.utils.set_random_seed(0)
    config = tiny(detector={"kind": "grid"})
    model = kg.build_classifier(config)
    images = np.zeros((4, 16, 16, 3), "float32")
    for i, (y, x) in enumerate([(0, 0), (0, 10), (10, 0), (6, 6)]):  # a bright square each
        images[i, y:y + 6, x:x + 6] = 1.0
    report = training.input_dependence(model, config, images)
    assert report["noise_selection_overlap"] < 1.0
    assert report["offset_std_across_images"] > 0.0


def test_offset_quality_measures_the_selected_and_all_slots():
    from keypoint_gnn import training

    # Slot 0 of each cell at (0.95, 0.45): within 0.1 of the bottom border; slot 1 at the centre.
    model, config = _constant_grid_model((0.95, 0.45))
    images = np.random.default_rng(0).uniform(size=(3, 16, 16, 3)).astype("float32")
    quality, offsets = training.offset_quality(model, config, images)
    assert offsets.shape == (3, config.detector.num_keypoints, 2)
    np.testing.assert_allclose(offsets[..., 0], 0.95, atol=1e-5)
    np.testing.assert_allclose(offsets[..., 1], 0.45, atol=1e-5)
    assert quality["border_fraction"] == 1.0  # every selected keypoint: y near a border
    assert quality["border_fraction_all_slots"] == 0.5  # slot 1 sits at the cell centre
    # And the input-dependence measures: the zero kernel ignores the image.
    assert quality["noise_selection_overlap"] == 1.0
    assert quality["offset_std_across_images"] == pytest.approx(0.0, abs=1e-6)
    # Over slots: y half 0.95, half 0.5 (std 0.225); x half 0.45, half 0.5 (std 0.025).
    assert quality["offset_std_across_slots"] == pytest.approx((0.225 + 0.025) / 2, abs=1e-5)


def test_gat_classifier_trains_and_round_trips(tmp_path, rng):
    """graph.kind="gat" (one head, the case Spektral's einsums crash oneDNN with): gradients
    reach every GAT weight, then the shared checks (XLA step, unknown batch, round trips)."""
    model = kg.build_classifier(tiny(graph={"kind": "gat", "attn_heads": 1}))
    gnn = model.get_layer("gnn")
    assert isinstance(gnn, kg.layers.GATStack) and gnn.attn_heads == 1
    assert not any(np.allclose(conv.attn_kernel_self.numpy(), conv.attn_kernel_neighs.numpy())
                   for conv in gnn.convs)  # apart, also when built in a functional model
    images = rng.uniform(size=(4, 16, 16, 3)).astype("float32")
    labels = np.array([0, 1, 2, 1])
    with tf.GradientTape() as tape:
        loss = _loss()(labels, model(images, training=True))
    gradients = tape.gradient(loss, gnn.trainable_variables)
    assert len(gradients) == 1 + 2 * 4  # projection; kernel, two attention kernels, bias per layer
    assert all(np.abs(gradient.numpy()).sum() > 0 for gradient in gradients)
    restored = _check_fit_and_round_trips(model, images, labels, tmp_path)
    assert restored.get_layer("gnn").attn_heads == 1


def test_diffpool_loss_weight_scales_the_model_losses_and_survives_keras_round_trip(tmp_path, rng):
    """The weight reaches the model's DiffPool and is kept in .keras; with the same weights the
    model's auxiliary losses are 0.1 times those of the unweighted model."""
    weighted = kg.build_classifier(tiny(graph={"kind": "diffpool", "diffpool_loss_weight": 0.1}))
    unweighted = kg.build_classifier(tiny(graph={"kind": "diffpool", "diffpool_loss_weight": 1.0}))
    unweighted.set_weights(weighted.get_weights())
    images = rng.uniform(size=(2, 16, 16, 3)).astype("float32")
    unweighted(images)
    reference = np.array([float(loss) for loss in unweighted.losses])
    assert len(reference) == 2 and np.all(reference > 0)  # link prediction, entropy
    weighted(images)
    np.testing.assert_allclose([float(loss) for loss in weighted.losses], 0.1 * reference, rtol=1e-6)

    weighted.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert restored.get_layer("gnn").loss_weight == restored.get_layer("gnn").pool.loss_weight == 0.1
    restored(images)
    np.testing.assert_allclose([float(loss) for loss in restored.losses], 0.1 * reference, rtol=1e-6)
    # The default (0) keeps both losses in the model, at zero.
    default = kg.build_classifier(tiny(graph={"kind": "diffpool"}))
    default(images)
    assert [float(loss) for loss in default.losses] == [0.0, 0.0]
