"""The report generators: benchmarks.md, docs/BENCHMARKS.md and the README table, from a small
hand-made result (no timing)."""
import json

import pytest

from keypoint_gnn.benchmarks import goals, graphs, interconnect, measure, report
from keypoint_gnn.benchmarks import training as training_bench
from trainers import benchmark

THREADS = {"cpu_count": 2, "usable_cores": 2, "tf_intra_op": 0, "tf_inter_op": 0,
           "env": {"OMP_NUM_THREADS": "2"}}
CONDITIONS = {"load_before": [0.1, 0.2, 0.3], "load_after": [0.4, 0.5, 0.6], "threads": THREADS}
FIVE = 5


def _rounds(ms):
    return [float(ms)] * FIVE


def _group(label, medians, aa):
    rounds = {name: _rounds(ms) for name, ms in medians.items()}
    rounds[aa + measure.AA_SUFFIX] = _rounds(medians[aa])
    return measure.make_group(label, rounds, aa, load_before=[0.1, 0.2, 0.3],
                              load_after=[0.4, 0.5, 0.6])


def _summary(group, name):
    return {k: v for k, v in group["timings"][name].items() if k != "rounds_ms"}


def _interconnects(gpu):
    medians = {"numpy_loop": 50.0, "tf_loop": 400.0, "tf_eager": 16.0, "tf_function": 3.0,
               "tf_function_xla": 1.5, "memory copy | cpu": 6.4}
    members = [(v, "cpu", "float32") for v in interconnect.VARIANTS]
    if gpu:
        medians.update({"tf_function (gpu, float32)": 0.4, "tf_function_xla (gpu, float32)": 0.2,
                        "memory copy | gpu": 0.1})
        members += [("tf_function", "gpu", "float32"), ("tf_function_xla", "gpu", "float32")]
    group = _group("interconnects", medians, "tf_function_xla")
    moved = {p: interconnect.bytes_per_batch(**interconnect.WORKLOAD, value_bytes=b)
             for p, b in (("float32", 4), ("mixed_float16", 2))}
    copies = {d: {"name": f"memory copy | {d}", "mib": 64, "bytes_moved": 2 * 64 * 2**20,
                  "bandwidth_gb_s": 2 * 64 * 2**20 / (medians[f"memory copy | {d}"] / 1e3) / 1e9}
              for d in (("cpu", "gpu") if gpu else ("cpu",))}
    variants = {}
    for variant, device, precision in members:
        key = interconnect.variant_key(variant, device, precision)
        row = {**_summary(group, key), "variant": variant, "device": device,
               "precision": precision}
        for reference in interconnect.REFERENCES:
            if reference != key:
                row[f"speedup_vs_{reference}"] = measure.group_ratio(group, reference, key)
        if variant not in interconnect.REFERENCES:
            total = moved[precision]["total"]
            row["bytes_per_batch"] = total
            row["memory_bound_ms"] = total / (copies[device]["bandwidth_gb_s"] * 1e9) * 1e3
            row["x_memory_bound"] = measure.group_ratio(
                group, key, copies[device]["name"], scale=copies[device]["bytes_moved"] / total)
        variants[key] = row
    xla = {"cpu": measure.group_ratio(group, "tf_function_xla", "tf_function")}
    if gpu:
        xla["gpu"] = measure.group_ratio(group, "tf_function_xla (gpu, float32)",
                                         "tf_function (gpu, float32)")
    return {"workload": dict(interconnect.WORKLOAD), "bytes_per_batch": moved, "copy": copies,
            "group": group, "variants": variants, "xla_vs_no_xla": xla,
            "aa_flag": group["aa_flag"], "gpu": gpu, "notes": [], "conditions": CONDITIONS}


