"""Keypoint detector layers (paper §4).

Each detector takes the detector CNN's feature map `(B, h, w, C)` and returns three tensors:

- `positions` `(B, N, 2)`: keypoints as (y, x) in feature-map pixels, float32;
- `scores` `(B, N)`: the activated keypoint scores (linear or sigmoid), which the CNN->graph
  interconnect multiplies into the node features so that the task loss reaches the detector;
- `score_map` `(B, h, w, 1)`: the activated score map, for conf-MSE and for drawing.

`PerturbedTopK(selection="features")` returns a fourth tensor, `node_weights`
`(B, N, h*w)`: each node's weights over the map's locations, which the CNN->graph
interconnect then uses in place of gathering at `positions` and scaling by `scores`.
`selection="keypoints"` returns a fifth as well, `location_weights` `(B, N, h*w)`: where the
graph->CNN interconnect writes each node back.
"""
import math
import warnings

from keypoint_gnn import ops
from keypoint_gnn._checks import (check_bool, check_choice, check_non_negative_number,
                                  check_positive_int)
from keypoint_gnn._backend import keras, tf

SCORE_ACTIVATIONS = ("linear", "sigmoid")
OFFSET_MODES = ("sigmoid", "softmax", "dsnt")
# Heat-map side of the "dsnt" offsets when none is given: at least 4 x 4 bins per cell.
MIN_DSNT_RESOLUTION = 4
# Floor of the per-image score spread that scales PerturbedTopK's noise.
_MIN_SCORE_SPREAD = 1e-3
PERTURBED_SELECTIONS = ("slots", "marginal", "features", "keypoints")
# The selections whose training forward pass is the hard one and whose gradient is that of a
# blend of the candidates (extra detector outputs: node weights, then location weights).
BLEND_SELECTIONS = ("features", "keypoints")
SUBPIXEL_REFINEMENTS = ("none", "neighbourhood", "window", "centre")
"""Where a selected keypoint may move: nowhere (its cell), to the soft-argmax of the 3x3 cells
around it, to the soft-argmax of the NMS window holding it, or to that window's centre."""
WINDOWED_REFINEMENTS = ("window", "centre")  # need NMS windows (`pool_size` > 1)
PERTURBED_ESTIMATORS = ("sampled", "threshold")


def check_dsnt_resolution(value):
    """None (max(cell_size, 4)) or an integer >= 2; raises ValueError naming the value."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 2):
        raise ValueError(
            f"dsnt_resolution={value!r} must be None (max(cell_size, {MIN_DSNT_RESOLUTION})) or an "
            "integer >= 2 (heat-map bins per cell side)"
        )


def _check_offset_mode_only(name, value, active, offset_mode, required_mode):
    """Raises ValueError when an option that applies to `required_mode` only is `active` under
    another offset mode."""
    if active and offset_mode != required_mode:
        raise ValueError(f"{name}={value!r} applies to offset_mode={required_mode!r} only, not "
                         f"offset_mode={offset_mode!r}")


def check_dsnt_options(spread, weight, straight_through, offset_mode):
    """Checks the DSNT spread penalty's target (bins) and weight (finite numbers >= 0) and
    `dsnt_straight_through` (a bool); weight > 0 and straight-through apply to
    offset_mode="dsnt" only."""
    check_non_negative_number("dsnt_spread", spread)
    check_non_negative_number("dsnt_spread_weight", weight)
    check_bool("dsnt_straight_through", straight_through)
    _check_offset_mode_only("dsnt_spread_weight", weight, weight > 0, offset_mode, "dsnt")
    _check_offset_mode_only("dsnt_straight_through", straight_through, straight_through,
                            offset_mode, "dsnt")


def check_standardize_offsets(value, offset_mode):
    """`standardize_offsets`: a bool, True only with offset_mode="sigmoid"."""
    check_bool("standardize_offsets", value)
    _check_offset_mode_only("standardize_offsets", value, value, offset_mode, "sigmoid")


def check_offset_uniformity_weight(value):
    """`offset_uniformity_weight`: a finite number >= 0 (0: no penalty)."""
    check_non_negative_number("offset_uniformity_weight", value)


def check_offset_margin(value):
    """`offset_margin`: a finite number in [0, 1] (cells a keypoint may reach into its
    neighbours); raises ValueError naming the value."""
    check_non_negative_number("offset_margin", value)
    if value > 1:
        raise ValueError(f"offset_margin={value!r} must be in [0, 1] (cell units: how far a "
                         "cell's keypoints may reach into the neighbouring cells)")


def check_pool_windows(num_keypoints, pool_size, height, width, pool_name="pool_size",
                       map_name="feature map"):
    """Checks that p x p windows tile an (height, width) map and hold N keypoints, one each.

    `pool_name` and `map_name` are how the caller calls the pool size and the map.
    """
    if height % pool_size or width % pool_size:
        divisors = [d for d in range(1, min(height, width) + 1) if height % d == 0 and width % d == 0]
        raise ValueError(
            f"{pool_name}={pool_size} does not divide the {height}x{width} {map_name}; "
            f"valid: {', '.join(map(str, divisors))}"
        )
    windows = (height // pool_size) * (width // pool_size)
    if num_keypoints > windows:
        raise ValueError(
            f"num_keypoints={num_keypoints} exceeds the {windows} pooling windows of "
            f"{pool_size}x{pool_size} on the {height}x{width} {map_name}; use num_keypoints <= "
            f"{windows} or a smaller {pool_name}"
        )


def check_perturbed_estimator(estimator, selection, names=("estimator", "selection")):
    """`estimator` is one of PERTURBED_ESTIMATORS; "threshold" gives inclusion probabilities,
    so it needs selection="marginal"."""
    check_choice(names[0], estimator, PERTURBED_ESTIMATORS)
    if estimator == "threshold" and selection != "marginal":
        raise ValueError(
            f"{names[0]}='threshold' needs {names[1]}='marginal', not {names[1]}={selection!r}: "
            "it gives each candidate's probability of being selected, not sampled slots; use "
            f"{names[0]}='sampled' with {selection!r}"
        )


def check_perturbation(num_samples, sigma, names=("num_samples", "sigma")):
    """Checks PerturbedTopK's options; `names` are how the caller calls them."""
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"{names[0]}={num_samples!r} must be a positive integer (noise draws)")
    if (not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not math.isfinite(sigma)
            or sigma <= 0):
        raise ValueError(f"{names[1]}={sigma!r} must be a finite noise scale > 0")


