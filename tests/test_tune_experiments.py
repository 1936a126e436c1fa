"""KerasTuner search and the paper-table runner on tiny built-in data."""
import json

import numpy as np
import pytest

import keypoint_gnn as kg
from trainers import classify, common, experiments, reconstruct, tune

TINY = ["--dataset", "builtin", "--image-size", "32", "--set", "data.max_examples=32",
        "--batch-size", "16"]
TINY_TABLE = ["--dataset", "builtin", "--image-size", "32", "--max-examples", "32",
              "--batch-size", "16"]


def test_tuner_trials_all_complete_and_best_config_feeds_classify(tmp_path):
    result = tune.main(TINY + ["--tuner", "bayesian", "--max-trials", "2", "--epochs", "1",
                               "--keypoints", "8,16", "--max-graph-layers", "3", "--verbose", "0",
                               "--out", str(tmp_path / "tune")])
    assert set(result["statuses"].values()) == {"COMPLETED"} and len(result["statuses"]) == 2
    trials = json.loads((tmp_path / "tune" / "trials.json").read_text())
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    config_path = tmp_path / "tune" / "best_config.json"
    config = common.run_config(classify.parse_args(["--config", str(config_path)]), "classify").model
    assert config == kg.ModelConfig.from_json(config_path.read_text()) == result["best_config"]


def test_check_trials_reports_failures():
    from keypoint_gnn import tuning

    class Trial:
        def __init__(self, status):
            self.status = status

    class Oracle:
        trials = {"0": Trial("COMPLETED"), "1": Trial("FAILED")}

    class Tuner:
        oracle = Oracle()

    with pytest.raises(RuntimeError, match=r"1 of 2 trials did not complete: \{'1': 'FAILED'\}"):
        tuning.check_trials(Tuner())


def test_keras_tuner_binding_leaves_keras_module_alone():
    import sys

    from keypoint_gnn import tuning  # noqa: F401

    assert "keras" not in sys.modules or sys.modules["keras"].__name__ != "tf_keras"


def test_table_rows_resume(tmp_path, capsys):
    flags = TINY_TABLE + ["--table", "1", "--epochs", "1", "--keypoints", "8", "--rows", "1,8",
                    "--out", str(tmp_path / "t1")]
    first = experiments.main(flags)
    assert list(first) == ["CNN only (no GNN)", "Plain CNN, matched parameters"]
    table = (tmp_path / "t1" / "results.md").read_text()
    assert "| CNN only (no GNN) | - | 8 | linear |" in table and "Plain CNN, matched parameters" in table
    assert (tmp_path / "t1" / "results.png").is_file()
    capsys.readouterr()
    second = experiments.main(flags)
    assert "[done before] CNN only (no GNN)" in capsys.readouterr().out
    assert second == first


def test_table_bad_rows():
    with pytest.raises(common.UserError, match=r"--rows \[9\] out of range: the table has rows 1..8"):
        experiments.main(["--table", "1", "--rows", "9", "--out", "/tmp/never"])


def test_detector_rows_skip_the_detector_the_table_already_uses():
    best = experiments.Row("GCN, 4 layers, sigmoid scores", ("--preset", "paper-t1-gcn4-sigmoid"))
    rows = experiments.detector_rows(best, "maxpool_nms")
    assert [row.flags[-1] for row in rows] == ["attention", "grid"]
    assert all(row.flags == best.flags + ("--detector", row.flags[-1]) for row in rows)
    assert len(experiments.detector_rows(best, "grid")) == 2


def test_refinements_are_searched_for_windowed_detectors_only():
    import keras_tuner

    from keypoint_gnn import tuning

    base = kg.ModelConfig(image_size=32, detector={"num_keypoints": 8}, graph={"diffpool_clusters": 4})
    hypermodel = tuning.KeypointHyperModel(base, (8,), 3, detectors=("attention", "maxpool_nms"),
                                           refinements=("none", "centre"))
    for detector, refinement, expected in [("attention", "centre", "none"),
                                           ("maxpool_nms", "centre", "centre"),
                                           ("maxpool_nms", "none", "none")]:
        hp = keras_tuner.HyperParameters()
        hp.Fixed("detector", detector)
        hypermodel.config(hp)  # registers the space
        assert hp.is_active("refinement") == (detector == "maxpool_nms")
        hp.values["refinement"] = refinement
        config = hypermodel.config(hp)
        assert (config.detector.kind, config.detector.refinement) == (detector, expected)
        if expected == "centre":  # the trial's model is built from that config
            assert hypermodel.build(hp).get_layer("detector").refinement == "centre"
    # The default space has no refinement hyperparameter.
    hp = keras_tuner.HyperParameters()
    hp.Fixed("detector", "maxpool_nms")
    assert tuning.KeypointHyperModel(base, (8,), 3).config(hp).detector.refinement == "none"
    assert "refinement" not in hp.values


