"""Losses: the paper's confidence-weighted reconstruction error (conf-MSE, §8); the layer that
adds it to a model is `keypoint_gnn.layers.ConfidenceWeightedMSE`."""
from keypoint_gnn._backend import tf


def conf_mse(images, reconstructions, confidence):
    """Per-pixel squared error weighted by the detector's confidence map (paper §8).

    conf-MSE = mean_b [ sum_p w_bp * mean_c (x̂_bpc - x_bpc)^2 / sum_p w_bp ],
    w = the confidence map resized to the image and clipped at 0.

    The weights are normalised per image, so the loss cannot be lowered by shrinking every
    score; what the detector can do is put its confidence where the reconstruction is good,
    which trains it to look at what the GNN carries. An image with no positive confidence
    falls back to the plain MSE.

    Args:
      images, reconstructions: (B, H, W, C).
      confidence: (B, h, w, 1) activated score map at any resolution.

    Returns:
      scalar.
    """
    images = tf.cast(images, tf.float32)
    reconstructions = tf.cast(reconstructions, tf.float32)
    size = tf.shape(images)[1:3]
    weights = tf.image.resize(tf.cast(confidence, tf.float32), size, method="bilinear")
    weights = tf.maximum(weights[..., 0], 0.0)
    error = tf.reduce_mean(tf.square(reconstructions - images), axis=-1)
    total = tf.reduce_sum(weights, axis=[1, 2])
    weighted = tf.reduce_sum(weights * error, axis=[1, 2]) / tf.maximum(total, 1e-8)
    plain = tf.reduce_mean(error, axis=[1, 2])
    return tf.reduce_mean(tf.where(total > 1e-8, weighted, plain))