def _training():
    medians = {training_bench.case_key("maxpool_nms/gcn", "off"): 147.0,
               training_bench.case_key("plain_cnn", "off"): 140.0}
    aa = training_bench.case_key("plain_cnn", "off")
    group = _group("training", medians, aa)
    cases = {}
    for model in ("maxpool_nms/gcn", "plain_cnn"):
        key = training_bench.case_key(model, "off")
        case = {"model": model, "xla": "off", "precision": "float32", "parameters": 191671,
                **_summary(group, key)}
        case["images_per_second"] = 64 / (case["median_ms"] / 1e3)
        if model != "plain_cnn":
            case["ratio_to_plain_cnn"] = measure.group_ratio(group, key, aa)
        cases[key] = case
    return {"workload": {"batch": 64, "image_size": 48}, "reference_model": "maxpool_nms/gcn",
            "plain_cnn_target_params": 191671, "precisions": ["float32"], "xla_auto": "graph",
            "notes": ["no GPU detected"], "group": group, "aa_flag": group["aa_flag"],
            "gpu": False, "cases": cases, "conditions": CONDITIONS}


def _presets():
    group = _group("preset imagenette float32", {"keypoint": 300.0, "plain": 250.0}, "plain")
    cases = {role: {**_summary(group, role), "parameters": 200000, "batch": 32,
                    "image_size": 128, "images_per_second": 32 / (ms / 1e3)}
             for role, ms in (("keypoint", 300.0), ("plain", 250.0))}
    cases["ratio"] = measure.group_ratio(group, "keypoint", "plain")
    return {"presets": {"imagenette": {"image_size": 128, "batch": 32,
                                       "groups": {"float32": group},
                                       "cases": {"float32": cases}}},
            "precisions": ["float32"], "aa_flag": False, "gpu": False, "notes": [],
            "conditions": CONDITIONS}


def _graphs():
    steps = {"gcn": 100.0, "vig": 140.0, "gat": 120.0, "diffpool": 110.0, "none": 60.0}
    group = _group("graphs imagenette-64", steps, "gcn")
    parameters = {"gcn": 1333671, "vig": 1334024, "gat": 1334087, "diffpool": 1334583,
                  "none": 1315367}
    units = {"gcn": 64, "vig": 31, "gat": 48, "diffpool": 62, "none": None}
    kinds = {}
    for kind, ms in steps.items():
        difference = (parameters[kind] - parameters["gcn"]) / parameters["gcn"]
        kinds[kind] = {"units": units[kind], "parameters": parameters[kind],
                       "relative_difference": difference,
                       "within_tolerance": abs(difference) <= 0.01, "searched": {},
                       **_summary(group, kind), "images_per_second": 64 / (ms / 1e3)}
        if kind != "gcn":
            kinds[kind]["ratio_to_reference"] = measure.group_ratio(group, kind, "gcn")
    knn_ms = {32: (1.0, 4.0), 64: (2.5, 9.0)}
    knn_group = _group("knn imagenette-64", {
        **{graphs.knn_name(n): ms for n, (ms, _) in knn_ms.items()},
        **{graphs.vig_name(n): ms for n, (_, ms) in knn_ms.items()}}, graphs.knn_name(64))
    rows = [{"keypoints": n, "knn": _summary(knn_group, graphs.knn_name(n)),
             "vig_forward": _summary(knn_group, graphs.vig_name(n))} for n in knn_ms]
    growth = {}
    for role, name in (("knn", graphs.knn_name), ("vig_forward", graphs.vig_name)):
        ratio = measure.group_ratio(knn_group, name(64), name(32))
        growth[role] = [{**measure.growth([32.0, 64.0], [None, ratio])[0],
                         "paired_ratio": ratio}]
    knn = {"workload": {"batch": 64, "features": 66, "k": 8, "dilation": 1,
                        "position_weight": 1.0, "units": 64, "layers": 4,
                        "conv": "max_relative"},
           "rows": rows, "growth": growth, "group": knn_group, "aa_flag": False}
    return {"preset": "imagenette-64", "image_size": 64, "batch": 64, "reference": "gcn",
            "tolerance": 0.01, "kinds": kinds, "group": group, "knn": knn, "aa_flag": False,
            "gpu": False, "notes": ["float32"], "conditions": CONDITIONS}


