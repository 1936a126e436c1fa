"""The graph networks at equal parameters, and the cost of ViG's kNN graph as N grows (issue 23).

Training steps: the keypoint classifier of one real-data preset (`GRAPHS_PRESET`) with each
`graph.kind` of `KINDS`, `train_on_batch` on the same random batch with the preset's recipe,
all steps interleaved in one group (`measure.time_group`); each kind's ratio to "gcn" is a
paired ratio of that group. Each kind's `graph.units` is the one whose whole model has the
parameter count closest to the GCN model's (the preset's own units), found by building models
(`match_units`); "none" has no graph layers, so its count is what it is and is reported.

kNN: `ops.knn_indices` (the preset's k, dilation and position term) and, separately, one
inference forward of `ViGStack` at the preset's graph section, on random nodes of the preset's
batch and node width (the channels `CNNToGraph` hands to the graph network) at each N of
`KEYPOINT_COUNTS`, each in its own `tf.function`, all in one group; the growth per doubling of
N is a paired ratio of that group.
"""
import math

from keypoint_gnn import ops, registry
from keypoint_gnn._backend import tf
from keypoint_gnn.benchmarks import machine, measure, real_data
from keypoint_gnn.layers import ViGStack
from keypoint_gnn.models import build_classifier

GRAPHS_PRESET = "imagenette-64"
REFERENCE = "gcn"
KINDS = ("gcn", "vig", "gat", "diffpool", "none")
KEYPOINT_COUNTS = (32, 64, 128, 256)
# A matched model's parameter count may differ from the reference's by this fraction.
PARAM_TOLERANCE = 0.01
MAX_UNITS = 1024


def match_units(count, target, start, limit=MAX_UNITS):
    """The units whose parameter count is closest to `target`, for a count that does not
    decrease as the units grow.

    Brackets the smallest units that reach the target (doubling or halving from `start`), then
    narrows the bracket: each step builds the units where the straight line between the
    bracket's ends reaches the target and their neighbour on the other side (one build more,
    which usually closes the bracket); a step that does not halve the bracket is followed by a
    bisection. Ends comparing those units with one unit fewer.

    Args:
      count: units -> parameter count (builds a model; each units value is built once).
      target: the parameter count to match.
      start: units to try first (the reference model's).
      limit: the most units tried; returned when even they stay below the target.

    Returns:
      (units, {units: count} of every units value built), ties to the fewer units.
    """
    tried = {}

    def at(units):
        if units not in tried:
            tried[units] = count(units)
        return tried[units]

    # Invariant: at(below) < target <= at(high); below = 0 stands for "below every count".
    below, high = 0, min(start, limit)
    while at(high) < target:
        if high == limit:
            return high, dict(sorted(tried.items()))
        below, high = high, min(2 * high, limit)
    while below == 0 and high > 1:
        half = high // 2
        if at(half) >= target:
            high = half
        else:
            below = half
    bisect = False
    while high - below > 1:
        width = high - below
        if bisect:
            guess = (below + high) // 2
        else:
            reach = (target - at(below)) * width / (at(high) - at(below))
            guess = min(max(below + math.ceil(reach), below + 1), high - 1)
        neighbour = guess - 1 if at(guess) >= target else guess + 1
        for units in (guess, neighbour):
            if below < units < high:
                if at(units) >= target:
                    high = units
                else:
                    below = units
        bisect = high - below > width / 2
    candidates = [units for units in (below, high) if units >= 1]
    best = min(candidates, key=lambda units: (abs(at(units) - target), units))
    return best, dict(sorted(tried.items()))


def build_keypoint_model(preset, graph=None, image_size=None, batch=None):
    """The preset's keypoint classifier, its graph section updated by `graph` ({field: value})."""
    return build_classifier(real_data.preset_run(preset, image_size, batch, graph).model)


def node_width(model):
    """The channels of the nodes that the model's `CNNToGraph` hands to its graph network."""
    return int(model.get_layer("cnn_to_graph").output[0].shape[-1])


