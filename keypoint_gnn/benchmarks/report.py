"""Markdown of a benchmark run: `benchmarks.md`, docs/BENCHMARKS.md and the README table.

  markdown(results)        the run's tables (OUT/benchmarks.md)
  docs_markdown(results)   docs/BENCHMARKS.md: how the benchmark measures, then the tables
  readme_table(results)    the README's performance table (between its markers)
  write_docs(results, docs_path, readme_path)   writes both

Every ratio in these tables is a `measure.paired_ratio`: two calls timed in the same
interleaved group of this run, printed as "median (p25-p75)" of the per-round ratios.
"""
import datetime
import pathlib
import re

from keypoint_gnn.benchmarks import measure

MIB = 2**20
README_START = "<!-- benchmark-table:start -->"
README_END = "<!-- benchmark-table:end -->"


def _mib(value):
    return "" if value is None else f"{value / MIB:.0f}"


def _num(value, digits=2):
    return "" if value is None else f"{value:.{digits}f}"


def _ratio(ratio, digits=2):
    """A paired ratio as "median (p25-p75)"."""
    if not ratio:
        return ""
    return (f"{ratio['value']:.{digits}f} ({ratio['low']:.{digits}f}-"
            f"{ratio['high']:.{digits}f})")


def _memory_cells(memory):
    """(peak MiB, increase MiB) of a memory summary, or the reason it has none."""
    if not memory:
        return "not measured", ""
    if memory.get("status") != "ok":
        return memory.get("status", ""), memory.get("reason", "") or ""
    return _mib(memory["peak_rss_bytes"]), _mib(memory["peak_rss_delta_bytes"])


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _threads_text(threads):
    from keypoint_gnn.benchmarks.machine import format_threads

    return format_threads(threads)


def _load_text(load):
    return " / ".join(map(str, load))


def machine_section(info, load_after=None, date=None):
    from keypoint_gnn.benchmarks.machine import extensions_text

    gpus = ", ".join(info["gpus"]) or "none detected (GPU sections skipped)"
    lines = ["## Machine", ""]
    if date:
        lines.append(f"- date: {date}")
    lines += [
        f"- CPU: {info['cpu_model']}, {info['logical_cores']} logical cores, "
        f"{extensions_text(info)}",
        f"- memory: {info['memory_gib']} GiB ({info['memory_available_gib']} GiB available at start)",
        f"- TensorFlow {info['tensorflow']}, Python {info['python']}; GPU: {gpus}",
        f"- load average at start: {_load_text(info['load_average'])} (1 / 5 / 15 min)",
    ]
    if load_after:
        lines.append(f"- load average at end: {_load_text(load_after)}")
    if info.get("threads"):
        lines.append(f"- threads: {_threads_text(info['threads'])}")
    if max(info["load_average"][0], *(load_after or [0])) > 0.5 * info["logical_cores"]:
        lines.append("- the machine was shared with other jobs during the run (load average "
                     "above half the cores): times swing with the load; the ratios compare "
                     "calls of the same rounds")
    return "\n".join(lines)


def _conditions_line(part):
    conditions = part.get("conditions")
    if not conditions:
        return []
    return [f"Load average {_load_text(conditions['load_before'])} before, "
            f"{_load_text(conditions['load_after'])} after; threads: "
            f"{_threads_text(conditions['threads'])}.", ""]


def _aa_line(group):
    if not group:
        return []
    aa = group["aa"]
    if group["aa_flag"] is None:
        verdict = f"not judged (fewer than {measure.MIN_AA_ROUNDS} rounds)"
    elif group["aa_flag"]:
        verdict = ("**flagged**: it differs from 1 by more than its spread, so this group's "
                   "ratios are biased beyond their noise")
    else:
        verdict = "1 within its spread"
    return [f"A/A check ({aa['denominator']} timed twice, {group['repeats']} rounds): "
            f"{_ratio(aa)}, {verdict}.", ""]


