"""A ResNet of basic blocks with configurable stages (`BackboneConfig.kind="resnet"`).

He et al. (2016), "Deep residual learning for image recognition", basic block (their Fig. 2,
left), with the projection shortcut (their option B) where the shape changes:

    y = ReLU(BN(conv3x3(ReLU(BN(conv3x3_s(x))))) + shortcut(x)),
    shortcut(x) = x, or BN(conv1x1_s(x)) when the stride s > 1 or the channels change.

Stem: a 3x3 conv (stride 1 or 2) with BN and ReLU, plus a 3x3 stride-2 max-pool for stem
stride 4. Stage i has `depths[i]` blocks of `widths[i]` channels; its first block has stride 2
for i > 0, so stage i's output has stride `stem_stride * 2**i`. Convolutions carry no bias (BN
follows each). Widths (32, 64, 128, 256), depths 1 hold about 1.2M parameters;
widths (64, 128, 256, 512) with depths (2, 2, 2, 2) are ResNet-18's 11M.

Layer names: `stem_conv`, `stem_bn`, `stem_relu`, `stem_pool`, then
`stage{i}_block{j}_{conv1,bn1,relu1,conv2,bn2,shortcut_conv,shortcut_bn,add,out}`, so that
weights load by name between feature extractors of the same widths.
"""
from keypoint_gnn._backend import keras
from keypoint_gnn.backbones.conv import batch_norm


def _conv(filters, kernel, strides, name):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                               name=name)


def basic_block(x, width, strides, name):
    """One basic residual block: `(B, H, W, C)` -> `(B, ceil(H / strides), ceil(W / strides),
    width)`."""
    shortcut = x
    x = _conv(width, 3, strides, f"{name}_conv1")(x)
    x = batch_norm(f"{name}_bn1")(x)
    x = keras.layers.ReLU(name=f"{name}_relu1")(x)
    x = _conv(width, 3, 1, f"{name}_conv2")(x)
    x = batch_norm(f"{name}_bn2")(x)
    if strides != 1 or shortcut.shape[-1] != width:
        shortcut = _conv(width, 1, strides, f"{name}_shortcut_conv")(shortcut)
        shortcut = batch_norm(f"{name}_shortcut_bn")(shortcut)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def stem(x, filters, stride):
    """`(B, H, W, C)` -> `(B, H / stride, W / stride, filters)`, stride 1, 2 or 4."""
    x = _conv(filters, 3, min(stride, 2), "stem_conv")(x)
    x = batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    if stride == 4:
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    return x


def stages(x, widths, depths, first=0):
    """Stages `first`, `first + 1`, ... of a ResNet (`widths`, `depths`: all its stages)."""
    for i in range(first, len(widths)):
        for j in range(depths[i]):
            strides = 2 if i > 0 and j == 0 else 1
            x = basic_block(x, widths[i], strides, f"stage{i}_block{j}")
    return x


def resnet_feature_extractor(section, input_shape, name="feature_extractor", last_stage=None,
                             widths=None, stem_filters=None):
    """images `(B, H, W, C)` -> the output of stage `last_stage` (default: the deepest),
    `(B, H / s, W / s, widths[last_stage])` with s its stride, as a functional `keras.Model`.

    `widths` and `stem_filters` override the section's (the width-scaled plain network)."""
    widths = tuple(widths or section.widths)
    last_stage = len(widths) - 1 if last_stage is None else last_stage
    images = keras.Input(input_shape, name="images")
    x = stem(images, stem_filters or section.stem_filters, section.stem_stride)
    x = stages(x, widths[:last_stage + 1], section.depths[:last_stage + 1])
    return keras.Model(images, x, name=name)


def resnet_late_stages(section, input_shape, first_stage, name="late_stages"):
    """Stages `first_stage`.. of the section's ResNet on a map `(B, h, w, C)` of any C (the
    graph->CNN grid): `(B, h, w, C)` -> `(B, h / 2^k, w / 2^k, widths[-1])` for k stages."""
    grid = keras.Input(input_shape, name="grid")
    x = stages(grid, section.widths, section.depths, first=first_stage)
    return keras.Model(grid, x, name=name)


def block_param_count(in_channels, width, strides):
    """Parameters of `basic_block` (BN: 4 per channel, 2 of them trainable)."""
    count = 9 * in_channels * width + 9 * width * width + 2 * 4 * width
    if strides != 1 or in_channels != width:
        count += in_channels * width + 4 * width
    return count


def resnet_param_count(channels, stem_filters, widths, depths):
    """Parameters of `resnet_feature_extractor` (all stages), without building it."""
    count = 9 * channels * stem_filters + 4 * stem_filters
    in_channels = stem_filters
    for i, (width, depth) in enumerate(zip(widths, depths)):
        for j in range(depth):
            count += block_param_count(in_channels, width, 2 if i > 0 and j == 0 else 1)
            in_channels = width
    return count
