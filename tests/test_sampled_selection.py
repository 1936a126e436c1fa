"""Selection gradient from sampled losses: the estimator against a loop and a closed form, the
sampled losses against the whole model on the same keypoints, the gradient on the score
convolution by hand, training through the trainer, and bad input."""
import math
from unittest import mock

import numpy as np
import pytest

import keypoint_gnn as kg
from keypoint_gnn import ops
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.sampled_selection import SampledSelectionTrainer
from trainers import classify, common

TINY = {"image_size": 32, "backbone_filters": (4, 8), "detector_filters": (4, 8),
        "num_keypoints": 4, "graph_units": 8, "graph_layers": 2, "head_filters": (8,),
        "dropout": 0.0}


def _model(**changes):
    config = kg.ModelConfig(**{**TINY, **changes})
    return kg.build_classifier(config), config


def _compiled(trainer):
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2), **common.classifier_loss_and_metrics())
    return trainer


def test_score_function_gradient_against_a_loop(rng):
    losses = rng.normal(size=(2, 4))
    noise = rng.normal(size=(2, 4, 5))
    sigma = np.array([0.5, 2.0])
    expected = np.zeros((2, 5))
    for b in range(2):
        for s in range(4):
            baseline = (losses[b].sum() - losses[b, s]) / 3
            expected[b] += (losses[b, s] - baseline) * noise[b, s] / (4 * sigma[b])
    got = ops.score_function_gradient(tf.constant(losses), tf.constant(noise), tf.constant(sigma))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_score_function_gradient_is_unbiased_on_a_closed_form(rng):
    # Two candidates, pick one; loss 1 when candidate 0 wins. Its perturbed expectation is
    # Phi((r0 - r1) / (sigma sqrt 2)), whose derivative in r0 is phi(.) / (sigma sqrt 2).
    r, sigma, samples = np.array([0.3, -0.2]), 0.8, 200_000
    noise = rng.normal(size=(1, samples, 2))
    losses = (np.argmax(r + sigma * noise, axis=-1) == 0).astype(float)
    got = ops.score_function_gradient(tf.constant(losses), tf.constant(noise), sigma).numpy()[0]
    z = (r[0] - r[1]) / (sigma * math.sqrt(2))
    slope = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) / (sigma * math.sqrt(2))
    np.testing.assert_allclose(got, [slope, -slope], atol=0.01)


def test_score_function_gradient_refuses_bad_input():
    with pytest.raises(ValueError, match=r"S >= 2 samples"):
        ops.score_function_gradient(tf.zeros([2, 1]), tf.zeros([2, 1, 3]), 1.0)
    with pytest.raises(ValueError, match=r"noise has 3 samples per image, losses 2"):
        ops.score_function_gradient(tf.zeros([2, 2]), tf.zeros([2, 3, 3]), 1.0)
    with pytest.raises(ValueError, match=r"sigma=0.0 must be a positive noise scale"):
        ops.score_function_gradient(tf.zeros([2, 2]), tf.zeros([2, 2, 3]), 0.0)


@pytest.mark.parametrize("changes", [
    {"detector": "attention"},
    {"detector": "maxpool_nms", "head_skip": True},
    {"detector": "perturbed_topk", "nms_pool_size": 2, "perturbed_selection": "features",
     "perturbed_sigma": 0.5, "gnn": "none"},
], ids=["attention", "nms-head_skip", "perturbed-features-gnn_none"])
def test_sampled_losses_equal_the_model_on_the_same_keypoints(rng, changes):
    """Each sampled selection's loss is the whole model's cross-entropy with its detector made
    to select those candidates (the selection rebuilt in NumPy)."""
    model, config = _model(**changes)
    trainer = SampledSelectionTrainer(model, config, num_samples=3, sigma=0.5)
    images = rng.uniform(size=(2, 32, 32, 3)).astype("float32")
    labels = np.array([1, 4])
    _, detector_features, features = trainer.joint(images, training=False)
    raw, positions = (t.numpy() for t in trainer.candidates(detector_features))
    noise = rng.normal(size=(2, 3, raw.shape[1])).astype("float32")
    scale = trainer.noise_scale(tf.constant(raw)).numpy()
    losses = trainer.sampled_losses(features, tf.constant(raw), tf.constant(positions), labels,
                                    tf.constant(noise), tf.constant(scale)).numpy()
    np.testing.assert_allclose(scale, 0.5 * raw.std(axis=1), rtol=1e-5)

    detector = model.get_layer("detector")
    for s in range(3):
        chosen = np.argsort(-(raw + scale[:, None] * noise[:, s]), axis=1,
                            kind="stable")[:, :config.num_keypoints]
        picked = (tf.constant(np.take_along_axis(positions, chosen[..., None], axis=1)),
                  tf.constant(np.take_along_axis(raw, chosen, axis=1)))
        with mock.patch.object(detector, "select", lambda _raw, picked=picked: picked):
            logits = model(images, training=False)
        expected = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        np.testing.assert_allclose(losses[:, s], expected.numpy(), rtol=1e-4, atol=1e-5)
    # The samples do differ, so the check above is not the hard selection three times.
    assert np.ptp(losses, axis=1).max() > 0