def interconnect_section(result):
    variants = result["variants"]
    w = result["workload"]
    moved = result["bytes_per_batch"]["float32"]
    lines = [
        "## Interconnects (CNN->graph + graph->CNN)", "",
        f"{w['batch']} images x {w['keypoints']} keypoints x {w['channels']} channels on a "
        f"{w['map_size']}x{w['map_size']} map, ms per batch, every variant on the same batch in "
        "one interleaved group. Speed-up = the reference's time over the variant's, round by "
        "round. Memory-bound = the bytes a call must move over the copy bandwidth measured in "
        "the same group.", ""]
    lines += _conditions_line(result)

    def rows_for(device):
        rows = []
        for key, v in variants.items():
            if v["device"] != device:
                continue
            peak, delta = _memory_cells(v.get("memory"))
            rows.append([key, _num(v["median_ms"], 3), _num(v["iqr_ms"], 3),
                         _ratio(v.get("speedup_vs_numpy_loop"), 1) or "reference",
                         _ratio(v.get("speedup_vs_tf_loop"), 1) or "reference",
                         _num(v.get("memory_bound_ms"), 3), _ratio(v.get("x_memory_bound"), 1),
                         peak, delta])
        return rows

    header = ["variant", "median ms", "IQR ms", "speed-up vs numpy_loop",
              "speed-up vs tf_loop", "memory-bound ms", "x memory-bound", "peak RSS MiB",
              "increase MiB"]
    lines += [_table(header, rows_for("cpu")), ""]
    parts = ", ".join(f"{name} {value / MIB:.2f}" for name, value in moved.items()
                      if name != "total")
    copy = result["copy"]["cpu"]
    lines += [f"- bytes per batch (float32): {moved['total'] / MIB:.2f} MiB = {parts} MiB "
              "(inputs read + outputs written; intermediates assumed in cache)",
              f"- copy bandwidth (CPU, NumPy copy of {copy['mib']} MiB, read + write): "
              f"{copy['bandwidth_gb_s']:.1f} GB/s",
              f"- XLA / no XLA (CPU): {_ratio(result['xla_vs_no_xla']['cpu'])}", ""]
    if result.get("gpu"):
        gpu_copy = result["copy"]["gpu"]
        lines += ["### Interconnects on the GPU (float32 and mixed float16)", "",
                  _table(header, rows_for("gpu")), "",
                  f"- copy bandwidth (GPU, {gpu_copy['mib']} MiB read + write): "
                  f"{gpu_copy['bandwidth_gb_s']:.1f} GB/s; float16 moves "
                  f"{result['bytes_per_batch']['mixed_float16']['total'] / MIB:.2f} MiB per batch",
                  f"- XLA / no XLA (GPU): {_ratio(result['xla_vs_no_xla']['gpu'])}", ""]
    else:
        lines += ["No GPU detected: the GPU rows (float32 and mixed float16) were skipped.", ""]
    lines += _aa_line(result.get("group"))
    return "\n".join(lines).rstrip()


def training_section(result):
    rows = []
    for case in result["cases"].values():
        peak, delta = _memory_cells(case.get("memory"))
        rows.append([case["model"], case["xla"], case["precision"],
                     f"{case['parameters']:,}", _num(case["median_ms"], 1),
                     _num(case["iqr_ms"], 1), _num(case["images_per_second"], 0),
                     _ratio(case.get("ratio_to_plain_cnn")) or "reference",
                     _ratio(case.get("ratio_xla_to_no_xla")),
                     peak, delta])
    w = result["workload"]
    where = "on the GPU" if result.get("gpu") else "on the CPU"
    lines = [
        f"## Training step ({where})", "",
        f"`train_on_batch` on {w['batch']} images of {w['image_size']} px, Adam, the steps of "
        f"all models interleaved in one group. plain_cnn is matched to "
        f"{result['reference_model']} ({result['plain_cnn_target_params']:,} parameters); "
        "x plain CNN is the model's step time over the plain CNN's in the same XLA mode and "
        "precision.", ""]
    lines += _conditions_line(result)
    lines += [_table(["model", "XLA", "precision", "params", "ms/step", "IQR ms", "images/s",
                      "x plain CNN", "XLA / no XLA", "peak RSS MiB", "increase MiB"], rows), ""]
    lines += [f"- {note}" for note in result["notes"]] + [""]
    lines += _aa_line(result.get("group"))
    return "\n".join(lines).rstrip()