def score_noise_scale(raw, sigma, axis):
    """Per-image noise scale sigma * std(raw) over `axis` (floored, not differentiated): a
    noise level that means the same for linear and sigmoid scores and as the scores grow."""
    spread = tf.maximum(tf.math.reduce_std(raw, axis=axis), _MIN_SCORE_SPREAD)
    return sigma * tf.stop_gradient(spread)


class KeypointDetector(keras.layers.Layer):
    """Base class: score activation, input checks and config for the detectors.

    Arguments:
      num_keypoints: N, keypoints per image.
      score_activation: `"linear"` or `"sigmoid"` (the paper's ablation, §4.1 and Table 1).
    """

    def __init__(self, num_keypoints, score_activation="linear", **kwargs):
        super().__init__(**kwargs)
        check_positive_int("num_keypoints", num_keypoints)
        check_choice("score_activation", score_activation, SCORE_ACTIVATIONS)
        self.num_keypoints = num_keypoints
        self.score_activation = score_activation

    def activate(self, raw_scores):
        if self.score_activation == "sigmoid":
            return tf.sigmoid(raw_scores)
        return raw_scores

    def _check_input_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 4:
            raise ValueError(
                f"{type(self).__name__} expects a feature map (B, h, w, C), got shape {input_shape}"
            )
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_keypoints=self.num_keypoints, score_activation=self.score_activation)
        return config


