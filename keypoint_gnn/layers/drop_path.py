"""Drop path (stochastic depth), beyond the paper."""
from keypoint_gnn import rules
from keypoint_gnn._backend import keras, tf


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class DropPath(keras.layers.Dropout):
    """Drop path, per-sample stochastic depth (Huang et al. 2016; as in Vision GNN's blocks),
    beyond the paper. Put on a residual branch, x + DropPath(f(x)) skips the whole branch for
    the dropped samples:

        y_b = m_b x_b / (1 - rate),   m_b ~ Bernoulli(1 - rate), one draw per sample b

    in training; y = x at inference. It is `Dropout` with one mask value per sample.

    Args:
      rate: probability in [0, 1) that a sample's branch is dropped.
      seed: of the masks, with the global seed (`keras.utils.set_random_seed`).

    Input shape:
      `(B, ...)`, any rank.

    Output shape:
      the input's.

    Example:

    >>> drop = DropPath(rate=0.5)
    >>> x = tf.ones([4, 3, 2])
    >>> bool(tf.reduce_all(drop(x, training=False) == x))
    True
    >>> sorted(set(drop(x, training=True).numpy().ravel().tolist())) in ([0.0], [2.0], [0.0, 2.0])
    True
    """

    def __init__(self, rate, seed=None, **kwargs):
        kwargs.pop("noise_shape", None)
        rules.check_rate("rate", rate)
        super().__init__(rate, seed=seed, **kwargs)

    def _get_noise_shape(self, inputs):
        # Dropout's hook for subclasses: one mask value per sample, broadcast over the rest.
        batch = tf.shape(inputs)[:1]
        return tf.concat([batch, tf.ones([inputs.shape.rank - 1], tf.int32)], axis=0)

    def get_config(self):
        config = super().get_config()
        config.pop("noise_shape", None)
        return config