def inference_section(result):
    rows = []
    for row in result["rows"]:
        peak, delta = _memory_cells(row.get("memory"))
        size = _num(row["size_bytes"] / 1024, 0) if row.get("size_bytes") else ""
        rows.append([row["format"], row["quantize"], row["batch"], _num(row["median_ms"], 2),
                     _num(row["iqr_ms"], 2), _num(row["ms_per_image"], 3),
                     _ratio(row.get("x_savedmodel")) or "reference", size, peak, delta])
    lines = ["## Inference", "",
             "Each batch size is one interleaved group; x SavedModel is the row's time over "
             "the SavedModel's, round by round.", ""]
    lines += _conditions_line(result)
    lines += [_table(["format", "quantize", "batch", "median ms", "IQR ms", "ms/image",
                      "x SavedModel", "file KiB", "peak RSS MiB", "increase MiB"], rows), ""]
    lines += [f"- {note}" for note in result["notes"]] + [""]
    for batch, group in result.get("groups", {}).items():
        lines += [f"Batch {batch}: " + _aa_line(group)[0], ""]
    return "\n".join(lines).rstrip()


def presets_section(result):
    lines = ["## Real-data presets: training step vs the matched plain network", "",
             "Per preset, the keypoint model's `train_on_batch` step and that of "
             "`build_plain_cnn` matched to its parameter count, each with the preset's recipe, "
             "interleaved in one group per precision.", ""]
    lines += _conditions_line(result)
    rows, groups = [], []
    for name, entry in result["presets"].items():
        if "error" in entry:
            rows.append([name, "", "", "", "", "", "", "", f"not measured: {entry['error']}"])
            continue
        for precision, cases in entry["cases"].items():
            keypoint, plain = cases["keypoint"], cases["plain"]
            rows.append([name, precision, entry["image_size"], entry["batch"],
                         _num(keypoint["median_ms"], 1), _num(plain["median_ms"], 1),
                         _num(keypoint["images_per_second"], 0),
                         _num(plain["images_per_second"], 0), _ratio(cases["ratio"])])
            groups.append((f"{name} ({precision})", entry["groups"][precision]))
    if rows:
        lines += [_table(["preset", "precision", "image px", "batch", "keypoint ms/step",
                          "plain ms/step", "keypoint images/s", "plain images/s",
                          "keypoint / plain"], rows), ""]
    lines += [f"- {note}" for note in result["notes"]] + [""]
    for label, group in groups:
        lines += [f"{label}: " + _aa_line(group)[0], ""]
    return "\n".join(lines).rstrip()


def _growth_cell(steps, index):
    """The growth step into row `index` (none for the first row) as "xR (p25-p75)"."""
    if index == 0:
        return ""
    ratio = steps[index - 1].get("paired_ratio")
    return f"x{_ratio(ratio)}" if ratio else "n/a"


