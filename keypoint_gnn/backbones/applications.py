"""tf_keras.applications networks as feature extractors (`BackboneConfig.kind` "resnet50",
"efficientnetb0", "mobilenetv3small").

Built with `include_top=False` and `weights=None` (nothing is downloaded); a weights file the
user gives (`BackboneConfig.weights`) is loaded by layer name. keypoint-gnn's images are float32
in [0, 1]; `ImageNetPreprocessing` turns them into what each network's ImageNet weights expect:
ResNet50 "caffe" (0-255, BGR, ImageNet mean subtracted), EfficientNet and MobileNetV3 "0-255"
(they rescale inside the network). The tap (`BackboneConfig.tap_stride`) reads the layer
`registry.APPLICATION_BACKBONES` names for that stride; the network is cut there.
"""
import pathlib

from keypoint_gnn import registry, rules
from keypoint_gnn._backend import keras, tf

INPUT_SCALINGS = ("caffe", "0-255")
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)  # keras.applications.imagenet_utils, "caffe"


@keras.saving.register_keras_serializable(package="keypoint_gnn")
class ImageNetPreprocessing(keras.layers.Layer):
    """Images in [0, 1] -> the input a tf_keras.applications network expects.

        "0-255":  y = 255 x
        "caffe":  y = 255 x[..., ::-1] - (103.939, 116.779, 123.68)   (RGB -> BGR, mean off)

    Args:
      scaling: "0-255" or "caffe".

    Input shape: `(B, H, W, 3)` float in [0, 1]. Output shape: the same.
    """

    def __init__(self, scaling="0-255", **kwargs):
        super().__init__(**kwargs)
        rules.check_choice("scaling", scaling, INPUT_SCALINGS)
        self.scaling = scaling

    def call(self, images):
        pixels = tf.cast(images, self.compute_dtype) * 255.0
        if self.scaling == "caffe":
            pixels = pixels[..., ::-1] - tf.constant(IMAGENET_MEAN_BGR, self.compute_dtype)
        return pixels

    def get_config(self):
        config = super().get_config()
        config.update(scaling=self.scaling)
        return config


def load_weights(model, path):
    """`path` (a Keras .h5 weights file) into `model` by layer name, skipping layers whose
    shapes differ; ValueError when the file is missing."""
    if not pathlib.Path(path).is_file():
        raise ValueError(f"backbone.weights={path!r}: no such file")
    model.load_weights(path, by_name=True, skip_mismatch=True)


def application_network(kind, input_shape, tap_stride=None):
    """The tf_keras.applications network of `kind` without its top, cut at `tap_stride`
    (None: its output, stride 32): images as `ImageNetPreprocessing` gives them ->
    `(B, H / stride, W / stride, C)`."""
    function, _, taps = registry.APPLICATION_BACKBONES[kind]
    network = getattr(keras.applications, function)(include_top=False, weights=None,
                                                     input_shape=input_shape)
    tap_layer = taps[tap_stride or max(taps)]
    if tap_layer is not None:
        network = keras.Model(network.input, network.get_layer(tap_layer).output,
                              name=f"{network.name}_to_stride{tap_stride}")
    return network


def application_feature_extractor(section, input_shape, name="feature_extractor"):
    """images `(B, H, W, 3)` in [0, 1] -> the tapped feature map, as a functional
    `keras.Model`: `ImageNetPreprocessing` then `application_network` (weights loaded)."""
    network = application_network(section.kind, input_shape, section.tap_stride)
    if section.weights is not None:
        load_weights(network, section.weights)
    images = keras.Input(input_shape, name="images")
    scaling = registry.APPLICATION_BACKBONES[section.kind][1]
    pixels = ImageNetPreprocessing(scaling, name="imagenet_preprocessing")(images)
    return keras.Model(images, network(pixels), name=name)
