"""Swap values: the linearised ratings against finite differences, the real swaps against the
same keypoint set rebuilt by hand, the head rebuilt from the layers against the model, and the
tool on saved and untrained runs."""
import json

import numpy as np
import pytest

import keypoint_gnn as kg
from keypoint_gnn import models
from keypoint_gnn import swap_values as swaps
from keypoint_gnn._backend import keras, tf
from trainers import common
from trainers import swap_values as swap_tool

TINY = dict(image_size=32, backbone_filters=(4, 8), detector_filters=(4, 8), num_keypoints=4,
            graph_units=8, graph_layers=2, head_filters=(8,), dropout=0.0)


def _model(**changes):
    config = kg.ModelConfig(**{**TINY, **changes})
    return kg.build_classifier(config), config


def _images(rng, count=3):
    return rng.uniform(size=(count, 32, 32, 3)).astype("float32")


def test_swap_pairs_and_swapped_by_hand():
    pairs = swaps.swap_pairs(5, np.array([3, 1]))
    np.testing.assert_array_equal(pairs, [[0, 0], [0, 2], [0, 4], [1, 0], [1, 2], [1, 4]])
    values = np.array([[1.0, 1.0], [2.0, 2.0]])
    out = swaps.swapped(values, np.array([[1, 7], [0, 9]]), np.array([[5.0, 5.0], [6.0, 6.0]]))
    np.testing.assert_array_equal(out, [[[1, 1], [5, 5]], [[6, 6], [2, 2]]])
    np.testing.assert_array_equal(values, [[1, 1], [2, 2]])  # the input is not changed


@pytest.mark.parametrize("changes", [
    dict(detector="attention"),
    dict(detector="maxpool_nms", head_skip=True),
    dict(detector="perturbed_topk", perturbed_selection="features", gnn="none"),
])
def test_candidates_and_head_reproduce_the_model(rng, changes):
    model, config = _model(**changes)
    images = _images(rng)
    features, positions, scores, index = swaps.candidates(model, config, images)
    chosen = tf.gather(positions, index, batch_dims=1)
    expected_positions, expected_scores, _ = models.keypoint_model(model)(images, training=False)
    np.testing.assert_array_equal(chosen, expected_positions)
    np.testing.assert_allclose(tf.gather(scores, index, batch_dims=1), expected_scores, rtol=1e-6)
    nodes, adjacency = swaps.graph_inputs(model, features, chosen,
                                          tf.gather(scores, index, batch_dims=1))
    logits = swaps.head_logits(model, config, nodes, adjacency, chosen, features)
    np.testing.assert_allclose(logits, model(images, training=False), atol=1e-5)


def _one_image(model, config, images, b, label, **kwargs):
    features, positions, scores, index = (t.numpy() for t in swaps.candidates(model, config, images))
    return swaps.image_swap_values(model, config, features[b], positions[b], scores[b], index[b],
                                   label, **kwargs), (features[b], positions[b], scores[b], index[b])


def test_linear_values_match_finite_differences_of_the_feature_swap(rng):
    model, config = _model(detector="attention")
    images = _images(rng, 1)
    values, _ = _one_image(model, config, images, 0, 2)
    step = 1e-2
    ahead, _ = _one_image(model, config, images, 0, 2, step=step)
    behind, _ = _one_image(model, config, images, 0, 2, step=-step)
    central = (ahead["features"] - behind["features"]) / (2 * step)
    scale = np.abs(values["linear"]).max()
    assert scale > 1e-4
    np.testing.assert_allclose(values["linear"], central, atol=2e-2 * scale)
    none, _ = _one_image(model, config, images, 0, 2, step=0.0)
    np.testing.assert_allclose(none["features"], 0.0, atol=1e-6)
    # Whole swaps: the same pairs, and the real loss change (not the linear one).
    np.testing.assert_array_equal(values["pairs"], ahead["pairs"])
    assert len(values["pairs"]) == 4 * (64 - 4)  # 8x8 map: every location a candidate


def test_a_swap_is_the_loss_of_the_swapped_keypoint_set_in_another_order(rng):
    model, config = _model(detector="maxpool_nms", nms_pool_size=1)
    images = _images(rng, 2)
    label = 1
    values, (features, positions, scores, index) = _one_image(model, config, images, 1, label)

    def loss(chosen):  # the keypoint set, in index order: independent of the slots' order
        chosen = np.sort(chosen)
        nodes, adjacency = swaps.graph_inputs(model, features[None], positions[chosen][None],
                                              scores[chosen][None])
        logits = swaps.head_logits(model, config, nodes, adjacency, positions[chosen][None],
                                   features[None])
        return float(keras.losses.sparse_categorical_crossentropy([label], logits,
                                                                  from_logits=True)[0])

    np.testing.assert_allclose(values["base_loss"], loss(index), rtol=1e-5)
    for row in rng.choice(len(values["pairs"]), size=6, replace=False):
        slot, pick = values["pairs"][row]
        chosen = index.copy()
        chosen[slot] = pick
        np.testing.assert_allclose(values["swap"][row], loss(chosen) - values["base_loss"],
                                   atol=1e-5)