def graphs_section(result):
    reference = result["reference"]
    lines = [f"## Graph networks at equal parameters (preset {result['preset']})", "",
             f"The preset's keypoint classifier with each `graph.kind`, `train_on_batch` on "
             f"{result['batch']} images of {result['image_size']} px with the preset's recipe, "
             "all steps interleaved in one group. Each kind's units give the whole model the "
             f"parameter count closest to the {reference} model's (tolerance "
             f"{result['tolerance']:.0%}); x {reference} is the step time over the "
             f"{reference} step's, round by round.", ""]
    lines += _conditions_line(result)
    rows = []
    for kind, entry in result["kinds"].items():
        if kind == reference:
            difference = "reference"
        else:
            difference = f"{entry['relative_difference']:+.2%}" + (
                "" if entry["within_tolerance"] else " (outside tolerance)")
        rows.append([kind, "" if entry["units"] is None else entry["units"],
                     f"{entry['parameters']:,}", difference, _num(entry["median_ms"], 1),
                     _num(entry["iqr_ms"], 1), _num(entry["images_per_second"], 0),
                     _ratio(entry.get("ratio_to_reference")) or "reference"])
    lines += [_table(["graph.kind", "units", "params", f"params vs {reference}", "ms/step",
                      "IQR ms", "images/s", f"x {reference}"], rows), ""]
    knn = result["knn"]
    w = knn["workload"]
    growth = knn["growth"]
    lines += [f"**kNN graph against the keypoint count N**: `ops.knn_indices` (k {w['k']}, "
              f"dilation {w['dilation']}, position weight {w['position_weight']:g}) on "
              f"{w['batch']} x N x {w['features']} nodes, and one ViGStack forward "
              f"({w['layers']} blocks of {w['units']} units, {w['conv']}), every N in one group; "
              "x previous N is the growth per doubling, round by round.", ""]
    rows = []
    for index, row in enumerate(knn["rows"]):
        rows.append([row["keypoints"], _num(row["knn"]["median_ms"], 3),
                     _num(row["knn"]["iqr_ms"], 3), _growth_cell(growth["knn"], index),
                     _num(row["vig_forward"]["median_ms"], 2),
                     _num(row["vig_forward"]["iqr_ms"], 2),
                     _growth_cell(growth["vig_forward"], index)])
    lines += [_table(["N", "knn_indices ms", "IQR ms", "x previous N", "ViGStack forward ms",
                      "IQR ms", "x previous N"], rows), "",
              f"- knn_indices growth: {_growth_text(growth['knn'])}",
              f"- ViGStack forward growth: {_growth_text(growth['vig_forward'])}", ""]
    lines += [f"- {note}" for note in result["notes"]] + [""]
    lines += ["Training steps: " + _aa_line(result.get("group"))[0], "",
              "kNN: " + _aa_line(knn.get("group"))[0], ""]
    return "\n".join(lines).rstrip()


def _growth_text(steps):
    return ", ".join(
        f"{s['from']:g}->{s['to']:g}: x{s['ratio']:.2f} (exp {s['exponent']:.2f})"
        if s["ratio"] is not None else f"{s['from']:g}->{s['to']:g}: n/a" for s in steps) or "n/a"


def _scale_rows(rows, size_key, label, with_ratio=False):
    table = []
    for row in rows:
        extra = [_ratio(row.get("x_sparse"))] if with_ratio else []
        if row["status"] == "ok":
            table.append([label(row[size_key]), row["status"], f"{row['adjacency_entries']:,}",
                          _num(row.get("median_ms"), 2), _num(row.get("iqr_ms"), 2)] + extra
                         + [_mib(row["peak_rss_bytes"]), _mib(row["peak_rss_delta_bytes"]),
                            _mib(row["estimated_bytes"])])
        else:
            reason = row["reason"]
            status = reason if reason.startswith(row["status"]) else f"{row['status']}: {reason}"
            table.append([label(row[size_key]), status, "", "", ""] + [""] * len(extra)
                         + ["", "", _mib(row["estimated_bytes"])])
    return table


