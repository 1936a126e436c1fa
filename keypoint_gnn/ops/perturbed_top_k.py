"""Differentiable top-k over candidate scores: perturbed-optimiser top-k indicators (Berthet et
al. 2020; Cordonnier et al. 2021), their Gaussian threshold marginals without sampling, and the
score-function gradient of sampled selections.
"""
import math

from keypoint_gnn._backend import tf


def _hard_top_k_indicators(perturbed_scores, k, depth, reference=None):
    """(B, S, n) -> (B, S, k, n) one-hot rows of the top-k locations.

    Without `reference`, in increasing index order: sorting gives each slot a stable meaning
    across samples (Cordonnier et al.), so that the mean over samples is a soft selection per
    slot rather than a blur of ranks. With `reference` (B, k), slots matched to it: slot j
    holds reference[j] whenever the sample selects it, and the sample's other picks fill the
    remaining slots in increasing index order.
    """
    _, index = tf.math.top_k(perturbed_scores, k=k, sorted=False)
    if reference is None:
        return tf.one_hot(tf.sort(index, axis=-1), depth, dtype=perturbed_scores.dtype)
    chosen = tf.reduce_max(tf.one_hot(index, depth, dtype=tf.int32), axis=-2)  # (B, S, n)
    reference = tf.broadcast_to(tf.cast(reference, tf.int32)[:, None, :], tf.shape(index))
    kept = tf.gather(chosen, reference, batch_dims=2) > 0  # (B, S, k)
    in_reference = tf.reduce_max(tf.one_hot(reference, depth, dtype=tf.int32), axis=-2)
    newcomer = chosen * (1 - in_reference)  # picked by the sample, not by the reference
    # Newcomers first, each group in index order.
    newcomers = tf.argsort((1 - newcomer) * depth + tf.range(depth), axis=-1, stable=True)[..., :k]
    rank = tf.maximum(tf.cumsum(tf.cast(~kept, tf.int32), axis=-1) - 1, 0)
    slots = tf.where(kept, reference, tf.gather(newcomers, rank, batch_dims=2))
    return tf.one_hot(slots, depth, dtype=perturbed_scores.dtype)


