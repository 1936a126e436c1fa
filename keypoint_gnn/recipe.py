"""The training recipe from a `TrainConfig`, built from tf_keras parts.

    optimizer(train, steps_per_epoch)  Adam or AdamW (no decay on biases and batch-norm
                                       scales/offsets), a constant or warm-up + cosine rate,
                                       optional weight EMA (`use_ema`)
    classification_loss(train)         cross-entropy of logits, label smoothing, integer or
                                       one-hot (mixed) labels
    SwapEMAWeights                     callback: validation inside `fit` sees the EMA weights
    KeepRawWeights                     callback: the raw weights of the last epoch (`fit` ends
                                       by overwriting the weights with their EMA)

Nothing here loops over batches: `model.fit` trains, these are its arguments.
"""
import math

import numpy as np

from keypoint_gnn._backend import keras, tf

# Variables AdamW does not decay: biases, batch-norm offsets (beta) and scales (gamma).
NO_DECAY_NAMES = (r"/bias:", r"/beta:", r"/gamma:")


def learning_rate(train, steps_per_epoch):
    """The rate schedule: the constant `train.learning_rate`, or a linear warm-up from 0 over
    `train.warmup_epochs` then a cosine decay to 0 at the end of `train.epochs`.

    Args:
      train: `TrainConfig`.
      steps_per_epoch: optimizer steps per epoch, >= 1.

    Returns:
      a float or a `keras.optimizers.schedules.CosineDecay`.
    """
    if train.schedule == "constant":
        return train.learning_rate
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch={steps_per_epoch} must be >= 1")
    total = train.epochs * steps_per_epoch
    warmup = round(train.warmup_epochs * steps_per_epoch)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(train.learning_rate, total)
    return keras.optimizers.schedules.CosineDecay(
        0.0, total - warmup, warmup_target=train.learning_rate, warmup_steps=warmup)


def optimizer(train, steps_per_epoch):
    """Adam or AdamW for `train` (a `TrainConfig`), with its schedule and EMA.

    AdamW decays every trainable variable except those whose names match `NO_DECAY_NAMES`.
    With `train.ema`, the optimizer keeps an exponential moving average of the trainable
    weights (decay `train.ema_momentum` per step), and `fit` ends by copying it into the model.
    """
    rate = learning_rate(train, steps_per_epoch)
    ema = {"use_ema": train.ema, "ema_momentum": train.ema_momentum}
    if train.optimizer == "adam":
        return keras.optimizers.Adam(rate, **ema)
    result = keras.optimizers.AdamW(rate, weight_decay=train.weight_decay, **ema)
    result.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return result


def steps_per_epoch(num_examples, batch_size):
    """Steps of one pass over `num_examples` in batches of `batch_size` (the last one short)."""
    return max(1, math.ceil(num_examples / batch_size))


def epoch_steps(train, num_examples):
    """Optimisation steps an epoch of `train` (TrainConfig) runs: `train.steps_per_epoch`, or
    one pass over the `num_examples` training examples."""
    return train.steps_per_epoch or steps_per_epoch(num_examples, train.batch_size)


def epoch_data(train, dataset):
    """The training split as `fit` should read it: repeated when epochs are sized by steps
    (`fit(..., steps_per_epoch=train.steps_per_epoch)` then cuts it), else as it is."""
    return dataset.repeat() if train.steps_per_epoch else dataset


