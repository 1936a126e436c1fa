"""How cost grows with the graph: dense vs sparse grid graphs, and the number of keypoints.

Memory: every size runs in its own worker (`isolation.run_isolated`), so each gets its own peak
memory, and a size that would not fit under the memory limit is skipped, not attempted.
Time: the sizes whose worker ran are then timed in this process, all in one interleaved group,
so that dense / sparse and each step of growth are paired ratios of the same run.
"""
from keypoint_gnn._backend import tf
from keypoint_gnn.benchmarks import isolation, measure
from keypoint_gnn.layers import AttentionTopK, CNNToGraph, GCNStack, GridToGraph

GRID_SIZES = (16, 32, 64, 128)
KEYPOINT_COUNTS = (16, 64, 256, 1024)
# Enough features (32 MiB per copy at 128x128) for the graph's own memory to stand out of the
# TensorFlow runtime's fixed ~60 MiB.
GRID_WORKLOAD = {"batch": 8, "channels": 64, "units": 64}
KEYPOINT_WORKLOAD = {"batch": 8, "map_size": 64, "channels": 32, "units": 32, "num_layers": 4}
SPARSE_NEIGHBOURS = 8
# Peak float32 (n, n) matrices alive at once while the dense adjacency is built and normalised
# (pairwise differences (n, n, 2) count as two), and copies of the node features: calibrated
# against measured peaks at 32x32 and 64x64 (see `grid_graph_bytes`).
DENSE_PEAK_MATRICES = 6
FEATURE_COPIES = 4
SPARSE_BYTES_PER_EDGE = 64  # int64 (row, col) + value, plus reorder / normalise copies
KEYPOINT_PEAK_MATRICES = 8


def grid_graph_bytes(size, neighbours, batch, channels, units):
    """Estimated peak resident bytes of `setup_grid_graph` (process baseline included).

    Dense: DENSE_PEAK_MATRICES float32 (n, n) matrices, n = size^2; sparse: (k + 1) n edges.
    """
    nodes = size * size
    features = FEATURE_COPIES * batch * nodes * (channels + units) * 4
    if neighbours is None:
        graph = DENSE_PEAK_MATRICES * nodes * nodes * 4
    else:
        graph = (neighbours + 1) * nodes * SPARSE_BYTES_PER_EDGE
    return isolation.PROCESS_BASELINE_BYTES + features + graph


def keypoint_graph_bytes(keypoints, batch, map_size, channels, units, num_layers):
    """Estimated peak resident bytes of `setup_keypoint_graph` (process baseline included)."""
    adjacency = KEYPOINT_PEAK_MATRICES * batch * keypoints * keypoints * 4
    features = FEATURE_COPIES * batch * (map_size * map_size * channels + keypoints * units) * 4
    return isolation.PROCESS_BASELINE_BYTES + adjacency + features


def setup_grid_graph(size, neighbours, batch, channels, units, seed=0):
    """GridToGraph (dense when neighbours is None, else k-nearest sparse) + GCNStack(units, 1).

    The adjacency is built on every call, as the layer does inside a model."""
    to_graph = GridToGraph(neighbours=neighbours)
    gcn = GCNStack(units, 1)
    feature_map = tf.random.stateless_normal([batch, size, size, channels], seed=[seed, 0])

    @tf.function
    def forward(features):
        return gcn(list(to_graph(features)))

    def call():
        return forward(feature_map).numpy()

    edges = size**4 if neighbours is None else int(
        tf.shape(to_graph_adjacency(size, neighbours).indices)[0])
    return call, {"nodes": size * size, "adjacency_entries": edges}


def to_graph_adjacency(size, neighbours):
    layer = GridToGraph(neighbours=neighbours)
    layer.build((None, size, size, 1))
    return layer.adjacency()


def setup_keypoint_graph(keypoints, batch, map_size, channels, units, num_layers, seed=0):
    """AttentionTopK(N) + CNNToGraph + GCNStack(units, num_layers) on a (map_size)^2 map."""
    detector = AttentionTopK(num_keypoints=keypoints)
    to_graph = CNNToGraph(sampling="gather", normalize=True)
    gcn = GCNStack(units, num_layers)
    feature_map = tf.random.stateless_normal([batch, map_size, map_size, channels], seed=[seed, 0])

    @tf.function
    def forward(features):
        positions, scores, _ = detector(features)
        return gcn(list(to_graph([features, positions, scores])))

    def call():
        return forward(feature_map).numpy()

    return call, {"keypoints": keypoints, "adjacency_entries": batch * keypoints * keypoints}


def _row(record, size_key, size):
    row = {size_key: size, "status": record["status"], "estimated_bytes": record["estimated_bytes"]}
    if record["status"] == "ok":
        row.update(**record["info"], peak_rss_bytes=record["peak_rss_bytes"],
                   peak_rss_delta_bytes=record["peak_rss_delta_bytes"],
                   gpu_peak_bytes=record.get("gpu_peak_bytes"))
    else:
        row["reason"] = record["reason"]
    return row


def _memory_growth(rows, size_key, size_of):
    """Growth of the peak-memory increase between successive sizes that ran.

    "memory_excess" is the peak-memory increase above the smallest size's, which is mostly the
    runtime's fixed overhead (its own graph is tiny): the part that scales with the graph."""
    ok = [row for row in rows if row["status"] == "ok"]
    sizes = [size_of(row[size_key]) for row in ok]
    deltas = [row["peak_rss_delta_bytes"] for row in ok]
    excess = [delta - deltas[0] for delta in deltas[1:]]
    return {"memory_delta": measure.growth(sizes, deltas),
            "memory_excess": measure.growth(sizes[1:], excess)}


