"""What the kNN graph convolutions share: one kernel W over [x_i || x_j - x_i], beyond the paper."""
from keypoint_gnn import rules
from keypoint_gnn._backend import keras


class NeighbourConv(keras.layers.Layer):
    """Base of `MaxRelativeConv` and `EdgeConv`: a kernel W (2F, units) applied to a node's
    features beside a relative term from its neighbours, an optional bias b and an activation;
    subclasses define `call` on `[nodes (B, N, F), neighbour indices (B, N, k)]`.

    Args:
      units: output channels.
      activation: the subclass's default, or any Keras activation.
      use_bias: add b.
    """

    def __init__(self, units, activation=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        rules.check_positive_int("units", units)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias

    def build(self, input_shape):
        channels = input_shape[0][-1]
        self.kernel = self.add_weight("kernel", shape=(2 * channels, self.units),
                                      initializer="glorot_uniform")
        self.bias = (self.add_weight("bias", shape=(self.units,), initializer="zeros")
                     if self.use_bias else None)
        super().build(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, activation=keras.activations.serialize(self.activation),
                      use_bias=self.use_bias)
        return config
