"""The benchmark command and its parts: loop references, outputs, provenance, memory cap, flags.

Speeds are not asserted: the machine is shared and timings are noisy. What is asserted is that
every ratio a run reports was timed in that run: both sides in one interleaved group.
"""
import argparse
import json

import numpy as np
import pytest

from keypoint_gnn.benchmarks import (
    goals,
    graphs,
    interconnect,
    isolation,
    machine,
    measure,
    real_data,
    report,
    scale,
)
from keypoint_gnn.benchmarks import training as training_bench
from keypoint_gnn.models import build_classifier
from tests.test_benchmark_report import _graphs
from trainers import benchmark


@pytest.mark.parametrize("batch,keypoints,channels,map_size", [(2, 8, 4, 5), (3, 16, 2, 4)])
def test_numpy_loop_reference_matches_tf_interconnect(batch, keypoints, channels, map_size):
    # map_size 4 with 16 keypoints forces collisions, which graph->CNN must average.
    arrays = interconnect.random_inputs(batch, keypoints, channels, map_size, seed=3)
    expected = interconnect.numpy_interconnect(*arrays)
    actual = interconnect.tf_interconnect_layers(map_size)(*arrays)
    for name, want, got in zip(("nodes", "adjacency", "grid"), expected, actual):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("batch,keypoints,channels,map_size", [(2, 8, 4, 5), (3, 16, 2, 4)])
def test_tf_loop_reference_matches_numpy_loop(batch, keypoints, channels, map_size):
    arrays = interconnect.random_inputs(batch, keypoints, channels, map_size, seed=4)
    expected = interconnect.numpy_interconnect(*arrays)
    actual = interconnect.tf_loop_interconnect(*arrays)
    for name, want, got in zip(("nodes", "adjacency", "grid"), expected, actual):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_numpy_reference_on_a_hand_worked_case():
    # Two keypoints 3 apart in one 4x4 map: w = 1/(1+3) = 0.25, divided by itself -> 1, so
    # A = [[1, 1], [1, 1]], degrees 2, normalised entries 1/2.
    feature_map = np.zeros((1, 4, 4, 1), np.float32)
    feature_map[0, 0, 0, 0], feature_map[0, 0, 3, 0] = 2.0, 4.0
    positions = np.array([[[0, 0], [0, 3]]], np.float32)
    scores = np.array([[0.5, 1.0]], np.float32)
    for reference in (interconnect.numpy_interconnect, interconnect.tf_loop_interconnect):
        nodes, adjacency, grid = (np.asarray(t) for t in reference(feature_map, positions, scores))
        np.testing.assert_allclose(nodes[0, :, 0], [1.0, 4.0])
        np.testing.assert_allclose(adjacency[0], np.full((2, 2), 0.5))
        assert grid[0, 0, 0, 0] == 1.0 and grid[0, 0, 3, 0] == 4.0 and grid.sum() == 5.0


def test_bytes_per_batch_on_a_hand_worked_case():
    # B=1, N=2, C=3, 4x4 map: feature rows 1*2*3 = 6, positions 4, scores 2, nodes 6,
    # adjacency 4, grid 16*3 = 48 values: 70 float32 values = 280 bytes.
    moved = interconnect.bytes_per_batch(batch=1, keypoints=2, channels=3, map_size=4)
    assert moved["feature rows read"] == 24 and moved["grid written"] == 192
    assert moved["total"] == 280
    assert interconnect.bytes_per_batch(1, 2, 3, 4, value_bytes=2)["total"] == 140


def _assert_same_run_provenance(results):
    """Every ratio's two sides are timings of one group recorded in these results."""
    groups = measure.groups_in(results)
    ratios = measure.ratios_in(results)
    assert groups and ratios
    for path, ratio in ratios:
        group = groups[ratio["group"]]
        numerator = group["timings"][ratio["numerator"]]
        denominator = group["timings"][ratio["denominator"]]
        assert numerator["group"] == denominator["group"] == ratio["group"], path
        per_round = [ratio.get("scale", 1.0) * a / b
                     for a, b in zip(numerator["rounds_ms"], denominator["rounds_ms"])]
        assert ratio["value"] == pytest.approx(float(np.median(per_round))), path
    assert measure.check_ratios(results) == []


