"""CNN->graph->CNN interconnects: the project's TensorFlow code against per-keypoint loops.

One call = CNN->graph (features at the keypoints times their scores, inverse-distance
adjacency, GCN normalisation) then graph->CNN (scatter-mean of the node features back into the
map); no GNN in between. Workload: 32 images x 64 keypoints x 128 channels on a 16x16 feature
map, the batch of the authors' interconnect code (github.com/amitlohan/nn_interconnects).

Every variant runs on the same batch, interleaved in one group (`measure.time_group`), and
every ratio is between two of them:

  numpy_loop        reference: the algorithm with a Python loop per image and per keypoint
  tf_loop           reference: the authors' way in TensorFlow eager (their structure: batched
                    gather and adjacency, then graph->CNN one keypoint at a time, reading each
                    cell index back to Python)
  tf_eager          the project's layers, op by op
  tf_function       the project's layers in a tf.function
  tf_function_xla   ... compiled with XLA (jit_compile=True)
  memory copy       a large array copy, to measure the machine's copy bandwidth in this run

On a GPU the project's variants run there as well (float32 and mixed float16).

Memory-bound limit: an implementation that only moves the bytes it must, at the measured copy
bandwidth, needs `bytes_per_batch / bandwidth` (`bytes_per_batch` gives the formula).
"""
import numpy as np

from keypoint_gnn._backend import tf
from keypoint_gnn.benchmarks import isolation, machine, measure
from keypoint_gnn.layers import CNNToGraph, GraphToCNN

WORKLOAD = {"batch": 32, "keypoints": 64, "channels": 128, "map_size": 16}
REFERENCES = ("numpy_loop", "tf_loop")
PROJECT = ("tf_eager", "tf_function", "tf_function_xla")
VARIANTS = REFERENCES + PROJECT
# Variants timed on a GPU too, when one is visible, in each precision.
GPU_VARIANTS = ("tf_function", "tf_function_xla")
PRECISIONS = ("float32", "mixed_float16")
COPY = "memory copy"
COPY_MIB = 64
AA_OF = "tf_function_xla"


def random_inputs(batch, keypoints, channels, map_size, seed=0):
    """feature map (B, h, w, C), integer-valued positions (B, N, 2) (y, x) and scores (B, N)."""
    rng = np.random.default_rng(seed)
    feature_map = rng.standard_normal((batch, map_size, map_size, channels)).astype(np.float32)
    positions = rng.integers(0, map_size, (batch, keypoints, 2)).astype(np.float32)
    scores = rng.random((batch, keypoints)).astype(np.float32)
    return feature_map, positions, scores


