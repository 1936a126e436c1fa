"""The valid values of every option and the rules between them, in one place.

Plain Python, no TensorFlow and no layers: `ModelConfig` checks a whole configuration with
these functions, and each layer checks its own arguments with the same ones, so a rule is
written once. Every check raises ValueError naming the value and what is valid.
"""
import math

SCORE_ACTIVATIONS = ("linear", "sigmoid")
REFINEMENTS = ("none", "window", "centre")
WINDOWED_REFINEMENTS = ("window", "centre")  # need NMS windows (pool_size > 1)
PERTURBED_SELECTIONS = ("marginal", "slots")
PERTURBED_ESTIMATORS = ("sampled", "threshold")
RECONSTRUCTION_LOSSES = ("mse", "conf_mse")
SAMPLING_MODES = ("gather", "bilinear")
AUGMENT_WORDS = ("flip", "crop", "resized_crop")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def check_augment(augment):
    """"auto", "none", or comma-separated words of AUGMENT_WORDS ("crop" and "resized_crop"
    exclude each other)."""
    words = [word.strip() for word in str(augment).split(",")]
    valid = (augment in ("auto", "none")
             or (all(word in AUGMENT_WORDS for word in words) and len(set(words)) == len(words)
                 and not {"crop", "resized_crop"} <= set(words)))
    if not isinstance(augment, str) or not valid:
        raise ValueError(f"augment={augment!r} must be 'auto', 'none' or comma-separated words of "
                         f"{', '.join(map(repr, AUGMENT_WORDS))} ('crop' or 'resized_crop', "
                         "not both)")


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True or False")


def check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def check_non_negative_number(name, value):
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"{name}={value!r} must be a finite number >= 0")


def check_positive_number(name, value):
    check_non_negative_number(name, value)
    if value == 0:
        raise ValueError(f"{name}={value!r} must be a finite number > 0")


def check_filters(name, filters):
    if (not isinstance(filters, (tuple, list)) or not filters
            or not all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in filters)):
        raise ValueError(f"{name}={filters!r} must be a non-empty list of positive integers "
                         "(channels per block)")


def check_locations(num_keypoints, height, width):
    """A top-N over every location needs N <= h * w."""
    if num_keypoints > height * width:
        raise ValueError(f"num_keypoints={num_keypoints} exceeds the {height}x{width}="
                         f"{height * width} locations of the feature map")


