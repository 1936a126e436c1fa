"""The training recipe (keypoint_gnn.recipe) against hand-worked and NumPy references."""
import math

import numpy as np
import pytest

from keypoint_gnn import recipe
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.run_config import TrainConfig


def _rate(schedule, step):
    return float(schedule(step)) if callable(schedule) else float(schedule)


def test_constant_schedule_is_the_rate():
    assert recipe.learning_rate(TrainConfig(learning_rate=0.01), 10) == 0.01


def test_warmup_then_cosine_follows_the_formula():
    train = TrainConfig(epochs=10, learning_rate=0.1, schedule="cosine", warmup_epochs=2)
    schedule = recipe.learning_rate(train, steps_per_epoch=10)
    warmup, total = 20, 100
    for step in (0, 5, 10, 19):
        assert _rate(schedule, step) == pytest.approx(0.1 * step / warmup, abs=1e-7)
    for step in (20, 40, 60, 80, 99):
        expected = 0.1 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        assert _rate(schedule, step) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert _rate(schedule, total) == pytest.approx(0.0, abs=1e-7)


def test_cosine_without_warmup_starts_at_the_peak():
    schedule = recipe.learning_rate(TrainConfig(epochs=4, learning_rate=0.2, schedule="cosine"), 5)
    assert _rate(schedule, 0) == pytest.approx(0.2)
    assert _rate(schedule, 10) == pytest.approx(0.1, rel=1e-5)


def _small_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="dense")(x))


def test_adamw_decays_kernels_but_not_biases_or_batch_norm():
    model = _small_model()
    train = TrainConfig(learning_rate=0.1, optimizer="adamw", weight_decay=0.5)
    optimizer = recipe.optimizer(train, steps_per_epoch=1)
    before = {v.name: v.numpy() for v in model.trainable_variables}
    # Zero gradients: Adam's step is 0, so only the decoupled decay moves a variable.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    for variable in model.trainable_variables:
        name = variable.name
        if any(part in name for part in ("bias", "gamma", "beta")):
            np.testing.assert_array_equal(variable.numpy(), before[name], err_msg=name)
        else:
            np.testing.assert_allclose(variable.numpy(), before[name] * (1 - 0.1 * 0.5),
                                       rtol=1e-6, err_msg=name)
    decayed = [v.name for v in model.trainable_variables if "kernel" in v.name]
    assert decayed == ["conv/kernel:0", "dense/kernel:0"]


def test_adam_has_no_weight_decay_and_the_config_refuses_one():
    assert isinstance(recipe.optimizer(TrainConfig(), 1), keras.optimizers.Adam)
    with pytest.raises(ValueError, match="weight_decay=0.1 needs optimizer='adamw'"):
        TrainConfig(weight_decay=0.1)


