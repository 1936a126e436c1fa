"""Keypoint anchoring: the trainer's step against a hand-written one, its metrics, bad input."""
import numpy as np
import pytest

import keypoint_gnn as kg
from keypoint_gnn import keypoint_targets as kt
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.anchoring import OffsetAnchoredTrainer

TINY = dict(image_size=16, channels=3, num_classes=3, backbone_filters=(8,), detector_filters=(4,),
            num_keypoints=6, grid_cell_size=2, grid_points_per_cell=2, graph_units=8,
            graph_layers=2, head_filters=(8,), dropout=0.0, detector="grid")


def _data(rng, config, batch=4):
    images = rng.uniform(size=(batch, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 3, size=batch)
    rows = 16 // (config.grid_cell_size * config.feature_stride)
    shape = (batch, rows, rows, config.grid_points_per_cell)
    targets = np.concatenate([rng.uniform(size=shape + (2,)), np.ones(shape + (1,))], -1)
    return images, labels, targets.astype("float32")


def _sgd(model):
    model.compile(keras.optimizers.SGD(0.5),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])


@pytest.mark.parametrize("changes, heatmaps, confidence", [
    (dict(offset_mode="sigmoid"), False, False),
    (dict(offset_mode="dsnt", dsnt_resolution=3, dsnt_straight_through=True), True, False),
    (dict(offset_mode="sigmoid"), False, True),
])
def test_step_minimises_task_loss_plus_weighted_anchor_loss(rng, changes, heatmaps, confidence):
    config = kg.ModelConfig(**TINY, **changes)
    images, labels, targets = _data(rng, config)
    keras.utils.set_random_seed(0)
    reference = kg.build_classifier(config)
    model = kg.build_classifier(config)
    model.set_weights(reference.get_weights())

    # By hand: one SGD step on CE + 3 * offset loss of the same detector cells.
    backbone, detector = reference.get_layer("detector_backbone"), reference.get_layer("detector")
    with tf.GradientTape() as tape:
        logits = reference(images, training=True)
        cells = detector(backbone(images, training=True),
                         return_cells="heatmaps" if heatmaps else True)
        task = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
        anchor = (kt.pretraining_loss if confidence else kt.offset_loss)(targets, cells)
        loss = task + 3.0 * anchor
    gradients = tape.gradient(loss, reference.trainable_variables)
    expected = [v.numpy() - 0.5 * (0 if g is None else g.numpy())
                for v, g in zip(reference.trainable_variables, gradients)]

    trainer = OffsetAnchoredTrainer(model, 3.0, heatmaps=heatmaps, anchor_confidence=confidence)
    _sgd(trainer)
    history = trainer.fit(images, (labels, targets), batch_size=4, epochs=1, shuffle=False,
                          verbose=0)
    for variable, value in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-4, atol=1e-5)
    assert set(history.history) == {"loss", "accuracy", "anchor_loss"}
    # The anchor term matters to that step: it has a gradient on the regressor's convolution.
    with tf.GradientTape() as tape:
        cells = detector(backbone(images, training=True),
                         return_cells="heatmaps" if heatmaps else True)
        anchor = kt.offset_loss(targets, cells)
    assert np.abs(tape.gradient(anchor, detector.cell_conv.kernel).numpy()).sum() > 0

def test_anchor_pulls_offsets_to_their_targets(rng):
    config = kg.ModelConfig(**TINY)
    images, labels, targets = _data(rng, config)
    model = kg.build_classifier(config)
    detector, backbone = model.get_layer("detector"), model.get_layer("detector_backbone")

    def anchor_loss():
        return float(kt.offset_loss(targets, detector(backbone(images), return_cells=True)))

    before = anchor_loss()
    trainer = OffsetAnchoredTrainer(model, 10.0)
    trainer.compile(keras.optimizers.Adam(1e-2),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    history = trainer.fit(images, (labels, targets), validation_data=(images, (labels, targets)),
                          batch_size=4, epochs=30, verbose=0)
    assert anchor_loss() < 0.5 * before
    assert {"val_accuracy", "val_anchor_loss"} <= set(history.history)
    # Plain (images, labels) data still evaluates: no anchor term, no anchor metric update.
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert np.isfinite(trainer.evaluate(images, labels, verbose=0)[0])


def test_bad_anchoring_is_refused():
    with pytest.raises(ValueError, match="anchor_weight=0 must be > 0"):
        OffsetAnchoredTrainer(kg.build_classifier(kg.ModelConfig(**TINY)), 0)
    with pytest.raises(ValueError, match="needs the grid regressor, got the MaxPoolNMS detector"):
        OffsetAnchoredTrainer(kg.build_classifier(kg.ModelConfig(**{**TINY, "detector": "maxpool_nms"})), 1.0)
    with pytest.raises(ValueError, match="heat-map anchoring needs offset_mode 'softmax' or 'dsnt'"):
        OffsetAnchoredTrainer(kg.build_classifier(kg.ModelConfig(**TINY)), 1.0, heatmaps=True)
