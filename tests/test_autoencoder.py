"""The autoencoder (issue 22): the decoder's shapes, no path from the image to the decoder
that skips the keypoint graph, the matched convolutional autoencoder, every backbone, and
.keras / SavedModel round trips."""
from unittest import mock

import numpy as np
import pytest

import keypoint_gnn as kg
from keypoint_gnn import layers
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.models import decoder_widths, graph_numbers

CONV = kg.ModelConfig(image_size=16, channels=1, num_classes=3, backbone={"filters": (8,)},
                      detector={"filters": (4,), "num_keypoints": 6, "pool_size": 2},
                      graph={"units": 8, "layers": 2}, head={"decoder_width": 16})
RESNET = CONV.updated({"image_size": 32, "channels": 3,
                       "backbone": {"kind": "resnet", "widths": (8, 16, 16), "depths": (1, 1, 1),
                                    "stem_filters": 8, "stem_stride": 1, "tap_stride": 4},
                       "detector": {"source": "features", "num_keypoints": 8},
                       "head": {"decoder_width": 32, "decoder_spread": 3}})


def _images(config, count=4, seed=0):
    rng = np.random.default_rng(seed)
    shape = (count, config.image_size, config.image_size, config.channels)
    return rng.uniform(size=shape).astype("float32")


@pytest.mark.parametrize("config, spread, upsampling", [
    (CONV, [16, 16], [16]),              # stride 2: one upsampling, widths floored at 16
    (RESNET, [32, 32, 32], [16, 16]),    # stride 4: two, 32 -> 16 -> 16
])
def test_decoder_blocks_and_output_shape(config, spread, upsampling):
    assert decoder_widths(config) == (spread, upsampling)
    model = kg.build_autoencoder(config)
    size = config.feature_size
    assert model.get_layer("graph_to_cnn").output_shape[1:3] == (size, size)
    for i, width in enumerate(spread):
        assert model.get_layer(f"decoder_spread{i}_conv").output_shape == (None, size, size, width)
    for i, width in enumerate(upsampling):
        side = size * 2 ** (i + 1)
        assert model.get_layer(f"decoder_block{i}_conv").output_shape == (None, side, side, width)
    assert model.output_shape == (None, config.image_size, config.image_size, config.channels)
    out = model.predict(_images(config, 3), verbose=0)  # unknown batch size
    assert out.shape == (3, config.image_size, config.image_size, config.channels)
    assert out.min() >= 0 and out.max() <= 1


def test_decoder_width_and_spread_are_validated():
    with pytest.raises(ValueError, match="decoder_spread=-1 must be an integer >= 0"):
        CONV.updated({"head": {"decoder_spread": -1}})
    with pytest.raises(ValueError, match="decoder_width"):
        CONV.updated({"head": {"decoder_width": 0}})


def _zero_nodes_call(original):
    def call(self, inputs):
        nodes, positions = inputs
        return original(self, [tf.zeros_like(nodes), positions])
    return call


@pytest.mark.parametrize("config", [CONV, RESNET, CONV.updated({"graph": {"kind": "none"}}),
                                    CONV.updated({"head": {"reconstruction_loss": "conf_mse"}})],
                         ids=["conv", "resnet", "cnn_only", "conf_mse"])
def test_no_path_from_the_image_to_the_decoder_skips_the_keypoint_graph(config):
    """With the nodes the graph hands to the grid zeroed, the reconstruction is the same for
    every image: nothing else of the image reaches the decoder."""
    first, second = _images(config, 2, seed=1), _images(config, 2, seed=2)
    model = kg.build_autoencoder(config)
    assert not np.allclose(model(first, training=False), model(second, training=False))

    original = layers.GraphToCNN.call
    with mock.patch.object(layers.GraphToCNN, "call", _zero_nodes_call(original)):
        np.testing.assert_allclose(model(first, training=False), model(second, training=False),
                                   atol=1e-6)


def test_fusing_the_backbone_features_is_refused():
    with pytest.raises(ValueError, match="head.fuse='concat': the autoencoder decodes the "
                                         "keypoint graph only"):
        kg.build_autoencoder(RESNET.updated({"head": {"fuse": "concat"}}))


def test_graph_numbers_hand_worked():
    # 6 keypoints x 8 channels + 6 (y, x) positions.
    assert graph_numbers(kg.build_autoencoder(CONV)) == 6 * 8 + 12
    # CNN only: the nodes are the backbone features (8) plus the two position features.
    assert graph_numbers(kg.build_autoencoder(CONV.updated({"graph": {"kind": "none"}}))) == (
        6 * 10 + 12)


@pytest.mark.parametrize("numbers, channels", [(60, 1), (64, 1), (65, 2), (200, 4)])
def test_plain_autoencoder_bottleneck_holds_at_least_the_graph_numbers(numbers, channels):
    plain = kg.build_plain_autoencoder(CONV, numbers)  # 8x8 bottleneck
    code = plain.get_layer("bottleneck").output_shape
    assert code == (None, 8, 8, channels)
    assert 64 * channels >= numbers > 64 * (channels - 1)
    assert plain.output_shape == (None, 16, 16, 1)
    names = {layer.name for layer in plain.layers}
    assert not names & {"detector", "cnn_to_graph", "gnn", "graph_to_cnn"}
    with pytest.raises(ValueError, match="bottleneck_numbers=0"):
        kg.build_plain_autoencoder(CONV, 0)


@pytest.mark.parametrize("numbers, channels", [(64, 1), (65, 1), (127, 1), (128, 2), (200, 3)])
def test_plain_autoencoder_at_most_never_holds_more_than_the_graph(numbers, channels):
    plain = kg.build_plain_autoencoder(CONV, numbers, "at-most")  # 8x8 bottleneck
    assert plain.get_layer("bottleneck").output_shape == (None, 8, 8, channels)


def test_plain_autoencoder_refuses_at_most_below_one_channel_and_unknown_rules():
    with pytest.raises(ValueError, match="8x8 map holds more than the graph's 63 numbers"):
        kg.build_plain_autoencoder(CONV, 63, "at-most")
    with pytest.raises(ValueError, match="exactly"):
        kg.build_plain_autoencoder(CONV, 64, "exactly")


def test_resnet_autoencoder_trains_and_round_trips(tmp_path):
    config = RESNET
    model = kg.build_autoencoder(config)
    images = _images(config)
    model.compile(optimizer="adam", loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(images, training=True) - images))
    gradients = tape.gradient(loss, model.trainable_weights)
    missing = [w.name for w, g in zip(model.trainable_weights, gradients) if g is None]
    # The detector's scores reach the loss through the nodes they scale.
    assert not missing, missing
    history = model.fit(images, images, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    reference = model.predict(images, verbose=0)
    model.save(tmp_path / "ae.keras")
    restored = keras.models.load_model(tmp_path / "ae.keras")
    np.testing.assert_allclose(restored.predict(images, verbose=0), reference, atol=1e-6)
    model.save(tmp_path / "savedmodel", save_format="tf")
    serving = tf.saved_model.load(str(tmp_path / "savedmodel")).signatures["serving_default"]
    (served,) = serving(images=tf.constant(images)).values()
    np.testing.assert_allclose(served.numpy(), reference, atol=1e-6)
