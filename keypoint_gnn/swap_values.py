"""Swap values: does the feature blend's gradient predict what swapping a keypoint does?

`PerturbedTopK(selection="features")` trains the detector with Cordonnier et al.'s gradient,
which rates an unselected candidate j for slot k by a first-order (linearised) loss change:

    linear_kj = < dL/dX_k , v_j F(c_j) - s_k F(p_k) >

(X_k: node k's features, s_k F(p_k) its scaled features now, v_j F(c_j) the candidate's; the
position features, the edges and where the node is written back are held fixed). A fuller
first-order rating also moves the keypoint, from p_k to c_j:

    full_kj = linear_kj + < dL/dp_k , c_j - p_k > + < dL/dG(c_j) - dL/dG(p_k) , Y_k >

(dL/dp_k: through the position features and the edges; G: the graph->CNN map, Y_k node k's
graph output, written at c_j instead of p_k): the rating `selection="keypoints"` trains with.
This module measures, for a trained classifier
and labelled images, each rating against what the swap really does to the image's
cross-entropy:

- `features`: L with node k's features replaced by the candidate's, positions unchanged: the
  change the linearisation approximates, so linear vs features is its linearisation error;
- `swap`: L with keypoint k moved to candidate j (features, position features, edges and the
  graph->CNN write-back all follow), what a real change of the selection does.

Works for the detectors that choose N of n candidate locations (attention: every location;
max-pool NMS and the perturbed top-k: each window's maximum), whatever their training estimator:
the values describe the trained model's loss landscape over selections, not the estimator.
"""
import numpy as np

from keypoint_gnn import ops
from keypoint_gnn._backend import keras, tf

SWAP_DETECTORS = ("attention", "maxpool_nms", "perturbed_topk")


def check_swap_config(config):
    if config.detector not in SWAP_DETECTORS:
        raise ValueError(
            f"swap values need a detector that selects N of n candidate locations, one of "
            f"{SWAP_DETECTORS}; detector={config.detector!r} places its keypoints by regression")
    if config.sampling != "gather":
        raise ValueError(f"swap values need gathered keypoints; sampling={config.sampling!r} "
                         "(perturbed_selection='slots' and subpixel_refinement place keypoints "
                         "between cells)")


def candidates(model, config, images):
    """Each image's candidate locations and the detector's choice, as the model sees them at
    inference: feature map (B, h, w, C), candidate positions (B, n, 2), activated candidate
    scores (B, n), and the hard top-N candidate indices (B, N), highest score first."""
    check_swap_config(config)
    features = model.get_layer("feature_extractor")(images, training=False)
    detector = model.get_layer("detector")
    raw = tf.cast(detector.score_conv(model.get_layer("detector_backbone")(images, training=False)),
                  tf.float32)
    pool = 1 if config.detector == "attention" else config.nms_pool_size
    raw_candidates, positions = ops.window_candidates(raw, pool)
    index = tf.math.top_k(raw_candidates, k=config.num_keypoints).indices
    return features, positions, detector.activate(raw_candidates), index


def graph_inputs(model, features, positions, scores):
    """The CNN->graph interconnect's nodes (B, N, C') and adjacency for given keypoints."""
    return model.get_layer("cnn_to_graph")([features, positions, scores])


def graph_outputs(model, config, nodes, adjacency):
    """The GNN's output nodes (the input nodes for gnn="none"), in inference mode."""
    if config.gnn == "none":
        return nodes
    return model.get_layer("gnn")([nodes, adjacency], training=False)


def head_logits(model, config, nodes, adjacency, positions, features):
    """Logits from the graph onwards (GNN, graph->CNN, head), in inference mode."""
    grid = model.get_layer("graph_to_cnn")([graph_outputs(model, config, nodes, adjacency),
                                             positions])
    return grid_logits(model, config, grid, features)