def _inference():
    group = _group("inference batch 1", {"savedmodel": 4.0, "tflite": 0.5}, "savedmodel")
    rows = [{"format": "savedmodel", "quantize": "none", "batch": 1, "size_bytes": 2048,
             **_summary(group, "savedmodel"), "ms_per_image": 4.0},
            {"format": "tflite", "quantize": "none", "batch": 1, "size_bytes": 1024,
             **_summary(group, "tflite"), "ms_per_image": 0.5,
             "x_savedmodel": measure.group_ratio(group, "tflite", "savedmodel")}]
    return {"config": {}, "rows": rows, "groups": {"1": group}, "aa_flag": False,
            "tflite_batch64": {"supported": True, "reason": ""}, "notes": [],
            "conditions": CONDITIONS}


def fake_results(gpu=False):
    parts = {"interconnects": _interconnects(gpu), "training": _training(),
             "presets": _presets(), "graphs": _graphs(), "inference": _inference()}
    results = {"command": "python -m trainers.benchmark --docs", "date": "2026-12-04T10:00",
               "machine": {"cpu_model": "Test CPU", "logical_cores": 2, "physical_cores": 1,
                           "memory_gib": 8.0, "memory_available_gib": 7.0, "tensorflow": "2.21",
                           "python": "3.11", "platform": "linux",
                           "gpus": ["Test GPU"] if gpu else [],
                           "load_average": [0.1, 0.2, 0.3], "threads": THREADS},
               "parts": parts, "load_average_end": [0.4, 0.5, 0.6]}
    results["goals"] = goals.evaluate_goals(parts)
    results["aa_warnings"] = goals.aa_warnings(results)
    return results


README = """# project

intro text

## Performance

<!-- benchmark-table:start -->
old table with 182 ms
<!-- benchmark-table:end -->

## After
kept text
"""


def test_the_fake_result_is_consistent():
    assert measure.check_ratios(fake_results(gpu=True)) == []


def test_docs_name_the_command_date_machine_load_and_threads():
    text = report.docs_markdown(fake_results())
    for expected in ("`python -m trainers.benchmark --docs`", "2026-12-04T10:00", "Test CPU",
                     "0.1 / 0.2 / 0.3", "OMP_NUM_THREADS=2", "## How it measures",
                     "### Interconnects", "x memory-bound", "speed-up vs tf_loop",
                     "### Real-data presets", "keypoint / plain", "x SavedModel",
                     "### Timing groups and A/A checks", "### Goals"):
        assert expected in text, expected
    # Headings of the run's tables sit one level below the docs' own.
    assert "\n## Interconnects" not in text


def test_no_outside_figure_is_a_reference():
    text = report.docs_markdown(fake_results()) + report.readme_table(fake_results())
    assert "182" not in text and "1.82" not in text
    for goal in fake_results()["goals"]:
        assert "182" not in goal["goal"] + goal["detail"]


def test_gpu_sections_appear_only_with_a_gpu():
    without = report.docs_markdown(fake_results(gpu=False))
    assert "No GPU detected" in without and "on the GPU" not in without
    with_gpu = report.docs_markdown(fake_results(gpu=True))
    assert "Interconnects on the GPU" in with_gpu and "No GPU detected" not in with_gpu
    assert "tf_function_xla (gpu, float32)" in report.readme_table(fake_results(gpu=True))


def test_readme_table_holds_in_run_comparisons():
    table = report.readme_table(fake_results())
    assert "| measurement | this run | compared in the same run |" in table
    # tf_function_xla 1.5 ms vs numpy_loop 50 ms every round: 33.3x; vs tf_loop 400 ms: 267x.
    assert "33.3 (33.3-33.3)x faster than numpy_loop" in table
    assert "267 (267-267)x than tf_loop" in table
    assert "1.05 (1.05-1.05)x the matched plain CNN" in table  # 147 / 140
    assert "preset imagenette" in table and "1.20 (1.20-1.20)x the matched plain network" in table
    assert "0.12 (0.12-0.12)x the SavedModel's time" in table  # 0.5 / 4
    assert "A/A checks flagged: 0" in table


