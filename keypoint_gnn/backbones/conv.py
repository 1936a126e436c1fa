"""The paper's feature extractor: stride-2 convolution blocks (`BackboneConfig.kind="conv"`)."""
from keypoint_gnn._backend import keras


def batch_norm(name):
    """Batch normalisation as every keypoint-gnn CNN uses it: synchronised across replicas, so
    that a mirrored run computes the same statistics as one device, and moving-average
    momentum 0.9, not Keras's 0.99: with a few hundred steps (2 epochs of 10k images) the 0.99
    moving statistics still lag and test accuracy collapses."""
    return keras.layers.BatchNormalization(momentum=0.9, synchronized=True, name=name)


def conv_blocks(filters, name, final_activation="relu"):
    """A `keras.Sequential` of stride-2 blocks, one per entry of `filters`.

    Each block: 3x3 conv, then a stride-2 3x3 conv (halves the resolution); every conv is
    followed by batch normalisation (`batch_norm`) and a ReLU.

    The detector's CNN ends without a ReLU (`final_activation=None`): a score map computed
    from rectified features can be zero everywhere, and then no gradient reaches the detector.

    Input shape: `(B, H, W, C)`. Output shape: `(B, H / 2^n, W / 2^n, filters[-1])` for
    n = len(filters) (H, W divisible by 2^n).
    """
    layers = []
    for i, width in enumerate(filters):
        last = i == len(filters) - 1
        for suffix, strides in (("a", 1), ("b", 2)):
            layers += [
                keras.layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False,
                                    name=f"conv{i}{suffix}"),
                batch_norm(f"bn{i}{suffix}"),
            ]
            if not (last and suffix == "b" and final_activation is None):
                layers.append(keras.layers.ReLU(name=f"relu{i}{suffix}"))
    return keras.Sequential(layers, name=name)


def conv_feature_extractor(section, name="feature_extractor", width_multiplier=1.0):
    """The "conv" backbone of a `BackboneConfig`: `conv_blocks(section.filters)`, each width
    times `width_multiplier` (rounded, at least 1)."""
    return conv_blocks(scale_widths(section.filters, width_multiplier), name)


def scale_widths(widths, multiplier):
    return tuple(max(1, round(width * multiplier)) for width in widths)
