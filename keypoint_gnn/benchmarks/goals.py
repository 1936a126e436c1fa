"""The performance goals, judged on one run's numbers: PASS / MISS / N/A lines.

Every goal is a ratio between two things timed in the same interleaved group of this run
(`measure.paired_ratio`), or a memory fact of this run; none compares with a figure from
elsewhere. "Within noise" uses the group's A/A check (`measure.noise`).
"""
from keypoint_gnn.benchmarks import measure

TRAINING_RATIO_LIMIT = 1.3
VIG_RATIO_LIMIT = 1.5  # issue 23: a ViG step at most 1.5x a GCN step at equal parameters
# "Memory growing linearly": fitted exponent, per node, of the peak-memory increase above the
# smallest size's (the runtime's fixed overhead) between the two largest sizes that ran
# (1 linear, 2 quadratic).
LINEAR_EXPONENT_LIMIT = 1.25


def _goal(name, passed, detail):
    status = "N/A" if passed is None else ("PASS" if passed else "MISS")
    return {"goal": name, "status": status, "detail": detail}


def _ratio_text(ratio):
    return f"{ratio['value']:.2f}x (interquartile {ratio['low']:.2f}-{ratio['high']:.2f})"


def interconnect_goals(result):
    variants = result["variants"]
    noise = measure.noise(result["group"])
    goals = []
    for device, ratio in result["xla_vs_no_xla"].items():
        xla = variants[ratio["numerator"]]["median_ms"]
        plain = variants[ratio["denominator"]]["median_ms"]
        goals.append(_goal(
            f"XLA no slower than without: interconnects ({device})",
            ratio["value"] <= 1.0 + noise,
            f"{xla:.3f} ms with XLA vs {plain:.3f} ms without: {_ratio_text(ratio)}; "
            f"limit 1 + A/A noise {noise:.2f}"))
    project = {key: row for key, row in variants.items()
               if row["device"] == "cpu" and "x_memory_bound" in row}
    best = min(project, key=lambda key: project[key]["median_ms"])
    for reference in ("numpy_loop", "tf_loop"):
        speedup = project[best][f"speedup_vs_{reference}"]
        goals.append(_goal(
            f"interconnects faster than the per-keypoint loop reference {reference}",
            speedup["value"] > 1.0 + noise,
            f"{best} {project[best]['median_ms']:.3f} ms vs {reference} "
            f"{variants[reference]['median_ms']:.1f} ms: {_ratio_text(speedup)} faster"))
    return goals


def training_goals(result):
    """1.3x goals for every GCN model without XLA and in the mode `--xla` picks (other modes as
    N/A lines); "XLA no slower" for the mode that `--xla` picks on this machine
    (`result["xla_auto"]`), within the group's A/A noise; other XLA modes as N/A lines, so that
    their cost stays visible."""
    goals = []
    cases = result["cases"]
    auto = result.get("xla_auto", "step")
    noise = measure.noise(result["group"])
    for case in cases.values():
        if case["model"].endswith("/gcn"):
            judged = case["xla"] in ("off", auto)
            ratio = case["ratio_to_plain_cnn"]
            plain_ms = cases[ratio["denominator"]]["median_ms"]
            goals.append(_goal(
                f"training step of {case['model']} <= 1.3x matched plain CNN (XLA {case['xla']}, "
                f"{case['precision']})" if judged else
                f"not a goal: training step of {case['model']} vs matched plain CNN (XLA "
                f"{case['xla']}, {case['precision']}; --xla picks {auto} mode here)",
                ratio["value"] <= TRAINING_RATIO_LIMIT if judged else None,
                f"{case['median_ms']:.1f} ms vs plain CNN {plain_ms:.1f} ms = {_ratio_text(ratio)}"))
    for case in cases.values():
        if "ratio_xla_to_no_xla" not in case:
            continue
        ratio = case["ratio_xla_to_no_xla"]
        off_ms = cases[ratio["denominator"]]["median_ms"]
        detail = (f"{case['median_ms']:.1f} ms with XLA vs {off_ms:.1f} ms without "
                  f"({_ratio_text(ratio)})")
        if case["model"] == "plain_cnn" and case["xla"] == "graph":
            goals.append(_goal(f"control, not a goal: plain CNN (no graph layers) in graph "
                               f"mode ({case['precision']})", None,
                               detail + "; the same computation as without XLA"))
            continue
        if case["xla"] != auto:
            goals.append(_goal(f"not a goal: XLA {case['xla']} mode, training {case['model']} "
                               f"({case['precision']}; --xla picks {auto} mode here)", None, detail))
            continue
        goals.append(_goal(f"XLA no slower than without: training {case['model']} "
                           f"({case['precision']}, --xla = {case['xla']} mode)",
                           ratio["value"] <= 1.0 + noise,
                           detail + f"; limit 1 + A/A noise {noise:.2f}"))
    return goals


