"""PerturbedTopK: differentiable top-N by perturbed optimisers (beyond the paper); selections
and gradients against NumPy, inference against the hard detectors, argument checks."""
import math

import numpy as np
import pytest

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers import AttentionTopK, MaxPoolNMS, PerturbedTopK
from keypoint_gnn.layers.perturbed_topk import score_noise_scale
from tests.layers.helpers_detectors import (
    numpy_gaussian_top_k_marginals,
    set_score_conv,
    window_maxima,
)


@pytest.mark.parametrize("make_hard, pool_size, shape", [
    (lambda: AttentionTopK(num_keypoints=5, score_activation="sigmoid"), 1, (2, 6, 6, 3)),
    (lambda: MaxPoolNMS(num_keypoints=5, pool_size=2, score_activation="sigmoid"), 2, (2, 8, 8, 3)),
], ids=["attention", "maxpool_nms"])
def test_perturbed_top_k_at_inference_is_the_hard_selection(rng, make_hard, pool_size, shape):
    """Inference: attention top-N for pool_size 1, max-pool NMS for larger windows; the
    default call is inference."""
    feature_map = rng.normal(size=shape).astype("float32")
    hard = make_hard()
    perturbed = PerturbedTopK(num_keypoints=5, score_activation="sigmoid", num_samples=4,
                              pool_size=pool_size)
    set_score_conv(hard, feature_map)
    set_score_conv(perturbed, feature_map)
    for expected, actual in zip(hard(feature_map), perturbed(feature_map, training=False)):
        np.testing.assert_array_equal(actual.numpy(), expected.numpy())
    np.testing.assert_array_equal(perturbed(feature_map)[0], hard(feature_map)[0])
    for image_positions in perturbed(feature_map)[0].numpy():
        windows = {tuple(window) for window in (image_positions // pool_size).astype(int)}
        assert len(windows) == 5


def test_perturbed_top_k_training_with_small_noise_selects_by_index(rng):
    feature_map = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    detector = PerturbedTopK(num_keypoints=5, num_samples=3, sigma=1e-5)
    set_score_conv(detector, feature_map)
    positions, scores, _ = detector(feature_map, training=True)
    for b in range(2):
        flat = feature_map[b, :, :, 0].ravel()
        chosen = np.sort(np.argsort(-flat)[:5])
        np.testing.assert_allclose(positions[b], np.stack([chosen // 6, chosen % 6], -1), atol=1e-6)
        np.testing.assert_allclose(scores[b], flat[chosen], rtol=1e-5)


def test_perturbed_top_k_over_windows_matches_numpy(rng):
    # Training selection = the mean over noise draws of the hard top-k of the window maxima.
    feature_map = rng.normal(size=(2, 6, 8, 3)).astype("float32")
    detector = PerturbedTopK(num_keypoints=4, score_activation="sigmoid", num_samples=5, sigma=0.5,
                             pool_size=2)
    set_score_conv(detector, feature_map)
    noise = rng.normal(size=(2, 5, 12)).astype("float32")
    positions, scores = detector.perturbed_select(detector.score_conv(feature_map), noise=noise)
    for b in range(2):
        maxima, candidates = window_maxima(feature_map[b, :, :, 0], 2)
        scale = 0.5 * max(maxima.std(), 1e-3)
        indicators = np.zeros((4, 12))
        for draw in noise[b]:
            chosen = np.sort(np.argsort(-(maxima + scale * draw))[:4])
            indicators[np.arange(4), chosen] += 1 / 5
        np.testing.assert_allclose(positions[b], indicators @ candidates, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scores[b], indicators @ (1 / (1 + np.exp(-maxima))), rtol=1e-5)


@pytest.mark.parametrize("make, expect_gradient", [
    (lambda: AttentionTopK(num_keypoints=5), False),
    (lambda: PerturbedTopK(num_keypoints=5, num_samples=16, sigma=0.5), True),
    (lambda: PerturbedTopK(num_keypoints=5, num_samples=16, sigma=0.5, pool_size=2), True),
], ids=["attention", "perturbed", "perturbed_windows"])
def test_slot_selection_in_training_gives_positions_a_gradient(rng, make, expect_gradient):
    """The averaged slots move the positions with the scores; hard top-N does not."""
    feature_map = tf.constant(rng.normal(size=(2, 8, 8, 3)).astype("float32"))
    detector = make()
    detector(feature_map)
    with tf.GradientTape() as tape:
        positions, _, _ = detector(feature_map, training=True)
        loss = tf.reduce_sum(positions * [[[1.0, 2.0]]])
    gradient = tape.gradient(loss, detector.score_conv.kernel)
    assert (gradient is not None and np.abs(gradient.numpy()).sum() > 0) == expect_gradient
    if expect_gradient:
        assert np.all(np.isfinite(gradient.numpy()))
    assert np.all((positions.numpy() >= 0) & (positions.numpy() <= 7))


def test_perturbed_top_k_over_windows_saves_and_loads(tmp_path, rng):
    feature_map = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    detector = PerturbedTopK(num_keypoints=5, num_samples=4, pool_size=2, name="detector")
    model = keras.Model(inputs, detector(inputs))
    reference = [output.numpy() for output in model(feature_map, training=False)]

    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert restored.get_layer("detector").pool_size == 2
    assert restored.get_layer("detector").get_config() == detector.get_config()
    for expected, actual in zip(reference, restored(feature_map, training=False)):
        np.testing.assert_array_equal(actual.numpy(), expected)

    model.save(tmp_path / "savedmodel", save_format="tf")
    loaded = tf.saved_model.load(str(tmp_path / "savedmodel"))
    for expected, actual in zip(reference, loaded(tf.constant(feature_map), training=False)):
        np.testing.assert_array_equal(actual.numpy(), expected)


@pytest.mark.parametrize("pool_size, estimator", [(1, "sampled"), (2, "sampled"),
                                                  (1, "threshold"), (2, "threshold")])
def test_marginal_selection_trains_on_the_inference_selection(rng, pool_size, estimator):
    feature_map = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    detector = PerturbedTopK(num_keypoints=6, score_activation="sigmoid", num_samples=4,
                             pool_size=pool_size, selection="marginal", estimator=estimator)
    inference = [t.numpy() for t in detector(feature_map, training=False)]
    training = [t.numpy() for t in detector(feature_map, training=True)]
    for expected, actual in zip(inference, training):
        np.testing.assert_allclose(actual, expected, rtol=1e-6)


def test_marginal_selection_gradient_matches_numpy(rng):
    """Linear scores, pool 1, fixed noise: d/dr of sum_j G_j s_j, with s_j = r_(n_j) and the
    inclusion probabilities' perturbed-optimiser Jacobian (1/(S sigma)) sum_s w_s Z_s, where
    w_s = sum_j G_j r_(n_j) 1[n_j in sel_s] less the other samples' mean (the control variate,
    always on)."""
    batch, size, k, samples, sigma = 2, 4, 3, 5, 0.3
    raw_map = rng.normal(size=(batch, size, size, 1))
    noise = rng.normal(size=(batch, samples, size * size))
    upstream = rng.normal(size=(batch, k))
    detector = PerturbedTopK(num_keypoints=k, num_samples=samples, sigma=sigma, selection="marginal",
                             dtype="float64")
    raw_t = tf.constant(raw_map)
    with tf.GradientTape() as tape:
        tape.watch(raw_t)
        _, scores = detector.perturbed_select(raw_t, noise=tf.constant(noise))
        loss = tf.reduce_sum(scores * upstream)
    gradient = tape.gradient(loss, raw_t).numpy().reshape(batch, -1)

    raw = raw_map.reshape(batch, -1)
    expected = np.zeros_like(raw)
    for b in range(batch):
        chosen = np.argsort(-raw[b])[:k]
        scale = sigma * raw[b].std()
        expected[b, chosen] += upstream[b]
        weight = np.zeros(samples)
        for s in range(samples):
            selected = set(np.argsort(-(raw[b] + scale * noise[b, s]))[:k])
            weight[s] = sum(upstream[b, j] * raw[b, n] for j, n in enumerate(chosen) if n in selected)
        weight = weight - (weight.sum() - weight) / (samples - 1)
        expected[b] += weight @ noise[b] / (samples * scale)
    np.testing.assert_allclose(gradient, expected, rtol=1e-8, atol=1e-10)


def test_threshold_estimator_gradient_matches_numpy(rng):
    """Linear scores, NMS windows of 2: d/dr of sum_j G_j s_j, with s_j = r_(n_j) and the
    threshold inclusion probabilities m_i = Phi((r_i - tau) / sigma_b) over the window maxima:
    d m_i / d r_l = phi_i / sigma_b (delta_il - phi_l / sum phi), reaching each window's argmax."""
    batch, size, k, pool, relative_sigma = 2, 6, 4, 2, 0.5
    raw_map = rng.normal(size=(batch, size, size, 1))
    upstream = rng.normal(size=(batch, k))
    detector = PerturbedTopK(num_keypoints=k, sigma=relative_sigma, pool_size=pool,
                             selection="marginal", estimator="threshold", dtype="float64")
    raw_t = tf.constant(raw_map)
    with tf.GradientTape() as tape:
        tape.watch(raw_t)
        _, scores = detector.perturbed_select(raw_t)
        loss = tf.reduce_sum(scores * upstream)
    gradient = tape.gradient(loss, raw_t).numpy().reshape(batch, size, size)

    expected = np.zeros((batch, size, size))
    for b in range(batch):
        windows = raw_map[b, :, :, 0].reshape(size // pool, pool, size // pool, pool)
        windows = windows.transpose(0, 2, 1, 3).reshape(-1, pool * pool)
        maxima, where = windows.max(axis=1), windows.argmax(axis=1)
        window_y, window_x = np.divmod(np.arange(len(maxima)), size // pool)
        pixels = np.stack([window_y * pool + where // pool, window_x * pool + where % pool], axis=1)
        sigma = relative_sigma * maxima.std()
        _, (tau,) = numpy_gaussian_top_k_marginals(maxima[None], k, sigma)
        density = np.exp(-0.5 * ((maxima - tau) / sigma) ** 2)
        jacobian = density[:, None] / (sigma * math.sqrt(2 * math.pi)) * (
            np.eye(len(maxima)) - density[None, :] / density.sum())
        chosen = np.argsort(-maxima)[:k]
        window_gradient = np.zeros(len(maxima))
        window_gradient[chosen] += upstream[b]  # d r_(n_j) / d r
        window_gradient += (upstream[b] * maxima[chosen]) @ jacobian[chosen]
        for (y, x), value in zip(pixels, window_gradient):
            expected[b, y, x] = value
    np.testing.assert_allclose(gradient, expected, rtol=1e-6, atol=1e-9)


def test_threshold_estimator_draws_no_noise(rng):
    """Same inputs, same gradient: nothing random is left in training mode."""
    feature_map = tf.constant(rng.normal(size=(2, 8, 8, 3)).astype("float32"))
    detector = PerturbedTopK(num_keypoints=5, pool_size=2, selection="marginal", estimator="threshold")
    detector(feature_map)
    gradients = []
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(detector(feature_map, training=True)[1])
        gradients.append(tape.gradient(loss, detector.score_conv.kernel).numpy())
    np.testing.assert_array_equal(gradients[0], gradients[1])
    assert np.abs(gradients[0]).sum() > 0


def test_perturbed_top_k_warns_when_every_window_is_selected():
    detector = PerturbedTopK(num_keypoints=4, pool_size=2)
    with pytest.warns(UserWarning, match="num_keypoints=4 equals the 4 windows of 2x2 on the 4x4 map"):
        detector(tf.zeros([1, 4, 4, 2]))


@pytest.mark.parametrize("estimator", ["sampled", "threshold"])
def test_perturbed_top_k_selecting_every_window_trains_as_max_pool_nms(rng, estimator):
    """What the warning says: N = all 16 windows, so training selects the same keypoints as
    max-pool NMS, and the score conv gets NMS's gradient (the perturbed term is zero)."""
    feature_map = tf.constant(rng.normal(size=(2, 8, 8, 3)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(2, 16)).astype("float32"))
    perturbed = PerturbedTopK(num_keypoints=16, score_activation="sigmoid", pool_size=2,
                              selection="marginal", estimator=estimator)
    nms = MaxPoolNMS(num_keypoints=16, score_activation="sigmoid", pool_size=2)
    with pytest.warns(UserWarning, match="equals the 16 windows"):
        perturbed(feature_map)
    nms(feature_map)
    nms.set_weights(perturbed.get_weights())
    results = []
    for detector in (perturbed, nms):
        with tf.GradientTape() as tape:
            positions, scores, _ = detector(feature_map, training=True)
            # Pair each score with its keypoint, not its slot: slot orders differ.
            order = tf.argsort(positions[..., 0] * 8 + positions[..., 1], axis=1)
            loss = tf.reduce_sum(upstream * tf.gather(scores, order, batch_dims=1))
        results.append((tf.gather(positions, order, batch_dims=1).numpy(),
                        tape.gradient(loss, detector.score_conv.kernel).numpy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_score_noise_scale_is_sigma_times_the_floored_spread(sigma):
    """sigma * max(std over the axis, 1e-3) (NumPy), with no gradient through the spread."""
    raw = tf.constant([[0.0, 1.0, 3.0, -2.0], [0.2, 0.2, 0.2, 0.2]])
    with tf.GradientTape() as tape:
        tape.watch(raw)
        scale = score_noise_scale(raw, sigma, axis=1)
    np.testing.assert_allclose(scale, sigma * np.maximum(raw.numpy().std(axis=1), 1e-3), rtol=1e-6)
    assert tape.gradient(scale, raw) is None


# The messages name the DetectorConfig fields (rules.check_perturbed: perturbed_samples, ...);
# the patterns also accept the layer's own argument names (num_samples, ...).
@pytest.mark.parametrize("kwargs, message", [
    ({"num_samples": 0}, "(num|perturbed)_samples=0 must be a positive integer"),
    ({"num_samples": 2.5}, "(num|perturbed)_samples=2.5 must be a positive integer"),
    ({"sigma": 0.0}, "(perturbed_)?sigma=0.0 must be a finite number > 0"),
    ({"sigma": -1}, "(perturbed_)?sigma=-1 must be a finite number >= 0"),
    ({"sigma": float("nan")}, "(perturbed_)?sigma=nan must be a finite number"),
    ({"sigma": "0.1"}, "(perturbed_)?sigma='0.1' must be a finite number"),
    ({"selection": "marginal", "estimator": "exact"},
     "(perturbed_)?estimator='exact' is not one of 'sampled', 'threshold'"),
    ({"selection": "slots", "estimator": "threshold"},
     "(perturbed_)?estimator='threshold' needs (perturbed_)?selection='marginal', not 'slots'"),
    ({"selection": "soft"}, "(perturbed_)?selection='soft' is not one of 'marginal', 'slots'"),
    ({"selection": "features"},
     "(perturbed_)?selection='features' is not one of 'marginal', 'slots'"),
    ({"selection": "keypoints"},
     "(perturbed_)?selection='keypoints' is not one of 'marginal', 'slots'"),
])
def test_perturbed_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PerturbedTopK(num_keypoints=3, **kwargs)

