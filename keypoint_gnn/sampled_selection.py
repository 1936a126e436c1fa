"""Selection gradient from sampled losses: the detector learns which candidates to select from
what perturbed selections really cost (beyond the paper).

The perturbed top-k's gradients (`PerturbedTopK`) all rate a change of the selection to first
order, through the loss's gradient at the hard selection. `keypoint_gnn.swap_values` measured
those ratings against real swaps: at initialisation the feature blend's rating is uncorrelated
with them, and in runs that stay near chance the swap the rating ranks best is worth about an
average swap, while the best swap would lower the loss by 0.12-0.25 per slot (docs/RESULTS.md).

This trainer rates selections by their real loss instead. For each training image it draws S
perturbed selections of the detector's candidates, topN(r + sigma_b Z_s) (r: the candidates'
raw scores, sigma_b = sigma * std_b(r), as in `PerturbedTopK`), evaluates the classifier's
cross-entropy L_s with each (the CNN->graph interconnect, GNN, graph->CNN interconnect and head
in inference mode, the feature map held fixed), and adds to the task loss a term whose gradient
on r is the score-function estimate of d/dr E_Z[L(topN(r + sigma_b Z))]
(`ops.score_function_gradient`, leave-one-out baseline):

  loss = task loss + weight * mean_b < stop_gradient(g_b), r_b - stop_gradient(r_b) >

(the added term is 0 in value, so the logged loss is the task loss).

The task loss is the plain classifier's: the forward pass, the keypoints and the inference
model are those of the detector it wraps (attention top-N, max-pool NMS or the perturbed top-k);
only the detector's score convolution gets the extra gradient. The cost is S passes of the
graph and the head per image and step, with no backward pass through them.

Save, evaluate and export `trainer.classifier`: it holds every trained weight.
"""
import math

from keypoint_gnn import ops, swap_values
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.keypoints import score_noise_scale


def check_sampled_selection(num_samples, sigma, weight, names=("num_samples", "sigma", "weight")):
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 2:
        raise ValueError(f"{names[0]}={num_samples!r} must be an integer >= 2 (the leave-one-out "
                         "baseline needs two sampled selections)")
    for name, value in zip(names[1:], (sigma, weight)):
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or not value > 0):
            raise ValueError(f"{name}={value!r} must be a finite number > 0")