def scale_section(result):
    lines = ["## Scale", ""]
    lines += _conditions_line(result)
    grid = result.get("grid_graphs")
    if grid:
        w = grid["workload"]
        lines += [f"GridToGraph + GCNStack({w['units']}, 1), batch {w['batch']}, {w['channels']} "
                  "channels. Memory: each size in its own process under the memory limit; time: "
                  "every size that ran, dense and sparse, in one interleaved group (growth "
                  "steps and dense / sparse are paired ratios).", ""]
        for name in ("dense", "sparse"):
            part = grid[name]
            title = "dense" if part["neighbours"] is None else f"sparse, {part['neighbours']} neighbours"
            dense = name == "dense"
            growth = part.get("growth_per_node", {})
            lines += [f"**{title}**", "",
                      _table(["map", "status", "adjacency entries", "median ms", "IQR ms"]
                             + (["dense / sparse"] if dense else [])
                             + ["peak RSS MiB", "increase MiB", "estimated MiB"],
                             _scale_rows(part["rows"], "size", lambda s: f"{s}x{s}", dense)), "",
                      f"- time growth per node: {_growth_text(growth.get('time', []))}",
                      f"- memory-increase growth per node: "
                      f"{_growth_text(growth.get('memory_delta', []))}",
                      f"- growth per node of the increase above the smallest size's: "
                      f"{_growth_text(growth.get('memory_excess', []))}", ""]
        lines += _aa_line(grid.get("group"))
    keypoint = result.get("keypoint_counts")
    if keypoint:
        w = keypoint["workload"]
        growth = keypoint["growth_per_keypoint"]
        lines += [f"**AttentionTopK + CNNToGraph + GCNStack({w['units']}, {w['num_layers']})**, "
                  f"batch {w['batch']}, {w['map_size']}x{w['map_size']}x{w['channels']} map", "",
                  _table(["keypoints", "status", "adjacency entries", "median ms", "IQR ms",
                          "peak RSS MiB", "increase MiB", "estimated MiB"],
                         _scale_rows(keypoint["rows"], "keypoints", str)), "",
                  f"- time growth per keypoint: {_growth_text(growth.get('time', []))}",
                  f"- memory-increase growth per keypoint: "
                  f"{_growth_text(growth.get('memory_delta', []))}",
                  f"- growth per keypoint of the increase above the smallest count's: "
                  f"{_growth_text(growth.get('memory_excess', []))}", ""]
        lines += _aa_line(keypoint.get("group"))
    return "\n".join(lines).rstrip()


def groups_section(results):
    """Every interleaved group of the run: its calls, rounds, load and A/A check."""
    rows = []
    for group in measure.groups_in(results).values():
        rows.append([group["label"], len(group["timings"]), group["repeats"],
                     _load_text(group["load_before"]), _load_text(group["load_after"]),
                     _ratio(group["aa"], 3), {True: "**flagged**", False: "ok",
                                              None: "not judged"}[group["aa_flag"]]])
    if not rows:
        return ""
    return "\n".join([
        "## Timing groups and A/A checks", "",
        "Each group times its calls in rounds, one call of each per round in a new random "
        "order; every ratio above is between two calls of one group. The A/A check times one "
        "call twice; a group is flagged when that ratio differs from 1 by more than its "
        f"interquartile spread (judged from {measure.MIN_AA_ROUNDS} rounds on).", "",
        _table(["group", "calls (A/A copy included)", "rounds", "load before", "load after",
                "A/A ratio", "A/A check"], rows)])


def goals_section(goals, warnings=()):
    if not goals and not warnings:
        return ""
    lines = ["## Goals", ""] + [f"- **{g['status']}** {g['goal']}: {g['detail']}"
                                for g in goals]
    if warnings:
        lines += ["", "A/A warnings:", ""] + [f"- {warning}" for warning in warnings]
    return "\n".join(lines)


def _step_rows(profile, settings):
    steps = profile.get("train_step_ms")
    if not steps:
        return []
    return [["whole train_on_batch step"] + [_num(steps.get(s)) for s in settings]
            + ["" for _ in settings],
            ["rest: loss, optimizer update, Keras step"]
            + [_num(steps[s] - profile["total_ms"][s]) if s in steps else "" for s in settings]
            + [f"{(steps[s] - profile['total_ms'][s]) / steps[s]:.0%}" if s in steps else ""
               for s in settings]]


def profile_section(profiles):
    if not profiles:
        return ""
    lines = ["## Profile (forward + backward of each layer alone, ms)", "",
             "Each layer runs alone in its own tf.function on the inputs it sees in the model, "
             "interleaved with the model's whole step; a negative rest means the isolated calls "
             "overcount (per-call overhead, input gradients the real step does not need).", ""]
    for profile in profiles:
        if "rows" in profile and profile["rows"] and "layer" in profile["rows"][0]:
            settings = list(profile["total_ms"])
            lines += [f"**{profile['model']}** (batch {profile['batch']})", "",
                      _table(["layer"] + [f"ms, XLA={s}" for s in settings]
                             + [f"share, XLA={s}" for s in settings],
                             [[r["layer"]] + [_num(r["ms"][s]) for s in settings]
                              + [f"{r['share'][s]:.0%}" for s in settings]
                              for r in profile["rows"]]
                             + [["sum of layers"] + [_num(profile["total_ms"][s]) for s in settings]
                                + ["" for _ in settings]]
                             + _step_rows(profile, settings)), ""]
        else:
            settings = list(profile["rows"][0]["ms"]) if profile["rows"] else []
            lines += [f"**{profile['name']}**", "",
                      _table(["part"] + [f"ms, XLA={s}" for s in settings],
                             [[r["part"]] + [_num(r["ms"][s], 3) for s in settings]
                              for r in profile["rows"]]), ""]
    return "\n".join(lines)


