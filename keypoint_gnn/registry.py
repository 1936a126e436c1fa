"""Which layer class each config name builds: a new detector or GNN is a class plus an entry.

Plain data (class names, resolved lazily), so that `ModelConfig` can list and check the names
without importing a layer.
"""
DETECTORS = {  # ModelConfig.detector.kind -> class in keypoint_gnn.layers
    "attention": "AttentionTopK",
    "maxpool_nms": "MaxPoolNMS",
    "grid": "GridCoordinateRegressor",
    "perturbed_topk": "PerturbedTopK",
}
WINDOWED_DETECTORS = ("maxpool_nms", "perturbed_topk")  # select within NMS windows (pool_size)

GNNS = {  # ModelConfig.graph.kind -> class, or None: the paper's "CNN only" row
    "gcn": "GCNStack",
    "diffpool": "DiffPoolUnpool",
    "gat": "GATStack",  # takes the raw adjacency: only its nonzero pattern (a mask) is used
    "vig": "ViGStack",  # builds its own kNN graphs; takes the positions too (POSITION_GNNS)
    "none": None,
}
NORMALIZED_ADJACENCY_GNNS = ("gcn",)  # expect a GCN-normalised adjacency from CNNToGraph
# Take the keypoint positions, normalised to [0, 1], as a third input [nodes, adjacency, positions].
POSITION_GNNS = ("vig",)
VIG_CONVS = {  # ModelConfig.graph.vig_conv -> the graph convolution of ViGStack's blocks
    "max_relative": "MaxRelativeConv",
    "edge": "EdgeConv",
}


def _layer_class(name):
    from keypoint_gnn import layers

    return getattr(layers, name)


def detector_class(kind):
    return _layer_class(DETECTORS[kind])


def gnn_class(kind):
    """The GNN layer class for `kind`, or None for "none"."""
    return None if GNNS[kind] is None else _layer_class(GNNS[kind])


def vig_conv_class(name):
    return _layer_class(VIG_CONVS[name])


# ModelConfig.backbone.kind -> how `keypoint_gnn.backbones` builds the feature extractor.
# "conv": the paper's stride-2 conv blocks; "resnet": configurable basic-block ResNet; the others
# tf_keras.applications networks (include_top=False, never downloaded weights).
BACKBONES = ("conv", "resnet", "resnet50", "efficientnetb0", "mobilenetv3small")
# kind -> (tf_keras.applications function, input scaling, {stride: layer the tap reads}); the
# deepest stride (32) reads the network's output. Input scaling, from images in [0, 1]:
# "caffe" (x 255, RGB -> BGR, ImageNet mean subtracted: what ResNet50's ImageNet weights expect),
# "0-255" (x 255: EfficientNet and MobileNetV3 rescale inside the network).
APPLICATION_BACKBONES = {
    "resnet50": ("ResNet50", "caffe",
                 {4: "conv2_block3_out", 8: "conv3_block4_out", 16: "conv4_block6_out", 32: None}),
    "efficientnetb0": ("EfficientNetB0", "0-255",
                       {4: "block2b_add", 8: "block3b_add", 16: "block5c_add", 32: None}),
    "mobilenetv3small": ("MobileNetV3Small", "0-255",
                         {4: "expanded_conv/project/BatchNorm", 8: "expanded_conv_2/Add",
                          16: "expanded_conv_7/Add", 32: None}),
}


def application_strides(kind):
    """The strides a tf_keras.applications backbone can be tapped at, ascending."""
    return tuple(sorted(APPLICATION_BACKBONES[kind][2]))
