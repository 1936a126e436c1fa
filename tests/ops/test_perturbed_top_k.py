"""keypoint_gnn.ops.perturbed_top_k: perturbed-optimiser top-k indicators, their Gaussian
threshold marginals and the score-function gradient, against NumPy loops, hand-worked cases,
central differences and sampled frequencies."""
import math

import numpy as np
import pytest

from keypoint_gnn import ops
from keypoint_gnn._backend import tf
from tests.ops import (
    normal_cdf,
    numpy_gaussian_top_k_marginals,
    numpy_matched_top_k,
    numpy_perturbed_top_k,
)


def test_perturbed_top_k_matched_slots_match_numpy(rng):
    """Slots matched to the unperturbed top-k: the same selections as sorted slots, only
    arranged differently, and a near-hard noise gives the reference itself."""
    scores = rng.normal(size=(3, 12))
    noise = rng.normal(size=(3, 6, 12))
    reference = np.argsort(-scores, axis=1)[:, :4]
    indicators = ops.perturbed_top_k_indicators(tf.constant(scores), 4, 6, 0.8, noise=tf.constant(noise),
                                                reference=tf.constant(reference))
    hard, expected = numpy_matched_top_k(scores, 4, 0.8, noise, reference)
    np.testing.assert_allclose(indicators.numpy(), expected, atol=1e-12)
    sorted_hard, _ = numpy_perturbed_top_k(scores, 4, 0.8, noise)
    np.testing.assert_array_equal(hard.sum(axis=2), sorted_hard.sum(axis=2))  # same selections
    kept = np.array([[hard[b, s, np.arange(4), reference[b]] for s in range(6)] for b in range(3)])
    assert 0 < np.mean(kept == 0) < 0.5  # some samples swap candidates: the test sees matching
    near_hard = ops.perturbed_top_k_indicators(tf.constant(scores), 4, 6, 1e-9, noise=tf.constant(noise),
                                               reference=tf.constant(reference))
    np.testing.assert_array_equal(near_hard.numpy(), np.eye(12)[reference])
    for bad in (reference[:, :3], reference[0]):
        with pytest.raises(ValueError, match=r"reference of shape .* must be \(batch, k=4\)"):
            ops.perturbed_top_k_indicators(tf.constant(scores), 4, 6, 0.8, reference=bad)


def test_perturbed_top_k_matched_slots_gradient_matches_numpy(rng):
    scores = rng.normal(size=(2, 9))
    noise = rng.normal(size=(2, 5, 9))
    upstream = rng.normal(size=(2, 3, 9))
    reference = np.argsort(-scores, axis=1)[:, :3]
    scores_t = tf.constant(scores)
    with tf.GradientTape() as tape:
        tape.watch(scores_t)
        indicators = ops.perturbed_top_k_indicators(scores_t, 3, 5, 0.7, noise=tf.constant(noise),
                                                    reference=tf.constant(reference))
        loss = tf.reduce_sum(indicators * upstream)
    hard, _ = numpy_matched_top_k(scores, 3, 0.7, noise, reference)
    expected = np.einsum("bskn,bkn,bsm->bm", hard, upstream, noise) / (5 * 0.7)
    np.testing.assert_allclose(tape.gradient(loss, scores_t), expected, rtol=1e-10, atol=1e-12)