def test_interconnects_quick_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "bench"
    benchmark.main(["interconnects", "--quick", "--repeats", "2", "--out", str(out)])
    results = json.loads((out / "benchmarks.json").read_text())
    for key in ("machine", "command", "date", "parts", "goals", "settings", "aa_warnings"):
        assert key in results, key
    for key in ("cpu_model", "cpu_vector_extensions", "logical_cores", "memory_gib", "tensorflow",
                "gpus", "load_average", "threads"):
        assert key in results["machine"], key
    part = results["parts"]["interconnects"]
    conditions = part["conditions"]
    assert len(conditions["load_before"]) == 3 and len(conditions["load_after"]) == 3
    assert {"cpu_count", "usable_cores", "tf_intra_op", "tf_inter_op", "env"} <= set(
        conditions["threads"])
    assert set(part["variants"]) == set(interconnect.VARIANTS)  # no GPU in the tests
    group = part["group"]
    assert set(group["timings"]) == set(interconnect.VARIANTS) | {
        "memory copy | cpu", "tf_function_xla (A/A)"}
    for name, variant in part["variants"].items():
        assert variant["median_ms"] > 0 and variant["repeats"] == 2
        assert variant["memory"]["status"] == "ok"
        assert variant["memory"]["peak_rss_bytes"] > 0
        for reference in interconnect.REFERENCES:
            if reference != name:
                assert variant[f"speedup_vs_{reference}"]["group"] == group["group"]
        if name in interconnect.PROJECT:
            assert variant["memory_bound_ms"] > 0
            assert variant["x_memory_bound"]["denominator"] == "memory copy | cpu"
    assert part["copy"]["cpu"]["bandwidth_gb_s"] > 0
    assert part["aa_flag"] is None  # 2 rounds: not judged
    _assert_same_run_provenance(results)
    assert {g["status"] for g in results["goals"]} <= {"PASS", "MISS"}
    assert any("interconnects" in g["goal"] for g in results["goals"])
    markdown = (out / "benchmarks.md").read_text()
    assert "| tf_function_xla |" in markdown and "x memory-bound" in markdown
    assert "No GPU detected" in markdown and "A/A check" in markdown
    text = (out / "benchmarks.json").read_text() + markdown
    # The quoted constant and its names (measured figures may contain the digits 182).
    for outside in ("182 ms", "x 182", "authors_pytorch", "ratio_to_authors", "1/100 of"):
        assert outside not in text, outside
    printed = capsys.readouterr().out
    assert "CPU:" in printed and "load avg:" in printed and "threads:" in printed
    assert "no GPU detected" in printed


def test_gpu_rows_run_where_placement_falls_back_to_the_cpu():
    # Without a GPU, TensorFlow places the "GPU" rows on the CPU (soft placement): this runs
    # the GPU code path (devices, mixed float16, the device copy) at a tiny size.
    result = interconnect.benchmark_interconnects(
        warmup=1, repeats=2, memory=False, gpu=True, copy_mib=1,
        workload={"batch": 2, "keypoints": 8, "channels": 4, "map_size": 5})
    keys = {interconnect.variant_key(v, "gpu", p) for v in interconnect.GPU_VARIANTS
            for p in interconnect.PRECISIONS}
    assert keys <= set(result["variants"])
    assert result["xla_vs_no_xla"]["gpu"]["group"] == result["group"]["group"]
    half = result["variants"][interconnect.variant_key("tf_function_xla", "gpu", "mixed_float16")]
    assert half["bytes_per_batch"] == result["bytes_per_batch"]["mixed_float16"]["total"]
    _assert_same_run_provenance({"parts": {"interconnects": result}})


