"""Feature extractors: what `BackboneConfig` describes, as Keras models.

| kind | module | network |
|---|---|---|
| "conv" | conv | the paper's stride-2 conv blocks |
| "resnet" | resnet | basic-block ResNet: widths, depths, stem stride |
| "resnet50", "efficientnetb0", "mobilenetv3small" | applications | tf_keras.applications, no top |

`feature_extractor(config)`: images `(B, H, W, C)` in [0, 1] -> the tapped map
`(B, H / s, W / s, C_f)`, s = `config.feature_stride`, a nested model named
"feature_extractor". `late_stages(config, channels)`: the ResNet stages after the tap, which
the classifier runs on the graph->CNN grid, or None. `plain_feature_extractor`: the whole
backbone at a width multiplier, for the plain baseline.
"""
from keypoint_gnn.backbones.applications import (
    ImageNetPreprocessing,
    application_feature_extractor,
    application_network,
    load_weights,
)
from keypoint_gnn.backbones.conv import batch_norm, conv_blocks, conv_feature_extractor, scale_widths
from keypoint_gnn.backbones.resnet import (
    basic_block,
    resnet_feature_extractor,
    resnet_late_stages,
    resnet_param_count,
)

__all__ = [
    "ImageNetPreprocessing",
    "application_feature_extractor",
    "application_network",
    "basic_block",
    "batch_norm",
    "conv_blocks",
    "conv_feature_extractor",
    "feature_extractor",
    "late_stages",
    "load_weights",
    "plain_feature_extractor",
    "resnet_feature_extractor",
    "resnet_late_stages",
    "resnet_param_count",
    "scale_widths",
]


def _input_shape(config):
    return (config.image_size, config.image_size, config.channels)


def feature_extractor(config, name="feature_extractor"):
    """The backbone of `config` (a `ModelConfig`) up to its tap, weights loaded."""
    section = config.backbone
    if section.application:
        return application_feature_extractor(section, _input_shape(config), name)
    if section.kind == "resnet":
        model = resnet_feature_extractor(section, _input_shape(config), name,
                                         last_stage=section.tap_stage)
    else:
        model = conv_feature_extractor(section, name)
    if section.weights is not None:
        model.build((None, *_input_shape(config)))
        load_weights(model, section.weights)
    return model


def late_stages(config, channels, name="late_stages"):
    """The ResNet stages after the tap, on the `(B, h, w, channels)` grid, or None (the tap
    is the deepest stage, or the backbone is not a "resnet")."""
    section = config.backbone
    if section.kind != "resnet" or section.tap_stage == len(section.widths) - 1:
        return None
    size = config.feature_size
    model = resnet_late_stages(section, (size, size, channels), section.tap_stage + 1, name)
    if section.weights is not None:
        load_weights(model, section.weights)
    return model


def plain_feature_extractor(config, width_multiplier=1.0, name="feature_extractor"):
    """The whole backbone (every stage, whatever the tap; an applications network cut at its
    tap as in the keypoint model), widths times `width_multiplier` ("conv", "resnet";
    applications have fixed widths). `BackboneConfig.weights` load into applications only: a
    width-scaled network does not fit the file."""
    section = config.backbone
    if section.application:
        return application_feature_extractor(section, _input_shape(config), name)
    if section.kind == "resnet":
        return resnet_feature_extractor(
            section, _input_shape(config), name,
            widths=scale_widths(section.widths, width_multiplier),
            stem_filters=scale_widths((section.stem_filters,), width_multiplier)[0])
    return conv_feature_extractor(section, name, width_multiplier)