def grid_logits(model, config, grid, features):
    """Logits from the graph->CNN map (the head), in inference mode."""
    if config.head_skip:
        grid = model.get_layer("head_skip")([grid, features])
    x = grid
    for i in range(len(config.head_filters)):
        x = model.get_layer(f"head_conv{i}")(x)
    return model.get_layer("logits")(model.get_layer("head_flatten")(x))


def _cross_entropy(labels, logits):
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def swap_pairs(num_candidates, selected):
    """Every (slot k, candidate j) with j not selected: (M, 2) int array, slot-major."""
    unselected = np.setdiff1d(np.arange(num_candidates), selected)
    slots = np.repeat(np.arange(len(selected)), len(unselected))
    return np.stack([slots, np.tile(unselected, len(selected))], axis=1)


def swapped(values, pairs, replacements):
    """values (N, ...) tiled once per pair, with row pairs[m, 0] of copy m set to
    replacements[m]: (M, N, ...)."""
    out = np.repeat(values[None], len(pairs), axis=0)
    out[np.arange(len(pairs)), pairs[:, 0]] = replacements
    return out


def _chunked(function, arrays, chunk):
    return np.concatenate([function(*[a[i:i + chunk] for a in arrays])
                           for i in range(0, len(arrays[0]), chunk)])


def image_swap_values(model, config, features, candidate_positions, candidate_scores, selected,
                      label, step=1.0, chunk=512):
    """Swap values of one image (arrays without the batch axis; `selected`: the N chosen
    candidate indices in slot order). Returns a dict of (M,) arrays over `swap_pairs`: `linear`,
    `features` and `swap` (loss changes, see the module docstring), and the base loss.
    `step` < 1 moves node k's features only that fraction of the way to the candidate's in
    `features` (for checking `linear` against finite differences); `swap` is always whole."""
    positions = candidate_positions[selected]
    scores = candidate_scores[selected]
    features_b = features[None]
    label_b = np.array([label])
    positions_t = tf.constant(positions[None])
    with tf.GradientTape() as tape:
        tape.watch(positions_t)
        nodes_t, adjacency_t = graph_inputs(model, features_b, positions_t, scores[None])
        outputs = graph_outputs(model, config, nodes_t, adjacency_t)
        grid = model.get_layer("graph_to_cnn")([outputs, positions_t])
        base = _cross_entropy(label_b, grid_logits(model, config, grid, features_b))
    gradient, position_gradient, grid_gradient = (
        g.numpy()[0] for g in tape.gradient(base, [nodes_t, positions_t, grid]))
    nodes, adjacency = nodes_t.numpy()[0], adjacency_t.numpy()[0]
    outputs = outputs.numpy()[0]
    base = float(base.numpy()[0])

    pairs = swap_pairs(len(candidate_positions), selected)
    slots, picks = pairs[:, 0], pairs[:, 1]
    channels = features.shape[-1]
    # Node feature part (scaled features); the position features (if any) follow it.
    candidate_features = ops.gather_features(features_b, candidate_positions[None]).numpy()[0]
    candidate_nodes = candidate_features * candidate_scores[:, None]
    change = candidate_nodes[picks] - nodes[slots, :channels]
    linear = np.einsum("mc,mc->m", gradient[slots, :channels], change)
    moved = candidate_positions[picks] - positions[slots]
    to_cell = _cell_gradients(grid_gradient, candidate_positions[picks])
    from_cell = _cell_gradients(grid_gradient, positions[slots])
    full = (linear + np.einsum("mc,mc->m", position_gradient[slots], moved)
            + np.einsum("mc,mc->m", to_cell - from_cell, outputs[slots]))

    def loss_of(node_batch, adjacency_batch, position_batch):
        count = len(node_batch)
        logits = head_logits(model, config, tf.constant(node_batch), tf.constant(adjacency_batch),
                             tf.constant(position_batch),
                             tf.repeat(features_b, count, axis=0) if config.head_skip else None)
        return _cross_entropy(np.repeat(label_b, count), logits).numpy() - base

    moved_nodes = nodes[slots].copy()
    moved_nodes[:, :channels] += step * change
    feature_loss = _chunked(loss_of, [swapped(nodes, pairs, moved_nodes),
                                      np.repeat(adjacency[None], len(pairs), axis=0),
                                      np.repeat(positions[None], len(pairs), axis=0)], chunk)

    def full_swap(position_batch, score_batch):
        count = len(position_batch)
        node_batch, adjacency_batch = graph_inputs(
            model, tf.repeat(features_b, count, axis=0), tf.constant(position_batch),
            tf.constant(score_batch))
        return loss_of(node_batch.numpy(), adjacency_batch.numpy(), position_batch)

    swap_loss = _chunked(full_swap, [swapped(positions, pairs, candidate_positions[picks]),
                                     swapped(scores, pairs, candidate_scores[picks])], chunk)
    return {"pairs": pairs, "linear": linear, "full": full, "features": feature_loss,
            "swap": swap_loss, "base_loss": base}