def matched_graphs(preset=GRAPHS_PRESET, kinds=KINDS, image_size=None, batch=None,
                   tolerance=PARAM_TOLERANCE, models=None, graph=None):
    """The units of each kind whose whole model's parameter count is closest to the REFERENCE
    model's (at the preset's own units).

    Args:
      models: None, or a dict that receives {kind: the model built at its matched units}, so
        that a caller can time them without building them again.
      graph: other fields of the preset's graph section to replace in every model ({field:
        value}, e.g. {"layers": 1} for tests).

    Returns:
      ({kind: {"units", "parameters", "relative_difference", "within_tolerance",
      "searched"}}, the reference model's node width). relative_difference = (parameters -
      reference parameters) / reference parameters; "searched": {units: parameters} built by
      `match_units` (empty for the reference and for "none", whose units build no layer: its
      "units" is None).
    """
    models = {} if models is None else models
    graph = dict(graph or {})
    reference_units = real_data.preset_run(preset, image_size, batch, graph).model.graph.units
    models[REFERENCE] = build_keypoint_model(preset, {**graph, "kind": REFERENCE}, image_size,
                                             batch)
    target = models[REFERENCE].count_params()
    matched = {}
    for kind in kinds:
        if kind == REFERENCE:
            units, searched = reference_units, {}
        elif registry.GNNS[kind] is None:
            units, searched = None, {}
            models[kind] = build_keypoint_model(preset, {**graph, "kind": kind}, image_size,
                                                batch)
        else:
            built = {}

            def count(units, kind=kind, built=built):
                built[units] = build_keypoint_model(
                    preset, {**graph, "kind": kind, "units": units}, image_size, batch)
                return built[units].count_params()

            units, searched = match_units(count, target, reference_units)
            models[kind] = built[units]
        parameters = models[kind].count_params()
        difference = (parameters - target) / target
        matched[kind] = {"units": units, "parameters": parameters,
                         "relative_difference": difference,
                         "within_tolerance": abs(difference) <= tolerance, "searched": searched}
    return matched, node_width(models[REFERENCE])


def setup_knn(keypoints, batch, features, k, dilation=1, position_weight=0.0, seed=0):
    """(call, info): `ops.knn_indices` in a tf.function on random (batch, keypoints, features)
    nodes and (batch, keypoints, 2) positions in [0, 1]."""
    nodes = tf.random.stateless_normal([batch, keypoints, features], seed=[seed, 0])
    positions = tf.random.stateless_uniform([batch, keypoints, 2], seed=[seed, 1])

    @tf.function
    def knn(nodes, positions):
        return ops.knn_indices(nodes, k, dilation, positions, position_weight)

    return (lambda: knn(nodes, positions).numpy()), {"keypoints": keypoints}


def setup_vig_forward(keypoints, batch, features, graph_config, seed=0):
    """(call, info): one inference forward (training=False) of the `ViGStack` that
    `graph_config` (a GraphConfig) describes, in a tf.function, on random nodes and positions."""
    nodes = tf.random.stateless_normal([batch, keypoints, features], seed=[seed, 0])
    positions = tf.random.stateless_uniform([batch, keypoints, 2], seed=[seed, 1])
    adjacency = tf.zeros([batch, keypoints, keypoints])  # ignored by ViGStack
    stack = ViGStack.from_section(graph_config)

    @tf.function
    def forward(nodes, adjacency, positions):
        return stack([nodes, adjacency, positions], training=False)

    return (lambda: forward(nodes, adjacency, positions).numpy()), {"keypoints": keypoints}


def knn_name(keypoints):
    return f"knn_indices N={keypoints}"


def vig_name(keypoints):
    return f"ViGStack forward N={keypoints}"


def _time_growth(group, names, sizes):
    """Growth between successive N, each step a paired ratio of the group."""
    ratios = [measure.group_ratio(group, b, a) for a, b in zip(names, names[1:])]
    steps = measure.growth(sizes, [None] + ratios)
    for step, ratio in zip(steps, ratios):
        step["paired_ratio"] = ratio
    return steps


def benchmark_knn(*, warmup, repeats, preset=GRAPHS_PRESET, counts=KEYPOINT_COUNTS, batch=None,
                  image_size=None, width=None, graph=None):
    """`ops.knn_indices` and one ViGStack forward at each keypoint count, in one group.

    Args:
      counts: keypoint counts N, ascending.
      batch, image_size: replace the preset's own; the nodes are (batch, N, width).
      width: channels of the nodes; None: the preset's node width (`node_width`, builds its
        model).
      graph: fields of the preset's graph section to replace ({field: value}).

    Returns:
      {"workload": {"batch", "features", "k", "dilation", "position_weight", "units",
      "layers", "conv"}, "rows": [{"keypoints", "knn": timing, "vig_forward": timing}],
      "growth": {"knn": steps, "vig_forward": steps} (`measure.growth`, each step with its
      "paired_ratio"), "group", "aa_flag"}.
    """
    run = real_data.preset_run(preset, image_size, batch, graph)
    if width is None:
        width = node_width(build_keypoint_model(preset, graph, image_size, batch))
    graph = run.model.graph
    workload = {"batch": run.train.batch_size, "features": width, "k": graph.knn,
                "dilation": graph.knn_dilation, "position_weight": graph.position_weight,
                "units": graph.units, "layers": graph.layers, "conv": graph.vig_conv}
    calls = {}
    for count in counts:
        calls[knn_name(count)], _ = setup_knn(count, workload["batch"], width, graph.knn,
                                              graph.knn_dilation, graph.position_weight)
        calls[vig_name(count)], _ = setup_vig_forward(count, workload["batch"], width, graph)
    group = measure.time_group(calls, warmup, repeats, label=f"knn {preset}",
                               aa=knn_name(counts[-1]))
    rows = []
    for count in counts:
        rows.append({"keypoints": count,
                     **{role: {k: v for k, v in group["timings"][name].items()
                               if k != "rounds_ms"}
                        for role, name in (("knn", knn_name(count)),
                                           ("vig_forward", vig_name(count)))}})
    sizes = [float(count) for count in counts]
    growth = {"knn": _time_growth(group, [knn_name(c) for c in counts], sizes),
              "vig_forward": _time_growth(group, [vig_name(c) for c in counts], sizes)}
    return {"workload": workload, "rows": rows, "growth": growth, "group": group,
            "aa_flag": group["aa_flag"]}