def test_perturbed_top_k_forward_is_the_mean_of_sampled_hard_top_k(rng):
    scores = rng.normal(size=(3, 10))
    noise = rng.normal(size=(3, 7, 10))
    indicators = ops.perturbed_top_k_indicators(tf.constant(scores), 4, 7, 0.5, noise=tf.constant(noise))
    _, expected = numpy_perturbed_top_k(scores, 4, 0.5, noise)
    np.testing.assert_allclose(indicators.numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(indicators.numpy().sum(-1), 1.0)


def _perturbed_gradient(rng, sigma, **kwargs):
    """Random (3, 8) scores, (3, 5, 8) noise and (3, 2, 8) upstream gradient; top-2 of 5 samples.
    Returns them with d<upstream, Y>/d scores."""
    scores = rng.normal(size=(3, 8))
    noise = rng.normal(size=(3, 5, 8))
    upstream = rng.normal(size=(3, 2, 8))
    scores_t = tf.constant(scores)
    with tf.GradientTape() as tape:
        tape.watch(scores_t)
        indicators = ops.perturbed_top_k_indicators(scores_t, 2, 5, sigma, noise=tf.constant(noise),
                                                    **kwargs)
        loss = tf.reduce_sum(indicators * upstream)
    return scores, noise, upstream, tape.gradient(loss, scores_t).numpy()


@pytest.mark.parametrize("sigma", [0.3, np.array([0.2, 1.0, 3.0])])
def test_perturbed_top_k_gradient_matches_numpy_estimator(rng, sigma):
    scores, noise, upstream, gradient = _perturbed_gradient(rng, tf.constant(sigma, tf.float64))
    hard, _ = numpy_perturbed_top_k(scores, 2, sigma, noise)
    # dY/ds = E[Y_s Z_s^T] / sigma, contracted with the upstream gradient, per image.
    sigma_b = np.broadcast_to(np.asarray(sigma).reshape(-1), (3,))
    expected = np.zeros_like(scores)
    for b in range(3):
        jacobian = np.einsum("skn,sm->knm", hard[b], noise[b]) / (5 * sigma_b[b])
        expected[b] = np.einsum("kn,knm->m", upstream[b], jacobian)
    np.testing.assert_allclose(gradient, expected, rtol=1e-10, atol=1e-12)


def test_perturbed_top_k_with_small_noise_is_hard_top_k_by_index(rng):
    scores = rng.normal(size=(2, 12)).astype("float32")
    indicators = ops.perturbed_top_k_indicators(tf.constant(scores), 5, 3, 1e-6).numpy()
    for b in range(2):
        chosen = np.sort(np.argsort(-scores[b])[:5])
        np.testing.assert_array_equal(indicators[b].argmax(-1), chosen)
        np.testing.assert_allclose(indicators[b].max(-1), 1.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 3, "num_samples": 0, "sigma": 0.1}, "num_samples=0 must be a positive integer"),
    ({"k": 3, "num_samples": 2, "sigma": 0.0}, "sigma=0.0 must be a positive noise scale"),
    ({"k": 9, "num_samples": 2, "sigma": 0.1}, "k=9 exceeds the 8 scores"),
])
def test_perturbed_top_k_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ops.perturbed_top_k_indicators(tf.zeros([1, 8]), **kwargs)


def test_perturbed_top_k_control_variate_matches_numpy_leave_one_out(rng):
    scores, noise, upstream, gradient = _perturbed_gradient(rng, 0.3, control_variate=True)
    hard, _ = numpy_perturbed_top_k(scores, 2, 0.3, noise)
    expected = np.zeros_like(scores)
    for b in range(3):
        weights = np.array([np.sum(upstream[b] * hard[b, s]) for s in range(5)])
        for s in range(5):
            baseline = (weights.sum() - weights[s]) / 4
            expected[b] += (weights[s] - baseline) * noise[b, s] / (5 * 0.3)
    np.testing.assert_allclose(gradient, expected, rtol=1e-10, atol=1e-12)


