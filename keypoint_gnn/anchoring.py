"""Keypoint anchoring: the grid regressor's pre-training loss kept on during task training.

The task loss alone moves the regressor's offsets wherever it likes; on the built-in set it
piles them up at one corner of the cells, a different corner per seed (docs/RESULTS.md). The
anchor adds the offset term of the SIFT/ORB pre-training loss (`keypoint_targets.offset_loss`)
to the task loss, so that every cell keeps placing its keypoints where SIFT would, while the
confidences (which cells are selected) stay free for the task:

  loss = task loss + anchor_weight * offset_loss(targets, cells)

With `anchor_confidence=True` the whole pre-training loss is kept on (`pretraining_loss`: the
confidences' binary cross-entropy on SIFT's presence as well), so the selection is anchored too.

The data set yields (images, (labels, targets)), targets from `keypoint_targets.targets_dataset`
with `keep_labels=True`.
"""
from keypoint_gnn import keypoint_targets
from keypoint_gnn._backend import keras, tf


class OffsetAnchoredTrainer(keras.Model):
    """Trains `classifier` with the anchor term added; metrics and checkpoints are the
    classifier's ("accuracy", "val_accuracy") plus "anchor_loss".

    Save, evaluate and export `trainer.classifier`: it holds every trained weight.

    Arguments:
      classifier: a keypoint-GNN classifier with the grid regressor ("detector" layer fed by
        the "detector_backbone" model).
      anchor_weight: weight > 0 of the offset term.
      heatmaps: True to anchor the heat maps by cross-entropy on the target's bin (offset modes
        "softmax" / "dsnt"), False for the squared error of the offsets.
      offset_margin: the regressor's `offset_margin`.
      anchor_confidence: anchor the confidences too (the whole `pretraining_loss`).
    """

    def __init__(self, classifier, anchor_weight, heatmaps=False, offset_margin=0.0,
                 anchor_confidence=False, **kwargs):
        super().__init__(**kwargs)
        if not anchor_weight > 0:
            raise ValueError(f"anchor_weight={anchor_weight!r} must be > 0")
        detector = classifier.get_layer("detector")
        if not hasattr(detector, "offset_mode"):
            raise ValueError(f"offset anchoring needs the grid regressor, got the "
                             f"{type(detector).__name__} detector")
        if heatmaps and detector.heatmap_size is None:
            raise ValueError(f"heat-map anchoring needs offset_mode 'softmax' or 'dsnt', not "
                             f"{detector.offset_mode!r}")
        self.classifier = classifier
        self.anchor_weight = float(anchor_weight)
        self.offset_margin = offset_margin
        self.anchor_loss = (keypoint_targets.pretraining_loss if anchor_confidence
                            else keypoint_targets.offset_loss)
        # One graph, two outputs: the detector CNN runs once per step for both losses.
        detector_features = detector.get_input_at(0)  # its input inside the classifier's graph
        cells = detector(detector_features, return_cells="heatmaps" if heatmaps else True)
        self.joint = keras.Model(classifier.inputs, [classifier.output, cells], name="anchored")
        self.anchor_tracker = keras.metrics.Mean(name="anchor_loss")

    def call(self, images, training=None):
        return self.classifier(images, training=training)

    def _split(self, data):
        images, targets = data[0], data[1]
        if isinstance(targets, (tuple, list)):
            return images, targets[0], targets[1]
        return images, targets, None

    def train_step(self, data):
        images, labels, targets = self._split(data)
        with tf.GradientTape() as tape:
            logits, cells = self.joint(images, training=True)
            loss = self.compiled_loss(labels, logits, regularization_losses=self.joint.losses)
            anchor = None
            if targets is not None:
                anchor = self.anchor_loss(targets, cells, self.offset_margin)
                # Keras sums the replicas' gradients; the compiled loss is already divided by
                # their count.
                replicas = tf.distribute.get_strategy().num_replicas_in_sync
                loss = loss + self.anchor_weight * anchor / replicas
        self.optimizer.minimize(loss, self.joint.trainable_variables, tape=tape)
        return self._update_metrics(labels, logits, anchor)

    def test_step(self, data):
        images, labels, targets = self._split(data)
        logits, cells = self.joint(images, training=False)
        self.compiled_loss(labels, logits, regularization_losses=self.joint.losses)
        anchor = None if targets is None else self.anchor_loss(targets, cells, self.offset_margin)
        return self._update_metrics(labels, logits, anchor)

    def _update_metrics(self, labels, logits, anchor):
        self.compiled_metrics.update_state(labels, logits)
        if anchor is not None:
            self.anchor_tracker.update_state(anchor)
        return {metric.name: metric.result() for metric in self.metrics}

    @property
    def metrics(self):
        return super().metrics + [self.anchor_tracker]


__all__ = ["OffsetAnchoredTrainer"]