def benchmark_graphs(*, warmup, repeats, preset=GRAPHS_PRESET, kinds=KINDS,
                     counts=KEYPOINT_COUNTS, image_size=None, batch=None,
                     tolerance=PARAM_TOLERANCE, graph=None):
    """Each graph kind's training step at (close to) equal parameters, and the kNN graph's
    cost against N.

    Args:
      kinds: graph kinds to time; REFERENCE is always among them (the ratios' denominator).
      counts: keypoint counts N of the kNN timings, ascending.
      image_size, batch: replace the preset's own (small values for tests and smoke runs).
      tolerance: relative parameter difference a matched kind may have.
      graph: other fields of the preset's graph section to replace in every model and in the
        kNN workload ({field: value}, e.g. {"layers": 1} for tests; not "kind" or "units").

    Returns:
      {"preset", "image_size", "batch", "graph", "reference", "tolerance", "kinds": {kind: {"units",
      "parameters", "relative_difference", "within_tolerance", "searched", timing summary,
      "images_per_second", "ratio_to_reference" (paired ratio kind / REFERENCE, not on the
      reference itself)}}, "group", "knn" (`benchmark_knn`), "aa_flag", "gpu", "notes"}.
    """
    kinds = list(dict.fromkeys([REFERENCE, *kinds]))
    graph = dict(graph or {})
    if {"kind", "units"} & set(graph):
        raise ValueError(f"graph={graph} may not set kind or units: the benchmark chooses them")
    run = real_data.preset_run(preset, image_size, batch, graph)
    models = {}
    matched, width = matched_graphs(preset, kinds, image_size, batch, tolerance, models, graph)
    calls, infos = {}, {}
    for kind in kinds:
        calls[kind], infos[kind] = real_data.train_step(models[kind], run)
    group = measure.time_group(calls, warmup, repeats, label=f"graphs {preset}", aa=REFERENCE)
    results = {}
    for kind in kinds:
        timing = {k: v for k, v in group["timings"][kind].items() if k != "rounds_ms"}
        entry = {**matched[kind], **timing,
                 "images_per_second": infos[kind]["batch"] / (timing["median_ms"] / 1e3)}
        if kind != REFERENCE:
            entry["ratio_to_reference"] = measure.group_ratio(group, kind, REFERENCE)
        results[kind] = entry
    knn = benchmark_knn(warmup=warmup, repeats=repeats, preset=preset, counts=counts,
                        batch=batch, image_size=image_size, width=width, graph=graph)
    gpu = machine.has_gpu()
    notes = [f"train_on_batch on one fixed random batch with the {preset} preset's recipe; "
             "only graph.kind and graph.units differ; float32",
             f"units per kind: whole-model parameter count closest to the {REFERENCE} model's "
             f"(tolerance {tolerance:.0%}); graph.kind=none has no graph layers, so its count "
             "cannot be matched",
             f"kNN: random nodes of the preset's node width ({width} channels from "
             "CNNToGraph) and positions; inside ViGStack the kNN ranks units-wide features "
             f"({run.model.graph.units}); ViGStack forward in inference mode, each call a "
             "tf.function"]
    if graph:
        notes.append(f"the preset's graph section changed in every model: {graph}")
    if gpu:
        notes.append("GPU present: everything runs on it in float32 (no mixed precision)")
    aa_flags = [flag for flag in (group["aa_flag"], knn["aa_flag"]) if flag is not None]
    return {"preset": preset, "image_size": run.model.image_size,
            "batch": run.train.batch_size, "graph": graph, "reference": REFERENCE,
            "tolerance": tolerance, "kinds": results, "group": group, "knn": knn,
            "aa_flag": any(aa_flags) if aa_flags else None, "gpu": gpu, "notes": notes}
