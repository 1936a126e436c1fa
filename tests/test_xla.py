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
            if model.losses:  # DiffPool's auxiliary losses, the regressor's penalty
                loss += tf.add_n(model.losses)
        return loss, tape.gradient(loss, model.trainable_variables)

    return step


def small_config(detector=None, graph=None):
    """A 32-pixel model with 8 keypoints and a 2-layer, 16-unit graph network; `detector` and
    `graph` update those sections."""
    return models.ModelConfig(image_size=32, detector={"num_keypoints": 8, **(detector or {})},
                              graph={"units": 16, "layers": 2, **(graph or {})})


@pytest.mark.parametrize("detector, gnn, extra", [
    ("maxpool_nms", "gcn", {}),
    ("grid", "diffpool", {}),
    ("perturbed_topk", "gcn", {}),
    ("maxpool_nms", "gat", {}),
    ("attention", "vig", {}),
    # The regressor's uniformity penalty: `detect` is compiled, the loss added outside.
    ("grid", "gcn", dict(standardize_offsets=True, offset_uniformity_weight=1.0)),
])
def test_graph_mode_compiles_the_graph_layers_and_changes_no_result(detector, gnn, extra):
    keras.utils.set_random_seed(0)
    graph = {"kind": gnn, "knn": 4} if gnn == "vig" else {"kind": gnn}
    model = models.build_classifier(small_config({"kind": detector, **extra}, graph))
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
    model = models.build_classifier(small_config())
    with pytest.raises(RuntimeError, match="boom"):
        with xla.jit_graph_section(model) as layers:
            raise RuntimeError("boom")
    assert len(layers) == 4 and all("call" not in vars(layer) for layer in layers)


def test_off_and_step_modes_leave_the_model_alone():
    model = models.build_classifier(small_config())
    for mode in ("off", "step"):
        with xla.jit_graph_section(model, mode) as layers:
            assert layers == []


def test_plain_cnn_has_no_graph_section():
    plain = models.build_plain_cnn(small_config())
    assert xla.graph_section_layers(plain) == []


def test_classify_with_graph_xla_trains_and_exports_without_xla(tmp_path):
    flags = ["--image-size", "32", "--set", "data.max_examples=48", "--batch-size", "16", "--keypoints", "8",
             "--set", "graph.units=16", "--set", "graph.layers=2", "--verbose", "0", "--epochs", "1",
             "--xla", "--out", str(tmp_path / "run"), "--export-dir", str(tmp_path / "sm")]
    result = classify.main(flags)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["xla"] == "auto"
    assert metrics["xla_mode"] == xla.resolve_mode("auto")
    assert np.isfinite(result["test_loss"])
    saved = (tmp_path / "sm" / "keypoint_maxpool_nms_gcn_classify_builtin_max48" / "1"
             / "saved_model.pb").read_bytes()
    assert b"_XlaMustCompile" not in saved


@pytest.mark.parametrize("gnn, detector", [
    ("gcn", {}),
    ("diffpool", {}),
    ("gcn", dict(kind="grid", offset_uniformity_weight=1.0)),
    ("vig", {}),  # drop path draws random numbers inside the compiled call
])
def test_graph_mode_fit_step_keeps_the_auxiliary_losses(gnn, detector):
    keras.utils.set_random_seed(0)
    graph = {"knn": 4, "drop_path": 0.2} if gnn == "vig" else {"diffpool_clusters": 4}
    config = small_config(detector, {"kind": gnn, **graph})
    model = models.build_classifier(config)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    images = rng.random((4, 32, 32, 3), dtype=np.float32)
    labels = np.array([0, 1, 2, 3])
    with xla.jit_graph_section(model):
        loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    # DiffPool's link and entropy losses; the regressor's uniformity penalty.
    assert (len(model.losses) > 0) == (gnn == "diffpool" or bool(detector))


@pytest.mark.parametrize("drop_path", [0.0, 0.5])
def test_graph_mode_vig_drops_paths_at_random_only_when_asked(drop_path):
    # No dropout in the head: in training mode the only randomness left is drop path, which
    # runs inside the compiled ViG call.
    config = models.ModelConfig(image_size=32, detector={"num_keypoints": 8},
                                graph={"kind": "vig", "units": 16, "layers": 2, "knn": 4,
                                       "drop_path": drop_path},
                                head={"dropout": 0.0})
    keras.utils.set_random_seed(0)
    model = models.build_classifier(config)
    images = tf.constant(np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32))
    with xla.jit_graph_section(model) as layers:
        assert "gnn" in [layer.name for layer in layers]
        first = model(images, training=True).numpy()
        second = model(images, training=True).numpy()
    assert np.isfinite(first).all()
    assert (np.abs(first - second).max() > 1e-4) == (drop_path > 0)