def test_summary_of_hand_made_values():
    pairs = np.array([[0, 5], [0, 6], [1, 5], [1, 6]])
    swap = np.array([0.3, -0.2, 0.1, -0.4])
    same = {"pairs": pairs, "linear": swap, "full": swap, "features": swap, "swap": swap,
            "base_loss": 1.0}
    report = swaps.summarize([same])
    assert report["pearson_linear_vs_swap"] == pytest.approx(1.0)
    assert report["spearman_linear_vs_features"] == pytest.approx(1.0)
    assert report["sign_agreement"] == 1.0 and report["improving_share"] == 0.5
    assert report["best_linear_swap"] == pytest.approx(report["best_swap"]) == pytest.approx(-0.3)
    assert report["best_full_swap"] == pytest.approx(-0.3) and report["sign_agreement_full"] == 1.0
    assert report["mean_swap"] == pytest.approx(np.mean(swap))
    opposite = dict(same, linear=-swap)
    report = swaps.summarize([opposite])
    assert report["pearson_linear_vs_swap"] == pytest.approx(-1.0)
    assert report["pearson_full_vs_swap"] == pytest.approx(1.0)
    assert report["sign_agreement"] == 0.0
    assert report["best_linear_swap"] == pytest.approx(np.mean([0.3, 0.1]))  # the worst swaps
    assert report["images"] == 1 and report["swaps"] == 4 and report["base_loss"] == 1.0


def test_detectors_without_candidates_are_refused():
    with pytest.raises(ValueError, match=r"detector='grid' places its keypoints by regression"):
        swaps.check_swap_config(kg.ModelConfig(**TINY, detector="grid"))
    with pytest.raises(ValueError, match=r"sampling='bilinear'"):
        swaps.check_swap_config(kg.ModelConfig(**TINY, detector="perturbed_topk",
                                               perturbed_selection="slots"))


def _run_dir(tmp_path, config, model):
    (tmp_path / "config.json").write_text(config.to_json())
    (tmp_path / "run.json").write_text(json.dumps({"dataset": "builtin", "seed": 0,
                                                   "max_examples": 48}))
    model.save(tmp_path / "model.keras")
    return str(tmp_path)


def test_tool_on_a_saved_run_and_its_untrained_model(tmp_path):
    model, config = _model(detector="perturbed_topk", perturbed_selection="features",
                           nms_pool_size=2)
    run = _run_dir(tmp_path, config, model)
    report = swap_tool.main([run, "--images", "2"])[run]
    assert report["detector"] == "perturbed_topk" and not report["untrained"]
    assert report["images"] == 2 and report["swaps"] == 2 * 4 * (16 - 4)  # 16 windows of 2x2
    assert -1 <= report["pearson_linear_vs_swap"] <= 1
    assert report["best_swap"] <= report["mean_swap"]
    fresh = swap_tool.main([run, "--images", "2", "--untrained"])[run]
    assert fresh["untrained"] and fresh["swaps"] == report["swaps"]


def test_tool_bad_input(tmp_path):
    with pytest.raises(common.UserError, match="no config.json"):
        swap_tool.main([str(tmp_path)])
    (tmp_path / "config.json").write_text(kg.ModelConfig(**TINY).to_json())
    with pytest.raises(common.UserError, match="no model.keras"):
        swap_tool.main([str(tmp_path)])
    with pytest.raises(common.UserError, match="--images 0 must be at least 1"):
        swap_tool.main([str(tmp_path), "--images", "0"])
    (tmp_path / "config.json").write_text(kg.ModelConfig(**TINY, detector="grid").to_json())
    with pytest.raises(ValueError, match="detector='grid'"):
        swap_tool.main([str(tmp_path), "--untrained"])


def test_full_rating_matches_finite_differences_of_moving_the_keypoint(rng):
    """full - linear = <dL/dp_k, c_j - p_k> + <dL/dG(c_j) - dL/dG(p_k), Y_k>: both terms
    against central differences, moving the position (rounding unchanged) and the written
    node. The biases are made non-zero: a fresh model's zero biases put every ReLU of an empty
    map region exactly at its kink, where one-sided differences and the gradient disagree."""
    model, config = _model(detector="attention")
    for weight in model.weights:
        if weight.name.endswith("bias:0"):
            weight.assign(rng.normal(scale=0.1, size=weight.shape))
    images = _images(rng, 1)
    label = 3
    values, (features, positions, scores, index) = _one_image(model, config, images, 0, label)
    chosen, chosen_scores = positions[index][None], scores[index][None]
    h = 1e-2

    def loss_at(position_batch, grid_change=None):
        nodes, adjacency = swaps.graph_inputs(model, features[None], position_batch, chosen_scores)
        outputs = swaps.graph_outputs(model, config, nodes, adjacency)
        grid = model.get_layer("graph_to_cnn")([outputs, position_batch])
        if grid_change is not None:
            grid = grid + grid_change(outputs.numpy()[0])
        logits = swaps.grid_logits(model, config, grid, features[None])
        return float(keras.losses.sparse_categorical_crossentropy([label], logits,
                                                                  from_logits=True)[0])

    for row in rng.choice(len(values["pairs"]), size=4, replace=False):
        slot, pick = values["pairs"][row]
        step = np.zeros_like(chosen)
        step[0, slot] = positions[pick] - positions[index[slot]]
        position_term = (loss_at(chosen + h * step) - loss_at(chosen - h * step)) / (2 * h)

        def write(sign, slot=slot, pick=pick):
            def change(outputs):
                grid = np.zeros((1, 8, 8, outputs.shape[-1]), np.float32)
                (py, px), (cy, cx) = positions[index[slot]].astype(int), positions[pick].astype(int)
                grid[0, cy, cx] += sign * h * outputs[slot]
                grid[0, py, px] -= sign * h * outputs[slot]
                return grid
            return change

        write_term = (loss_at(chosen, write(1)) - loss_at(chosen, write(-1))) / (2 * h)
        np.testing.assert_allclose(values["full"][row] - values["linear"][row],
                                   position_term + write_term, atol=2e-3, rtol=5e-2)