def check_pool_windows(num_keypoints, pool_size, height, width, pool_name="pool_size",
                       map_name="feature map"):
    """The p x p NMS windows must tile the h x w map and number at least N."""
    for side_name, side in (("height", height), ("width", width)):
        if side % pool_size:
            raise ValueError(f"{pool_name}={pool_size} does not divide the {map_name} "
                             f"{side_name} {side}")
    windows = (height // pool_size) * (width // pool_size)
    if num_keypoints > windows:
        raise ValueError(
            f"num_keypoints={num_keypoints} exceeds the {windows} {pool_size}x{pool_size} windows "
            f"of the {height}x{width} {map_name}: use at most {windows} keypoints or a smaller "
            f"{pool_name}")


def check_grid_cells(num_keypoints, cell_size, points_per_cell, height, width):
    """The m x m cells must tile the map and hold at least N candidate points."""
    for side_name, side in (("height", height), ("width", width)):
        if side % cell_size:
            raise ValueError(f"cell_size={cell_size} does not divide the feature map "
                             f"{side_name} {side}")
    cells = (height // cell_size) * (width // cell_size)
    if num_keypoints > cells * points_per_cell:
        raise ValueError(
            f"num_keypoints={num_keypoints} exceeds the {cells * points_per_cell} candidate "
            f"points ({height // cell_size}x{width // cell_size} cells x {points_per_cell} "
            "points per cell)")


def check_knn(k, dilation, num_nodes=None):
    """A (dilated) kNN graph: k and dilation positive integers and, with a known node count N,
    k * dilation < N (each node ranks k * dilation *other* nodes)."""
    check_positive_int("k", k)
    check_positive_int("dilation", dilation)
    if num_nodes is not None and k * dilation >= num_nodes:
        raise ValueError(f"k={k} x dilation={dilation} must be below the N={num_nodes} nodes "
                         f"(each node ranks k * dilation = {k * dilation} other nodes)")


def check_rate(name, value):
    """A drop rate: a number in [0, 1)."""
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not 0.0 <= value < 1.0):
        raise ValueError(f"{name}={value!r} must be a number in [0, 1)")


def check_refinement(refinement, pool_size):
    """`pool_size`: the detector's NMS window side, or None for a detector without windows."""
    check_choice("refinement", refinement, REFINEMENTS)
    if refinement in WINDOWED_REFINEMENTS and (pool_size is None or pool_size == 1):
        where = ("a detector without NMS windows" if pool_size is None
                 else "pool_size=1 (one location per window)")
        raise ValueError(f"refinement={refinement!r} needs NMS windows (maxpool_nms or "
                         f"perturbed_topk with pool_size > 1), not {where}; use 'none'")


def check_perturbed(num_samples, sigma, selection, estimator, refinement, prefix=""):
    """The perturbed top-k's options and how they combine. `prefix`: how the caller names
    them ("perturbed_" in the config: perturbed_samples, ...; "" in the layer: samples ...
    as num_samples, sigma, selection, estimator)."""
    samples = f"{prefix}samples" if prefix else "num_samples"
    check_positive_int(samples, num_samples)
    check_positive_number(f"{prefix}sigma", sigma)
    check_choice(f"{prefix}selection", selection, PERTURBED_SELECTIONS)
    check_choice(f"{prefix}estimator", estimator, PERTURBED_ESTIMATORS)
    if estimator == "threshold" and selection != "marginal":
        raise ValueError(f"{prefix}estimator='threshold' needs {prefix}selection='marginal', "
                         f"not {selection!r}: averaged slots need sampled selections")
    if refinement != "none" and selection != "marginal":
        raise ValueError(f"refinement={refinement!r} needs {prefix}selection='marginal', not "
                         f"{selection!r}: averaged slots place the keypoints themselves")


# --- backbones -------------------------------------------------------------------------------
STEM_STRIDES = (1, 2, 4)
DETECTOR_SOURCES = ("image", "features")  # what the detector CNN reads
HEAD_POOLINGS = ("flatten", "average")
HEAD_FUSIONS = ("none", "concat")
APPLICATION_MIN_IMAGE_SIZE = 32


def check_stages(widths, depths):
    """A ResNet's stages: one width and one depth (blocks) each."""
    check_filters("widths", widths)
    if (not isinstance(depths, (tuple, list)) or not depths
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in depths)):
        raise ValueError(f"depths={depths!r} must be a non-empty list of positive integers "
                         "(blocks per stage)")
    if len(widths) != len(depths):
        raise ValueError(f"widths={tuple(widths)!r} and depths={tuple(depths)!r} must have the "
                         "same length (one width and one depth per stage)")


def check_tap_stride(tap_stride, stage_strides, kind):
    """`tap_stride`: None (the deepest stage) or the stride of one of the backbone's stages."""
    if tap_stride is not None and tap_stride not in stage_strides:
        raise ValueError(f"tap_stride={tap_stride!r} is not a stage stride of backbone "
                         f"kind {kind!r}; valid: null (the deepest stage) or "
                         f"{', '.join(map(str, stage_strides))}")


def check_weights_path(weights):
    """None, or the path of a Keras HDF5 weights file (loaded by layer name)."""
    if weights is not None and (not isinstance(weights, str) or not weights.endswith(".h5")):
        raise ValueError(f"weights={weights!r} must be null or the path of a Keras .h5 weights "
                         "file (loaded by layer name)")
    if weights is not None and weights.endswith(".weights.h5"):
        # tf_keras reads this format by the models' structure and ignores by_name: layers
        # missing on one side (the stages after the tap) would shift every later weight.
        raise ValueError(f"weights={weights!r}: a '.weights.h5' file loads by structure, not by "
                         "layer name; save it with save_weights('NAME.h5')")


def check_application_input(kind, image_size, channels):
    """tf_keras.applications backbones take RGB images of at least 32x32 pixels."""
    if channels != 3:
        raise ValueError(f"backbone.kind={kind!r} needs channels=3 (RGB images), not "
                         f"channels={channels!r}: set data.channels=3 or use backbone.kind "
                         "'conv' or 'resnet'")
    if image_size < APPLICATION_MIN_IMAGE_SIZE:
        raise ValueError(f"backbone.kind={kind!r} needs image_size >= "
                         f"{APPLICATION_MIN_IMAGE_SIZE}, not image_size={image_size}")
