"""Markdown tables of a benchmark run (`benchmarks.md`, pasted into the README)."""
MIB = 2**20


def _mib(value):
    return "" if value is None else f"{value / MIB:.0f}"


def _num(value, digits=2):
    return "" if value is None else f"{value:.{digits}f}"


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


def machine_section(info, load_after=None):
    gpus = ", ".join(info["gpus"]) or "none"
    lines = [
        "## Machine", "",
        f"- CPU: {info['cpu_model']}, {info['logical_cores']} logical cores",
        f"- memory: {info['memory_gib']} GiB ({info['memory_available_gib']} GiB available at start)",
        f"- TensorFlow {info['tensorflow']}, Python {info['python']}; GPU: {gpus}",
        f"- load average at start: {' / '.join(map(str, info['load_average']))} (1 / 5 / 15 min)",
    ]
    if load_after:
        lines.append(f"- load average at end: {' / '.join(map(str, load_after))}")
    if max(info["load_average"][0], *(load_after or [0])) > 0.5 * info["logical_cores"]:
        lines.append("- the machine was shared with other jobs during the run (load average "
                     "above half the cores): times are medians, ratios compare interleaved calls")
    return "\n".join(lines)


def interconnect_section(result):
    rows = []
    for name, v in result["variants"].items():
        peak, delta = _memory_cells(v.get("memory"))
        rows.append([name, _num(v["median_ms"], 3), _num(v["p90_ms"], 3),
                     _num(v["ratio_to_authors"], 4), _num(v["speedup_vs_numpy"], 1), peak, delta])
    w = result["workload"]
    return "\n".join([
        "## Interconnects (CNN->graph + graph->CNN)", "",
        f"{w['batch']} images x {w['keypoints']} keypoints x {w['channels']} channels on a "
        f"{w['map_size']}x{w['map_size']} map, ms per batch. Reference: the authors' PyTorch "
        f"code at {result['authors_pytorch_ms']:.0f} ms per batch on a 2-core CPU (quoted from the "
        "design notes, not measured here).", "",
        _table(["variant", "median ms", "p90 ms", "x 182 ms", "speed-up vs NumPy loop",
                "peak RSS MiB", "increase MiB"], rows)])


def training_section(result):
    rows = []
    for case in result["cases"].values():
        peak, delta = _memory_cells(case.get("memory"))
        rows.append([case["model"], case["xla"], case["precision"],
                     f"{case['parameters']:,}", _num(case["median_ms"], 1),
                     _num(case["images_per_second"], 0), _num(case["ratio_to_plain_cnn"]),
                     _num(case.get("ratio_xla_to_no_xla")), peak, delta])
    w = result["workload"]
    lines = [
        "## Training step", "",
        f"`train_on_batch` on {w['batch']} images of {w['image_size']} px, Adam, steps of all "
        f"models interleaved. plain_cnn is matched to {result['reference_model']} "
        f"({result['plain_cnn_target_params']:,} parameters).", "",
        _table(["model", "XLA", "precision", "params", "ms/step", "images/s", "x plain CNN",
                "XLA / no XLA", "peak RSS MiB", "increase MiB"], rows)]
    lines += [""] + [f"- {note}" for note in result["notes"]] if result["notes"] else []
    return "\n".join(lines)


def inference_section(result):
    rows = []
    for row in result["rows"]:
        peak, delta = _memory_cells(row.get("memory"))
        size = _num(row["size_bytes"] / 1024, 0) if row.get("size_bytes") else ""
        rows.append([row["format"], row["quantize"], row["batch"], _num(row["median_ms"], 2),
                     _num(row["ms_per_image"], 3), _num(row["p90_ms"], 2), size, peak, delta])
    return "\n".join([
        "## Inference", "",
        _table(["format", "quantize", "batch", "median ms", "ms/image", "p90 ms", "file KiB",
                "peak RSS MiB", "increase MiB"], rows), ""]
        + [f"- {note}" for note in result["notes"]])


def _growth_text(steps):
    return ", ".join(
        f"{s['from']}->{s['to']}: x{s['ratio']:.2f} (exp {s['exponent']:.2f})"
        if s["ratio"] is not None else f"{s['from']}->{s['to']}: n/a" for s in steps) or "n/a"