def _time_growth(group, names, sizes):
    """Growth of time between successive sizes, each step a paired ratio of the group."""
    steps = [None] + [measure.group_ratio(group, b, a) for a, b in zip(names, names[1:])]
    growth = measure.growth(sizes, steps)
    for step, ratio in zip(growth, steps[1:]):
        step["paired_ratio"] = ratio
    return growth


def _attach_timing(row, group, name):
    row["timing_name"] = name
    row.update({k: v for k, v in group["timings"][name].items() if k != "rounds_ms"})


def grid_name(kind, size):
    return f"{kind} {size}x{size}"


def benchmark_grid_graphs(*, sizes=GRID_SIZES, warmup, repeats, memory_limit_bytes,
                          workload=None, timeout_s=600):
    """Dense and sparse grid graph + one GCN layer at each feature-map size.

    First each size's peak memory in its own worker (`isolation.run_isolated`; skipped when its
    estimate exceeds the limit); then every (kind, size) whose worker ran is timed here, all in
    one interleaved group, so that dense / sparse and the growth from one size to the next are
    paired ratios. Growth exponents are per node (size^2): 1 is linear in the nodes, 2
    quadratic."""
    workload = dict(workload or GRID_WORKLOAD)
    kinds = (("dense", None), ("sparse", SPARSE_NEIGHBOURS))
    results, calls = {}, {}
    for kind, neighbours in kinds:
        rows = []
        for size in sizes:
            params = dict(size=size, neighbours=neighbours, **workload)
            record = isolation.run_isolated(
                "keypoint_gnn.benchmarks.scale:setup_grid_graph", params, mode="memory",
                memory_limit_bytes=memory_limit_bytes,
                estimated_bytes=grid_graph_bytes(**params), timeout_s=timeout_s)
            rows.append(_row(record, "size", size))
            if record["status"] == "ok":
                calls[grid_name(kind, size)], _ = setup_grid_graph(**params)
        results[kind] = {"neighbours": neighbours, "rows": rows}
    if not calls:
        for kind, _ in kinds:
            results[kind]["growth_per_node"] = {
                "time": [], **_memory_growth(results[kind]["rows"], "size", lambda s: s * s)}
        return {"workload": workload, **results, "group": None, "aa_flag": None}
    sparse_ok = [row["size"] for row in results["sparse"]["rows"] if row["status"] == "ok"]
    aa = grid_name("sparse", max(sparse_ok)) if sparse_ok else next(iter(calls))
    group = measure.time_group(calls, warmup, repeats, label="grid graphs", aa=aa)
    for kind, _ in kinds:
        part = results[kind]
        ok = [row for row in part["rows"] if row["status"] == "ok"]
        for row in ok:
            _attach_timing(row, group, grid_name(kind, row["size"]))
        part["growth_per_node"] = {
            "time": _time_growth(group, [grid_name(kind, row["size"]) for row in ok],
                                 [row["size"] ** 2 for row in ok]),
            **_memory_growth(part["rows"], "size", lambda s: s * s)}
    for row in results["dense"]["rows"]:
        if row["status"] == "ok" and grid_name("sparse", row["size"]) in calls:
            row["x_sparse"] = measure.group_ratio(group, grid_name("dense", row["size"]),
                                                  grid_name("sparse", row["size"]))
    return {"workload": workload, **results, "group": group, "aa_flag": group["aa_flag"]}


def keypoint_name(count):
    return f"{count} keypoints"


def benchmark_keypoint_counts(*, counts=KEYPOINT_COUNTS, warmup, repeats, memory_limit_bytes,
                              workload=None, timeout_s=600):
    """Keypoint selection + CNN->graph + GCN stack as N grows: each count's memory in a
    worker, then every count that ran timed here in one interleaved group."""
    workload = dict(workload or KEYPOINT_WORKLOAD)
    rows, calls = [], {}
    for count in counts:
        params = dict(keypoints=count, **workload)
        record = isolation.run_isolated(
            "keypoint_gnn.benchmarks.scale:setup_keypoint_graph", params, mode="memory",
            memory_limit_bytes=memory_limit_bytes,
            estimated_bytes=keypoint_graph_bytes(**params), timeout_s=timeout_s)
        rows.append(_row(record, "keypoints", count))
        if record["status"] == "ok":
            calls[keypoint_name(count)], _ = setup_keypoint_graph(**params)
    ok = [row for row in rows if row["status"] == "ok"]
    if not ok:
        return {"workload": workload, "rows": rows, "group": None, "aa_flag": None,
                "growth_per_keypoint": {"time": [], **_memory_growth(rows, "keypoints", float)}}
    group = measure.time_group(calls, warmup, repeats, label="keypoint counts",
                               aa=keypoint_name(ok[-1]["keypoints"]))
    for row in ok:
        _attach_timing(row, group, keypoint_name(row["keypoints"]))
    growth = {"time": _time_growth(group, [keypoint_name(row["keypoints"]) for row in ok],
                                   [float(row["keypoints"]) for row in ok]),
              **_memory_growth(rows, "keypoints", float)}
    return {"workload": workload, "rows": rows, "group": group, "aa_flag": group["aa_flag"],
            "growth_per_keypoint": growth}