def bytes_per_batch(batch, keypoints, channels, map_size, value_bytes=4):
    """The bytes one interconnect call must move at least: inputs read plus outputs written.

    Read: the feature rows at the keypoints B*N*C (not the whole map: a gather touches only
    those), the positions B*N*2 and the scores B*N. Written: the nodes B*N*C, the adjacency
    B*N*N and the whole grid B*h*w*C (zeros included). Intermediates are not counted: an ideal
    implementation keeps them in cache. Each value is `value_bytes` bytes (4 float32, 2 float16).

    Returns:
      {part: bytes} with "total".
    """
    parts = {
        "feature rows read": batch * keypoints * channels,
        "positions read": batch * keypoints * 2,
        "scores read": batch * keypoints,
        "nodes written": batch * keypoints * channels,
        "adjacency written": batch * keypoints * keypoints,
        "grid written": batch * map_size * map_size * channels,
    }
    parts = {name: count * value_bytes for name, count in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def numpy_interconnect(feature_map, positions, scores):
    """Reference: the same algorithm with a Python loop per image and per keypoint.

    For each keypoint i of an image: X_i = s_i F[round(p_i)]; the adjacency row
    w_ij = 1 / (1 + |p_i - p_j|), divided by the largest off-diagonal weight, diagonal 1, then
    D^-1/2 A D^-1/2; graph->CNN adds X_i into its cell and divides each cell by its count.

    Args:
      feature_map: (B, h, w, C); positions: (B, N, 2) (y, x) feature-map pixels; scores: (B, N).

    Returns:
      nodes (B, N, C), adjacency (B, N, N), grid (B, h, w, C), float64.
    """
    feature_map = np.asarray(feature_map, np.float64)
    positions = np.asarray(positions, np.float64)
    batch, height, width, channels = feature_map.shape
    num = positions.shape[1]
    nodes = np.zeros((batch, num, channels))
    adjacency = np.zeros((batch, num, num))
    grid = np.zeros((batch, height, width, channels))
    for b in range(batch):
        cells = []
        for i in range(num):
            y = int(np.clip(np.round(positions[b, i, 0]), 0, height - 1))
            x = int(np.clip(np.round(positions[b, i, 1]), 0, width - 1))
            cells.append((y, x))
            nodes[b, i] = feature_map[b, y, x] * scores[b, i]
        for i in range(num):
            distances = np.sqrt(np.sum((positions[b] - positions[b, i]) ** 2, axis=-1))
            adjacency[b, i] = 1.0 / (1.0 + distances)
            adjacency[b, i, i] = 0.0
        largest = adjacency[b].max()
        adjacency[b] /= largest if largest > 0 else 1.0
        for i in range(num):
            adjacency[b, i, i] = 1.0
        degree = adjacency[b].sum(axis=-1)
        for i in range(num):
            adjacency[b, i] /= np.sqrt(degree[i] * degree)
        counts = np.zeros((height, width))
        for i, (y, x) in enumerate(cells):
            grid[b, y, x] += nodes[b, i]
            counts[y, x] += 1
        grid[b] /= np.maximum(counts, 1.0)[..., None]
    return nodes, adjacency, grid


def tf_loop_interconnect(feature_map, positions, scores):
    """Reference: the authors' structure in TensorFlow eager, the same algorithm.

    As in their PyTorch code: the node features are one batched gather and the distance matrix
    is built from N - 1 concatenations; graph->CNN loops over the images and keypoints and adds
    each keypoint's features into its cell of a zero map (here a tf.Variable, updated in place;
    the cells are read back to Python once per image), then divides every cell hit more than
    once by its count. TensorFlow's eager ops cost more per call than PyTorch's, so this loop
    is slower than the authors' own code would be on the same machine.

    Args:
      feature_map: (B, h, w, C); positions: (B, N, 2) (y, x) feature-map pixels; scores: (B, N)
        (tensors or arrays).

    Returns:
      nodes (B, N, C), adjacency (B, N, N), grid (B, h, w, C) tensors.
    """
    feature_map = tf.convert_to_tensor(feature_map)
    positions = tf.convert_to_tensor(positions)
    scores = tf.convert_to_tensor(scores, feature_map.dtype)
    batch, height, width, channels = feature_map.shape
    num = positions.shape[1]
    cells = tf.clip_by_value(tf.cast(tf.round(positions), tf.int32), 0,
                             tf.constant([height - 1, width - 1]))
    nodes = tf.gather_nd(feature_map, cells, batch_dims=1) * scores[..., None]
    points = tf.cast(positions, feature_map.dtype)[:, :, None, :]
    repeated = points
    for _ in range(num - 1):
        repeated = tf.concat([repeated, points], axis=2)
    distances = tf.sqrt(tf.reduce_sum(tf.square(repeated - tf.transpose(repeated, [0, 2, 1, 3])),
                                      axis=-1))
    eye = tf.eye(num, dtype=feature_map.dtype)
    weights = (1.0 / (1.0 + distances)) * (1.0 - eye)
    largest = tf.reduce_max(weights, axis=[1, 2], keepdims=True)
    adjacency = weights / tf.where(largest > 0, largest, tf.ones_like(largest)) + eye
    degree = tf.reduce_sum(adjacency, axis=-1)
    adjacency = adjacency * tf.math.rsqrt(degree)[:, :, None] * tf.math.rsqrt(degree)[:, None, :]
    grid = tf.Variable(tf.zeros([batch, height, width, channels], feature_map.dtype))
    counts = np.zeros((batch, height, width))
    for b in range(batch):
        image_cells = cells[b].numpy()
        for i, node in enumerate(tf.unstack(nodes[b][:, None, :])):
            y, x = image_cells[i]
            counts[b, y, x] += 1
            grid.scatter_nd_add([[b, y, x]], node)
    for b, y, x in zip(*np.nonzero(counts > 1)):
        grid.scatter_nd_update([[b, y, x]], grid[b, y, x][None] / counts[b, y, x])
    return nodes, adjacency, tf.convert_to_tensor(grid)


def tf_interconnect_layers(map_size, precision="float32"):
    """f(feature_map, positions, scores) -> (nodes, adjacency, grid) with the package's layers
    (under the Keras dtype policy `precision`)."""
    to_graph = CNNToGraph(sampling="gather", normalize=True, position_features=False,
                          dtype=precision)
    to_cnn = GraphToCNN(map_size, map_size, sampling="gather", dtype=precision)

    def interconnect(feature_map, positions, scores):
        nodes, adjacency = to_graph([feature_map, positions, scores])
        return nodes, adjacency, to_cnn([nodes, positions])

    return interconnect


def _device_name(device):
    return "/GPU:0" if device == "gpu" else "/CPU:0"


def variant_key(variant, device="cpu", precision="float32"):
    """The name of a variant in the group: "tf_function_xla", or "tf_function_xla (gpu,
    mixed_float16)" off the CPU's float32."""
    if device == "cpu" and precision == "float32":
        return variant
    return f"{variant} ({device}, {precision})"


def setup_interconnect(variant, batch, keypoints, channels, map_size, device="cpu",
                       precision="float32", seed=0):
    """(call, info) for one variant; the call returns host arrays (so it has finished)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not one of {VARIANTS}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}")
    arrays = random_inputs(batch, keypoints, channels, map_size, seed)
    if variant == "numpy_loop":
        return (lambda: numpy_interconnect(*arrays)), {}
    with tf.device(_device_name(device)):
        tensors = [tf.constant(a) for a in arrays]
    if variant == "tf_loop":
        function = tf_loop_interconnect
    else:
        function = tf_interconnect_layers(map_size, precision)
        if variant != "tf_eager":
            function = tf.function(function, jit_compile=variant == "tf_function_xla")

    def call():
        with tf.device(_device_name(device)):
            outputs = function(*tensors)
        return [t.numpy() for t in outputs]

    return call, {}


def setup_copy(megabytes=COPY_MIB, device="cpu"):
    """(call, info): one copy of a `megabytes` MiB float32 array into another (on the CPU with
    NumPy, one thread; on a GPU an element-wise product by a variable, which reads and writes
    every value). info["bytes_moved"] = 2 x the array's bytes (read + write)."""
    count = megabytes * 2**20 // 4
    if device == "cpu":
        source = np.random.default_rng(0).standard_normal(count).astype(np.float32)
        target = np.empty_like(source)

        def call():
            np.copyto(target, source)
            return target[:1]
    else:
        with tf.device(_device_name(device)):
            source = tf.random.normal([count])
            factor = tf.Variable(1.0)

        def call():
            with tf.device(_device_name(device)):
                return (source * factor)[:1].numpy()
    return call, {"bytes_moved": 2 * count * 4}


def _members(gpu):
    """[(variant, device, precision)] of the group."""
    members = [(variant, "cpu", "float32") for variant in VARIANTS]
    if gpu:
        members += [(variant, "gpu", precision) for precision in PRECISIONS
                    for variant in GPU_VARIANTS]
    return members


def benchmark_interconnects(*, warmup, repeats, memory=True, memory_limit_bytes=None, jobs=1,
                            workload=None, gpu=None, copy_mib=COPY_MIB):
    """Times every variant and the copy in one interleaved group, then each variant's memory
    in a worker.

    Returns:
      {"workload", "bytes_per_batch": {precision: bytes_per_batch(...)}, "copy": {device:
      {"bytes_moved", "bandwidth_gb_s"}}, "group": the `time_group`, "variants": {key: timing
      summary + "device", "precision", "speedup_vs_numpy_loop", "speedup_vs_tf_loop",
      "memory_bound_ms", "x_memory_bound" (ratios), "memory"}, "xla_vs_no_xla": {device:
      ratio}, "aa_flag", "gpu", "notes"}.
    """
    workload = dict(workload or WORKLOAD)
    gpu = machine.has_gpu() if gpu is None else gpu
    members = _members(gpu)
    calls, meta = {}, {}
    for variant, device, precision in members:
        key = variant_key(variant, device, precision)
        calls[key], _ = setup_interconnect(variant, device=device, precision=precision, **workload)
        meta[key] = {"variant": variant, "device": device, "precision": precision}
    copies = {}
    for device in ("cpu", "gpu") if gpu else ("cpu",):
        name = f"{COPY} | {device}"
        calls[name], info = setup_copy(copy_mib, device)
        copies[device] = {"name": name, "mib": copy_mib, **info}
    group = measure.time_group(calls, warmup, repeats, label="interconnects", aa=AA_OF)
    timings = group["timings"]
    for copy in copies.values():
        copy["bandwidth_gb_s"] = copy["bytes_moved"] / (timings[copy["name"]]["median_ms"] / 1e3) / 1e9
    moved = {precision: bytes_per_batch(**workload, value_bytes=4 if precision == "float32" else 2)
             for precision in PRECISIONS}
    variants = {}
    for key, info in meta.items():
        row = {k: v for k, v in timings[key].items() if k != "rounds_ms"}
        row.update(info)
        for reference in REFERENCES:
            if reference != key:
                row[f"speedup_vs_{reference}"] = measure.group_ratio(group, reference, key)
        if info["variant"] not in REFERENCES:
            copy = copies[info["device"]]
            total = moved[info["precision"]]["total"]
            row["bytes_per_batch"] = total
            row["memory_bound_ms"] = total / (copy["bandwidth_gb_s"] * 1e9) * 1e3
            # t_variant / (total / bandwidth) = t_variant / t_copy * copy bytes / total
            row["x_memory_bound"] = measure.group_ratio(group, key, copy["name"],
                                                        scale=copy["bytes_moved"] / total)
        variants[key] = row
    xla = {"cpu": measure.group_ratio(group, "tf_function_xla", "tf_function")}
    if gpu:
        xla["gpu"] = measure.group_ratio(group, variant_key("tf_function_xla", "gpu"),
                                         variant_key("tf_function", "gpu"))
    if memory:
        keys = list(meta)
        jobs_list = [dict(setup="keypoint_gnn.benchmarks.interconnect:setup_interconnect",
                          params=dict(**meta[key], **workload),
                          calls=3, memory_limit_bytes=memory_limit_bytes) for key in keys]
        for key, record in zip(keys, isolation.run_isolated_many(jobs_list, jobs)):
            variants[key]["memory"] = isolation.memory_summary(record)
    notes = [f"memory-bound limit: bytes per batch (inputs read + outputs written, "
             f"{moved['float32']['total'] / 2**20:.2f} MiB in float32) over the copy bandwidth "
             "measured in this group"]
    if not gpu:
        notes.append("no GPU detected: the GPU rows (float32 and mixed float16) were skipped")
    return {"workload": workload, "bytes_per_batch": moved, "copy": copies, "group": group,
            "variants": variants, "xla_vs_no_xla": xla, "aa_flag": group["aa_flag"],
            "gpu": gpu, "notes": notes}


def interconnect_parts(workload=None):
    """The interconnect split into its sub-steps, for `profile.time_parts`."""
    from keypoint_gnn import ops

    workload = dict(workload or WORKLOAD)
    feature_map, positions, scores = (tf.constant(a) for a in random_inputs(**workload))
    size = workload["map_size"]
    nodes = ops.gather_features(feature_map, positions) * scores[..., None]
    adjacency = ops.inverse_distance_adjacency(positions)
    return {
        "gather x scores": lambda: ops.gather_features(feature_map, positions) * scores[..., None],
        "inverse-distance adjacency": lambda: ops.inverse_distance_adjacency(positions),
        "gcn normalisation": lambda: ops.gcn_normalize(adjacency),
        "scatter-mean": lambda: ops.scatter_mean(nodes, positions, size, size),
    }