def test_perturbed_top_k_control_variate_keeps_the_mean_and_cuts_the_noise(rng):
    """Over many noise draws both estimators average to the same gradient; with small sigma the
    baseline one scatters far less around it."""
    scores = tf.constant(rng.normal(size=(1, 10)))
    upstream = tf.constant(rng.normal(size=(1, 3, 10)))

    def estimates(control_variate, draws=400):
        out = []
        for seed in range(draws):
            noise = tf.random.stateless_normal([1, 4, 10], seed=[seed, 7], dtype=tf.float64)
            with tf.GradientTape() as tape:
                tape.watch(scores)
                loss = tf.reduce_sum(upstream * ops.perturbed_top_k_indicators(
                    scores, 3, 4, 0.5, noise=noise, control_variate=control_variate))
            out.append(tape.gradient(loss, scores).numpy()[0])
        return np.array(out)

    plain, baseline = estimates(False), estimates(True)
    standard_error = np.sqrt(plain.var(axis=0) / len(plain) + baseline.var(axis=0) / len(baseline))
    assert np.all(np.abs(plain.mean(axis=0) - baseline.mean(axis=0)) < 4 * standard_error + 1e-9)
    assert baseline.var(axis=0).sum() < 0.5 * plain.var(axis=0).sum()


@pytest.mark.parametrize("leave_one_out", [False, True])
@pytest.mark.parametrize("sigma", [
    pytest.param(0.4, id="python-float"),
    pytest.param(np.float64(0.4), id="scalar"),
    pytest.param(np.array([0.5, 2.0]), id="per-image"),
])
def test_score_function_gradient_matches_numpy(rng, leave_one_out, sigma):
    """g_b = 1/(S sigma_b) sum_s (L_bs - b_bs) Z_bs, b_bs the mean of the other samples' losses
    (or 0), as a loop, in float64."""
    losses, noise = rng.normal(size=(2, 4)), rng.normal(size=(2, 4, 6))
    gradient = ops.score_function_gradient(tf.constant(losses), tf.constant(noise),
                                           tf.constant(sigma) if np.ndim(sigma) else sigma,
                                           leave_one_out=leave_one_out).numpy()
    sigma_b = np.broadcast_to(np.asarray(sigma).reshape(-1), (2,))
    expected = np.zeros((2, 6))
    for b in range(2):
        for s in range(4):
            baseline = (losses[b].sum() - losses[b, s]) / 3 if leave_one_out else 0.0
            expected[b] += (losses[b, s] - baseline) * noise[b, s] / (4 * sigma_b[b])
    np.testing.assert_allclose(gradient, expected, rtol=1e-12)


@pytest.mark.parametrize("samples, noise_samples, sigma, message", [
    (1, 1, 0.1, r"must be \(batch, S\) and \(batch, S, n\) with S >= 2 samples"),
    (2, 3, 0.1, "noise has 3 samples per image, losses 2"),
    (2, 2, 0.0, "sigma=0.0 must be a positive noise scale"),
])
def test_score_function_gradient_errors(samples, noise_samples, sigma, message):
    with pytest.raises(ValueError, match=message):
        ops.score_function_gradient(tf.ones([1, samples]), tf.zeros([1, noise_samples, 3]), sigma)


def test_score_function_gradient_one_sample_without_baseline():
    # L = 2, Z = (1, -1, 0.5), sigma = 0.5, S = 1: g = 2 Z / 0.5 = (4, -4, 2).
    gradient = ops.score_function_gradient(tf.constant([[2.0]]), tf.constant([[[1.0, -1.0, 0.5]]]),
                                           0.5, leave_one_out=False)
    np.testing.assert_array_equal(gradient.numpy(), [[4.0, -4.0, 2.0]])


@pytest.mark.parametrize("sigma", [0.3, np.array([0.05, 0.4, 2.0])])
def test_gaussian_top_k_marginals_match_numpy(rng, sigma):
    scores = rng.normal(size=(3, 20))
    marginals = ops.gaussian_top_k_marginals(tf.constant(scores), 6, tf.constant(sigma, tf.float64)).numpy()
    expected, _ = numpy_gaussian_top_k_marginals(scores, 6, sigma)
    np.testing.assert_allclose(marginals, expected, atol=1e-9)
    np.testing.assert_allclose(marginals.sum(axis=1), 6.0, atol=1e-9)