def perturbed_top_k_indicators(scores, k, num_samples, sigma, noise=None, control_variate=False,
                               reference=None):
    """Differentiable top-k by perturbed optimisers (Berthet et al. 2020; Cordonnier et al.,
    CVPR 2021, "Differentiable Patch Selection for Image Recognition", §3).

    Forward: the mean of hard top-k indicators of the perturbed scores,

      Y = 1/S sum_s topk(scores + sigma * Z_s),  Z_s ~ N(0, I),  Y: (B, k, n),

    where topk(.) is a (k, n) matrix with one 1 per row at the selected locations, sorted by
    location index. Backward: the perturbed-optimiser Jacobian (Berthet et al., Prop. 3.1)
    on the same noise,

      dY/dscores = 1/(S sigma) sum_s topk(scores + sigma Z_s) Z_s^T     ((k, n) x n outer product)

    so the vector-Jacobian product for an upstream gradient G (B, k, n) is
    1/(S sigma) sum_s <G, topk(scores + sigma Z_s)> Z_s. (The first public release of
    Cordonnier et al.'s code took an elementwise product here; the outer product is the estimator.)

    With `control_variate=True` (and S >= 2) each sample's weight w_s = <G, topk(...)> is
    replaced by w_s - mean_{t != s} w_t (a leave-one-out baseline, independent of Z_s, so the
    estimate stays unbiased). When the samples mostly agree, w_s is nearly the same for every s
    and the plain estimator is dominated by mean(w) * sum_s Z_s / (S sigma), zero-mean noise of
    size |mean(w)| / (sigma sqrt(S)); the baseline removes that term.

    Args:
      scores: (B, n) float.
      k: locations to select, <= n.
      num_samples: S >= 1, noise draws.
      sigma: noise scale > 0 in the unit of `scores`: a float, or a tensor of shape () or (B,)
        (one scale per row).
      noise: optional (B, S, n) standard normal draws (for deterministic tests); drawn with
        `tf.random.normal` when None.
      control_variate: subtract the leave-one-out mean weight in the backward pass.
      reference: optional (B, k) int indices of a reference selection (the unperturbed top-k,
        say), distinct per row. Slots then follow it instead of the index order: slot j holds
        reference[j] in every sample that selects it, and the candidates a sample picks
        instead fill the slots it dropped, in index order. With sorted slots one swap shifts
        every slot between the two candidates; matched, it changes only the dropped slot. The
        estimator is the same: with the reference held fixed, slots are a function of the
        perturbed scores alone.

    Returns:
      (B, k, n) indicators in [0, 1]; each row sums to 1, each column to at most 1.
    """
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} must be a positive integer")
    if isinstance(sigma, (int, float)) and not sigma > 0:
        raise ValueError(f"sigma={sigma!r} must be a positive noise scale")
    scores = tf.convert_to_tensor(scores)
    num = scores.shape[1]
    if num is not None and k > num:
        raise ValueError(f"k={k} exceeds the {num} scores to select from")
    depth = num if num is not None else tf.shape(scores)[1]
    if reference is not None:
        reference = tf.convert_to_tensor(reference)
        if reference.shape.rank != 2 or reference.shape[1] not in (None, k):
            raise ValueError(f"reference of shape {reference.shape} must be (batch, k={k}) "
                             "indices of a selection")
    if noise is None:
        noise = tf.random.normal(
            tf.stack([tf.shape(scores)[0], num_samples, tf.shape(scores)[1]]), dtype=scores.dtype
        )
    noise = tf.cast(noise, scores.dtype)
    sigma = tf.convert_to_tensor(sigma, dtype_hint=scores.dtype)  # a float64 Python float stays float64
    sigma = tf.reshape(tf.cast(sigma, scores.dtype), [-1, 1])  # () or (B,) -> (1 or B, 1)

    @tf.custom_gradient
    def select(scores):
        samples = _hard_top_k_indicators(scores[:, None, :] + sigma[:, :, None] * noise, k, depth,
                                         reference)

        def gradient(upstream):
            # Each sample's weight is the first-order loss of its selection: the same estimator
            # as the score-function gradient of sampled losses.
            weight = tf.einsum("bkn,bskn->bs", upstream, samples)
            return score_function_gradient(weight, noise, sigma,
                                           leave_one_out=control_variate and num_samples > 1)

        return tf.reduce_mean(samples, axis=1), gradient

    return select(scores)


def _normal_cdf(x):
    return 0.5 * tf.math.erfc(-x / math.sqrt(2.0))


def gaussian_top_k_marginals(scores, k, sigma, iterations=60):
    """Each score's probability of being among the top k once Gaussian noise perturbs the
    scores, in the threshold approximation, with a noise-free gradient (beyond Cordonnier et
    al.: the perturbed top-k's inclusion probabilities without sampling).

      m_i = Phi((scores_i - tau) / sigma),   tau such that sum_i m_i = k,

    Phi the standard normal CDF. It treats the k-th largest perturbed score as a fixed
    threshold tau, which it nearly is when n is large; the exact inclusion probabilities
    E[sum_j topk(scores + sigma Z)_j] (what `perturbed_top_k_indicators` estimates by
    sampling) also sum to k. tau is found by bisection (no gradient flows through the
    iterations); the gradient is the implicit function's,

      d tau / d scores_j = phi_j / sum_l phi_l,   phi_j = Phi'((scores_j - tau) / sigma),
      d m_i / d scores_j = phi_i / sigma * (delta_ij - phi_j / sum_l phi_l),

    exact and deterministic, so the variance that limits the sampled estimator is gone.
    `sigma` is a constant here (no gradient).

    Args:
      scores: (B, n) float.
      k: 1 <= k <= n.
      sigma: noise scale > 0 in the unit of `scores`: a float, or a tensor of shape () or (B,).
      iterations: bisection steps; each halves the bracket, which starts n-independent at
        (max - min of the row) + 20 sigma wide.

    Returns:
      (B, n) probabilities in [0, 1]; each row sums to k (to the bisection's precision).
    """
    if isinstance(sigma, (int, float)) and not sigma > 0:
        raise ValueError(f"sigma={sigma!r} must be a positive noise scale")
    scores = tf.convert_to_tensor(scores)
    num = scores.shape[1]
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or (num is not None and k > num):
        raise ValueError(f"k={k!r} must be an integer in [1, {num}] (the scores to select from)")
    sigma = tf.convert_to_tensor(sigma, dtype_hint=scores.dtype)  # a Python float stays exact
    sigma = tf.stop_gradient(tf.reshape(tf.cast(sigma, scores.dtype), [-1, 1]))
    fixed = tf.stop_gradient(scores)
    target = tf.cast(k, scores.dtype)

    def selected(tau):
        return tf.reduce_sum(_normal_cdf((fixed - tau) / sigma), axis=1, keepdims=True)

    def bisect(step, low, high):
        middle = 0.5 * (low + high)
        too_many = selected(middle) > target  # the threshold must rise
        return step + 1, tf.where(too_many, middle, low), tf.where(too_many, high, middle)

    low = tf.reduce_min(fixed, axis=1, keepdims=True) - 10.0 * sigma  # selects ~n >= k
    high = tf.reduce_max(fixed, axis=1, keepdims=True) + 10.0 * sigma  # selects ~0 <= k
    _, low, high = tf.while_loop(lambda step, *_: step < iterations, bisect,
                                 (tf.constant(0), low, high))
    tau = 0.5 * (low + high)
    density = tf.exp(-0.5 * tf.square((fixed - tau) / sigma))  # Phi' up to a constant factor
    share = density / tf.maximum(tf.reduce_sum(density, axis=1, keepdims=True),
                                 tf.cast(1e-30, scores.dtype))
    # Same value as tau; its gradient is the implicit function's d tau / d scores.
    tau = tau + tf.reduce_sum(share * (scores - fixed), axis=1, keepdims=True)
    return _normal_cdf((scores - tau) / sigma)


