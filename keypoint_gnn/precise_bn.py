"""Precise batch-norm statistics: recompute the moving averages with the final weights.

Batch normalisation normalises with each batch's statistics in training and with moving
averages of them at inference. The moving averages mix statistics of weights from the last
few dozen steps (momentum 0.9: about 10), so when the weights upstream of a BN layer still move
fast at the end of training, inference normalises with statistics of a network that no longer
exists and the test accuracy can collapse while the training accuracy does not. Wu & Johnson
("Rethinking 'Batch' in BatchNorm", 2021, "precise BN") replace the moving averages by
population statistics computed with the final weights; this is that step.

With the final weights, the model runs in training mode over `num_batches` batches; each BN
layer's moving mean and variance become the plain average of those batches' means and
variances (the moving-average momentum is set to (i - 1) / i for the i-th batch, which turns
Keras's exponential update into a cumulative mean, and restored afterwards). Weights other
than the BN statistics do not change. Training mode also draws the perturbed top-k's noise and
the head's dropout; in this project's models every BN layer sits in the two CNNs, upstream of
both, so they do not change what the BN layers see.
"""
from keypoint_gnn._backend import keras
from keypoint_gnn.rules import check_positive_int


def batch_norm_layers(model):
    """Every `BatchNormalization` layer of `model`, nested models included."""
    return [layer for layer in model.submodules
            if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate_batch_norm(model, dataset, num_batches):
    """Sets every BN layer's moving statistics to the average over `num_batches` batches.

    Args:
      model: a Keras model with at least one `BatchNormalization` layer; its weights are final.
      dataset: iterable of batches, each `x` or `(x, ...)`, `x` what `model` takes.
      num_batches: positive int, batches to average (fewer if `dataset` ends first).

    Returns:
      The number of batches used.

    Raises:
      ValueError: `num_batches` is not a positive integer, the model has no BN layer, or the
        dataset yields no batch (the moving statistics are then left as they were).
    """
    check_positive_int("num_batches", num_batches)
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no BatchNormalization layer to recalibrate")
    momenta = [layer.momentum for layer in layers]
    used = 0
    try:
        for batch in dataset:
            if used == num_batches:
                break
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in layers:
                layer.momentum = used / (used + 1)  # 0 first: the first batch replaces the old
            model(images, training=True)
            used += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if used == 0:
        raise ValueError("the dataset yielded no batch: batch-norm statistics left unchanged")
    return used