def test_gaussian_top_k_marginals_hand_cases():
    # Symmetric pair, k = 1: tau = 0, so m = (Phi(a / sigma), Phi(-a / sigma)).
    marginals = ops.gaussian_top_k_marginals(tf.constant([[0.3, -0.3]], tf.float64), 1, 0.2)
    np.testing.assert_allclose(marginals.numpy(), [[normal_cdf(1.5), normal_cdf(-1.5)]], atol=1e-12)
    # Four equal scores, k = 2: each is selected half the time.
    marginals = ops.gaussian_top_k_marginals(tf.ones([1, 4], tf.float64), 2, 0.7)
    np.testing.assert_allclose(marginals.numpy(), 0.5, atol=1e-12)


def test_gaussian_top_k_marginals_gradient_is_the_implicit_function_gradient(rng):
    """d m_i / d s_j = phi_i / sigma (delta_ij - phi_j / sum phi), by hand, and the same by
    central differences of the forward pass (which solves tau again each time)."""
    scores, upstream, sigma = rng.normal(size=(2, 9)), rng.normal(size=(2, 9)), 0.4
    scores_t = tf.constant(scores)
    with tf.GradientTape() as tape:
        tape.watch(scores_t)
        loss = tf.reduce_sum(upstream * ops.gaussian_top_k_marginals(scores_t, 3, sigma))
    gradient = tape.gradient(loss, scores_t).numpy()

    _, taus = numpy_gaussian_top_k_marginals(scores, 3, sigma)
    expected = np.zeros_like(scores)
    for b in range(2):
        density = np.exp(-0.5 * ((scores[b] - taus[b]) / sigma) ** 2) / math.sqrt(2 * math.pi)
        jacobian = density[:, None] / sigma * (np.eye(9) - density[None, :] / density.sum())
        expected[b] = upstream[b] @ jacobian
    np.testing.assert_allclose(gradient, expected, rtol=1e-7, atol=1e-10)

    step, numerical = 1e-6, np.zeros_like(scores)
    for index in np.ndindex(*scores.shape):
        shift = np.zeros_like(scores)
        shift[index] = step
        plus, minus = (np.sum(upstream * ops.gaussian_top_k_marginals(tf.constant(scores + d), 3, sigma))
                       for d in (shift, -shift))
        numerical[index] = (plus - minus) / (2 * step)
    np.testing.assert_allclose(gradient, numerical, rtol=1e-5, atol=1e-7)


def test_gaussian_top_k_marginals_approximate_sampled_inclusion_probabilities(rng):
    """The threshold approximation against each location's frequency in the top k of 5,000
    noisy copies (n = 144, k = 32, as over the built-in set's 12 x 12 map)."""
    scores = rng.normal(size=(1, 144))
    sigma = 0.5 * scores.std()
    chosen = np.argsort(-(scores + sigma * rng.normal(size=(5000, 144))), axis=1)[:, :32]
    frequency = np.bincount(chosen.ravel(), minlength=144) / 5000
    marginals = ops.gaussian_top_k_marginals(tf.constant(scores), 32, sigma).numpy()[0]
    assert np.abs(marginals - frequency).max() < 0.04
    assert np.abs(marginals - frequency).mean() < 0.005


def test_gaussian_top_k_marginals_when_every_score_is_selected(rng):
    scores = tf.constant(rng.normal(size=(2, 5)))
    with tf.GradientTape() as tape:
        tape.watch(scores)
        marginals = ops.gaussian_top_k_marginals(scores, 5, 0.1)
    np.testing.assert_allclose(marginals.numpy(), 1.0)
    gradient = tape.gradient(marginals, scores).numpy()
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() < 1e-12


@pytest.mark.parametrize("k, sigma, message", [
    (0, 0.1, r"k=0 must be an integer in \[1, 8\]"),
    (9, 0.1, r"k=9 must be an integer in \[1, 8\]"),
    (3, 0.0, "sigma=0.0 must be a positive noise scale"),
])
def test_gaussian_top_k_marginals_errors(k, sigma, message):
    with pytest.raises(ValueError, match=message):
        ops.gaussian_top_k_marginals(tf.zeros([1, 8]), k, sigma)