def test_graph_kinds_searched_include_gat_and_vig_on_request():
    import keras_tuner

    from keypoint_gnn import tuning

    base = kg.ModelConfig(image_size=32, detector={"num_keypoints": 8},
                          graph={"diffpool_clusters": 4, "knn": 4, "units": 8})
    # Default: the paper's three.
    hp = keras_tuner.HyperParameters()
    tuning.KeypointHyperModel(base, (8,), 2).config(hp)
    assert hp.space[0].name == "gnn" and hp.space[0].values == ["gcn", "diffpool", "none"]
    hypermodel = tuning.KeypointHyperModel(base, (4, 8, 16), 2, graphs=("gcn", "gat", "vig"))
    # 4 keypoints cannot hold a 4-nearest-neighbour graph: that choice leaves the space.
    assert hypermodel.keypoint_choices == [8, 16]
    for graph, layer in (("gat", kg.layers.GATStack), ("vig", kg.layers.ViGStack)):
        hp = keras_tuner.HyperParameters()
        hp.Fixed("gnn", graph)
        assert isinstance(hypermodel.build(hp).get_layer("gnn"), layer)


@pytest.mark.parametrize("changes, message", [
    (dict(graphs=("gcn", "transformer")),
     r"graphs=\['gcn', 'transformer'\] must be distinct values from gcn, diffpool, gat, vig, none"),
    (dict(detectors=("attention", "sift")),
     r"detectors=\['attention', 'sift'\] must be distinct values from attention, maxpool_nms, grid, perturbed_topk"),
    (dict(refinements=("window", "window")),
     r"refinements=\['window', 'window'\] must be distinct values from none, window, centre"),
    (dict(detectors=("attention", "grid"), refinements=("none", "window")),
     (r"refinements=\['none', 'window'\] apply to the windowed detectors maxpool_nms, "
      r"perturbed_topk, none of which is among detectors=\['attention', 'grid'\]")),
])
def test_hypermodel_bad_search_space(changes, message):
    from keypoint_gnn import tuning

    with pytest.raises(ValueError, match=message):
        tuning.KeypointHyperModel(kg.ModelConfig(image_size=32, detector={"num_keypoints": 8}), (8,),
                                  **changes)