SECTIONS = (("interconnects", interconnect_section), ("training", training_section),
            ("presets", presets_section), ("graphs", graphs_section),
            ("inference", inference_section), ("scale", scale_section))


def _date(results):
    return results.get("date") or datetime.date.today().isoformat()


def body(results, level=2):
    """Machine, each part that ran, the groups, goals and profiles; headings at `level`."""
    sections = [machine_section(results["machine"], results.get("load_average_end"),
                                _date(results))]
    parts = results["parts"]
    for name, section in SECTIONS:
        if name in parts:
            sections += ["", section(parts[name])]
    sections += ["", groups_section(results),
                 "", goals_section(results.get("goals", []), results.get("aa_warnings", [])),
                 "", profile_section(results.get("profiles", []))]
    text = "\n".join(sections).rstrip() + "\n"
    if level != 2:
        text = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + level - 2) + " ", text,
                      flags=re.MULTILINE)
    return text


def markdown(results):
    """The whole report of a run (OUT/benchmarks.md)."""
    return (f"# keypoint-gnn benchmarks\n\nCommand: `{results['command']}`\n\n"
            + body(results))


HOW_IT_MEASURES = """\
## How it measures

- **Only what this run measured is compared.** Every ratio is between two things timed in the
  same run, on the same inputs, in the same interleaved group: the project's interconnects
  against its own per-keypoint loop references (NumPy, and the authors' structure in
  TensorFlow eager), each model's training step against the matched plain CNN's, each graph
  network's step against the GCN's, each inference format against the SavedModel, dense
  against sparse grid graphs and each size against the previous one. No figure from another
  machine or paper is used as a reference; `measure.paired_ratio` refuses two timings of
  different groups, and the tests check every ratio of a run against its group.
- **Interleaved rounds**: a group's calls are built in one process and run one of each per
  round, in a new random order each round (no call always runs first or after the same
  neighbour), after untimed warm-up rounds that trace and compile. Every timed call returns
  host values, so the work has finished. Each timing is reported as its median and
  interquartile range (IQR); each ratio as the median of the per-round ratios, with their
  p25-p75 in brackets.
- **A/A check**: every group times one of its calls twice. The two copies run the same
  computation, so their ratio should be 1; a group whose A/A ratio differs from 1 by more than
  its own interquartile spread is flagged in the tables and in the goals, because its ratios
  then carry a bias larger than their noise. "No slower" goals allow the group's noise (the
  larger of the A/A ratio's distance from 1 and its spread).
- **Load and threads**: the load average before and after each part and each group, the
  cores this process may use, TensorFlow's intra-/inter-op pools and the thread environment
  variables are recorded with every part.
- **Memory-bound limit (interconnects)**: the bytes one call must move, inputs read plus
  outputs written (the feature rows at the keypoints B*N*C, positions B*N*2, scores B*N; the
  nodes B*N*C, adjacency B*N*N and the whole grid B*h*w*C), divided by the copy bandwidth
  measured in the same group (a NumPy copy of a 64 MiB array, one thread, read + write;
  on a GPU an element-wise product on the device). "x memory-bound" is how far a variant is
  from an implementation that only moves those bytes.
- **Memory**: each measurement runs again alone in a fresh worker process
  (`python -m keypoint_gnn.benchmarks.worker`). After the imports the worker resets the
  kernel's peak-RSS mark (`/proc/self/clear_refs`) and reports VmHWM after the calls: "peak
  RSS" is that peak (TensorFlow itself is ~0.7 GiB), "increase" the part above the resident
  memory of the imported libraries. Peak GPU memory is recorded when a GPU is present.
- **Memory cap** (the machine is shared): a measurement whose estimated peak exceeds
  `--memory-limit-gb` is not started and is recorded as "skipped: needs X GiB"; inside a
  worker RLIMIT_AS bounds address-space growth; the parent kills a worker whose resident
  memory passes the limit ("out of memory"). Scale sizes are timed only after their worker ran.
- **Equal parameters (graphs)**: each graph network's `graph.units` is chosen by building
  the whole classifier at several units (bracketing from the GCN's units, then narrowing the
  bracket) and keeping the units whose parameter count is closest to the GCN model's; the
  table gives each count and its relative difference. `graph.kind=none` has no graph layers
  and keeps its own count.
- **XLA modes** (`keypoint_gnn.xla`, the trainers' `--xla MODE`): every training model is
  timed under `off`, `graph` (only the keypoint and graph layers compiled) and `step`
  (`compile(jit_compile=True)`). The goal "XLA no slower than without" is judged for the mode
  `--xla` picks on the machine (`graph` on a CPU, `step` on a GPU).
- **GPU**: when TensorFlow sees a GPU, the interconnects also run there in float32 and mixed
  float16, the training steps and the real-data presets in float32 and mixed float16, and the
  tables below get GPU sections; without one, the run says so and skips them.
- **Context, not reference**: the authors' PyTorch interconnect code
  (github.com/amitlohan/nn_interconnects) was measured once beside this project on a 2-core
  CPU at 46-61 ms per batch of this workload when idle, and 60-900 ms under load; such a
  figure from another run cannot be compared with this run's, so no goal or ratio uses it.
"""