def score_function_gradient(losses, noise, sigma, leave_one_out=True):
    """Zeroth-order gradient of a perturbed selection's expected loss, from sampled losses.

    For any selection rule topN(.) and loss L, the perturbed loss E_Z[L(topN(r + sigma Z))],
    Z ~ N(0, I), is smooth in the scores r, and (score-function identity, Berthet et al. 2020,
    Prop. 3.1 with F = L o topN)

      d/dr E_Z[L(topN(r + sigma Z))] = E_Z[L(topN(r + sigma Z)) Z] / sigma,

    estimated over S draws with the leave-one-out baseline b_s = mean_{t != s} L_t, which does
    not depend on Z_s and so keeps the estimate unbiased:

      g = 1/(S sigma) sum_s (L_s - b_s) Z_s.

    Unlike the perturbed-optimiser Jacobian it needs no gradient of L: the losses of the sampled
    selections themselves rate them, swaps that a linearisation misses included.

    `perturbed_top_k_indicators`' backward pass is this estimator with the first-order loss
    of each sample in place of L_s.

    Args:
      losses: (B, S) loss of each sampled selection, S >= 2 (S >= 1 without the baseline).
      noise: (B, S, n) the standard normal draws Z that made them.
      sigma: noise scale > 0 in the unit of the scores: a float, or a tensor of shape (), (B,)
        or (B, 1).
      leave_one_out: subtract the baseline b_s (False: the plain estimator, b_s = 0).

    Returns:
      (B, n) gradient estimate (no gradient flows through it).
    """
    losses = tf.stop_gradient(tf.convert_to_tensor(losses))
    noise = tf.stop_gradient(tf.cast(noise, losses.dtype))
    samples = losses.shape[1]
    fewest = 2 if leave_one_out else 1
    if losses.shape.rank != 2 or noise.shape.rank != 3 or samples is None or samples < fewest:
        raise ValueError(f"losses of shape {losses.shape} and noise of shape {noise.shape} must "
                         f"be (batch, S) and (batch, S, n) with S >= {fewest} samples")
    if noise.shape[1] not in (None, samples):
        raise ValueError(f"noise has {noise.shape[1]} samples per image, losses {samples}")
    if isinstance(sigma, (int, float)) and not sigma > 0:
        raise ValueError(f"sigma={sigma!r} must be a positive noise scale")
    sigma = tf.convert_to_tensor(sigma, dtype_hint=losses.dtype)  # a Python float stays exact
    sigma = tf.stop_gradient(tf.reshape(tf.cast(sigma, losses.dtype), [-1, 1]))
    if leave_one_out:
        total = tf.reduce_sum(losses, axis=1, keepdims=True)
        losses = losses - (total - losses) / (samples - 1)
    return tf.einsum("bs,bsn->bn", losses, noise) / (samples * sigma)
