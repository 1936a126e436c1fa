"""CNN->graph->CNN interconnects: TensorFlow (eager, tf.function, XLA) vs a NumPy loop.

The workload of the authors' measurement (shared DESIGN notes): 32 images x 64 keypoints x 128
channels on a 16x16 feature map. One call = CNN->graph (features at the keypoints times their
scores, inverse-distance adjacency, GCN normalisation) then graph->CNN (scatter-mean of the node
features back into the map); no GNN in between.
"""
import numpy as np

from keypoint_gnn._backend import tf
from keypoint_gnn.benchmarks import isolation, measure
from keypoint_gnn.layers import CNNToGraph, GraphToCNN

# The authors' PyTorch interconnects (github.com/amitlohan/nn_interconnects), per batch of this
# workload on a 2-core CPU like this one: quoted from the design notes, not measured here.
AUTHORS_PYTORCH_MS = 182.0
WORKLOAD = {"batch": 32, "keypoints": 64, "channels": 128, "map_size": 16}
VARIANTS = ("numpy_loop", "tf_eager", "tf_function", "tf_function_xla")


def random_inputs(batch, keypoints, channels, map_size, seed=0):
    """feature map (B, h, w, C), integer-valued positions (B, N, 2) (y, x) and scores (B, N)."""
    rng = np.random.default_rng(seed)
    feature_map = rng.standard_normal((batch, map_size, map_size, channels)).astype(np.float32)
    positions = rng.integers(0, map_size, (batch, keypoints, 2)).astype(np.float32)
    scores = rng.random((batch, keypoints)).astype(np.float32)
    return feature_map, positions, scores


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


def tf_interconnect_layers(map_size):
    """f(feature_map, positions, scores) -> (nodes, adjacency, grid) with the package's layers."""
    to_graph = CNNToGraph(sampling="gather", normalize=True, position_features=False)
    to_cnn = GraphToCNN(map_size, map_size, sampling="gather")

    def interconnect(feature_map, positions, scores):
        nodes, adjacency = to_graph([feature_map, positions, scores])
        return nodes, adjacency, to_cnn([nodes, positions])

    return interconnect


def setup_interconnect(variant, batch, keypoints, channels, map_size, seed=0):
    """(call, info) for one variant; the call returns host arrays (so it has finished)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not one of {VARIANTS}")
    arrays = random_inputs(batch, keypoints, channels, map_size, seed)
    if variant == "numpy_loop":
        return (lambda: numpy_interconnect(*arrays)), {}
    tensors = [tf.constant(a) for a in arrays]
    function = tf_interconnect_layers(map_size)
    if variant != "tf_eager":
        function = tf.function(function, jit_compile=variant == "tf_function_xla")

    def call():
        return [t.numpy() for t in function(*tensors)]

    return call, {}


def benchmark_interconnects(*, warmup, repeats, memory=True, memory_limit_bytes=None, jobs=1,
                            workload=None):
    """Times every variant interleaved in this process, then each one's memory in a worker.

    Returns:
      {"workload", "authors_pytorch_ms", "variants": {name: {"median_ms", ..., "ratio_to_authors",
      "speedup_vs_numpy", "memory"}}}.
    """
    workload = dict(workload or WORKLOAD)
    calls = {name: setup_interconnect(name, **workload)[0] for name in VARIANTS}
    timings = measure.time_interleaved(calls, warmup, repeats)
    numpy_ms = timings["numpy_loop"]["median_ms"]
    for timing in timings.values():
        timing["ratio_to_authors"] = timing["median_ms"] / AUTHORS_PYTORCH_MS
        timing["speedup_vs_numpy"] = numpy_ms / timing["median_ms"]
    if memory:
        jobs_list = [dict(setup="keypoint_gnn.benchmarks.interconnect:setup_interconnect",
                          params=dict(variant=name, **workload), calls=3,
                          memory_limit_bytes=memory_limit_bytes) for name in VARIANTS]
        for name, record in zip(VARIANTS, isolation.run_isolated_many(jobs_list, jobs)):
            timings[name]["memory"] = isolation.memory_summary(record)
    return {"workload": workload, "authors_pytorch_ms": AUTHORS_PYTORCH_MS,
            "authors_pytorch_note": "quoted from the design notes (authors' code, 2-core CPU), "
                                    "not measured in this run",
            "variants": timings}


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
