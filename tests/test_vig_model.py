"""graph.kind="vig" (Vision GNN blocks, beyond the paper) in whole classifiers: every
detector builds, trains a step and gives identical outputs after .keras and SavedModel round
trips; XLA training and TFLite conversion."""
import numpy as np
import pytest

import keypoint_gnn as kg
from keypoint_gnn._backend import keras, tf

VIG = kg.ModelConfig(
    image_size=16, channels=3, num_classes=3, backbone={"filters": (8,)},
    detector={"filters": (4,), "num_keypoints": 6, "pool_size": 2, "cell_size": 2,
              "points_per_cell": 2},
    graph={"kind": "vig", "units": 8, "layers": 1, "knn": 2, "knn_dilation": 2,
           "drop_path": 0.1, "position_weight": 1.0},
    head={"filters": (8,)},
)
# 10-25 s each on a loaded 2-core CPU: one detector in the default suite.
DETECTORS = ["maxpool_nms", pytest.param("attention", marks=pytest.mark.slow),
             pytest.param("grid", marks=pytest.mark.slow),
             pytest.param("perturbed_topk", marks=pytest.mark.slow)]


def _model(detector, **graph):
    config = VIG.updated({"detector": {"kind": detector}, "graph": graph})
    return kg.build_classifier(config), config


def _data(rng):
    return rng.uniform(size=(4, 16, 16, 3)).astype("float32"), np.array([0, 1, 2, 1])


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("detector", DETECTORS)
def test_vig_classifier_trains_and_round_trips(tmp_path, rng, detector):
    model, config = _model(detector)
    assert model.name == f"keypoint_{detector}_vig_classifier"
    images, labels = _data(rng)
    # The GNN reads the keypoints' positions, feature-map pixels / 8, in [0, 1).
    gnn = model.get_layer("gnn")
    assert isinstance(gnn, kg.layers.ViGStack) and len(gnn.input) == 3
    positions = keras.Model(model.input, gnn.input[2])(images).numpy()
    detector_positions = kg.keypoint_model(model)(images)[0].numpy()
    np.testing.assert_allclose(positions, detector_positions / config.feature_size, rtol=1e-6)
    assert positions.min() >= 0 and positions.max() < 1

    model.compile(optimizer="adam", loss=_loss())
    assert np.isfinite(model.train_on_batch(images, labels))
    reference = model.predict(images, batch_size=3, verbose=0)  # batches of 3 and 1
    assert reference.shape == (4, 3)

    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(restored.predict(images, verbose=0), reference, rtol=1e-5, atol=1e-6)
    assert restored.get_layer("gnn").get_config() == gnn.get_config()

    model.save(tmp_path / "savedmodel", save_format="tf")
    serving = tf.saved_model.load(str(tmp_path / "savedmodel")).signatures["serving_default"]
    (served,) = serving(images=tf.constant(images)).values()
    np.testing.assert_allclose(served.numpy(), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_vig_classifier_trains_under_xla(rng):
    model, _ = _model("grid", vig_conv="edge", layers=2)
    images, labels = _data(rng)
    model.compile(optimizer="adam", loss=_loss(), jit_compile=True)
    history = model.fit(images, labels, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("detector, conv", [
    ("maxpool_nms", "max_relative"), pytest.param("attention", "edge", marks=pytest.mark.slow)])
def test_vig_classifier_converts_to_tflite(rng, detector, conv):
    from ai_edge_litert.interpreter import Interpreter

    model, _ = _model(detector, vig_conv=conv)
    images, _ = _data(rng)
    flat_buffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interpreter = Interpreter(model_content=flat_buffer)
    input_details = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(input_details["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_details["index"], images)
    interpreter.invoke()
    logits = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(logits, model(images, training=False).numpy(), atol=1e-4)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert {"TOPK_V2", "GATHER", "GELU"} <= ops  # the kNN graph, its neighbours, the blocks


def test_custom_objects_hold_the_vig_layers():
    objects = kg.custom_objects()
    for name in ("ViGStack", "MaxRelativeConv", "EdgeConv", "DropPath"):
        assert objects[name] is getattr(kg.layers, name)
