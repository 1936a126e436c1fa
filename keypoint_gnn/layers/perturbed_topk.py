"""Differentiable top-N keypoints by perturbed optimisers (beyond the paper)."""
import warnings

from keypoint_gnn import ops, rules
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.layers.detector import ScoreMapDetector

_MIN_SCORE_SPREAD = 1e-3


def score_noise_scale(raw, sigma, axis):
    """Per-image noise scale sigma * std(raw) over `axis` (floored, not differentiated): a
    noise level that means the same for linear and sigmoid scores and as the scores grow."""
    spread = tf.maximum(tf.math.reduce_std(raw, axis=axis), _MIN_SCORE_SPREAD)
    return sigma * tf.stop_gradient(spread)


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class PerturbedTopK(ScoreMapDetector):
    """Top-N made differentiable by perturbed optimisers, after max-pool NMS (beyond the paper).

    Hard top-N passes no gradient to which keypoints are chosen. Perturbed optimisers (Berthet
    et al. 2020) make it differentiable, as Cordonnier et al. (CVPR 2021, §3) do for patch
    selection. The candidates are the maxima of the p x p windows of the raw score map
    (p = 1: every location), with raw scores r at positions c. In training, with the per-image
    noise scale sigma_b = sigma * std_b(r) (not differentiated):

        Y = 1/S sum_s topN(r + sigma_b Z_s)     (B, N, n) sorted one-hot slots, Z_s ~ N(0, I)

    and its gradient is the perturbed-optimiser estimator with a leave-one-out control variate
    (`ops.perturbed_top_k_indicators`). Two formulations use it:

    - `selection="slots"` (Cordonnier et al.): positions = Y . c (fractional; build the
      interconnects with bilinear sampling), scores = Y . act(r).
    - `selection="marginal"`: the forward pass is the hard selection, as at inference, and the
      gradient comes from each candidate's probability of being selected, m = sum_k Y_k:
      scores = act(r)[topN(r)] * (1 + m - stop_gradient(m))[topN(r)].

    `estimator="threshold"` (marginal only) replaces the sampled m by its noise-free threshold
    approximation m_i = Phi((r_i - tau) / sigma_b) with sum_i m_i = N
    (`ops.gaussian_top_k_marginals`). At inference the selection is hard: max-pool NMS (p > 1)
    or attention top-N (p = 1). With N equal to the number of windows every window is selected
    whatever the scores and the detector trains as max-pool NMS (a warning says so).

    Args:
      num_keypoints: N <= (h/p)(w/p).
      score_activation: `"linear"` or `"sigmoid"`.
      num_samples: S, noise draws per image and step (memory grows as B*S*N*n; unused by the
        threshold estimator).
      sigma: noise scale relative to each image's spread of raw candidate scores; 0.05 follows
        Cordonnier et al.
      pool_size: p, NMS window side in feature-map pixels; 1 selects among all locations.
      selection: `"slots"` or `"marginal"`.
      estimator: `"sampled"` or `"threshold"`.
      refinement: `"none"`, `"window"` or `"centre"` (marginal selection, p > 1).

    Input shape:
      Feature map `(B, h, w, C)`.

    Output shape:
      `[positions (B, N, 2), scores (B, N), score_map (B, h, w, 1)]`.

    Example:

    >>> detector = PerturbedTopK(num_keypoints=8, num_samples=10, pool_size=2)
    >>> positions, scores, _ = detector(tf.random.normal([2, 8, 8, 4]), training=True)
    >>> positions.shape, scores.shape
    (TensorShape([2, 8, 2]), TensorShape([2, 8]))
    """

    def __init__(self, num_keypoints, score_activation="linear", num_samples=20, sigma=0.05,
                 pool_size=1, selection="slots", estimator="sampled", refinement="none",
                 **kwargs):
        super().__init__(num_keypoints, score_activation, pool_size=pool_size,
                         refinement=refinement, **kwargs)
        rules.check_perturbed(num_samples, sigma, selection, estimator, refinement)
        self.num_samples = num_samples
        self.sigma = float(sigma)
        self.selection = selection
        self.estimator = estimator

    @classmethod
    def section_kwargs(cls, detector_config):
        return {"num_samples": detector_config.perturbed_samples,
                    "sigma": detector_config.perturbed_sigma,
                    "pool_size": detector_config.pool_size,
                    "selection": detector_config.perturbed_selection,
                    "estimator": detector_config.perturbed_estimator,
                    "refinement": detector_config.refinement}

    def build(self, input_shape):
        super().build(input_shape)
        height, width = int(input_shape[1]), int(input_shape[2])
        windows = (height // self.pool_size) * (width // self.pool_size)
        if self.num_keypoints == windows:
            warnings.warn(
                f"PerturbedTopK: num_keypoints={self.num_keypoints} equals the {windows} windows "
                f"of {self.pool_size}x{self.pool_size} on the {height}x{width} map, so every "
                "window is selected whatever the scores: the perturbed gradient is zero and the "
                "detector trains exactly as max-pool NMS; use fewer keypoints or a smaller "
                "pool_size for a selection to learn", stacklevel=2)

    def select(self, raw_score_map):
        if self.pool_size == 1:
            return ops.top_k_positions(raw_score_map, self.num_keypoints)
        return ops.max_pool_nms(raw_score_map, self.pool_size, self.num_keypoints)

    def perturbed_select(self, raw_score_map, noise=None):
        """Training-mode selection: (B, h, w, 1) raw scores -> positions (B, N, 2), activated
        scores (B, N). `noise`: optional (B, S, n) standard normal draws (for tests)."""
        raw, candidates = ops.window_candidates(raw_score_map, self.pool_size)
        scale = score_noise_scale(raw, self.sigma, axis=1)
        if self.estimator == "threshold":
            marginals = ops.gaussian_top_k_marginals(raw, self.num_keypoints, scale)
        else:
            indicators = ops.perturbed_top_k_indicators(
                raw, self.num_keypoints, self.num_samples, scale, noise=noise,
                control_variate=True)
            if self.selection == "slots":
                positions = tf.einsum("bkn,bnc->bkc", indicators, candidates)
                return positions, tf.einsum("bkn,bn->bk", indicators, self.activate(raw))
            marginals = tf.reduce_sum(indicators, axis=1)
        top_raw, index = tf.math.top_k(raw, k=self.num_keypoints)
        chosen = tf.gather(marginals, index, batch_dims=1)
        positions = tf.gather(candidates, index, batch_dims=1)
        return positions, self.activate(top_raw) * (1.0 + chosen - tf.stop_gradient(chosen))

    def call(self, feature_map, training=None):
        raw = self.raw_score_map(feature_map)
        if training is None:
            training = keras.backend.learning_phase()

        def hard():
            positions, raw_scores = self.select(raw)
            return positions, self.activate(raw_scores)

        if isinstance(training, (bool, int)):
            positions, scores = self.perturbed_select(raw) if training else hard()
        else:
            positions, scores = tf.cond(tf.cast(training, tf.bool),
                                        lambda: self.perturbed_select(raw), hard)
        return self.place(raw, positions), scores, self.activate(raw)

    def get_config(self):
        config = super().get_config()
        config.update(num_samples=self.num_samples, sigma=self.sigma, selection=self.selection,
                      estimator=self.estimator)
        return config