def test_tune_cli_bad_detector_exits_with_the_flag_value(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        common.run_main(lambda: tune.main(TINY + ["--detectors", "attention,orb",
                                                  "--out", str(tmp_path / "tune")]))
    assert exit_info.value.code == 2
    assert "detectors=['attention', 'orb'] must be distinct values" in capsys.readouterr().err


def test_compare_table_runs_each_row_over_seeds(tmp_path):
    flags = TINY_TABLE + ["--table", "compare", "--preset", "default", "--seeds", "0,1",
                          "--rows", "2", "--epochs", "1", "--extra", "--keypoints 8",
                          "--out", str(tmp_path / "cmp")]
    results = experiments.main(flags)
    label = "default: CNN only (keypoints, no GNN)"
    assert list(results) == [label] and [run["seed"] for run in results[label]] == [0, 1]
    accuracies = [run["test_accuracy"] for run in results[label]]
    summary = json.loads((tmp_path / "cmp" / "results.json").read_text())["summary"][label]
    assert summary["test_accuracy"]["values"] == accuracies
    assert summary["test_accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert summary["test_accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    table = (tmp_path / "cmp" / "results.md").read_text()
    mean, std = 100 * np.mean(accuracies), 100 * np.std(accuracies, ddof=1)
    assert f"| {mean:.2f} +- {std:.2f} |" in table and "| 0,1 |" in table
    assert "raw weights" not in table  # no EMA: the evaluated weights are the raw ones
    assert (tmp_path / "cmp" / "rows" / "default_cnn_only_keypoints_no_gnn_seed1" / "metrics.json").is_file()


@pytest.mark.parametrize("table, trainer", [("compare", classify), ("2", reconstruct)])
def test_every_table_flag_reaches_the_trainers_config(table, trainer):
    """What base_flags passes on, each trainer's parser accepts and resolves into its config
    (--data-dir once became a flag that no trainer had)."""
    args = experiments.parse_args(["--table", table, "--dataset", "tfds:mnist",
                                   "--data-dir", "/data/tfds", "--channels", "1",
                                   "--max-examples", "8", "--image-size", "64", "--epochs", "2",
                                   "--batch-size", "16", "--learning-rate", "0.01"])
    run = common.run_config(trainer.parse_args(experiments.base_flags(args, seed=3)),
                            "classify" if trainer is classify else "reconstruct")
    assert (run.data.dataset, run.data.data_dir, run.data.channels, run.data.max_examples) == (
        "tfds:mnist", "/data/tfds", 1, 8)
    assert (run.model.image_size, run.train.epochs, run.train.batch_size,
            run.train.learning_rate) == (64, 2, 16, 0.01)


def test_compare_table_bad_seeds():
    with pytest.raises(common.UserError, match=r"--seeds='0,0' must be distinct"):
        experiments.main(["--table", "compare", "--seeds", "0,0", "--out", "/tmp/never"])


def test_table_2_rows_change_the_base_preset():
    rows = experiments.table_2_rows("faces-64")
    assert [row.flags[:2] for row in rows] == [("--preset", "faces-64")] * len(rows)
    sets = dict(zip(rows[0].flags[3::2], rows[0].flags[2::2]))  # "path=value" -> "--set"
    assert set(sets.values()) == {"--set"}
    assert {"model.graph.layers=5", "model.detector.num_keypoints=48",
            "model.detector.score_activation=linear"} <= set(sets)
    labels = [row.label for row in rows]
    assert labels[-5:] == ["faces-64 (maxpool_nms keypoints)", "faces-64, attention keypoints",
                           "faces-64, grid keypoints",
                           "Convolutional autoencoder, at least the graph's numbers",
                           "Convolutional autoencoder, at most the graph's numbers"]
    assert rows[-2].flags == ("--preset", "faces-64", "--plain-autoencoder", "at-least")
    assert rows[-1].flags == ("--preset", "faces-64", "--plain-autoencoder", "at-most")
    # On the default preset: the paper's seven rows and the two conv autoencoders.
    assert len(experiments.table_2_rows()) == 9


def test_table_2_reports_quality_and_references(tmp_path):
    flags = TINY_TABLE + ["--table", "2", "--epochs", "1", "--rows", "2,8",
                          "--extra", "--set detector.num_keypoints=8 --set graph.units=8 --set data.holdout_classes=1",
                          "--out", str(tmp_path / "t2")]
    results = experiments.main(flags)
    assert list(results) == ["GCN, 5 layers, 64 keypoints",
                             "Convolutional autoencoder, at least the graph's numbers"]
    plain = results["Convolutional autoencoder, at least the graph's numbers"][0]
    assert plain["architecture"] == "plain_autoencoder"
    assert plain["bottleneck_numbers"] >= plain["graph_numbers"]
    table = (tmp_path / "t2" / "results.md").read_text()
    assert "| PSNR (dB) | SSIM | unseen classes: MSE |" in table
    keypoint = results["GCN, 5 layers, 64 keypoints"][0]
    assert f"| {keypoint['test_mse']:.5f} (mse) | {keypoint['test_psnr']:.2f} |" in table
    mean = keypoint["references"]["test"]["mean_image"]["mse"]
    assert f"- held-out images, the mean training image: {mean:.5f} /" in table
    pca = keypoint["references"]["test"]["pca"]
    rank_note = (f"; {pca['components_used']} used: the training images' rank"
                 if pca["components_used"] < pca["components_requested"] else "")
    assert (f"- held-out images, PCA ({pca['components_requested']} components, as many as the "
            f"graph's numbers{rank_note}): {pca['mse']:.5f} /") in table
    assert "- unseen classes, PCA (" in table
    assert "figures: mean +- sample standard deviation (ddof 1) over the seeds" in table


def test_graph_table_sizes_each_kind_to_the_gcn_model(monkeypatch, tmp_path):
    from keypoint_gnn.benchmarks import graphs

    units = {"none": None, "gcn": 64, "diffpool": 62, "gat": 48, "vig": 31}
    calls = []

    def matched(preset, kinds):
        calls.append((preset, kinds))
        return {kind: {"units": units[kind]} for kind in kinds}, 66

    monkeypatch.setattr(graphs, "matched_graphs", matched)
    rows = experiments.graph_rows("imagenette-64")
    assert calls == [("imagenette-64", ("none", "gcn", "diffpool", "gat", "vig"))]
    assert rows[0].flags == ("--preset", "imagenette-64", "--gnn", "none")
    assert rows[4].label == "imagenette-64: ViG"
    assert rows[4].flags == ("--preset", "imagenette-64", "--gnn", "vig", "--set", "graph.units=31")

    units.update(gcn=16, vig=8)
    flags = TINY_TABLE + ["--table", "graphs", "--rows", "1,5", "--epochs", "1",
                          "--extra", "--keypoints 8 --set graph.knn=3 --set graph.layers=1",
                          "--out", str(tmp_path / "g")]
    results = experiments.main(flags)
    assert list(results) == ["default: CNN only (no graph)", "default: ViG"]
    vig = results["default: ViG"][0]["config"]["model"]["graph"]
    assert (vig["kind"], vig["units"], vig["knn"]) == ("vig", 8, 3)
    assert "| default: ViG | 1 | 8 |" in (tmp_path / "g" / "results.md").read_text()


def test_a_column_some_seeds_lack_says_so():
    runs = [{"seed": 0, "test_accuracy": 0.9},
            {"seed": 1, "test_accuracy": 0.8, "test_accuracy_flip_tta": 0.85}]
    summary = experiments.row_summary(runs, "test_accuracy")
    assert summary["test_accuracy_flip_tta"] == {"mean": 0.85, "std": None, "values": [None, 0.85]}
    assert summary["test_accuracy"]["values"] == [0.9, 0.8]
    assert experiments._spread([0.9, None], 100) == "90.00 (1 of 2 seeds)"
    assert experiments._spread([0.9, 0.8, None], 100) == "85.00 +- 7.07 (2 of 3 seeds)"
    assert experiments._spread([0.9, 0.8], 100) == "85.00 +- 7.07"
    assert experiments._spread([None, None]) == ""
