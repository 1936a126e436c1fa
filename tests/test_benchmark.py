"""The benchmark command and its parts: NumPy reference, outputs, memory cap, flags.

Speeds are not asserted: the machine is shared and timings are noisy.
"""
import argparse
import json

import numpy as np
import pytest

from keypoint_gnn.benchmarks import goals, interconnect, isolation, measure, scale
from keypoint_gnn.benchmarks import training as training_bench
from trainers import benchmark


@pytest.mark.parametrize("batch,keypoints,channels,map_size", [(2, 8, 4, 5), (3, 16, 2, 4)])
def test_numpy_loop_reference_matches_tf_interconnect(batch, keypoints, channels, map_size):
    # map_size 4 with 16 keypoints forces collisions, which graph->CNN must average.
    arrays = interconnect.random_inputs(batch, keypoints, channels, map_size, seed=3)
    expected = interconnect.numpy_interconnect(*arrays)
    actual = interconnect.tf_interconnect_layers(map_size)(*arrays)
    for name, want, got in zip(("nodes", "adjacency", "grid"), expected, actual):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_numpy_reference_on_a_hand_worked_case():
    # Two keypoints 3 apart in one 4x4 map: w = 1/(1+3) = 0.25, divided by itself -> 1, so
    # A = [[1, 1], [1, 1]], degrees 2, normalised entries 1/2.
    feature_map = np.zeros((1, 4, 4, 1), np.float32)
    feature_map[0, 0, 0, 0], feature_map[0, 0, 3, 0] = 2.0, 4.0
    positions = np.array([[[0, 0], [0, 3]]], np.float32)
    scores = np.array([[0.5, 1.0]], np.float32)
    nodes, adjacency, grid = interconnect.numpy_interconnect(feature_map, positions, scores)
    np.testing.assert_allclose(nodes[0, :, 0], [1.0, 4.0])
    np.testing.assert_allclose(adjacency[0], np.full((2, 2), 0.5))
    assert grid[0, 0, 0, 0] == 1.0 and grid[0, 0, 3, 0] == 4.0 and grid.sum() == 5.0


def test_interconnects_quick_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "bench"
    benchmark.main(["interconnects", "--quick", "--repeats", "2", "--out", str(out)])
    results = json.loads((out / "benchmarks.json").read_text())
    for key in ("machine", "command", "parts", "goals", "settings"):
        assert key in results, key
    for key in ("cpu_model", "logical_cores", "memory_gib", "tensorflow", "gpus", "load_average"):
        assert key in results["machine"], key
    part = results["parts"]["interconnects"]
    assert part["authors_pytorch_ms"] == 182.0
    assert set(part["variants"]) == set(interconnect.VARIANTS)
    for variant in part["variants"].values():
        assert variant["median_ms"] > 0 and variant["repeats"] == 2
        assert variant["ratio_to_authors"] == pytest.approx(variant["median_ms"] / 182.0)
        assert variant["memory"]["status"] == "ok"
        assert variant["memory"]["peak_rss_bytes"] > 0
    assert {g["status"] for g in results["goals"]} <= {"PASS", "MISS"}
    assert any("interconnects" in g["goal"] for g in results["goals"])
    markdown = (out / "benchmarks.md").read_text()
    assert "| tf_function_xla |" in markdown and "182 ms" in markdown
    printed = capsys.readouterr().out
    assert "CPU:" in printed and "load avg:" in printed


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


def test_scale_goals_judge_the_largest_size():
    def rows(statuses):
        return [{"size": s, "status": st, "reason": "skipped: needs 7 GiB"} for s, st in statuses]
    result = {"grid_graphs": {
        "dense": {"rows": rows([(64, "ok"), (128, "skipped")]), "growth_per_node": {}},
        "sparse": {"rows": rows([(64, "ok"), (128, "ok")]), "growth_per_node": {
            "memory_excess": [{"from": 4096, "to": 16384, "ratio": 4.2, "exponent": 1.03}]}},
    }}
    statuses = [g["status"] for g in goals.scale_goals(result)]
    assert statuses == ["PASS", "PASS"]


@pytest.mark.parametrize("argv,message", [
    (["bogus"], "invalid choice: 'bogus'"),
    (["--repeats", "0"], "--repeats=0 must be at least 1"),
    (["--memory-limit-gb", "-1"], "--memory-limit-gb=-1.0 must be positive"),
    (["--jobs", "0"], "--jobs=0 must be at least 1"),
    (["interconnects", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_bad_arguments_give_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _training_case(model, mode, ms, plain_ms, off_ms):
    case = {"model": model, "xla": mode, "precision": "float32", "median_ms": ms,
            "ratio_to_plain_cnn": ms / plain_ms}
    if mode != "off":
        case["ratio_xla_to_no_xla"] = ms / off_ms
    return case


def test_xla_goal_judges_the_mode_that_xla_auto_picks():
    cases = {
        "off": _training_case("maxpool_nms/gcn", "off", 100.0, 100.0, 100.0),
        "graph": _training_case("maxpool_nms/gcn", "graph", 98.0, 100.0, 100.0),
        "step": _training_case("maxpool_nms/gcn", "step", 150.0, 200.0, 100.0),
    }
    judged = {g["goal"]: g for g in goals.training_goals({"cases": cases, "xla_auto": "graph"})}
    xla_goals = [g for name, g in judged.items() if "XLA no slower" in name]
    assert [g["status"] for g in xla_goals] == ["PASS"]
    assert "--xla = graph mode" in next(iter(n for n in judged if "XLA no slower" in n))
    step_line = next(g for name, g in judged.items() if name.startswith("not a goal: XLA step"))
    assert step_line["status"] == "N/A" and "1.50x" in step_line["detail"]
    cases["graph"] = _training_case("maxpool_nms/gcn", "graph", 101.0, 100.0, 100.0)
    judged = goals.training_goals({"cases": cases, "xla_auto": "graph"})
    assert [g["status"] for g in judged if "XLA no slower" in g["goal"]] == ["MISS"]


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
    plain = result["cases"][training_bench.case_key("plain_cnn", "off")]
    assert plain["ratio_to_plain_cnn"] == 1.0


def test_xla_goal_allows_the_runs_own_aa_noise():
    cases = {
        "off": _training_case("maxpool_nms/gcn", "off", 100.0, 100.0, 100.0),
        "graph": _training_case("maxpool_nms/gcn", "graph", 103.0, 105.0, 100.0),
        "plain off": _training_case("plain_cnn", "off", 100.0, 100.0, 100.0),
        "plain graph": _training_case("plain_cnn", "graph", 105.0, 105.0, 100.0),
    }
    assert goals.timing_noise(cases) == pytest.approx(0.05)
    judged = goals.training_goals({"cases": cases, "xla_auto": "graph"})
    xla_goal = next(g for g in judged if g["goal"].startswith("XLA no slower"))
    assert xla_goal["status"] == "PASS" and "A/A noise 0.05" in xla_goal["detail"]
    control = next(g for g in judged if g["goal"].startswith("A/A control"))
    assert control["status"] == "N/A"
    cases["graph"] = _training_case("maxpool_nms/gcn", "graph", 106.0, 105.0, 100.0)
    judged = goals.training_goals({"cases": cases, "xla_auto": "graph"})
    assert next(g for g in judged if g["goal"].startswith("XLA no slower"))["status"] == "MISS"


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