def images_per_epoch(train, num_examples):
    """Training images an epoch of `train` reads (for images/s)."""
    if train.steps_per_epoch:
        return train.steps_per_epoch * train.batch_size
    return num_examples


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class ClassificationCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against integer labels (B,) or label weights (B, K) (mixup,
    cutmix), with label smoothing: the target is (1 - eps) * y + eps / K.

    Integer and one-hot labels give the same loss, so the train split may carry mixed
    one-hot labels while validation and test keep integers.
    """

    def __init__(self, label_smoothing=0.0, name="classification_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing!r} must be in [0, 1)")
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        targets = label_weights(y_true, tf.shape(y_pred)[-1])
        if self.label_smoothing:
            classes = tf.cast(tf.shape(y_pred)[-1], tf.float32)
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / classes
        return tf.nn.softmax_cross_entropy_with_logits(targets, y_pred)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def label_weights(y_true, num_classes):
    """Integer labels (B,) or (B, 1) -> one-hot float32 (B, K); (B, K) weights pass through."""
    y_true = tf.convert_to_tensor(y_true)
    if y_true.shape.rank == 2 and y_true.shape[-1] != 1:
        return tf.cast(y_true, tf.float32)
    return tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), num_classes)


def _accuracy(y_true, y_pred):
    """Top-1 accuracy against integer labels or the largest label weight."""
    labels = tf.argmax(label_weights(y_true, tf.shape(y_pred)[-1]), axis=-1)
    return tf.cast(tf.equal(labels, tf.argmax(y_pred, axis=-1)), tf.float32)


def classification_loss(train, mixed_labels=False):
    """`compile` arguments (loss and metrics) for logits.

    Plain integer labels without smoothing keep Keras's own SparseCategoricalCrossentropy and
    "accuracy"; label smoothing or mixed (one-hot) train labels use
    `ClassificationCrossentropy` and an accuracy that reads both label forms.
    """
    if not train.label_smoothing and not mixed_labels:
        return {"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                "metrics": ["accuracy"]}
    return {"loss": ClassificationCrossentropy(train.label_smoothing),
            "metrics": [keras.metrics.MeanMetricWrapper(_accuracy, name="accuracy")]}


def ema_averages(optimizer_, variables):
    """The optimizer's moving averages of `variables` (built, `use_ema=True`), in order; a
    mixed-precision LossScaleOptimizer's are its inner optimizer's."""
    optimizer_ = getattr(optimizer_, "inner_optimizer", optimizer_)
    if not getattr(optimizer_, "use_ema", False):
        raise ValueError("the optimizer keeps no EMA (use_ema=False)")
    averages = optimizer_._model_variables_moving_average  # tf_keras has no public accessor
    return [averages[optimizer_._index_dict[optimizer_._var_key(v)]] for v in variables]


class SwapEMAWeights(keras.callbacks.Callback):
    """During `fit`, each validation pass runs on the EMA weights, then the raw weights
    return for training. (`fit` itself only copies the EMA in at the very end.)"""

    def __init__(self):
        super().__init__()
        self._raw = None

    def on_test_begin(self, logs=None):
        inner = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        if not getattr(inner, "_built", False):  # no step yet: no EMA
            return
        variables = self.model.trainable_variables
        self._raw = [v.numpy() for v in variables]
        for variable, average in zip(variables, ema_averages(self.model.optimizer, variables)):
            variable.assign(average)

    def on_test_end(self, logs=None):
        if self._raw is None:
            return
        for variable, value in zip(self.model.trainable_variables, self._raw):
            variable.assign(value)
        self._raw = None


class KeepRawWeights(keras.callbacks.Callback):
    """Keeps the trainable weights at the end of the last epoch, before `fit` replaces them
    with their EMA: `raw_weights` (a list of arrays, `model.trainable_variables` order)."""

    def __init__(self):
        super().__init__()
        self.raw_weights = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.params.get("epochs"):
            self.raw_weights = [v.numpy() for v in self.model.trainable_variables]


class swapped_weights:
    """Context manager: `model`'s trainable weights set to `values` inside, restored after."""

    def __init__(self, model, values):
        self.model, self.values, self._saved = model, values, None

    def __enter__(self):
        variables = self.model.trainable_variables
        self._saved = [v.numpy() for v in variables]
        for variable, value in zip(variables, self.values):
            variable.assign(value)
        return self.model

    def __exit__(self, *exc):
        for variable, value in zip(self.model.trainable_variables, self._saved):
            variable.assign(value)


def flip_tta_probabilities(model, images):
    """Test-time augmentation: the mean of the class probabilities of the images and of their
    horizontal mirror images. images (B, H, W, C) -> (B, K) float32."""
    images = tf.convert_to_tensor(images)
    plain = tf.nn.softmax(tf.cast(model(images, training=False), tf.float32))
    mirrored = tf.nn.softmax(tf.cast(model(tf.reverse(images, axis=[2]), training=False),
                                     tf.float32))
    return (plain + mirrored) / 2.0


def accuracy(model, dataset, flip_tta=False):
    """Top-1 accuracy of `model` on a dataset of (images, integer labels) batches, with or
    without flip test-time augmentation."""
    correct = total = 0
    predict = tf.function(
        (lambda x: flip_tta_probabilities(model, x)) if flip_tta
        else (lambda x: model(x, training=False)), reduce_retracing=True)
    for images, labels in dataset:
        predictions = np.argmax(predict(images).numpy(), axis=-1)
        labels = np.asarray(labels).reshape(-1)
        correct += int(np.sum(predictions == labels))
        total += labels.size
    return correct / max(total, 1)