def _cell_gradients(grid_gradient, positions):
    """(h, w, C) map gradient at (M, 2) integer-valued positions -> (M, C)."""
    cells = np.rint(positions).astype(int)
    return grid_gradient[cells[:, 0], cells[:, 1]]


def swap_values(model, config, images, labels, chunk=512):
    """`image_swap_values` for every image: a list of dicts."""
    features, positions, scores, index = (t.numpy() for t in candidates(model, config, images))
    return [image_swap_values(model, config, features[b], positions[b], scores[b], index[b],
                              int(labels[b]), chunk=chunk) for b in range(len(images))]


def _pearson(a, b):
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _ranks(values):
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def summarize(per_image):
    """Agreement of the linearised values with the real loss changes, over every image's swaps:

    - pearson / spearman per image, averaged: linear vs features, linear vs swap, full vs
      swap, features vs swap (how much moving the keypoint adds to changing its features);
    - sign_agreement (_full): share of swaps where linear (full) and swap agree on better or
      worse;
    - improving_share: share of swaps that really lower the loss;
    - best_linear_swap / best_full_swap / mean_swap / best_swap: per slot, the real loss change
      of the swap that linear (full) rates best, of an average swap, and of the really best
      swap (means).
    """
    report = {}
    for name, (a, b) in {"linear_vs_features": ("linear", "features"),
                         "linear_vs_swap": ("linear", "swap"),
                         "full_vs_swap": ("full", "swap"),
                         "features_vs_swap": ("features", "swap")}.items():
        report[f"pearson_{name}"] = float(np.nanmean(
            [_pearson(v[a], v[b]) for v in per_image]))
        report[f"spearman_{name}"] = float(np.nanmean(
            [_pearson(_ranks(v[a]), _ranks(v[b])) for v in per_image]))
    linear = np.concatenate([v["linear"] for v in per_image])
    swap = np.concatenate([v["swap"] for v in per_image])
    full = np.concatenate([v["full"] for v in per_image])
    report["sign_agreement"] = float(np.mean(np.sign(linear) == np.sign(swap)))
    report["sign_agreement_full"] = float(np.mean(np.sign(full) == np.sign(swap)))
    report["improving_share"] = float(np.mean(swap < 0))
    chosen, chosen_full, best, mean = [], [], [], []
    for values in per_image:
        for slot in np.unique(values["pairs"][:, 0]):
            rows = values["pairs"][:, 0] == slot
            chosen.append(values["swap"][rows][np.argmin(values["linear"][rows])])
            chosen_full.append(values["swap"][rows][np.argmin(values["full"][rows])])
            best.append(values["swap"][rows].min())
            mean.append(values["swap"][rows].mean())
    report.update(best_linear_swap=float(np.mean(chosen)),
                  best_full_swap=float(np.mean(chosen_full)), mean_swap=float(np.mean(mean)),
                  best_swap=float(np.mean(best)),
                  base_loss=float(np.mean([v["base_loss"] for v in per_image])),
                  images=len(per_image), swaps=len(swap))
    return report