def docs_markdown(results):
    """docs/BENCHMARKS.md: the command, how it measures, then the run's tables."""
    return "\n".join([
        "# Benchmarks", "",
        "How fast and how large keypoint-gnn is, measured by one command; this file and the "
        "README's performance table are written by it (`--docs`):", "",
        "```",
        "python -m trainers.benchmark --docs                  # all parts, then this file and the README table",
        "python -m trainers.benchmark interconnects --quick   # one part, few rounds (smoke test)",
        "```", "",
        "Parts: `interconnects`, `training`, `presets`, `graphs`, `inference`, `scale`, `all` "
        "(default). "
        "Flags: `--out DIR` (default `runs/benchmark/`), `--quick`, `--repeats N`, "
        "`--warmup N`, `--memory-limit-gb G` (default 6), `--jobs N`, `--no-memory`, "
        "`--presets NAMES`, `--profile auto|always|never`, `--trace`, `--docs`, "
        "`--docs-from JSON` (rewrite the docs from a saved `benchmarks.json`, no timing). "
        "Code: `keypoint_gnn/benchmarks/`, CLI `trainers/benchmark.py`, tests "
        "`tests/test_benchmark*.py`.", "",
        HOW_IT_MEASURES.rstrip(), "",
        f"## Results (run of {_date(results)})", "",
        f"Command: `{results['command']}`", "",
        body(results, level=3).rstrip(), ""])


def _best_cpu_interconnect(part):
    project = {k: v for k, v in part["variants"].items()
               if v["device"] == "cpu" and "x_memory_bound" in v}
    return min(project, key=lambda k: project[k]["median_ms"]) if project else None


