"""The built-in set is learnable: a small CNN that sees the whole image beats chance by far."""
import pytest

from keypoint_gnn._backend import keras, tf
from keypoint_gnn.data import BuiltinOptions, load_dataset


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_small_cnn_learns_builtin_set_in_three_epochs():
    tf.random.set_seed(0)
    splits = load_dataset("builtin", builtin_options=BuiltinOptions(num_examples=4000))
    layers = keras.layers
    model = keras.Sequential([keras.Input((48, 48, 3))] + [
        layer for filters in (32, 64, 64)
        for layer in (layers.Conv2D(filters, 3, padding="same", activation="relu"),
                      layers.MaxPool2D())
    ] + [layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(6)])
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(splits.train, epochs=3, verbose=0)
    _, accuracy = model.evaluate(splits.test, verbose=0)
    assert accuracy > 0.6  # chance is 1/6