class SampledSelectionTrainer(keras.Model):
    """Trains `classifier` with the selection gradient from sampled losses added; metrics and
    checkpoints are the classifier's ("loss", "accuracy", "val_...") plus "sampled_loss", the
    mean cross-entropy of the sampled selections.

    Arguments:
      classifier: a keypoint-GNN classifier (`build_classifier(config)`).
      config: its ModelConfig; the detector must choose N of n candidate locations
        ("attention", "maxpool_nms" or "perturbed_topk" with a hard forward pass).
      num_samples: S >= 2 perturbed selections per image and step.
      sigma: noise scale > 0, relative to each image's spread of the candidates' raw scores.
      weight: weight > 0 of the selection term.
    """

    def __init__(self, classifier, config, num_samples=8, sigma=0.5, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        swap_values.check_swap_config(config)
        check_sampled_selection(num_samples, sigma, weight)
        self.classifier = classifier
        self.config = config
        self.num_samples = num_samples
        self.sigma = float(sigma)
        self.weight = float(weight)
        self.pool_size = 1 if config.detector == "attention" else config.nms_pool_size
        self.detector = classifier.get_layer("detector")
        # One graph, three outputs: the CNNs run once per step for both terms.
        detector_features = self.detector.get_input_at(0)
        features = classifier.get_layer("feature_extractor").get_output_at(0)
        self.joint = keras.Model(classifier.inputs,
                                 [classifier.output, detector_features, features],
                                 name="sampled_selection")
        self.sampled_tracker = keras.metrics.Mean(name="sampled_loss")

    def get_config(self):
        return {"num_samples": self.num_samples, "sigma": self.sigma, "weight": self.weight}

    def call(self, images, training=None):
        return self.classifier(images, training=training)

    def candidates(self, detector_features):
        """Raw candidate scores (B, n) (differentiable) and their positions (B, n, 2)."""
        raw_map = tf.cast(self.detector.score_conv(detector_features), tf.float32)
        return ops.window_candidates(raw_map, self.pool_size)

    def noise_scale(self, raw):
        return score_noise_scale(raw, self.sigma, axis=1)

    def sampled_losses(self, features, raw, positions, labels, noise, scale):
        """Cross-entropy (B, S) of each image's perturbed selections topN(raw + scale * noise),
        with the candidates' real (unperturbed) scores, in inference mode."""
        batch = tf.shape(raw)[0]
        samples = noise.shape[1]
        perturbed = raw[:, None, :] + scale[:, None, None] * noise
        index = tf.math.top_k(perturbed, k=self.config.num_keypoints).indices  # (B, S, N)
        chosen = tf.reshape(tf.gather(positions, index, batch_dims=1),
                            [batch * samples, self.config.num_keypoints, 2])
        scores = tf.reshape(tf.gather(self.detector.activate(raw), index, batch_dims=1),
                            [batch * samples, self.config.num_keypoints])
        repeated = tf.repeat(features, samples, axis=0)
        nodes, adjacency = swap_values.graph_inputs(self.classifier, repeated, chosen, scores)
        logits = swap_values.head_logits(self.classifier, self.config, nodes, adjacency, chosen,
                                         repeated if self.config.head_skip else None)
        labels = tf.repeat(tf.reshape(labels, [-1]), samples)
        losses = keras.losses.sparse_categorical_crossentropy(labels, tf.cast(logits, tf.float32),
                                                              from_logits=True)
        return tf.reshape(losses, [batch, samples])

    def selection_term(self, features, detector_features, labels, noise=None):
        """The added term (its gradient reaches the score convolution) and the sampled losses
        (B, S). `noise`: optional (B, S, n) standard normal draws (for deterministic tests)."""
        raw, positions = self.candidates(detector_features)
        if noise is None:
            noise = tf.random.normal([tf.shape(raw)[0], self.num_samples, raw.shape[1]])
        scale = self.noise_scale(raw)
        losses = self.sampled_losses(tf.stop_gradient(features), tf.stop_gradient(raw),
                                     positions, labels, noise, scale)
        gradient = ops.score_function_gradient(losses, noise, scale)
        # Value 0 (the logged loss stays the task loss), gradient `gradient` on raw.
        term = tf.reduce_mean(tf.reduce_sum(gradient * (raw - tf.stop_gradient(raw)), axis=1))
        return term, losses

    def train_step(self, data):
        images, labels = data[0], data[1]
        with tf.GradientTape() as tape:
            logits, detector_features, features = self.joint(images, training=True)
            loss = self.compiled_loss(labels, logits, regularization_losses=self.joint.losses)
            term, losses = self.selection_term(features, detector_features, labels)
            # Keras sums the replicas' gradients; the compiled loss is already divided by their
            # count.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss = loss + self.weight * term / replicas
        self.optimizer.minimize(loss, self.joint.trainable_variables, tape=tape)
        self.sampled_tracker.update_state(losses)
        return self._update_metrics(labels, logits)

    def test_step(self, data):
        images, labels = data[0], data[1]
        logits = self.classifier(images, training=False)
        self.compiled_loss(labels, logits, regularization_losses=self.classifier.losses)
        # No sampling here: validation reports the classifier's metrics only.
        return self._update_metrics(labels, logits, sampled=False)

    def _update_metrics(self, labels, logits, sampled=True):
        self.compiled_metrics.update_state(labels, logits)
        return {metric.name: metric.result() for metric in self.metrics
                if sampled or metric is not self.sampled_tracker}

    @property
    def metrics(self):
        return super().metrics + [self.sampled_tracker]


__all__ = ["SampledSelectionTrainer", "check_sampled_selection"]
