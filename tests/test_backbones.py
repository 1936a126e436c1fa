"""keypoint_gnn.backbones and the backbone options of the models: the conv backbone as before,
the configurable ResNet, tf_keras.applications networks, the tap, the detector's source, the
head's pooling and fusion, the matched plain networks, and their errors."""
import numpy as np
import pytest

import keypoint_gnn as kg
from keypoint_gnn import backbones, export, registry
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.config import BackboneConfig, ModelConfig
from keypoint_gnn.sections import ConfigError, set_path

# A small ResNet keypoint classifier: 32 px, stages at strides 1, 2, 4, tapped at 2 (16x16 map)
# so that the last stage runs after the graph->CNN grid.
SMALL_RESNET = {
    "image_size": 32, "channels": 3, "num_classes": 3,
    "backbone": {"kind": "resnet", "widths": (4, 8, 8), "depths": (1, 1, 1), "stem_filters": 4,
                 "tap_stride": 2},
    "detector": {"filters": (4,), "num_keypoints": 6},
    "graph": {"units": 8, "layers": 1},
    "head": {"filters": (8,)},
}


def small_resnet(**changes):
    return ModelConfig.from_dict(SMALL_RESNET).updated(changes)


def small_application(kind, **changes):
    """An applications backbone at 32 px, tapped at stride 8 (4x4 map), detector on the
    features."""
    return ModelConfig.from_dict({
        "image_size": 32, "channels": 3, "num_classes": 3,
        "backbone": {"kind": kind, "tap_stride": 8},
        "detector": {"source": "features", "num_keypoints": 4},
        "graph": {"units": 8, "layers": 1},
        "head": {"filters": (8,), "pooling": "average"},
    }).updated(changes)


def _images(rng, config, count=4):
    return rng.uniform(size=(count, config.image_size, config.image_size, config.channels)
                       ).astype("float32")