def preset_goals(result):
    """Issue 21: each real-data preset's training step <= 1.3x its matched plain network's."""
    goals = []
    for name, entry in result["presets"].items():
        if "error" in entry:
            goals.append(_goal(f"training step of preset {name} <= 1.3x matched plain network",
                               None, f"not measured: {entry['error']}"))
            continue
        for precision, cases in entry["cases"].items():
            ratio = cases["ratio"]
            goals.append(_goal(
                f"training step of preset {name} <= 1.3x matched plain network ({precision})",
                ratio["value"] <= TRAINING_RATIO_LIMIT,
                f"{cases['keypoint']['median_ms']:.1f} ms vs {cases['plain']['median_ms']:.1f} ms"
                f" = {_ratio_text(ratio)}; {cases['keypoint']['images_per_second']:.0f} vs "
                f"{cases['plain']['images_per_second']:.0f} images/s"))
    return goals


def graph_goals(result):
    """Issue 23: the ViG step <= 1.5x the GCN step of the same preset at equal parameters."""
    kinds = result["kinds"]
    if "vig" not in kinds:
        return []
    vig, reference = kinds["vig"], kinds[result["reference"]]
    ratio = vig["ratio_to_reference"]
    match = (f"{vig['parameters']:,} vs {reference['parameters']:,} parameters "
             f"({vig['relative_difference']:+.1%}"
             + ("" if vig["within_tolerance"] else
                f", outside the {result['tolerance']:.0%} tolerance") + ")")
    return [_goal(
        f"ViG step <= {VIG_RATIO_LIMIT}x the {result['reference'].upper()} step at equal "
        f"parameters (preset {result['preset']}, issue 23)",
        ratio["value"] <= VIG_RATIO_LIMIT,
        f"{vig['median_ms']:.1f} ms vs {reference['median_ms']:.1f} ms = {_ratio_text(ratio)}; "
        + match)]


def scale_goals(result):
    grid = result.get("grid_graphs")
    if grid is None:
        return []
    largest = max(row["size"] for row in grid["sparse"]["rows"])
    sparse_row = next(row for row in grid["sparse"]["rows"] if row["size"] == largest)
    dense_row = next(row for row in grid["dense"]["rows"] if row["size"] == largest)
    handles = sparse_row["status"] == "ok" and dense_row["status"] != "ok"
    goals = [_goal(
        f"sparse grid graph handles {largest}x{largest} where the dense one cannot",
        handles,
        f"sparse: {sparse_row['status']}; dense: {dense_row['status']}"
        + (f" ({dense_row['reason']})" if dense_row.get("reason") else ""))]
    steps = [s for s in grid["sparse"]["growth_per_node"].get("memory_excess", [])
             if s["exponent"] is not None]
    if steps:
        last = steps[-1]
        goals.append(_goal(
            "sparse grid graph memory grows linearly",
            last["exponent"] <= LINEAR_EXPONENT_LIMIT,
            f"peak-memory increase above the smallest size's x{last['ratio']:.2f} from "
            f"{last['from']} to {last['to']} nodes: "
            f"exponent {last['exponent']:.2f} per node (limit {LINEAR_EXPONENT_LIMIT}; "
            "1 linear, 2 quadratic)"))
    else:
        goals.append(_goal("sparse grid graph memory grows linearly", None,
                           "fewer than two sizes ran"))
    both = [row for row in grid["dense"]["rows"] if "x_sparse" in row]
    if both:
        row = max(both, key=lambda r: r["size"])
        goals.append(_goal(
            f"sparse grid graph faster than the dense one at {row['size']}x{row['size']} (the "
            "largest size both ran)",
            row["x_sparse"]["value"] > 1.0,
            f"dense / sparse time {_ratio_text(row['x_sparse'])}"))
    return goals


def evaluate_goals(parts):
    """[{"goal", "status", "detail"}] for every goal whose part ran."""
    goals = []
    if "interconnects" in parts:
        goals += interconnect_goals(parts["interconnects"])
    if "training" in parts:
        goals += training_goals(parts["training"])
    if "presets" in parts:
        goals += preset_goals(parts["presets"])
    if "graphs" in parts:
        goals += graph_goals(parts["graphs"])
    if "scale" in parts:
        goals += scale_goals(parts["scale"])
    return goals


def aa_warnings(results):
    """One line per group of `results` whose A/A check is flagged (its A/A ratio differs from
    1 by more than its own spread)."""
    lines = []
    for group in measure.groups_in(results).values():
        if group["aa_flag"]:
            aa = group["aa"]
            lines.append(f"A/A check flagged in group '{group['label']}' ({group['group']}): "
                         f"{aa['numerator']} / {aa['denominator']} = {_ratio_text(aa)}, not 1 "
                         "within its spread: this group's ratios are biased beyond their noise")
    return lines


def format_goals(goals):
    return "\n".join(f"{g['status']:<5} {g['goal']}: {g['detail']}" for g in goals)
