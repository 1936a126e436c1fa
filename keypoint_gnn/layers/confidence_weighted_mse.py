"""The conf-MSE reconstruction loss as a layer (paper §8)."""
from keypoint_gnn._backend import keras
from keypoint_gnn.losses import conf_mse


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class ConfidenceWeightedMSE(keras.layers.Layer):
    """Adds conf-MSE (paper §8, `keypoint_gnn.losses.conf_mse`) to the model's losses and
    passes the reconstruction through.

        conf-MSE = mean_b [ sum_p w_bp mean_c (x̂_bpc - x_bpc)^2 / sum_p w_bp ],
        w = the confidence map resized to the image, clipped at 0

    Putting the loss in the graph lets `model.fit` train on conf-MSE, which needs the score
    map as well as the images, with `compile(loss=None)`.

    Input shape:
      `[images (B, H, W, C), reconstructions (B, H, W, C), confidence (B, h, w, 1)]`.

    Output shape:
      The reconstructions, `(B, H, W, C)`, unchanged.

    Example:

    >>> layer = ConfidenceWeightedMSE()
    >>> images = tf.zeros([1, 4, 4, 1])
    >>> out = layer([images, tf.ones([1, 4, 4, 1]), tf.ones([1, 2, 2, 1])])
    >>> out.shape, [float(loss) for loss in layer.losses]
    (TensorShape([1, 4, 4, 1]), [1.0])
    """

    def call(self, inputs):
        images, reconstructions, confidence = inputs
        self.add_loss(conf_mse(images, reconstructions, confidence))
        return reconstructions