def test_ema_weights_are_evaluated_and_raw_ones_kept():
    """fit with EMA: the model ends with the NumPy EMA of the weights after each step, the
    validation of the last epoch ran on those EMA weights, and KeepRawWeights holds the raw
    weights of the last step."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    momentum = 0.8
    model.compile(optimizer=recipe.optimizer(
        TrainConfig(learning_rate=0.05, ema=True, ema_momentum=momentum), 1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 3)).astype(np.float32)
    y = rng.integers(0, 2, 32)
    initial = [v.numpy() for v in model.trainable_variables]
    steps = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append([v.numpy() for v in self.model.trainable_variables])

    raw = recipe.KeepRawWeights()
    history = model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=0,
                        shuffle=False, callbacks=[Record(), recipe.SwapEMAWeights(), raw])
    average = initial
    for weights in steps:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    for variable, expected in zip(model.trainable_variables, average):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
    for kept, last in zip(raw.raw_weights, steps[-1]):
        np.testing.assert_array_equal(kept, last)
    assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(x, y, verbose=0),
                                                            rel=1e-5)
    with recipe.swapped_weights(model, raw.raw_weights):
        raw_loss = model.evaluate(x, y, verbose=0)
    assert raw_loss != pytest.approx(history.history["val_loss"][-1], rel=1e-4)
    np.testing.assert_allclose(model.trainable_variables[0].numpy(), average[0], rtol=1e-5)


def _image_model():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((4, 5, 1))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_flip_tta_is_the_mean_of_both_flips_probabilities():
    model = _image_model()
    images = np.random.default_rng(3).random((6, 4, 5, 1)).astype(np.float32)
    expected = (_softmax(model.predict(images, verbose=0))
                + _softmax(model.predict(images[:, :, ::-1], verbose=0))) / 2
    np.testing.assert_allclose(recipe.flip_tta_probabilities(model, images).numpy(), expected,
                               rtol=1e-5, atol=1e-6)


def test_accuracy_with_and_without_tta_match_numpy():
    model = _image_model()
    rng = np.random.default_rng(4)
    images = rng.random((10, 4, 5, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 10)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    plain = np.mean(np.argmax(model.predict(images, verbose=0), -1) == labels)
    tta = np.mean(np.argmax(recipe.flip_tta_probabilities(model, images).numpy(), -1) == labels)
    assert recipe.accuracy(model, dataset) == pytest.approx(plain)
    assert recipe.accuracy(model, dataset, flip_tta=True) == pytest.approx(tta)


def test_crossentropy_reads_integer_and_weighted_labels_with_smoothing():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], np.float32)
    log_p = np.log(_softmax(logits))
    loss = recipe.ClassificationCrossentropy(label_smoothing=0.3)
    targets = np.array([[1, 0, 0], [0, 0, 1]], np.float32) * 0.7 + 0.1
    expected = np.mean(-np.sum(targets * log_p, axis=-1))
    assert float(loss(np.array([0, 2]), logits)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(np.array([[0], [2]]), logits)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(np.array([[1, 0, 0], [0, 0, 1]], np.float32), logits)) == pytest.approx(
        expected, rel=1e-5)
    mixed = np.array([[0.25, 0.75, 0.0], [0.0, 0.5, 0.5]], np.float32)
    plain = recipe.ClassificationCrossentropy()
    assert float(plain(mixed, logits)) == pytest.approx(
        np.mean(-np.sum(mixed * log_p, axis=-1)), rel=1e-5)
    with pytest.raises(ValueError, match="label_smoothing=1.0 must be in"):
        recipe.ClassificationCrossentropy(1.0)


def test_default_recipe_keeps_keras_sparse_crossentropy_and_accuracy():
    plain = recipe.classification_loss(TrainConfig())
    assert isinstance(plain["loss"], keras.losses.SparseCategoricalCrossentropy)
    assert plain["metrics"] == ["accuracy"]
    mixed = recipe.classification_loss(TrainConfig(), mixed_labels=True)
    assert isinstance(mixed["loss"], recipe.ClassificationCrossentropy)
    metric = mixed["metrics"][0]
    metric.update_state(np.array([[0.3, 0.7], [0.9, 0.1]], np.float32),
                        np.array([[0.0, 1.0], [0.0, 1.0]], np.float32))
    assert float(metric.result()) == pytest.approx(0.5)


def test_train_config_rules_name_the_field():
    with pytest.raises(ValueError, match="warmup_epochs=1.0 needs schedule='cosine'"):
        TrainConfig(warmup_epochs=1.0)
    with pytest.raises(ValueError, match="ema_momentum=1.0 must be in"):
        TrainConfig(ema_momentum=1.0)
    with pytest.raises(ValueError, match="optimizer='sgd' is not one of"):
        TrainConfig(optimizer="sgd")


def test_epochs_sized_by_steps():
    by_pass = TrainConfig(batch_size=32)
    by_steps = TrainConfig(batch_size=32, steps_per_epoch=100)
    # One pass over 320 faces is 10 steps; sized by steps it is what the field says.
    assert recipe.epoch_steps(by_pass, 320) == 10 and recipe.epoch_steps(by_pass, 321) == 11
    assert recipe.epoch_steps(by_steps, 320) == 100
    assert recipe.images_per_epoch(by_pass, 320) == 320
    assert recipe.images_per_epoch(by_steps, 320) == 3200
    data = tf.data.Dataset.range(5).batch(2)  # 3 batches
    assert recipe.epoch_data(by_pass, data) is data
    assert len(list(recipe.epoch_data(by_steps, data).take(7))) == 7  # repeated
    with pytest.raises(ValueError, match="steps_per_epoch=0 must be a positive integer"):
        TrainConfig(steps_per_epoch=0)


def test_speed_summary_hand_worked():
    """Seconds per epoch leave out the first epoch (tracing, compilation) when there are more;
    images/s are the images an epoch reads over that, steps x batch where epochs are sized
    by steps."""
    from keypoint_gnn import training

    assert training.speed_summary([10.0, 2.0, 4.0], 48) == {
        "seconds_per_epoch": 3.0, "first_epoch_seconds": 10.0, "images_per_second": 16.0}
    assert training.speed_summary([5.0], 20) == {
        "seconds_per_epoch": 5.0, "first_epoch_seconds": 5.0, "images_per_second": 4.0}
    assert all(math.isnan(v) for v in training.speed_summary([], 20).values())
    assert recipe.images_per_epoch(TrainConfig(steps_per_epoch=100, batch_size=32), 288) == 3200
    assert recipe.images_per_epoch(TrainConfig(batch_size=32), 288) == 288


@pytest.mark.parametrize("kind", ["gat", "vig"])
def test_adamw_leaves_every_vector_of_a_real_model_undecayed(kind):
    """On the default classifier with the graph layers of its own (Spektral's GAT, the ViG
    blocks; the GCN's are in every preset's model): one AdamW step on zero gradients leaves every trainable
    vector (biases, normalisation scales and offsets) as it was and scales every matrix and
    kernel by 1 - rate x decay; the name patterns miss none of them."""
    from keypoint_gnn.benchmarks import real_data
    from keypoint_gnn.models import build_classifier

    keras.utils.set_random_seed(0)
    model = build_classifier(real_data.preset_run("default", graph={"kind": kind}).model)
    train = TrainConfig(learning_rate=0.1, optimizer="adamw", weight_decay=0.5)
    optimizer = recipe.optimizer(train, steps_per_epoch=1)
    before = [v.numpy() for v in model.trainable_variables]
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    vectors = 0
    for variable, old in zip(model.trainable_variables, before):
        expected = old if old.ndim <= 1 else old * (1 - 0.1 * 0.5)
        vectors += old.ndim <= 1
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6, err_msg=variable.name)
    assert 0 < vectors < len(before)