def _scale_rows(rows, size_key, label):
    table = []
    for row in rows:
        if row["status"] == "ok":
            table.append([label(row[size_key]), row["status"], f"{row['adjacency_entries']:,}",
                          _num(row["median_ms"], 2), _mib(row["peak_rss_bytes"]),
                          _mib(row["peak_rss_delta_bytes"]), _mib(row["estimated_bytes"])])
        else:
            reason = row["reason"]
            status = reason if reason.startswith(row["status"]) else f"{row['status']}: {reason}"
            table.append([label(row[size_key]), status, "", "", "", "", _mib(row["estimated_bytes"])])
    return table


def scale_section(result):
    lines = ["## Scale", ""]
    grid = result.get("grid_graphs")
    if grid:
        w = grid["workload"]
        lines += [f"GridToGraph + GCNStack({w['units']}, 1), batch {w['batch']}, {w['channels']} "
                  "channels, each size in its own process under the memory limit.", ""]
        for name in ("dense", "sparse"):
            part = grid[name]
            title = "dense" if part["neighbours"] is None else f"sparse, {part['neighbours']} neighbours"
            lines += [f"**{title}**", "",
                      _table(["map", "status", "adjacency entries", "median ms", "peak RSS MiB",
                              "increase MiB", "estimated MiB"],
                             _scale_rows(part["rows"], "size", lambda s: f"{s}x{s}")), "",
                      f"- time growth per node: {_growth_text(part['growth_per_node']['time'])}",
                      f"- memory-increase growth per node: "
                      f"{_growth_text(part['growth_per_node']['memory_delta'])}",
                      f"- growth per node of the increase above the smallest size's: "
                      f"{_growth_text(part['growth_per_node']['memory_excess'])}", ""]
    keypoint = result.get("keypoint_counts")
    if keypoint:
        w = keypoint["workload"]
        lines += [f"**AttentionTopK + CNNToGraph + GCNStack({w['units']}, {w['num_layers']})**, "
                  f"batch {w['batch']}, {w['map_size']}x{w['map_size']}x{w['channels']} map", "",
                  _table(["keypoints", "status", "adjacency entries", "median ms", "peak RSS MiB",
                          "increase MiB", "estimated MiB"],
                         _scale_rows(keypoint["rows"], "keypoints", str)), "",
                  f"- time growth per keypoint: {_growth_text(keypoint['growth_per_keypoint']['time'])}",
                  f"- memory-increase growth per keypoint: "
                  f"{_growth_text(keypoint['growth_per_keypoint']['memory_delta'])}",
                  f"- growth per keypoint of the increase above the smallest count's: "
                  f"{_growth_text(keypoint['growth_per_keypoint']['memory_excess'])}", ""]
    return "\n".join(lines)


def goals_section(goals):
    if not goals:
        return ""
    return "\n".join(["## Goals", ""] + [f"- **{g['status']}** {g['goal']}: {g['detail']}"
                                         for g in goals])


def _step_rows(profile, settings):
    steps = profile.get("train_step_ms")
    if not steps:
        return []
    return [["whole train_on_batch step (training table)"] + [_num(steps.get(s)) for s in settings]
            + ["" for _ in settings],
            ["rest: loss, optimizer update, Keras step"]
            + [_num(steps[s] - profile["total_ms"][s]) if s in steps else "" for s in settings]
            + [f"{(steps[s] - profile['total_ms'][s]) / steps[s]:.0%}" if s in steps else ""
               for s in settings]]


def profile_section(profiles):
    if not profiles:
        return ""
    lines = ["## Profile (forward + backward of each layer alone, ms)", "",
             "Each layer runs alone in its own tf.function on the inputs it sees in the model; "
             "a negative rest means the isolated calls overcount (per-call overhead, input "
             "gradients the real step does not need).", ""]
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


def markdown(results):
    """The whole report: machine, command, each part that ran, goals, profiles."""
    sections = ["# keypoint-gnn benchmarks", "",
                f"Command: `{results['command']}`", "",
                machine_section(results["machine"], results.get("load_average_end"))]
    parts = results["parts"]
    for name, section in (("interconnects", interconnect_section), ("training", training_section),
                          ("inference", inference_section), ("scale", scale_section)):
        if name in parts:
            sections += ["", section(parts[name])]
    sections += ["", goals_section(results.get("goals", [])),
                 "", profile_section(results.get("profiles", []))]
    return "\n".join(sections).rstrip() + "\n"