def readme_table(results):
    """The README's performance table: the headline in-run ratios of each part that ran."""
    parts = results["parts"]
    rows = []
    if "interconnects" in parts:
        part = parts["interconnects"]
        best = _best_cpu_interconnect(part)
        if best:
            v = part["variants"][best]
            rows.append([f"interconnects, {best} (CPU)", f"{v['median_ms']:.2f} ms per batch",
                         f"{_ratio(v['speedup_vs_numpy_loop'], 1)}x faster than numpy_loop, "
                         f"{_ratio(v['speedup_vs_tf_loop'], 0)}x than tf_loop; "
                         f"{_ratio(v['x_memory_bound'], 1)}x the memory-bound time"])
        for key, v in part["variants"].items():
            if v["device"] == "gpu" and v["variant"] == "tf_function_xla":
                rows.append([f"interconnects, {key}", f"{v['median_ms']:.3f} ms per batch",
                             f"{_ratio(v['speedup_vs_numpy_loop'], 0)}x faster than numpy_loop; "
                             f"{_ratio(v['x_memory_bound'], 1)}x the memory-bound time"])
    if "training" in parts:
        train = parts["training"]
        for case in train["cases"].values():
            if case["model"].endswith("/gcn") and case["xla"] in ("off", train["xla_auto"]) \
                    and case["model"] == train["reference_model"]:
                rows.append([f"training step, {case['model']} (XLA {case['xla']}, "
                             f"{case['precision']})",
                             f"{case['median_ms']:.1f} ms, {case['images_per_second']:.0f} images/s",
                             f"{_ratio(case['ratio_to_plain_cnn'])}x the matched plain CNN"])
    if "presets" in parts:
        for name, entry in parts["presets"]["presets"].items():
            for precision, cases in entry.get("cases", {}).items():
                rows.append([f"training step, preset {name} ({precision}, "
                             f"{entry['image_size']} px, batch {entry['batch']})",
                             f"{cases['keypoint']['images_per_second']:.0f} images/s",
                             f"{_ratio(cases['ratio'])}x the matched plain network"])
    if "graphs" in parts:
        graphs = parts["graphs"]
        reference = graphs["kinds"][graphs["reference"]]
        for kind, entry in graphs["kinds"].items():
            if kind == "vig":
                rows.append([f"training step, preset {graphs['preset']}, graph.kind={kind} "
                             f"({entry['parameters']:,} parameters)",
                             f"{entry['images_per_second']:.0f} images/s",
                             f"{_ratio(entry['ratio_to_reference'])}x the "
                             f"{graphs['reference']} model's ({reference['parameters']:,} "
                             "parameters)"])
    if "inference" in parts:
        for row in parts["inference"]["rows"]:
            if row["format"] == "tflite" and row["quantize"] == "none":
                rows.append([f"inference, TFLite float32, batch {row['batch']}",
                             f"{row['ms_per_image']:.3f} ms per image",
                             f"{_ratio(row['x_savedmodel'])}x the SavedModel's time"])
    if "scale" in parts and parts["scale"].get("grid_graphs"):
        dense = [r for r in parts["scale"]["grid_graphs"]["dense"]["rows"] if "x_sparse" in r]
        if dense:
            row = max(dense, key=lambda r: r["size"])
            rows.append([f"dense / sparse grid graph, {row['size']}x{row['size']}",
                         f"{row['median_ms']:.1f} ms dense",
                         f"{_ratio(row['x_sparse'])}x the sparse graph's time"])
    info = results["machine"]
    flagged = sum(bool(group["aa_flag"]) for group in measure.groups_in(results).values())
    return "\n".join([
        f"From one run of `{results['command']}` ({_date(results)}; {info['cpu_model']}, "
        f"{info['logical_cores']} cores, GPU: {', '.join(info['gpus']) or 'none'}; load "
        f"average {_load_text(info['load_average'])} at start). Every comparison is between "
        "two things timed in that run, interleaved, as median (p25-p75) of the per-round "
        f"ratios; A/A checks flagged: {flagged}. Details: "
        "[docs/BENCHMARKS.md](docs/BENCHMARKS.md).", "",
        _table(["measurement", "this run", "compared in the same run"], rows)])


def replace_between_markers(text, content, start=README_START, end=README_END):
    """`text` with what lies between the two marker lines replaced by `content`."""
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"the README must hold one {start} line before one {end} line")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content.strip()}\n{end}{tail}"


def write_docs(results, docs_path, readme_path):
    """Writes docs/BENCHMARKS.md and the README's table (between its markers) from one run."""
    docs_path, readme_path = pathlib.Path(docs_path), pathlib.Path(readme_path)
    readme = replace_between_markers(readme_path.read_text(), readme_table(results))
    docs_path.write_text(docs_markdown(results))
    readme_path.write_text(readme)
    return docs_path, readme_path