def test_write_docs_replaces_only_the_marked_table(tmp_path):
    docs, readme = tmp_path / "BENCHMARKS.md", tmp_path / "README.md"
    readme.write_text(README)
    report.write_docs(fake_results(), docs, readme)
    text = readme.read_text()
    assert text.startswith("# project\n\nintro text\n\n## Performance\n\n")
    assert text.endswith("<!-- benchmark-table:end -->\n\n## After\nkept text\n")
    assert "old table" not in text and "| measurement |" in text
    assert docs.read_text() == report.docs_markdown(fake_results())
    report.write_docs(fake_results(), docs, readme)  # idempotent markers
    assert readme.read_text().count(report.README_START) == 1


def test_write_docs_needs_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="benchmark-table:start"):
        report.write_docs(fake_results(), tmp_path / "BENCHMARKS.md", readme)
    assert not (tmp_path / "BENCHMARKS.md").exists()


def test_docs_from_a_saved_run(tmp_path, monkeypatch):
    saved = tmp_path / "benchmarks.json"
    saved.write_text(json.dumps(fake_results()))
    docs, readme = tmp_path / "BENCHMARKS.md", tmp_path / "README.md"
    readme.write_text(README)
    monkeypatch.setattr(benchmark, "DOCS_PATH", docs)
    monkeypatch.setattr(benchmark, "README_PATH", readme)
    benchmark.main(["--docs-from", str(saved)])
    assert "Test CPU" in docs.read_text() and "| measurement |" in readme.read_text()


def test_graphs_section_holds_the_matched_counts_ratios_and_growth():
    text = report.docs_markdown(fake_results())
    assert "### Graph networks at equal parameters (preset imagenette-64)" in text
    # vig 140 ms vs gcn 100 ms every round; parameters (1334024 - 1333671) / 1333671 = +0.03%.
    assert "| vig | 31 | 1,334,024 | +0.03% | 140.0 |" in text
    assert "| 1.40 (1.40-1.40) |" in text
    assert "| none |  | 1,315,367 | -1.37% (outside tolerance) |" in text
    # knn_indices 1.0 -> 2.5 ms from N=32 to 64: x2.50, exponent log2(2.5) = 1.32.
    assert "| 64 | 2.500 | 0.000 | x2.50 (2.50-2.50) | 9.00 | 0.00 | x2.25 (2.25-2.25) |" in text
    assert "32->64: x2.50 (exp 1.32)" in text
    table = report.readme_table(fake_results())
    assert "graph.kind=vig (1,334,024 parameters)" in table
    assert "1.40 (1.40-1.40)x the gcn model's (1,333,671 parameters)" in table
    judged = goals.graph_goals(fake_results()["parts"]["graphs"])
    assert [g["status"] for g in judged] == ["PASS"] and "issue 23" in judged[0]["goal"]
    assert "1.40x" in judged[0]["detail"] and "+0.0%" in judged[0]["detail"]
    slower = fake_results()["parts"]["graphs"]
    slower["kinds"]["vig"]["ratio_to_reference"]["value"] = 1.6
    assert goals.graph_goals(slower)[0]["status"] == "MISS"


def test_the_repository_readme_has_the_markers():
    text = benchmark.README_PATH.read_text()
    assert text.count(report.README_START) == 1 and text.count(report.README_END) == 1


def test_flagged_groups_are_reported():
    results = fake_results()
    group = results["parts"]["training"]["group"]
    group["aa_flag"] = True
    warnings = goals.aa_warnings(results)
    assert len(warnings) == 1 and "'training'" in warnings[0]
    results["aa_warnings"] = warnings
    text = report.markdown(results)
    assert "**flagged**" in text and "A/A warnings" in text