def _train_one_step(model, images, labels):
    """One `fit` step; the loss is finite and every trainable weight changes, except in
    residual branches that stochastic depth dropped for the whole batch (EfficientNet's
    "<block>_drop" layers drop a branch per example at random)."""
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [weight.numpy().copy() for weight in model.trainable_weights]
    history = model.fit(images, labels, batch_size=len(images), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    unchanged = [weight.name for weight, old in zip(model.trainable_weights, before)
                 if np.array_equal(weight.numpy(), old)]
    branches = tuple(layer.name[:-len("drop")] for layer in _all_layers(model)
                     if layer.name.endswith("_drop"))  # "block2b_drop" -> "block2b_"
    assert not [name for name in unchanged if not name.startswith(branches or ("\0",))]


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _check_keras_round_trip(model, images, tmp_path):
    reference = model.predict(images, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(restored.predict(images, verbose=0), reference, rtol=1e-5,
                               atol=1e-6)
    return restored


# --- conv: the model of before --------------------------------------------------------------

def test_default_conv_model_is_unchanged():
    """Parameter counts and layer names measured before the backbone section existed."""
    config = ModelConfig()
    assert config.backbone == BackboneConfig(kind="conv", filters=(32, 64))
    classifier = kg.build_classifier(config)
    assert classifier.count_params() == 191_671
    assert [layer.name for layer in classifier.layers] == [
        "images", "detector_backbone", "feature_extractor", "detector", "cnn_to_graph", "gnn",
        "graph_to_cnn", "head_conv0", "head_conv1", "head_flatten", "head_dropout", "logits"]
    extractor = classifier.get_layer("feature_extractor")
    assert [layer.name for layer in extractor.layers] == [
        f"{kind}{block}{suffix}" for block in range(2) for suffix in "ab"
        for kind in ("conv", "bn", "relu")]
    assert extractor.count_params() == 66_144
    assert kg.build_autoencoder(config).count_params() == 201_892  # the spreading decoder
    assert kg.build_plain_cnn(config).count_params() == 153_830
    assert kg.build_plain_cnn(config, 191_671).count_params() == 192_498
    assert kg.models.model_name(config) == "keypoint_maxpool_nms_gcn"


# --- ResNet ---------------------------------------------------------------------------------

def test_resnet_parameter_count_hand_worked():
    """1 channel, stem 2, widths (4, 8), one block each:
    stem 9*1*2 + 4*2 = 26; block 2->4 (projection): 9*2*4 + 9*4*4 + 8*4 + (2*4 + 4*4) = 272;
    block 4->8 stride 2: 9*4*8 + 9*8*8 + 8*8 + (4*8 + 4*8) = 992."""
    section = BackboneConfig(kind="resnet", widths=(4, 8), depths=(1, 1), stem_filters=2)
    model = backbones.resnet_feature_extractor(section, (8, 8, 1))
    assert backbones.resnet_param_count(1, 2, (4, 8), (1, 1)) == 26 + 272 + 992
    assert model.count_params() == 26 + 272 + 992
    assert model.output_shape == (None, 4, 4, 8)


@pytest.mark.parametrize("stem_stride, widths, depths", [
    (1, (8, 16, 32), (1, 2, 1)), (2, (4, 8), (3, 1)), (4, (8, 8, 16, 16), (1, 1, 1, 1))])
def test_resnet_stage_strides_and_counts(stem_stride, widths, depths):
    section = BackboneConfig(kind="resnet", widths=widths, depths=depths, stem_filters=8,
                             stem_stride=stem_stride)
    assert section.stage_strides == tuple(stem_stride * 2 ** i for i in range(len(widths)))
    model = backbones.resnet_feature_extractor(section, (32, 32, 3))
    size = 32 // section.stage_strides[-1]
    assert model.output_shape == (None, size, size, widths[-1])
    assert model.count_params() == backbones.resnet_param_count(3, 8, widths, depths)
    blocks = [layer.name for layer in model.layers if layer.name.endswith("_out")]
    assert len(blocks) == sum(depths)


def test_resnet_trains_and_round_trips(tmp_path, rng):
    config = small_resnet()
    assert (config.feature_stride, config.feature_size) == (2, 16)
    model = kg.build_classifier(config)
    assert model.name == "keypoint_resnet_maxpool_nms_gcn_classifier"
    assert model.get_layer("feature_extractor").output_shape == (None, 16, 16, 8)
    assert model.get_layer("graph_to_cnn").height == 16
    # The stage after the tap runs on the grid (graph units 8 -> width 8, stride 2).
    assert model.get_layer("late_stages").output_shape == (None, 8, 8, 8)
    images = _images(rng, config)
    _train_one_step(model, images, np.array([0, 1, 2, 1]))
    _check_keras_round_trip(model, images, tmp_path)


@pytest.mark.parametrize("tap_stride, grid", [(None, 8), (2, 16), (1, 32)])
def test_tap_stride_sets_the_graph_grid(tap_stride, grid):
    config = small_resnet(backbone={"tap_stride": tap_stride},
                          detector={"source": "features", "num_keypoints": 4})
    assert config.feature_stride == 32 // grid and config.feature_size == grid
    model = kg.build_classifier(config)
    assert model.get_layer("graph_to_cnn").height == grid
    assert model.get_layer("detector").output[2].shape[1:] == (grid, grid, 1)
    late = [layer.name for layer in model.layers if layer.name == "late_stages"]
    assert late == ([] if tap_stride is None else ["late_stages"])
    positions = kg.keypoint_model(model)(np.zeros((1, 32, 32, 3), "float32"))[0].numpy()
    assert positions.max() < grid


def test_detector_on_features_has_no_detector_cnn_and_trains_the_backbone(rng):
    config = small_resnet(detector={"source": "features"})
    model = kg.build_classifier(config)
    names = [layer.name for layer in model.layers]
    assert "detector_backbone" not in names
    images = _images(rng, config)
    extractor = model.get_layer("feature_extractor")
    with tf.GradientTape() as tape:
        score_map = kg.keypoint_model(model)(images, training=True)[2]
        loss = tf.reduce_sum(score_map)
    gradients = tape.gradient(loss, extractor.trainable_weights)
    assert all(gradient is not None for gradient in gradients)
    # Cheaper than the detector CNN beside it.
    assert model.count_params() < kg.build_classifier(small_resnet()).count_params()


def test_detector_on_features_pretrainer_transfers_to_the_classifier(tmp_path):
    config = small_resnet(detector={"kind": "grid", "source": "features", "num_keypoints": 8})
    pretrainer = kg.build_keypoint_pretrainer(config)
    kg.models.detector_model(pretrainer).save_weights(tmp_path / "detector.weights.h5")
    classifier = kg.build_classifier(config)
    kg.models.detector_model(classifier).load_weights(tmp_path / "detector.weights.h5")
    for a, b in zip(kg.models.detector_model(pretrainer).weights,
                    kg.models.detector_model(classifier).weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_head_average_pooling_and_concat_fusion(tmp_path, rng):
    config = small_resnet(head={"pooling": "average", "fuse": "concat"})
    model = kg.build_classifier(config)
    fuse = model.get_layer("head_fuse")
    # graph units 8 + tapped features 8 channels
    assert fuse.output_shape == (None, 16, 16, 16)
    assert isinstance(model.get_layer("head_pool"), keras.layers.GlobalAveragePooling2D)
    assert "head_flatten" not in [layer.name for layer in model.layers]
    images = _images(rng, config)
    _train_one_step(model, images, np.array([0, 1, 2, 1]))
    _check_keras_round_trip(model, images, tmp_path)


def test_empty_head_filters_pool_the_late_stages_directly():
    """head.filters=[] (the real-data presets): no head convolution, the ResNet's last stage
    is pooled into the logits."""
    config = small_resnet(head={"filters": [], "pooling": "average"})
    model = kg.build_classifier(config)
    names = [layer.name for layer in model.layers]
    assert not [name for name in names if name.startswith("head_conv")]
    assert model.get_layer("head_pool").output_shape == (None, config.backbone.widths[-1])


def test_conv_backbone_takes_the_head_options_too():
    config = ModelConfig(head={"pooling": "average", "fuse": "concat"})
    model = kg.build_classifier(config)
    assert model.get_layer("head_fuse").output_shape == (None, 12, 12, 64 + 64)
    assert model.get_layer("head_pool").output_shape == (None, 64)


@pytest.mark.parametrize("kind", [
    "resnet", "mobilenetv3small",
    pytest.param("resnet50", marks=pytest.mark.slow),
    pytest.param("efficientnetb0", marks=pytest.mark.slow)])
def test_backbone_exports_to_saved_model_and_tflite(kind, tmp_path, rng):
    """SavedModel probabilities and keypoints, TFLite logits and keypoints equal the Keras
    model's, for the ResNet and the tf_keras.applications backbones."""
    config = (small_resnet(head={"pooling": "average"}) if kind == "resnet"
              else small_application(kind))
    model = kg.build_classifier(config)
    pixels = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    images = pixels.astype(np.float32) / 255.0
    logits = model(images, training=False).numpy()
    positions = kg.keypoint_model(model)(images, training=False)[0].numpy()
    keypoints = positions * config.feature_stride + (config.feature_stride - 1) / 2

    version = export.export_saved_model(model, config, tmp_path / "saved", name=kind)
    serving = tf.saved_model.load(str(version)).signatures["serving_default"]
    outputs = serving(images=tf.constant(pixels))
    np.testing.assert_allclose(outputs["probabilities"].numpy(),
                               tf.nn.softmax(logits).numpy(), atol=1e-5)
    np.testing.assert_allclose(outputs["keypoints"].numpy(), keypoints, atol=1e-4)

    path = export.export_tflite(model, config, tmp_path / f"{kind}.tflite")
    lite = export.run_tflite(path, images)
    np.testing.assert_allclose(lite["logits"], logits, atol=1e-4)
    np.testing.assert_allclose(lite["keypoints"], keypoints, atol=1e-4)


def test_plain_resnet_matches_the_keypoint_model_within_2_percent():
    config = small_resnet()
    target = kg.build_classifier(config).count_params()
    plain = kg.build_plain_cnn(config, target_params=target)
    assert abs(plain.count_params() - target) <= 0.02 * target
    assert plain.name == "plain_resnet_classifier"
    names = [layer.name for layer in plain.layers]
    assert names == ["images", "feature_extractor", "head_pool", "head_dropout", "logits"]
    # The whole backbone, every stage: stride 4 at 32 px.
    assert plain.get_layer("feature_extractor").output_shape[1:3] == (8, 8)
    # Unscaled: the configured widths, counted without building.
    unscaled = kg.build_plain_cnn(config)
    section = config.backbone
    assert unscaled.count_params() == (
        backbones.resnet_param_count(3, section.stem_filters, section.widths, section.depths)
        + (section.widths[-1] + 1) * config.num_classes)


@pytest.mark.parametrize("widths, depths, low, high", [
    ((8, 16, 32, 64), (1, 1, 1, 1), 0.15e6, 0.3e6),
    ((32, 64, 128, 256), (1, 1, 1, 1), 1.2e6, 1.5e6),
    ((48, 96, 192, 384), (2, 2, 2, 2), 6.0e6, 6.8e6),
    ((72, 144, 288, 576), (3, 4, 6, 3), 24e6, 28e6),
])
def test_resnet_keypoint_models_span_the_sizes(widths, depths, low, high):
    """64 px, 10 classes, 16 keypoints on the stride-8 map, detector on the features."""
    config = ModelConfig(image_size=64, num_classes=10,
                         backbone={"kind": "resnet", "widths": widths, "depths": depths},
                         detector={"source": "features", "num_keypoints": 16})
    assert low <= kg.build_classifier(config).count_params() <= high


# --- tf_keras.applications --------------------------------------------------------------------

APPLICATIONS = ["resnet50", "efficientnetb0", "mobilenetv3small"]


def test_imagenet_preprocessing_matches_keras_applications(rng):
    pixels = rng.integers(0, 256, (2, 4, 4, 3)).astype("float32")
    caffe = backbones.ImageNetPreprocessing("caffe")(pixels / 255.0).numpy()
    reference = keras.applications.resnet50.preprocess_input(pixels.copy())
    np.testing.assert_allclose(caffe, reference, atol=1e-3)
    scaled = backbones.ImageNetPreprocessing("0-255")(pixels / 255.0).numpy()
    np.testing.assert_allclose(scaled, pixels, atol=1e-3)
    layer = backbones.ImageNetPreprocessing("caffe")
    assert type(layer).from_config(layer.get_config()).scaling == "caffe"


@pytest.mark.parametrize("kind", APPLICATIONS)
def test_application_taps(kind):
    """The layer `registry` names for each stride has that stride, and the network cut there
    ends with it."""
    full = backbones.application_network(kind, (64, 64, 3))
    assert full.output_shape[1:3] == (2, 2)
    for stride in (4, 8, 16):
        section = BackboneConfig(kind=kind, tap_stride=stride)
        layer = full.get_layer(registry.APPLICATION_BACKBONES[kind][2][stride])
        assert layer.output_shape[1:3] == (64 // stride, 64 // stride)
        assert section.feature_stride == stride
    cut = backbones.application_network(kind, (64, 64, 3), 8)
    assert cut.output_shape[1:3] == (8, 8) and cut.count_params() < full.count_params()


@pytest.mark.parametrize("kind", [
    pytest.param("resnet50", marks=pytest.mark.slow),
    pytest.param("efficientnetb0", marks=pytest.mark.slow),
    "mobilenetv3small"])
def test_application_trains_and_round_trips(kind, tmp_path, rng):
    config = small_application(kind)
    model = kg.build_classifier(config)
    assert model.name == f"keypoint_{kind}_maxpool_nms_gcn_classifier"
    assert model.get_layer("feature_extractor").output_shape[1:3] == (4, 4)
    images = _images(rng, config, 2)
    _train_one_step(model, images, np.array([0, 2]))
    _check_keras_round_trip(model, images, tmp_path)


@pytest.mark.parametrize("kind, network_params", [
    ("resnet50", 23_587_712), ("efficientnetb0", 4_049_571), ("mobilenetv3small", 939_120)])
def test_application_at_full_depth_and_its_plain_network(kind, network_params):
    """64 px, 10 classes, the network's output (stride 32, a 2x2 map): the feature extractor
    is the whole Keras network; the plain one is that network, pooling and logits."""
    config = ModelConfig(image_size=64, num_classes=10, backbone={"kind": kind},
                         detector={"source": "features", "num_keypoints": 4, "pool_size": 1})
    model = kg.build_classifier(config)
    extractor = model.get_layer("feature_extractor")
    assert extractor.count_params() == network_params
    assert config.feature_size == 2
    plain = kg.build_plain_cnn(config, model.count_params())
    features = plain.get_layer("head_pool").output_shape[-1]
    assert plain.count_params() == network_params + (features + 1) * 10
    # Fixed widths: smaller by the detector, GNN and head (12% for MobileNetV3Small, whose
    # 576 pooled features are wider than the gap's hidden layer could be; under 5% else).
    bound = 0.15 if kind == "mobilenetv3small" else 0.05
    assert 0 < model.count_params() - plain.count_params() < bound * model.count_params()


def test_plain_application_fills_a_wide_gap_with_a_hidden_layer():
    config = small_application("mobilenetv3small")
    base = kg.build_plain_cnn(config)
    features = base.get_layer("head_pool").output_shape[-1]
    target = base.count_params() + 3 * features * features
    plain = kg.build_plain_cnn(config, target)
    assert plain.get_layer("head_hidden").units >= features
    assert abs(plain.count_params() - target) <= features + 1 + config.num_classes


# --- weights files --------------------------------------------------------------------------

def test_resnet_weights_file_loads_by_name(tmp_path):
    config = small_resnet()
    source = kg.build_classifier(config)
    path = str(tmp_path / "backbone.h5")
    # A whole feature extractor's weights: the tapped part and the late stages load from it.
    full = backbones.resnet_feature_extractor(config.backbone, (32, 32, 3))
    full.save_weights(path)
    model = kg.build_classifier(config.updated({"backbone": {"weights": path}}))
    for name in ("stem_conv", "stage1_block0_conv1"):
        np.testing.assert_array_equal(
            model.get_layer("feature_extractor").get_layer(name).kernel.numpy(),
            full.get_layer(name).kernel.numpy())
        assert not np.array_equal(
            source.get_layer("feature_extractor").get_layer(name).kernel.numpy(),
            full.get_layer(name).kernel.numpy())
    # stage 2 after the tap: same shapes except the first conv's and shortcut's inputs.
    np.testing.assert_array_equal(
        model.get_layer("late_stages").get_layer("stage2_block0_conv2").kernel.numpy(),
        full.get_layer("stage2_block0_conv2").kernel.numpy())


def test_a_keras_3_style_weights_file_is_refused(tmp_path):
    """tf_keras loads '.weights.h5' files by structure whatever by_name says: refused."""
    config = small_resnet()
    path = tmp_path / "backbone.weights.h5"
    backbones.resnet_feature_extractor(config.backbone, (32, 32, 3)).save_weights(str(path))
    with pytest.raises(ValueError, match="loads by structure, not by layer name"):
        config.updated({"backbone": {"weights": str(path)}})


def test_application_weights_file_loads_by_name(tmp_path):
    network = backbones.application_network("mobilenetv3small", (32, 32, 3))
    path = str(tmp_path / "notop.h5")
    network.save_weights(path)
    config = small_application("mobilenetv3small", backbone={"weights": path})
    model = kg.build_classifier(config)
    loaded = model.get_layer("feature_extractor").layers[-1]
    np.testing.assert_array_equal(loaded.get_layer("Conv").kernel.numpy(),
                                  network.get_layer("Conv").kernel.numpy())


def test_missing_weights_file_is_a_one_line_error(tmp_path):
    path = str(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match=r"^backbone.weights='.*missing.h5': no such file$"):
        kg.build_classifier(small_resnet(backbone={"weights": path}))


# --- config ---------------------------------------------------------------------------------

def test_backbone_round_trips_and_is_set_from_the_command_line():
    values = set_path(ModelConfig, {}, "backbone.kind=resnet")
    values = set_path(ModelConfig, values, "backbone.tap_stride=4")
    values = set_path(ModelConfig, values, "backbone.widths=16,32,64,128")
    values = set_path(ModelConfig, values, "backbone.weights=none")
    values = set_path(ModelConfig, values, "head.pooling=average")
    config = ModelConfig.from_dict(values)
    assert config.backbone.kind == "resnet" and config.backbone.widths == (16, 32, 64, 128)
    assert config.feature_stride == 4 and config.head.pooling == "average"
    assert ModelConfig.from_json(config.to_json()) == config
    assert config.to_dict()["backbone"]["tap_stride"] == 4


def test_model_name_carries_the_backbone_kind():
    assert kg.models.model_name(small_resnet()) == "keypoint_resnet_maxpool_nms_gcn"
    assert kg.models.model_name(small_application("resnet50")) == (
        "keypoint_resnet50_maxpool_nms_gcn")


def test_autoencoder_decodes_from_a_resnet_tap():
    config = small_resnet()
    model = kg.build_autoencoder(config)
    assert model.output_shape == (None, config.image_size, config.image_size, config.channels)


@pytest.mark.parametrize("values, message", [
    ({"backbone": {"kind": "vgg"}},
     "backbone.kind='vgg' is not one of 'conv', 'resnet', 'resnet50', 'efficientnetb0', "
     "'mobilenetv3small'"),
    ({"backbone": {"kind": "resnet", "widths": [8, 16], "depths": [1, 1, 1]}},
     "backbone.widths=(8, 16) and depths=(1, 1, 1) must have the same length"),
    ({"backbone": {"kind": "resnet", "depths": [1, 0, 1, 1]}},
     "backbone.depths=(1, 0, 1, 1) must be a non-empty list of positive integers"),
    ({"backbone": {"kind": "resnet", "widths": []}},
     "backbone.widths=() must be a non-empty list of positive integers"),
    ({"backbone": {"stem_stride": 3}}, "backbone.stem_stride=3 is not one of 1, 2, 4"),
    ({"backbone": {"stem_filters": 0}}, "backbone.stem_filters=0 must be a positive integer"),
    ({"backbone": {"kind": "resnet", "tap_stride": 16}},
     "backbone.tap_stride=16 is not a stage stride of backbone kind 'resnet'; valid: null "
     "(the deepest stage) or 1, 2, 4, 8"),
    ({"backbone": {"tap_stride": 2}},
     "backbone.tap_stride=2 is not a stage stride of backbone kind 'conv'; valid: null "
     "(the deepest stage) or 4"),
    ({"backbone": {"kind": "resnet50", "tap_stride": 2}},
     "backbone.tap_stride=2 is not a stage stride of backbone kind 'resnet50'; valid: null "
     "(the deepest stage) or 4, 8, 16, 32"),
    ({"backbone": {"weights": "imagenet"}},
     "backbone.weights='imagenet' must be null or the path of a Keras .h5 weights file"),
    ({"backbone": {"tap_stride": "8"}}, "backbone.tap_stride='8' must be an integer or null"),
    ({"detector": {"source": "pixels"}},
     "detector.source='pixels' is not one of 'image', 'features'"),
    ({"head": {"pooling": "max"}}, "head.pooling='max' is not one of 'flatten', 'average'"),
    ({"head": {"fuse": "add"}}, "head.fuse='add' is not one of 'none', 'concat'"),
    ({"image_size": 64, "channels": 1, "backbone": {"kind": "mobilenetv3small"},
      "detector": {"source": "features", "num_keypoints": 4, "pool_size": 1}},
     "backbone.kind='mobilenetv3small' needs channels=3 (RGB images), not channels=1"),
    ({"image_size": 16, "backbone": {"kind": "efficientnetb0", "tap_stride": 8},
      "detector": {"source": "features", "num_keypoints": 4, "pool_size": 1}},
     "backbone.kind='efficientnetb0' needs image_size >= 32, not image_size=16"),
    ({"image_size": 48, "backbone": {"kind": "resnet50"},
      "detector": {"source": "features", "num_keypoints": 1, "pool_size": 1}},
     "image_size=48 is not divisible by the feature stride 32 (backbone 'resnet50', the "
     "deepest stage)"),
    ({"backbone": {"kind": "resnet"}},
     "detector.filters [16, 32] must have 3 blocks, one per halving of the feature stride 8 "
     "(backbone 'resnet', the deepest stage), so both CNNs share one resolution; or set "
     "detector.source='features'"),
    ({"backbone": {"kind": "resnet", "tap_stride": 1}, "image_size": 8,
      "detector": {"num_keypoints": 4}},
     "detector.source='image' needs a tapped feature map smaller than the image, not stride 1 "
     "(backbone 'resnet', backbone.tap_stride=1)"),
    ({"backbone_filters": [8], "backbone": {"filters": [16]}},
     "backbone_filters=[8] (the old name of backbone.filters) conflicts with "
     "backbone.filters=[16]: give one"),
])
def test_bad_backbone_values_name_the_value_and_what_is_valid(values, message):
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_dict(values)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_detector_filters_follow_the_tap():
    """Source "image": one stride-2 detector block per halving down to the tap."""
    config = ModelConfig(image_size=64, backbone={"kind": "resnet", "stem_stride": 2},
                         detector={"filters": (8, 8, 8, 8), "num_keypoints": 4})
    assert config.feature_stride == 16
    model = kg.build_classifier(config)
    assert model.get_layer("detector_backbone").output_shape == (None, 4, 4, 8)