def test_memory_cap_verdict_skips_what_exceeds_the_limit():
    gib = isolation.GIB
    assert isolation.memory_cap_verdict(2 * gib, 6 * gib) is None
    assert isolation.memory_cap_verdict(2 * gib, None) is None
    verdict = isolation.memory_cap_verdict(7 * gib, 6 * gib)
    assert verdict.startswith("skipped: needs 7.0 GiB")


def test_run_isolated_skips_without_starting_a_worker():
    record = isolation.run_isolated("keypoint_gnn.benchmarks.scale:setup_grid_graph",
                                    {"size": 128}, estimated_bytes=10 * isolation.GIB,
                                    memory_limit_bytes=6 * isolation.GIB)
    assert record["status"] == "skipped" and "needs 10.0 GiB" in record["reason"]


def test_dense_grid_estimate_is_quadratic_and_sparse_linear():
    workload = dict(batch=1, channels=1, units=1)
    dense_64 = scale.grid_graph_bytes(64, None, **workload) - isolation.PROCESS_BASELINE_BYTES
    dense_128 = scale.grid_graph_bytes(128, None, **workload) - isolation.PROCESS_BASELINE_BYTES
    sparse_64 = scale.grid_graph_bytes(64, 8, **workload) - isolation.PROCESS_BASELINE_BYTES
    sparse_128 = scale.grid_graph_bytes(128, 8, **workload) - isolation.PROCESS_BASELINE_BYTES
    assert dense_128 / dense_64 == pytest.approx(16, rel=0.01)
    assert sparse_128 / sparse_64 == pytest.approx(4, rel=0.01)
    # (128^2)^2 float32 entries = 1 GiB per matrix: over the default 6 GiB cap
    limit = 6 * isolation.GIB
    assert isolation.memory_cap_verdict(
        scale.grid_graph_bytes(128, None, **scale.GRID_WORKLOAD), limit) is not None
    assert isolation.memory_cap_verdict(
        scale.grid_graph_bytes(128, 8, **scale.GRID_WORKLOAD), limit) is None


def test_growth_ratios_and_exponents():
    steps = measure.growth([1, 2, 4], [3.0, 12.0, None])
    assert steps[0]["ratio"] == pytest.approx(4.0) and steps[0]["exponent"] == pytest.approx(2.0)
    assert steps[1]["ratio"] is None


def _ratio_of(value, group="g#1"):
    return {"value": value, "spread": 0.01, "low": value - 0.005, "high": value + 0.005,
            "numerator": "a", "denominator": "b", "group": group, "rounds": 9, "scale": 1.0}


def test_scale_goals_judge_the_largest_size():
    def rows(statuses):
        return [{"size": s, "status": st, "reason": "skipped: needs 7 GiB"} for s, st in statuses]
    dense = rows([(64, "ok"), (128, "skipped")])
    dense[0]["x_sparse"] = _ratio_of(8.3)
    result = {"grid_graphs": {
        "dense": {"rows": dense, "growth_per_node": {}},
        "sparse": {"rows": rows([(64, "ok"), (128, "ok")]), "growth_per_node": {
            "memory_excess": [{"from": 4096, "to": 16384, "ratio": 4.2, "exponent": 1.03}]}},
    }}
    judged = goals.scale_goals(result)
    assert [g["status"] for g in judged] == ["PASS", "PASS", "PASS"]
    assert "64x64" in judged[2]["goal"] and "8.30x" in judged[2]["detail"]