class _ScoreMapDetector(KeypointDetector):
    """A 1x1 convolution scores every location of the feature map.

    `selection_noise` (beyond the paper; attention top-N and max-pool NMS) explores in
    training: the selection is made on the raw scores plus Gaussian noise of scale
    selection_noise * std_b(raw) (each image's spread of raw scores over the map, not
    differentiated), and the selected keypoints keep their real scores. So a location that
    scores low at the start of training is still selected now and then, and the head learns
    what it holds. At inference (training=False) the selection is the plain one.

    `subpixel_refinement` (beyond the paper; also the perturbed top-k's marginal selection)
    moves each selected keypoint, in training and at inference, from its cell to the
    soft-argmax of the raw scores in the 3x3 cells around it (`"neighbourhood"`,
    `ops.refine_positions`) or in the NMS window holding it (`"window"`, max-pool NMS and
    windowed perturbed top-k, `ops.refine_in_windows`: flat scores put the keypoint at the
    window's centre, with the window's mean feature). Positions become fractional, to be
    sampled and splatted bilinearly (ModelConfig does), and the task loss reaches where each
    keypoint lies. The selection and the scores are the cell's. `"centre"` (windowed detectors)
    puts each keypoint at its window's centre (`ops.window_centres`): a fixed lattice chosen
    by the selection, with the windows' mean features and no gradient to the positions.
    """

    windowed = False  # whether the detector selects within NMS windows (`pool_size`)

    def __init__(self, num_keypoints, score_activation="linear", selection_noise=0.0,
                 subpixel_refinement="none", **kwargs):
        super().__init__(num_keypoints, score_activation, **kwargs)
        check_non_negative_number("selection_noise", selection_noise)
        check_choice("subpixel_refinement", subpixel_refinement, SUBPIXEL_REFINEMENTS)
        if subpixel_refinement in WINDOWED_REFINEMENTS and not self.windowed:
            raise ValueError(f"subpixel_refinement={subpixel_refinement!r} needs NMS windows, "
                             f"which {type(self).__name__} does not have; use 'neighbourhood'")
        self.selection_noise = float(selection_noise)
        self.subpixel_refinement = subpixel_refinement

    def refine(self, raw_score_map, positions):
        """The selected cells -> the soft-argmax of the raw scores in the 3x3 cells around each
        (`ops.refine_positions`) or in the window holding each (`ops.refine_in_windows`), as
        `subpixel_refinement` says, or to the window's centre (`ops.window_centres`);
        "none": the positions as they are."""
        if self.subpixel_refinement == "neighbourhood":
            return ops.refine_positions(raw_score_map, positions)
        if self.subpixel_refinement == "window":
            return ops.refine_in_windows(raw_score_map, positions, self.pool_size)
        if self.subpixel_refinement == "centre":
            return ops.window_centres(raw_score_map, positions, self.pool_size)
        return positions

    def build(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        self._check_map_size(int(input_shape[1]), int(input_shape[2]))
        self.score_conv = keras.layers.Conv2D(1, 1, name="score", dtype=self.dtype_policy)
        self.score_conv.build(input_shape)
        super().build(input_shape)

    def _check_map_size(self, height, width):
        raise NotImplementedError

    def select(self, raw_score_map):
        raise NotImplementedError

    def noisy_select(self, raw_score_map, noise=None):
        """Training-mode selection with `selection_noise`: (B, h, w, 1) raw scores -> positions
        of the selection on the noisy scores, and the selected locations' real raw scores.
        `noise`: optional (B, h, w, 1) standard normal draws (for deterministic tests)."""
        if noise is None:
            noise = tf.random.normal(tf.shape(raw_score_map))
        scale = score_noise_scale(raw_score_map, self.selection_noise, axis=[1, 2, 3])
        noisy = raw_score_map + scale[:, None, None, None] * noise
        positions, _ = self.select(tf.stop_gradient(noisy))
        return positions, ops.gather_features(raw_score_map, positions)[..., 0]

    def call(self, feature_map, training=None):
        raw = tf.cast(self.score_conv(feature_map), tf.float32)
        if not self.selection_noise:
            positions, raw_scores = self.select(raw)
        else:
            if training is None:
                training = keras.backend.learning_phase()
            if isinstance(training, (bool, int)):
                positions, raw_scores = self.noisy_select(raw) if training else self.select(raw)
            else:
                positions, raw_scores = tf.cond(tf.cast(training, tf.bool),
                                                lambda: self.noisy_select(raw),
                                                lambda: self.select(raw))
        return self.refine(raw, positions), self.activate(raw_scores), self.activate(raw)

    def get_config(self):
        config = super().get_config()
        config.update(selection_noise=self.selection_noise,
                      subpixel_refinement=self.subpixel_refinement)
        return config


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class AttentionTopK(_ScoreMapDetector):
    """Attention keypoints: a score per location, then the top N (paper §4.1).

    s = act(conv1x1(F)),  P = argtop-N over the h*w locations of s.

    **Input**: feature map `(B, h, w, C)`.
    **Output**: `[positions (B, N, 2), scores (B, N), score_map (B, h, w, 1)]`; positions are
    integer-valued.

    Arguments:
      num_keypoints: N <= h * w.
      score_activation: `"linear"` or `"sigmoid"`.

    Example:
      >>> detector = AttentionTopK(num_keypoints=32)
      >>> positions, scores, score_map = detector(tf.zeros([2, 16, 16, 8]))
      >>> positions.shape, scores.shape
      (TensorShape([2, 32, 2]), TensorShape([2, 32]))
    """

    def _check_map_size(self, height, width):
        if self.num_keypoints > height * width:
            raise ValueError(
                f"num_keypoints={self.num_keypoints} exceeds the {height}x{width}="
                f"{height * width} locations of the feature map"
            )

    def select(self, raw_score_map):
        return ops.top_k_positions(raw_score_map, self.num_keypoints)


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class PerturbedTopK(AttentionTopK):
    """Attention top-N with a differentiable selection, optionally after max-pool NMS (beyond
    the paper).

    Hard top-N passes no gradient to where the keypoints are. Perturbed optimisers (Berthet et
    al. 2020) make it differentiable, as Cordonnier et al. (CVPR 2021, §3) do for patch
    selection. The candidates are the maxima of the non-overlapping p x p windows of the raw
    score map (p = `pool_size`; p = 1: every location), n = (h/p)(w/p) of them, with raw scores
    r (each window's maximum) at positions c (where it lies, in unpooled pixels; for p = 1 the
    pixel grid). In training, with per-image noise scale sigma_b = sigma * std_b(r) (the spread
    is not differentiated):

      Y = 1/S sum_s topN(r + sigma_b Z_s)                       (B, N, n), Z_s ~ N(0, I)
      positions = Y . c                                          (B, N, 2) fractional
      scores = Y . act(r)                                        (B, N)

    topN(.) holds one-hot rows of the selected candidates sorted by index, so slot j is "the
    j-th selected candidate from the top-left"; its gradient is the perturbed-optimiser
    estimator `ops.perturbed_top_k_indicators`. Positions are fractional in training: build the
    interconnects with `sampling="bilinear"` (ModelConfig does). At inference (training=False)
    the selection is hard: `AttentionTopK`'s for p = 1, `MaxPoolNMS`'s for p > 1 (integer
    positions, highest score first). The slot order differs between the two modes; the GNN and
    the graph->CNN scatter do not depend on it.

    `selection="marginal"` (beyond Cordonnier et al.) keeps the training forward pass equal to
    inference and uses the perturbed selection only for the gradient: with m = sum_j Y_j (B, n),
    each candidate's probability of being selected under the noise,

      positions = c[topN(r)]                       the hard selection, as at inference
      scores = act(r)[topN(r)] * (1 + m - stop_gradient(m))[topN(r)]

    so the forward values are the hard ones and d scores / d r gets the estimator's d m / d r
    (how much a change of r makes a candidate more or less likely to be picked). Sorted-slot
    averaging ("slots") blends the positions of different candidates whenever the samples
    disagree, a train/test mismatch that this mode does not have.

    `selection="features"` (Cordonnier et al.'s blend of the candidates' *features*, with the
    hard selection's forward pass) returns a fourth output, the nodes' weights over the map's
    locations, W (B, N, h*w), that the CNN->graph interconnect applies to the extractor's
    features (nodes = W F) in place of gathering at the positions:

      H = one_hot(topN(r))                        (B, N, n), the hard selection
      W = (H + Y - stop_gradient(Y)) * act(r)     per candidate, placed at its location c
      positions = H . c,  scores = H . act(r)     hard, integer-valued (build with "gather")

    The forward values are the hard selection's; the gradient is the blend's: dL/dY_kj =
    <dL/dX_k, act(r_j) F(c_j)>, how much the loss would gain if slot k held candidate j's
    features, which the estimator turns into d/dr. Unlike "marginal", candidates that are not
    selected get a gradient from their own features (a swap value), not only through the
    selected ones' probabilities. Y's slots are matched to H (`ops.perturbed_top_k_indicators`
    with `reference`): a sample that swaps one candidate for another changes only that slot,
    where Cordonnier et al.'s index-sorted slots would shift every slot in between and blend
    unrelated candidates. At inference W is one_hot(position) * score, which gives the
    gathered, scaled features exactly.

    `selection="keypoints"` blends the whole keypoint, not only its features: with
    U = H + Y - stop_gradient(Y) (B, N, n), positions = U . c (still the hard, integer
    positions in the forward pass, but now differentiable, through the position features and
    the edges), and a fifth output, U placed at the candidates' locations (B, N, h*w), with
    which the graph->CNN interconnect writes node k at every location (`ops.weighted_scatter`;
    one-hot at c_k in the forward pass). So dL/dU_kj also holds <dL/dp_k, c_j> and
    <dL/dG(c_j), Y_k>: what moving keypoint k to candidate j changes through its position and
    where its graph output lands, which the feature blend leaves out
    (`keypoint_gnn.swap_values` measures both ratings against real swaps).

    `estimator="threshold"` (marginal selection only) replaces the sampled m by the threshold
    approximation m_i = Phi((r_i - tau) / sigma_b), sum_i m_i = N
    (`ops.gaussian_top_k_marginals`): the same noise model and smoothing, a deterministic
    gradient (no noise draws; `num_samples` and `control_variate` are then unused).

    When N equals the number of windows every window is selected whatever the scores: the
    selection is fixed, m = 1, and the detector learns only through the scores' values, as
    max-pool NMS does (a warning says so at build time).

    Why windows: neighbouring locations score alike, so a top-N over all locations picks
    clusters of them (13.6% of keypoint pairs closer than 1.5 cells against max-pool NMS's
    4.2%, docs/RESULTS.md). With p > 1 each sampled selection holds at most one keypoint per
    window, and the model trains on the selection it will use at inference.

    **Input**: feature map `(B, h, w, C)`, h and w divisible by `pool_size`.
    **Output**: `[positions (B, N, 2), scores (B, N), score_map (B, h, w, 1)]`, then
    `node_weights (B, N, h*w)` with `selection="features"` or `"keypoints"`, and
    `location_weights (B, N, h*w)` with `"keypoints"`.

    Arguments:
      num_keypoints: N <= (h/p)(w/p).
      score_activation: `"linear"` or `"sigmoid"`.
      num_samples: S, noise draws per image and training step (memory grows as B*S*N*n).
      sigma: noise scale relative to each image's standard deviation of the candidates' raw
        scores (floored at 1e-3), so that it means the same for linear and sigmoid scores and
        as the scores grow in training. Small sigma: nearly hard selections, sparse and noisy
        gradients; large sigma: smooth, blurred positions. 0.05 follows Cordonnier et al.
      pool_size: p, NMS window side in feature-map pixels; 1 selects among all locations.
      control_variate: subtract a leave-one-out baseline in the gradient estimator (see
        `ops.perturbed_top_k_indicators`): same expected gradient, far less noise when sigma is
        small. False reproduces the plain estimator.
      selection: `"slots"` (Cordonnier et al.: averaged sorted slots, fractional positions
        in training), `"marginal"` (hard forward pass, perturbed gradient), `"features"`
        (hard forward pass, gradient of the blended candidate features; a fourth output) or
        `"keypoints"` (as "features", the positions and the write-back blended too; a fifth
        output); see above.
      estimator: `"sampled"` (the perturbed-optimiser estimator over `num_samples` draws) or
        `"threshold"` (marginal selection only: noise-free threshold approximation, see above).

    Example:
      >>> detector = PerturbedTopK(num_keypoints=8, num_samples=10, pool_size=2)
      >>> positions, scores, _ = detector(tf.zeros([2, 6, 6, 4]), training=True)
      >>> positions.shape
      TensorShape([2, 8, 2])
    """

    windowed = True  # pool_size > 1

    def __init__(self, num_keypoints, score_activation="linear", num_samples=20, sigma=0.05,
                 pool_size=1, control_variate=False, selection="slots", estimator="sampled",
                 **kwargs):
        super().__init__(num_keypoints, score_activation, **kwargs)
        if self.selection_noise:
            raise ValueError(f"selection_noise={self.selection_noise!r}: the perturbed top-k "
                             "has its own training selection (sigma); use 0")
        check_perturbation(num_samples, sigma)
        check_positive_int("pool_size", pool_size)
        if self.subpixel_refinement in WINDOWED_REFINEMENTS and pool_size == 1:
            raise ValueError(f"subpixel_refinement={self.subpixel_refinement!r} needs NMS "
                             "windows, pool_size > 1, not pool_size=1; use 'neighbourhood'")
        self.num_samples = num_samples
        self.sigma = float(sigma)
        self.pool_size = pool_size
        self.control_variate = bool(control_variate)
        check_choice("selection", selection, PERTURBED_SELECTIONS)
        check_perturbed_estimator(estimator, selection)
        if self.subpixel_refinement != "none" and selection != "marginal":
            raise ValueError(f"subpixel_refinement={self.subpixel_refinement!r} needs "
                             f"selection='marginal', not {selection!r}: the other selections "
                             "place the keypoints themselves (blended slots or candidate weights)")
        self.selection = selection
        self.estimator = estimator

    def _check_map_size(self, height, width):
        super()._check_map_size(height, width)
        check_pool_windows(self.num_keypoints, self.pool_size, height, width)
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
            return super().select(raw_score_map)
        return ops.max_pool_nms(raw_score_map, self.pool_size, self.num_keypoints)

    def perturbed_select(self, raw_score_map, noise=None):
        """Training-mode selection: (B, h, w, 1) raw scores -> positions (B, N, 2), scores (B, N)
        (and node weights (B, N, h*w) with selection="features", and location weights
        (B, N, h*w) with "keypoints").

        `noise`: optional (B, S, n) standard normal draws, n candidates (for deterministic tests).
        """
        # The candidates: each window's maximum and where it lies (p = 1: every location).
        raw, candidates = ops.window_candidates(raw_score_map, self.pool_size)
        windows = raw.shape[1]
        scale = score_noise_scale(raw, self.sigma, axis=1)
        if self.estimator == "threshold":
            marginals = ops.gaussian_top_k_marginals(raw, self.num_keypoints, scale)
        else:
            # Blends: slots matched to the hard selection, which the forward pass uses.
            hard_index = (tf.math.top_k(raw, k=self.num_keypoints).indices
                          if self.selection in BLEND_SELECTIONS else None)
            indicators = ops.perturbed_top_k_indicators(
                raw, self.num_keypoints, self.num_samples, scale, noise=noise,
                control_variate=self.control_variate, reference=hard_index,
            )
            marginals = tf.reduce_sum(indicators, axis=1) if self.selection == "marginal" else None
        if self.selection in BLEND_SELECTIONS:
            hard = tf.one_hot(hard_index, windows, dtype=indicators.dtype)
            blend = hard + indicators - tf.stop_gradient(indicators)  # forward: exactly hard
            values = self.activate(raw)
            height, width = raw_score_map.shape[1], raw_score_map.shape[2]
            node_weights = ops.location_weights(blend * values[:, None, :], candidates, height,
                                                width)
            scores = tf.gather(values, hard_index, batch_dims=1)
            if self.selection == "features":
                return tf.gather(candidates, hard_index, batch_dims=1), scores, node_weights
            positions = tf.einsum("bkn,bnc->bkc", tf.cast(blend, candidates.dtype), candidates)
            return (positions, scores, node_weights,
                    ops.location_weights(blend, candidates, height, width))
        if self.selection == "marginal":
            top_raw, index = tf.math.top_k(raw, k=self.num_keypoints)
            chosen = tf.gather(marginals, index, batch_dims=1)
            positions = tf.gather(candidates, index, batch_dims=1)
            return positions, self.activate(top_raw) * (1.0 + chosen - tf.stop_gradient(chosen))
        positions = tf.einsum("bkn,bnc->bkc", indicators, candidates)
        scores = tf.einsum("bkn,bn->bk", indicators, self.activate(raw))
        return positions, scores

    def call(self, feature_map, training=None):
        raw = tf.cast(self.score_conv(feature_map), tf.float32)
        if training is None:
            training = keras.backend.learning_phase()

        def hard():
            positions, raw_scores = self.select(raw)
            scores = self.activate(raw_scores)
            if self.selection not in BLEND_SELECTIONS:
                return positions, scores
            # Node k: its own keypoint, scaled by its score (and written back there).
            height, width = raw.shape[1], raw.shape[2]
            node_weights = ops.location_weights(tf.linalg.diag(scores), positions, height, width)
            if self.selection == "features":
                return positions, scores, node_weights
            one_hot = tf.eye(self.num_keypoints, batch_shape=tf.shape(scores)[:1],
                             dtype=scores.dtype)
            return (positions, scores, node_weights,
                    ops.location_weights(one_hot, positions, height, width))

        if isinstance(training, (bool, int)):
            selected = self.perturbed_select(raw) if training else hard()
        else:
            selected = tf.cond(tf.cast(training, tf.bool), lambda: self.perturbed_select(raw), hard)
        positions, scores, *blend = selected
        return (self.refine(raw, positions), scores, self.activate(raw), *blend)

    def get_config(self):
        config = super().get_config()
        config.update(num_samples=self.num_samples, sigma=self.sigma, pool_size=self.pool_size,
                      control_variate=self.control_variate, selection=self.selection,
                      estimator=self.estimator)
        return config


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class MaxPoolNMS(_ScoreMapDetector):
    """Large-maxpool non-max suppression (paper §4.3).

    Max-pools the score map with non-overlapping p x p windows, keeps where each maximum was
    in the unpooled map, then takes the top N windows: no two keypoints share a window, which
    spreads them over the image. The paper uses p = 8 or 16 image pixels.

    **Input**: feature map `(B, h, w, C)`, h and w divisible by `pool_size`.
    **Output**: `[positions (B, N, 2), scores (B, N), score_map (B, h, w, 1)]`; N <= (h/p)(w/p).

    Arguments:
      num_keypoints: N.
      pool_size: p, window side in feature-map pixels.
      score_activation: `"linear"` or `"sigmoid"`.
    """

    windowed = True

    def __init__(self, num_keypoints, pool_size=2, score_activation="linear", **kwargs):
        super().__init__(num_keypoints, score_activation, **kwargs)
        check_positive_int("pool_size", pool_size)
        self.pool_size = pool_size

    def _check_map_size(self, height, width):
        check_pool_windows(self.num_keypoints, self.pool_size, height, width)

    def select(self, raw_score_map):
        return ops.max_pool_nms(raw_score_map, self.pool_size, self.num_keypoints)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size)
        return config


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class GridCoordinateRegressor(KeypointDetector):
    """Grid coordinate regression (paper §4.2).

    The map is divided into L x M cells of m x m pixels; a convolution with kernel m and
    stride m predicts, for each cell, h keypoints as (y offset, x offset, confidence logit).
    Offsets lie in [0, 1] within the cell (in [-g, 1 + g] with `offset_margin` g); the top N
    keypoints by confidence are kept.
    Positions are fractional: the interconnects sample and splat them bilinearly, so the task
    loss reaches the predicted coordinates as well as the confidences.

    position = (cell index + offset) * m - 0.5   (feature-map pixels; pixel centres at integers)

    How each point slot's offsets and confidence come from the convolution (`offset_mode`):

    - `"sigmoid"` (the paper): 3 channels, offset = sigmoid(a), confidence logit c. Sigmoid
      offsets tend to saturate on the cell borders (the authors' open problem).
    - `"softmax"` (SuperPoint, DeTone et al. 2018, §3.2): m*m + 1 channels, one per pixel of the
      cell plus a "no keypoint" dustbin. offset = sum_ij softmax(bins)_ij ((i+0.5)/m, (j+0.5)/m),
      the soft-argmax over the m*m pixel bins (softmax renormalised without the dustbin), and
      confidence logit = log((1 - p_dustbin) / p_dustbin) = logsumexp(bins) - dustbin.
    - `"dsnt"` (Nibali et al. 2018, DSNT): s*s + 1 channels: an s x s heat map within the cell
      (s = `dsnt_resolution`, finer than the pixels when s > m) and a confidence logit;
      offset = sum_ij softmax(heat)_ij ((i+0.5)/s, (j+0.5)/s).

    The expectation modes keep offsets in [0.5/b, 1 - 0.5/b] (b bins per side) and pass
    gradients to every bin instead of saturating. Their weak spot is the opposite of the
    sigmoid's: a spread-out heat map puts its expectation near the cell centre, so offsets
    contract to the centres unless the maps stay peaked. `dsnt_spread_weight > 0` adds DSNT's
    variance regularisation (`ops.heatmap_spread_penalty`, via `add_loss`): weight * mean of
    (sd_y - dsnt_spread)^2 + (sd_x - dsnt_spread)^2 over every cell's heat map, sd in bins.
    `dsnt_straight_through=True` instead puts each keypoint at the centre of its map's highest
    bin and passes the soft-argmax's gradient back (straight-through), so that a map peaked
    near a border gives a border offset however spread out it is. Heat maps pre-trained by
    cross-entropy (`build_keypoint_pretrainer(config, heatmaps=True)`) peak where SIFT puts
    keypoints, and straight-through offsets start from those positions (on the built-in set
    they stayed spread in three of four seeds; docs/RESULTS.md).

    `standardize_offsets=True` (sigmoid offsets; beyond the paper)
    standardises each image's offset logits over its cells, per slot and axis, and scales them
    by pi/sqrt(3) before the sigmoid (`ops.standardize_over_cells`): every image's offsets then
    have a fixed spread over the cells (uniform on (0, 1) for logistic-shaped logits), so the
    regressor cannot give every cell the same offset. Without it, the sigmoid regressor's
    strongest collapse is a fixed, image-independent lattice of keypoints whose common in-cell
    position lies on a border. With it the offsets of all slots stay spread, but the
    confidences may still select the slots near (or far from) the borders (docs/RESULTS.md,
    "The collapsed regressor ignores the image").
    `offset_uniformity_weight` = w > 0 (any mode; beyond the paper) adds, via `add_loss`,
    w * the squared 2-Wasserstein distance between the selected keypoints' unit offsets
    (before `offset_margin` widens them), pooled over the batch, and the uniform distribution
    on [0, 1], averaged over the y and x axes (`ops.wasserstein_to_uniform`). It acts on the
    N keypoints the model uses, where the confidences may pick border (or centre) slots even
    when every slot's offsets are spread, and pulls their in-cell positions towards the spread
    the data's own keypoints would have if parts lie anywhere in a cell; it says nothing about
    which cell or slot is selected.
    `offset_margin` = g > 0 widens every mode's offsets from [0, 1] to [-g, 1 + g]
    (`ops.widen_offsets`; YOLOv4's grid-sensitivity fix, g = 0.5 in YOLOv5): a keypoint may
    reach g cells into the neighbouring cells, so a cell border is an ordinary point of the
    range instead of the place where a sigmoid saturates. Positions beyond the map's edge are
    clipped by the interconnects' sampling. On the built-in set the selected keypoints still
    went to the cell borders (the task loss draws them there; docs/RESULTS.md), but the widened
    sigmoid was the most accurate regressor.

    **Input**: feature map `(B, h, w, C)`, h and w divisible by `cell_size`.
    **Output**: `[positions (B, N, 2), scores (B, N), score_map (B, h, w, 1)]`, N <= L*M*h; the
    score map holds each cell's highest activated confidence. With `return_cells=True`: the
    cell predictions `(B, L, M, h, 3)` (y offset, x offset, confidence logit), in every mode;
    with `return_cells="heatmaps"` (expectation modes only) followed by the b*b heat-map
    logits, `(B, L, M, h, 3 + b*b)`, for pre-training the heat maps by cross-entropy.

    Arguments:
      num_keypoints: N.
      cell_size: m, in feature-map pixels (the paper's 8 or 16 image pixels divided by the
        feature extractor's stride).
      points_per_cell: h.
      score_activation: `"linear"` or `"sigmoid"`.
      offset_mode: `"sigmoid"`, `"softmax"` or `"dsnt"`.
      dsnt_resolution: s for `"dsnt"`; None means max(m, 4). Ignored by the other modes.
      dsnt_spread: target standard deviation of each `"dsnt"` heat map, in bins.
      dsnt_spread_weight: weight of the spread penalty; 0 (default) leaves it out.
      dsnt_straight_through: `"dsnt"` offsets at the centre of the highest bin in the forward
        pass, with the soft-argmax's gradient (`ops.argmax_offsets_straight_through`).
      offset_margin: g in [0, 1], cell units; offsets span [-g, 1 + g]. 0 (default) is the
        paper's [0, 1].
      standardize_offsets: `"sigmoid"` only: standardise each image's offset logits over its
        cells before the sigmoid (`ops.standardize_over_cells`).
      offset_uniformity_weight: weight of the selected offsets' distance to the uniform; 0
        (default) leaves it out.
    """

    # The XLA graph section (`keypoint_gnn.xla`) compiles `detect`, not `call`: a loss added
    # inside a compiled function could not be read by the training step outside it.
    xla_method = "detect"

    def __init__(
        self,
        num_keypoints,
        cell_size=4,
        points_per_cell=2,
        score_activation="linear",
        offset_mode="sigmoid",
        dsnt_resolution=None,
        dsnt_spread=0.5,
        dsnt_spread_weight=0.0,
        dsnt_straight_through=False,
        offset_margin=0.0,
        standardize_offsets=False,
        offset_uniformity_weight=0.0,
        **kwargs,
    ):
        super().__init__(num_keypoints, score_activation, **kwargs)
        check_positive_int("cell_size", cell_size)
        check_positive_int("points_per_cell", points_per_cell)
        check_choice("offset_mode", offset_mode, OFFSET_MODES)
        check_dsnt_resolution(dsnt_resolution)
        check_dsnt_options(dsnt_spread, dsnt_spread_weight, dsnt_straight_through, offset_mode)
        check_offset_margin(offset_margin)
        check_standardize_offsets(standardize_offsets, offset_mode)
        check_offset_uniformity_weight(offset_uniformity_weight)
        self.cell_size = cell_size
        self.points_per_cell = points_per_cell
        self.offset_mode = offset_mode
        self.dsnt_resolution = dsnt_resolution
        self.dsnt_spread = dsnt_spread
        self.dsnt_spread_weight = dsnt_spread_weight
        self.dsnt_straight_through = dsnt_straight_through
        self.offset_margin = offset_margin
        self.standardize_offsets = standardize_offsets
        self.offset_uniformity_weight = offset_uniformity_weight

    @property
    def heatmap_size(self):
        """Bins per cell side of the expectation modes; None for `"sigmoid"`."""
        if self.offset_mode == "softmax":
            return self.cell_size
        if self.offset_mode == "dsnt":
            return self.dsnt_resolution or max(self.cell_size, MIN_DSNT_RESOLUTION)
        return None

    @property
    def channels_per_point(self):
        """Convolution channels per point slot: 3, or heatmap_size^2 + 1."""
        size = self.heatmap_size
        return 3 if size is None else size * size + 1

    def build(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        height, width = int(input_shape[1]), int(input_shape[2])
        for name, size in (("height", height), ("width", width)):
            if size % self.cell_size:
                raise ValueError(
                    f"cell_size={self.cell_size} does not divide the feature map {name} {size}"
                )
        candidates = (height // self.cell_size) * (width // self.cell_size) * self.points_per_cell
        if self.num_keypoints > candidates:
            raise ValueError(
                f"num_keypoints={self.num_keypoints} exceeds the {candidates} candidate points "
                f"({height // self.cell_size}x{width // self.cell_size} cells x "
                f"{self.points_per_cell} points per cell)"
            )
        self.cell_conv = keras.layers.Conv2D(
            self.channels_per_point * self.points_per_cell,
            self.cell_size,
            strides=self.cell_size,
            name="cells",
            dtype=self.dtype_policy,
        )
        self.cell_conv.build(input_shape)
        super().build(input_shape)

    @property
    def spread_penalized(self):
        return self.dsnt_spread_weight > 0

    @property
    def penalized(self):
        """Whether `call` adds a loss: the DSNT spread penalty or the offset uniformity."""
        return self.spread_penalized or self.offset_uniformity_weight > 0

    def _raw_cells(self, feature_map):
        """(B, L, M, h, channels_per_point) convolution outputs, float32."""
        raw = tf.cast(self.cell_conv(feature_map), tf.float32)
        shape = tf.shape(raw)
        return tf.reshape(
            raw, [shape[0], shape[1], shape[2], self.points_per_cell, self.channels_per_point]
        )

    def _unit_offsets_and_logits(self, raw):
        """Offsets (B, L, M, h, 2) (y, x) in [0, 1], before `offset_margin` widens them, and
        confidence logits (B, L, M, h)."""
        if self.offset_mode == "sigmoid":
            offset_logits = raw[..., :2]
            if self.standardize_offsets:
                offset_logits = ops.standardize_over_cells(offset_logits)
            return tf.sigmoid(offset_logits), raw[..., 2]
        if self.dsnt_straight_through:
            offsets = ops.argmax_offsets_straight_through(raw[..., :-1], self.heatmap_size)
        else:
            offsets = ops.soft_argmax_offsets(raw[..., :-1], self.heatmap_size)
        if self.offset_mode == "softmax":
            return offsets, ops.presence_logit(raw)
        return offsets, raw[..., -1]

    def call(self, feature_map, return_cells=False):
        outputs, penalty = self.detect(feature_map, return_cells)
        if self.penalized:
            self.add_loss(penalty)
        return outputs

    def detect(self, feature_map, return_cells=False):
        """`call`'s outputs and the weighted penalty that `call` adds as a loss: the heat-map
        spread penalty and, on the keypoint path (not with `return_cells`), the selected
        offsets' uniformity penalty; 0 when not `penalized`."""
        raw = self._raw_cells(feature_map)
        unit_offsets, logits = self._unit_offsets_and_logits(raw)
        offsets = ops.widen_offsets(unit_offsets, self.offset_margin)
        penalty = (self.dsnt_spread_weight
                   * ops.heatmap_spread_penalty(raw[..., :-1], self.heatmap_size, self.dsnt_spread)
                   if self.spread_penalized else tf.zeros([]))
        if return_cells:
            # (B, L, M, h, 3): (y offset, x offset, confidence logit), for pre-training.
            cells = [offsets, logits[..., None]]
            if return_cells == "heatmaps":
                if self.heatmap_size is None:
                    raise ValueError(
                        f"return_cells='heatmaps' needs a heat map: offset_mode "
                        f"{self.offset_mode!r} has none (use 'softmax' or 'dsnt')"
                    )
                cells.append(raw[..., :-1])
            return tf.concat(cells, axis=-1), penalty
        rows, cols = offsets.shape[1], offsets.shape[2]
        candidates = ops.cell_offsets_to_positions(offsets, self.cell_size)
        flat_logits = tf.reshape(logits, [-1, rows * cols * self.points_per_cell])
        raw_scores, index = tf.math.top_k(flat_logits, k=self.num_keypoints)
        positions = tf.gather(candidates, index, batch_dims=1)
        if self.offset_uniformity_weight > 0:
            flat_offsets = tf.reshape(unit_offsets, [-1, rows * cols * self.points_per_cell, 2])
            selected = tf.reshape(tf.gather(flat_offsets, index, batch_dims=1), [-1, 2])
            penalty += self.offset_uniformity_weight * tf.reduce_mean(
                ops.wasserstein_to_uniform(selected))
        cell_best = tf.reduce_max(self.activate(logits), axis=-1, keepdims=True)
        score_map = tf.repeat(tf.repeat(cell_best, self.cell_size, axis=1), self.cell_size, axis=2)
        return (positions, self.activate(raw_scores), score_map), penalty

    def get_config(self):
        config = super().get_config()
        config.update(
            cell_size=self.cell_size,
            points_per_cell=self.points_per_cell,
            offset_mode=self.offset_mode,
            dsnt_resolution=self.dsnt_resolution,
            dsnt_spread=self.dsnt_spread,
            dsnt_spread_weight=self.dsnt_spread_weight,
            dsnt_straight_through=self.dsnt_straight_through,
            offset_margin=self.offset_margin,
            standardize_offsets=self.standardize_offsets,
            offset_uniformity_weight=self.offset_uniformity_weight,
        )
        return config


DETECTORS = {
    "attention": AttentionTopK,
    "perturbed_topk": PerturbedTopK,
    "maxpool_nms": MaxPoolNMS,
    "grid": GridCoordinateRegressor,
}