def test_selection_term_gradient_on_the_score_convolution_by_hand(rng):
    """Value 0; gradient on the 1x1 score convolution = mean over images of
    sum_locations g * (detector features at the location, 1) with g from the sampled losses."""
    model, config = _model(detector="attention")
    trainer = SampledSelectionTrainer(model, config, num_samples=4, sigma=0.5)
    images = rng.uniform(size=(3, 32, 32, 3)).astype("float32")
    labels = np.array([0, 2, 5])
    _, detector_features, features = trainer.joint(images, training=False)
    noise = tf.constant(rng.normal(size=(3, 4, 64)).astype("float32"))
    conv = model.get_layer("detector").score_conv
    with tf.GradientTape() as tape:
        term, losses = trainer.selection_term(features, detector_features, labels, noise=noise)
    kernel_gradient, bias_gradient = tape.gradient(term, [conv.kernel, conv.bias])
    assert float(term) == 0.0

    raw, _ = trainer.candidates(detector_features)
    g = ops.score_function_gradient(losses, noise, trainer.noise_scale(raw)).numpy()  # (B, 64)
    inputs = detector_features.numpy().reshape(3, 64, -1)  # row-major, as the candidates
    np.testing.assert_allclose(kernel_gradient.numpy().reshape(-1),
                               np.einsum("bn,bnc->c", g, inputs) / 3, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bias_gradient.numpy(), [g.sum() / 3], rtol=1e-4, atol=1e-6)
    assert np.abs(g).sum() > 0


def test_trainer_refuses_bad_input():
    model, config = _model(detector="attention")
    with pytest.raises(ValueError, match=r"num_samples=1 must be an integer >= 2"):
        SampledSelectionTrainer(model, config, num_samples=1)
    with pytest.raises(ValueError, match=r"sigma=0 must be a finite number > 0"):
        SampledSelectionTrainer(model, config, sigma=0)
    with pytest.raises(ValueError, match=r"weight=-1.0 must be a finite number > 0"):
        SampledSelectionTrainer(model, config, weight=-1.0)
    with pytest.raises(ValueError, match=r"sigma=inf must be a finite number > 0"):
        SampledSelectionTrainer(model, config, sigma=float("inf"))
    grid, grid_config = _model(detector="grid")
    with pytest.raises(ValueError, match=r"detector='grid' places its keypoints by regression"):
        SampledSelectionTrainer(grid, grid_config)


TINY_FLAGS = ["--image-size", "32", "--max-examples", "48", "--batch-size", "16", "--keypoints",
              "8", "--graph-units", "16", "--graph-layers", "2", "--verbose", "0", "--no-export"]


def test_classify_trains_with_sampled_selection(tmp_path):
    result = classify.main(TINY_FLAGS + ["--detector", "attention", "--epochs", "1",
                                         "--selection-samples", "2", "--out", str(tmp_path)])
    # Validation reports the classifier's metrics only (no sampling there).
    assert set(result["history"]) == {"loss", "accuracy", "sampled_loss", "val_loss",
                                      "val_accuracy"}
    assert result["history"]["sampled_loss"][0] > 0
    # What is saved is the plain classifier.
    model = keras.models.load_model(tmp_path / "model.keras", custom_objects=kg.custom_objects())
    assert model.name == "keypoint_attention_gcn_classifier"


@pytest.mark.parametrize("flags, message", [
    (["--selection-samples", "1"], "--selection-samples=1 must be an integer >= 2"),
    (["--selection-samples", "-2"], "--selection-samples=-2 must be an integer >= 2 .*0 turns it off"),
    (["--selection-samples", "2", "--selection-sigma", "0"], "--selection-sigma=0.0 must be"),
    (["--selection-samples", "2", "--detector", "grid"], "places its keypoints by regression"),
    (["--selection-samples", "2", "--plain-cnn"], "not --plain-cnn"),
    (["--selection-samples", "2", "--subpixel-refinement", "window"],
     "gathered keypoints; sampling='bilinear' .*subpixel_refinement"),
    (["--selection-weight", "3"], "--selection-weight applies with --selection-samples"),
])
def test_classify_refuses_bad_sampled_selection_flags(tmp_path, flags, message):
    with pytest.raises(common.UserError, match=message):
        classify.main(TINY_FLAGS + flags + ["--out", str(tmp_path)])