@pytest.mark.parametrize("argv,message", [
    (["bogus"], "invalid choice: 'bogus'"),
    (["--repeats", "0"], "--repeats=0 must be at least 1"),
    (["--memory-limit-gb", "-1"], "--memory-limit-gb=-1.0 must be positive"),
    (["--jobs", "0"], "--jobs=0 must be at least 1"),
    (["interconnects", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["interconnects", "--docs"], "--docs writes the docs from a run of every part"),
    (["--docs-from", "no/such.json"], "--docs-from no/such.json: no such file"),
    (["presets", "--presets", "default,nosuch"], "'nosuch' is not a preset"),
])
def test_bad_arguments_give_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.parse_args(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and error.startswith("error: ") and error.count("\n") == 1, error


def _training_result(step_rounds, auto, aa_rounds):
    """A training result built from per-round step times {(model, mode): [ms]}, with the A/A
    copy of the plain CNN without XLA, as `benchmark_training` builds it (no timing)."""
    rounds = {training_bench.case_key(model, mode): ms for (model, mode), ms in step_rounds.items()}
    aa = training_bench.case_key("plain_cnn", "off")
    rounds[aa + measure.AA_SUFFIX] = aa_rounds
    group = measure.make_group("training", rounds, aa)
    cases = {}
    for (model, mode) in step_rounds:
        key = training_bench.case_key(model, mode)
        case = {"model": model, "xla": mode, "precision": "float32",
                **{k: v for k, v in group["timings"][key].items() if k != "rounds_ms"}}
        if model != "plain_cnn":
            case["ratio_to_plain_cnn"] = measure.group_ratio(
                group, key, training_bench.case_key("plain_cnn", mode))
        if mode != "off":
            case["ratio_xla_to_no_xla"] = measure.group_ratio(
                group, key, training_bench.case_key(model, "off"))
        cases[key] = case
    return {"cases": cases, "xla_auto": auto, "group": group}


def test_xla_goal_judges_the_mode_that_xla_auto_picks():
    steady = [100.0] * 5
    result = _training_result({
        ("maxpool_nms/gcn", "off"): steady,
        ("maxpool_nms/gcn", "graph"): [98.0] * 5,
        ("maxpool_nms/gcn", "step"): [150.0] * 5,
        ("plain_cnn", "off"): steady, ("plain_cnn", "graph"): steady,
        ("plain_cnn", "step"): [200.0] * 5}, auto="graph", aa_rounds=steady)
    judged = {g["goal"]: g for g in goals.training_goals(result)}
    xla_goals = [g for name, g in judged.items() if name.startswith("XLA no slower")]
    assert [g["status"] for g in xla_goals] == ["PASS"]
    assert "--xla = graph mode" in next(n for n in judged if n.startswith("XLA no slower"))
    step_line = next(g for name, g in judged.items() if name.startswith("not a goal: XLA step"))
    assert step_line["status"] == "N/A" and "1.50x" in step_line["detail"]
    result = _training_result({
        ("maxpool_nms/gcn", "off"): steady, ("maxpool_nms/gcn", "graph"): [101.0] * 5,
        ("plain_cnn", "off"): steady, ("plain_cnn", "graph"): steady},
        auto="graph", aa_rounds=steady)
    judged = goals.training_goals(result)
    assert [g["status"] for g in judged if g["goal"].startswith("XLA no slower")] == ["MISS"]


def test_xla_goal_allows_the_groups_aa_noise():
    # A/A rounds 105/100 each: the A/A ratio is 1.05, spread 0: noise 0.05.
    steady = [100.0] * 5
    rounds = {("maxpool_nms/gcn", "off"): steady, ("maxpool_nms/gcn", "graph"): [103.0] * 5,
              ("plain_cnn", "off"): steady, ("plain_cnn", "graph"): steady}
    result = _training_result(rounds, auto="graph", aa_rounds=[105.0] * 5)
    assert measure.noise(result["group"]) == pytest.approx(0.05)
    assert result["group"]["aa_flag"] is True
    judged = goals.training_goals(result)
    xla_goal = next(g for g in judged if g["goal"].startswith("XLA no slower"))
    assert xla_goal["status"] == "PASS" and "A/A noise 0.05" in xla_goal["detail"]
    rounds[("maxpool_nms/gcn", "graph")] = [106.0] * 5
    judged = goals.training_goals(_training_result(rounds, auto="graph", aa_rounds=[105.0] * 5))
    assert next(g for g in judged if g["goal"].startswith("XLA no slower"))["status"] == "MISS"
    warnings = goals.aa_warnings({"parts": {"training": result}})
    assert len(warnings) == 1 and "training" in warnings[0]


def test_training_ratio_goal_uses_the_in_run_ratio():
    steady = [100.0] * 5
    result = _training_result({("maxpool_nms/gcn", "off"): [140.0] * 5,
                               ("plain_cnn", "off"): steady}, auto="graph", aa_rounds=steady)
    judged = goals.training_goals(result)
    assert [g["status"] for g in judged] == ["MISS"] and "1.40x" in judged[0]["detail"]


@pytest.mark.slow  # compiles 6 models (about 1-2 minutes on 2 cores)
def test_training_part_runs_every_xla_mode(tmp_path):
    result = training_bench.benchmark_training(
        warmup=1, repeats=1, memory=False, workload={"batch": 2, "image_size": 48},
        detectors=("maxpool_nms",), gnns=("gcn",))
    assert {case["xla"] for case in result["cases"].values()} == {"off", "graph", "step"}
    assert result["xla_auto"] == "graph"  # no GPU in the tests
    for case in result["cases"].values():
        assert case["median_ms"] > 0
        assert (case["xla"] == "off") == ("ratio_xla_to_no_xla" not in case)
        assert (case["model"] == "plain_cnn") == ("ratio_to_plain_cnn" not in case)
    _assert_same_run_provenance({"parts": {"training": result}})


def test_presets_part_times_each_preset_against_its_matched_plain_network():
    result = real_data.benchmark_presets(warmup=1, repeats=2, names=["default"], batch=2)
    entry = result["presets"]["default"]
    assert (entry["image_size"], entry["batch"]) == (48, 2)
    cases = entry["cases"]["float32"]
    keypoint, plain = cases["keypoint"], cases["plain"]
    assert abs(plain["parameters"] - keypoint["parameters"]) <= 0.05 * keypoint["parameters"]
    assert keypoint["images_per_second"] == pytest.approx(2 / (keypoint["median_ms"] / 1e3))
    assert cases["ratio"]["numerator"] == "keypoint" and cases["ratio"]["denominator"] == "plain"
    assert cases["ratio"]["group"] == entry["groups"]["float32"]["group"]
    _assert_same_run_provenance({"parts": {"presets": result}})
    judged = goals.preset_goals(result)
    assert len(judged) == 1 and judged[0]["status"] in ("PASS", "MISS")
    assert "<= 1.3x matched plain network" in judged[0]["goal"]


def test_preset_models_are_fitted_to_the_presets_data():
    """The benchmark times the model a preset trains: Fashion-MNIST's greyscale input, ten
    classes. Reference: the parameter counts that `trainers.experiments --table compare`
    recorded for the trained models (docs/RESULTS.md)."""
    fashion = real_data.preset_run("fashion-mnist").model
    assert (fashion.channels, fashion.num_classes, fashion.image_size) == (1, 10, 32)
    assert build_classifier(fashion).count_params() == 1_334_123
    assert build_classifier(real_data.preset_run("imagenette-64").model).count_params() == 1_334_699
    default = real_data.preset_run("default").model  # not a real-data preset: the built-in set's
    assert (default.channels, default.num_classes) == (3, 6)


def test_presets_part_reports_what_it_cannot_measure():
    # 16 px -> a 4x4 feature map, too small for the default's 32 keypoints.
    result = real_data.benchmark_presets(warmup=1, repeats=1, names=["default"], image_size=16)
    assert "error" in result["presets"]["default"]
    assert goals.preset_goals(result)[0]["status"] == "N/A"
    empty = real_data.benchmark_presets(warmup=1, repeats=1, names=[])
    assert empty["presets"] == {} and any("no real-data presets" in n for n in empty["notes"])


def test_benchmark_flags_have_help_with_defaults():
    parser = benchmark.build_parser()
    assert parser.prog == "python -m trainers.benchmark"
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{action.option_strings or action.dest} has no help"
        if action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in action.help, f"{action.option_strings} does not state its default"


def test_training_variants_build_the_named_detector_and_gnn():
    from keypoint_gnn import layers

    model = training_bench.build_model("grid/diffpool", 48)
    assert isinstance(model.get_layer("detector"), layers.GridCoordinateRegressor)
    assert isinstance(model.get_layer("gnn"), layers.DiffPoolUnpool)
    model = training_bench.build_model("attention/gcn", 48)
    assert isinstance(model.get_layer("detector"), layers.AttentionTopK)
    assert isinstance(model.get_layer("gnn"), layers.GCNStack)
    plain = training_bench.build_model(training_bench.PLAIN, 48, target_params=5000)
    assert [layer for layer in plain.layers if layer.name in ("detector", "gnn")] == []


def test_scale_and_profile_workloads_run_at_a_tiny_size():
    call, info = scale.setup_grid_graph(size=4, neighbours=None, batch=1, channels=2, units=3)
    assert call().shape == (1, 16, 3) and info == {"nodes": 16, "adjacency_entries": 256}
    call, info = scale.setup_grid_graph(size=4, neighbours=2, batch=1, channels=2, units=3)
    assert call().shape == (1, 16, 3) and info["adjacency_entries"] < 256
    call, info = scale.setup_keypoint_graph(keypoints=4, batch=2, map_size=4, channels=2,
                                            units=3, num_layers=1)
    assert call().shape == (2, 4, 3) and info["adjacency_entries"] == 32
    parts = interconnect.interconnect_parts({"batch": 1, "keypoints": 3, "channels": 2,
                                             "map_size": 4})
    for name, part in parts.items():
        assert part() is not None, name


@pytest.mark.parametrize("curve", ["quadratic", "steps"])
@pytest.mark.parametrize("start", [1, 64, 100])
def test_match_units_finds_the_closest_count(curve, start):
    def count(units):
        if curve == "quadratic":
            return 3 * units * units + 500 * units + 10_000
        return 10_000 + 4_000 * (units // 7)  # flat runs: many units share a count

    for target in (10_000, 10_100, 62_345, 250_000, 800_123):
        units, tried = graphs.match_units(count, target, start)
        closest = min(abs(count(u) - target) for u in range(1, graphs.MAX_UNITS + 1))
        assert abs(count(units) - target) == closest, target
        assert tried[units] == count(units) and len(tried) <= 20
    units, _ = graphs.match_units(count, 10**12, start, limit=50)
    assert units == 50  # the limit, when even it stays below the target


def test_graphs_part_times_every_kind_at_matched_parameters():
    # 48 px: 12x12 feature map at stride 4, 36 NMS windows for the preset's 32 keypoints; one
    # graph layer: less to trace.
    result = graphs.benchmark_graphs(warmup=1, repeats=2, image_size=48, batch=2,
                                     graph={"layers": 1})
    kinds, group = result["kinds"], result["group"]
    assert list(kinds) == list(graphs.KINDS) and result["preset"] == "imagenette-64"
    assert set(group["timings"]) == set(graphs.KINDS) | {"gcn (A/A)"}
    reference = kinds["gcn"]["parameters"]
    for kind, entry in kinds.items():
        assert entry["relative_difference"] == pytest.approx(
            (entry["parameters"] - reference) / reference)
        if kind == "none":  # no graph layers: nothing to match, only reported
            assert entry["units"] is None
            assert entry["within_tolerance"] == (abs(entry["relative_difference"]) <= 0.01)
        else:
            assert entry["within_tolerance"], kind
        if kind != "gcn":
            ratio = entry["ratio_to_reference"]
            assert (ratio["numerator"], ratio["denominator"]) == (kind, "gcn")
            assert ratio["group"] == group["group"]
    # Independent check of the match: no neighbouring units come closer.
    vig_units = kinds["vig"]["units"]
    for units in (vig_units - 1, vig_units + 1):
        config = real_data.preset_run("imagenette-64", 48, 2,
                                      {"kind": "vig", "units": units, "layers": 1}).model
        assert abs(build_classifier(config).count_params() - reference) >= abs(
            kinds["vig"]["parameters"] - reference), units
    knn = result["knn"]
    assert [row["keypoints"] for row in knn["rows"]] == list(graphs.KEYPOINT_COUNTS)
    assert knn["workload"]["features"] == 66  # 64 channels at stride 4 + 2 position features
    assert knn["workload"]["layers"] == 1 and any("{'layers': 1}" in n for n in result["notes"])
    for role in ("knn", "vig_forward"):
        assert all(row[role]["median_ms"] > 0 for row in knn["rows"])
        steps = knn["growth"][role]
        assert [(s["from"], s["to"]) for s in steps] == [(32, 64), (64, 128), (128, 256)]
        assert all(s["paired_ratio"]["group"] == knn["group"]["group"] for s in steps)
    _assert_same_run_provenance({"parts": {"graphs": result}})
    judged = goals.graph_goals(result)
    assert len(judged) == 1 and judged[0]["status"] in ("PASS", "MISS")
    text = report.graphs_section(result)
    vig = kinds["vig"]
    assert f"| vig | {vig_units} | {vig['parameters']:,} |" in text
    assert "| 256 |" in text and "knn_indices growth: 32->64: x" in text


def test_graphs_part_is_wired_into_the_command(tmp_path, monkeypatch):
    calls = []

    def fake_graphs(**kwargs):
        calls.append(kwargs)
        return _graphs()

    monkeypatch.setattr(graphs, "benchmark_graphs", fake_graphs)
    out = tmp_path / "bench"
    benchmark.main(["graphs", "--quick", "--out", str(out)])
    assert calls == [{"warmup": 1, "repeats": benchmark.QUICK_REPEATS, "batch": 4}]
    assert benchmark.DEFAULT_REPEATS["graphs"] >= 5 and "graphs" in benchmark.PARTS
    results = json.loads((out / "benchmarks.json").read_text())
    assert list(results["parts"]) == ["graphs"]
    assert any("issue 23" in g["goal"] for g in results["goals"])
    assert "## Graph networks at equal parameters" in (out / "benchmarks.md").read_text()


def test_cpu_vector_extensions_read_from_cpuinfo(tmp_path):
    """x86 "flags" and Arm "Features" lines give the known extensions in VECTOR_EXTENSIONS
    order; other flags are ignored; an unreadable file gives ()."""
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Test\nflags\t\t: fpu avx2 sse4_2 avx512f "
                   "avx fma ht\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm sve\n")
    assert machine.cpu_vector_extensions(str(x86)) == ("sse4_2", "avx", "avx2", "fma", "avx512f")
    assert machine.cpu_vector_extensions(str(arm)) == ("asimd", "sve")
    assert machine.cpu_vector_extensions(str(tmp_path / "missing")) is None
    assert machine.extensions_text({"cpu_vector_extensions": ["avx", "avx2"]}) == (
        "vector extensions: avx, avx2")
    assert machine.extensions_text({"cpu_vector_extensions": []}) == (
        "vector extensions: none found")
    assert machine.extensions_text({"cpu_vector_extensions": None}) == (
        "vector extensions could not be read")
    assert machine.extensions_text({}) == "vector extensions not recorded"
    section = report.machine_section({**json.loads(json.dumps(machine.machine_info())),
                                      "cpu_vector_extensions": ["avx", "avx2"]})
    assert "logical cores, vector extensions: avx, avx2" in section
