"""XLA modes: which layers the "graph" mode compiles, that it computes the same thing, and that
nothing compiled leaks into saved models."""
import json

import numpy as np
import pytest

from keypoint_gnn import models, xla
from keypoint_gnn._backend import keras, tf
from trainers import classify

GRAPH_LAYERS = ["detector", "cnn_to_graph", "gnn", "graph_to_cnn"]


def test_auto_means_step_on_a_gpu_and_graph_on_a_cpu():
    assert xla.resolve_mode("auto", gpu_visible=True) == "step"
    assert xla.resolve_mode("auto", gpu_visible=False) == "graph"
    for mode in ("off", "graph", "step"):
        assert xla.resolve_mode(mode, gpu_visible=True) == mode
    assert xla.compile_kwargs("step") == {"jit_compile": True}
    assert xla.compile_kwargs("graph") == xla.compile_kwargs("off") == {"jit_compile": False}


def test_bad_mode_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"xla='fast' is not one of \('off', 'auto', 'graph', 'step'\)"):
        xla.resolve_mode("fast")
    with pytest.raises(ValueError, match="xla='on'"):
        with xla.jit_graph_section(keras.Sequential(), "on"):
            pass


def _loss_and_gradients(model, images, labels):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=False))
            if model.losses:  # DiffPool's auxiliary losses, the DSNT spread penalty
                loss += tf.add_n(model.losses)
        return loss, tape.gradient(loss, model.trainable_variables)

    return step


@pytest.mark.parametrize("detector, gnn, extra", [
    ("maxpool_nms", "gcn", {}),
    ("grid", "diffpool", {}),
    ("perturbed_topk", "gcn", {}),
    ("grid", "gcn", dict(offset_mode="dsnt", dsnt_resolution=4, dsnt_spread_weight=0.1)),
])
def test_graph_mode_compiles_the_graph_layers_and_changes_no_result(detector, gnn, extra):
    keras.utils.set_random_seed(0)
    model = models.build_classifier(models.ModelConfig(image_size=32, detector=detector, gnn=gnn,
                                                       num_keypoints=8, graph_units=16,
                                                       graph_layers=2, **extra))
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((4, 32, 32, 3), dtype=np.float32))
    labels = tf.constant([0, 1, 2, 3])
    step = _loss_and_gradients(model, images, labels)
    loss, gradients = step()
    with xla.jit_graph_section(model) as layers:
        expected = GRAPH_LAYERS if gnn != "diffpool" else [n for n in GRAPH_LAYERS if n != "gnn"]
        assert [layer.name for layer in layers] == expected
        assert all(isinstance(vars(layer)[xla.jit_method(layer)],
                              tf.types.experimental.GenericFunction) for layer in layers)
        xla_loss, xla_gradients = tf.function(step)()
    np.testing.assert_allclose(xla_loss, loss, rtol=1e-5)
    for expected, got in zip(gradients, xla_gradients):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert all(xla.jit_method(layer) not in vars(layer) for layer in layers)
    # The grid regressor compiles `detect` and adds its penalty outside, in `call`.
    assert xla.jit_method(model.get_layer("detector")) == ("detect" if detector == "grid" else "call")


def test_wrappers_are_removed_when_the_block_fails():
    model = models.build_classifier(models.ModelConfig(image_size=32, num_keypoints=8))
    with pytest.raises(RuntimeError, match="boom"):
        with xla.jit_graph_section(model) as layers:
            raise RuntimeError("boom")
    assert len(layers) == 4 and all("call" not in vars(layer) for layer in layers)


def test_off_and_step_modes_leave_the_model_alone():
    model = models.build_classifier(models.ModelConfig(image_size=32, num_keypoints=8))
    for mode in ("off", "step"):
        with xla.jit_graph_section(model, mode) as layers:
            assert layers == []


def test_plain_cnn_has_no_graph_section():
    plain = models.build_plain_cnn(models.ModelConfig(image_size=32, num_keypoints=8))
    assert xla.graph_section_layers(plain) == []


def test_classify_with_graph_xla_trains_and_exports_without_xla(tmp_path):
    flags = ["--image-size", "32", "--max-examples", "48", "--batch-size", "16", "--keypoints", "8",
             "--graph-units", "16", "--graph-layers", "2", "--verbose", "0", "--epochs", "1",
             "--xla", "--out", str(tmp_path / "run"), "--export-dir", str(tmp_path / "sm")]
    result = classify.main(flags)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["xla"] == "auto"
    assert metrics["xla_mode"] == xla.resolve_mode("auto")
    assert np.isfinite(result["test_loss"])
    saved = (tmp_path / "sm" / "keypoint_maxpool_nms_gcn" / "1" / "saved_model.pb").read_bytes()
    assert b"_XlaMustCompile" not in saved


@pytest.mark.parametrize("gnn, extra", [
    ("gcn", {}),
    ("diffpool", {}),
    ("gcn", dict(detector="grid", offset_mode="dsnt", dsnt_spread_weight=0.1)),
])
def test_graph_mode_fit_step_keeps_the_auxiliary_losses(gnn, extra):
    keras.utils.set_random_seed(0)
    config = models.ModelConfig(image_size=32, gnn=gnn, num_keypoints=8, graph_units=16,
                                graph_layers=2, diffpool_clusters=4, **extra)
    model = models.build_classifier(config)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    images = rng.random((4, 32, 32, 3), dtype=np.float32)
    labels = np.array([0, 1, 2, 3])
    with xla.jit_graph_section(model):
        loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    # DiffPool's link and entropy losses; the DSNT spread penalty.
    assert (len(model.losses) > 0) == (gnn == "diffpool" or bool(extra))
