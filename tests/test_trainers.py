"""The trainers end to end on tiny built-in data: outputs, resume, bad flags, strategies."""
import argparse
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import keypoint_gnn as kg
from keypoint_gnn import training
from keypoint_gnn._backend import keras, tf
from trainers import (border_fraction, classify, common, pretrain_keypoints, recalibrate_bn,
                      reconstruct)

TINY_FLAGS = ["--image-size", "32", "--max-examples", "48", "--batch-size", "16", "--keypoints", "8",
              "--graph-units", "16", "--graph-layers", "2", "--verbose", "0"]


def test_classify_writes_every_output(tmp_path):
    out = tmp_path / "run"
    result = classify.main(TINY_FLAGS + ["--epochs", "2", "--out", str(out),
                                         "--export-dir", str(tmp_path / "saved_models")])
    for name in ("metrics.json", "keypoints.png", "curves.png", "model.keras", "config.json", "run.json"):
        assert (out / name).is_file(), name
    assert any((out / "logs").rglob("events.out.tfevents*"))
    assert (out / "checkpoints" / "best.weights.h5").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "parameters", "seconds_per_epoch", "images_per_second",
                "config", "command", "keypoints"):
        assert key in metrics, key
    assert 0 <= metrics["test_accuracy"] <= 1
    assert metrics["parameters"] == result["parameters"] > 0
    for key in ("hit_rate", "coverage", "redundancy"):
        assert 0 <= metrics["keypoints"][key] <= 1
    assert kg.ModelConfig.from_json((out / "config.json").read_text()).num_keypoints == 8
    version = tmp_path / "saved_models" / "keypoint_maxpool_nms_gcn" / "1"
    assert (version / "saved_model.pb").is_file()


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise RuntimeError("simulated crash after the first epoch")


def test_interrupted_run_resumes_from_last_finished_epoch(tmp_path, monkeypatch):
    out = tmp_path / "run"
    flags = TINY_FLAGS + ["--epochs", "3", "--out", str(out), "--no-export"]
    original = training.standard_callbacks
    monkeypatch.setattr(training, "standard_callbacks",
                        lambda *a, **k: original(*a, **k) + [_Interrupt()])
    with pytest.raises(RuntimeError, match="simulated crash"):
        classify.main(flags)
    assert (out / "backup").is_dir()
    monkeypatch.setattr(training, "standard_callbacks", original)
    result = classify.main(flags)
    assert result["epochs_run_this_session"] == 2  # epochs 2 and 3; epoch 1 was restored
    assert len(result["history"]["loss"]) == 2


def test_reconstruct_writes_mse_psnr_and_figure(tmp_path):
    out = tmp_path / "ae"
    result = reconstruct.main(TINY_FLAGS + ["--epochs", "1", "--out", str(out), "--loss", "conf_mse"])
    assert (out / "reconstructions.png").is_file() and (out / "model.keras").is_file()
    assert 0 < result["test_mse"] < 1
    assert result["test_psnr"] == pytest.approx(10 * np.log10(1 / result["test_mse"]), rel=1e-6)


def test_pretrained_detector_weights_load_into_classify(tmp_path):
    grid_flags = ["--grid-cell-size", "1", "--points-per-cell", "1"]
    pre = pretrain_keypoints.main(TINY_FLAGS + grid_flags + ["--epochs", "1", "--out", str(tmp_path / "pre")])
    assert (tmp_path / "pre" / "offsets.png").is_file()
    assert 0 <= pre["border_fraction_predicted"] <= 1
    weights = tmp_path / "pre" / "detector.weights.h5"
    result = classify.main(TINY_FLAGS + grid_flags + ["--detector", "grid", "--epochs", "1", "--no-export",
                                                      "--out", str(tmp_path / "cls"),
                                                      "--detector-weights", str(weights)])
    assert 0 <= result["test_accuracy"] <= 1
    assert 0 <= result["keypoints"]["border_fraction"] <= 1
    assert (tmp_path / "cls" / "offsets.png").is_file()


def test_heatmap_pretraining_with_spread_penalty_loads_into_classify(tmp_path):
    dsnt = ["--offset-mode", "dsnt", "--dsnt-resolution", "4", "--dsnt-spread-weight", "0.1"]
    pre = pretrain_keypoints.main(TINY_FLAGS + dsnt + ["--offset-loss", "ce", "--epochs", "1",
                                                       "--out", str(tmp_path / "pre")])
    metrics = json.loads((tmp_path / "pre" / "metrics.json").read_text())
    assert metrics["offset_loss"] == "ce" and metrics["config"]["dsnt_spread_weight"] == 0.1
    assert np.isfinite(pre["test_loss"])
    result = classify.main(TINY_FLAGS + dsnt + [
        "--detector", "grid", "--epochs", "1", "--no-export", "--out", str(tmp_path / "cls"),
        "--detector-weights", str(tmp_path / "pre" / "detector.weights.h5")])
    assert 0 <= result["keypoints"]["border_fraction"] <= 1


def test_widened_offsets_pretrain_and_classify(tmp_path):
    widened = ["--offset-margin", "0.5", "--grid-cell-size", "1", "--points-per-cell", "1"]
    pre = pretrain_keypoints.main(TINY_FLAGS + widened + ["--epochs", "1", "--out", str(tmp_path / "pre")])
    assert 0 <= pre["border_fraction_predicted"] <= 1
    result = classify.main(TINY_FLAGS + widened + [
        "--detector", "grid", "--epochs", "1", "--no-export", "--out", str(tmp_path / "cls"),
        "--detector-weights", str(tmp_path / "pre" / "detector.weights.h5")])
    quality = result["keypoints"]
    assert 0 <= quality["border_fraction"] <= 1 and 0 <= quality["range_end_fraction"] <= 1
    config = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert config["offset_margin"] == 0.5
    # The saved classifier measured again by trainers.border_fraction, on the same test split
    # (the run's own --max-examples 48, from its run.json).
    report = border_fraction.main([str(tmp_path / "cls")])[str(tmp_path / "cls")]
    assert report.pop("offset_mode") == "sigmoid" and report.pop("detector") == "grid"
    same = ("border_fraction", "border_fraction_all_slots", "range_end_fraction", "fixed_position_share")
    assert {key: report[key] for key in same} == pytest.approx({key: quality[key] for key in same})
    assert 0 <= report["noise_selection_overlap"] <= 1 and report["offset_std_across_images"] >= 0
    # ... and the pre-trained detector, with the same input-dependence measures.
    pre_report = border_fraction.main([str(tmp_path / "pre"), "--max-examples", "48"])[str(tmp_path / "pre")]
    assert 0 <= pre_report["border_fraction"] <= 1 and 0 <= pre_report["noise_selection_overlap"] <= 1
    assert pre_report["offset_std_across_slots"] >= 0
    assert (tmp_path / "cls" / "offsets.png").is_file()


def test_classify_with_anchored_offsets(tmp_path):
    dsnt = ["--offset-mode", "dsnt", "--dsnt-resolution", "4", "--dsnt-straight-through"]
    result = classify.main(TINY_FLAGS + dsnt + [
        "--detector", "grid", "--epochs", "1", "--no-export", "--anchor-weight", "0.5",
        "--anchor-loss", "ce", "--out", str(tmp_path / "cls")])
    assert 0 <= result["keypoints"]["border_fraction"] <= 1
    assert np.isfinite(result["history"]["anchor_loss"][0])
    assert np.isfinite(result["history"]["val_anchor_loss"][0])
    restored = keras.models.load_model(tmp_path / "cls" / "model.keras")  # the classifier alone
    assert restored.name == kg.build_classifier(kg.ModelConfig.from_json(
        (tmp_path / "cls" / "config.json").read_text())).name


def test_heatmap_pretraining_refuses_sigmoid_offsets(capsys):
    with pytest.raises(SystemExit) as exit_info:
        common.run_main(lambda: pretrain_keypoints.main(
            TINY_FLAGS + ["--offset-loss", "ce", "--out", "/nonexistent/never-written"]))
    assert exit_info.value.code == 2
    assert "--offset-loss ce needs --offset-mode softmax or dsnt" in capsys.readouterr().err


def _run_cli(module, *flags):
    return subprocess.run([sys.executable, "-m", module, *flags], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs=0 must be at least 1"),
    (["--learning-rate", "-1"], "--learning-rate=-1.0 must be positive"),
    (["--dataset", "folder:/no/such/folder"], "/no/such/folder"),
    (["--dataset", "mnistt:x"], "mnistt:x"),
    (["--keypoints", "999", "--image-size", "32"], "num_keypoints=999 exceeds"),
    (["--config", "/no/such/config.json"], "no such file"),
    (["--devices", "/cpu:0"], "--devices applies to --strategy mirrored"),
    (["--detector", "grid", "--dsnt-spread-weight", "0.1"],
     "dsnt_spread_weight=0.1 applies to offset_mode='dsnt' only"),
    (["--offset-mode", "dsnt", "--dsnt-spread", "-2"], "dsnt_spread=-2.0 must be a finite number >= 0"),
    (["--detector", "grid", "--offset-margin", "1.5"], "offset_margin=1.5 must be in [0, 1]"),
    (["--detector", "perturbed_topk", "--perturbed-selection", "slots", "--perturbed-estimator",
      "threshold"], "perturbed_estimator='threshold' needs perturbed_selection='marginal'"),
    (["--anchor-weight", "-1"], "--anchor-weight=-1.0 must be >= 0"),
    (["--detector", "perturbed_topk", "--selection-noise", "0.5"],
     "selection_noise=0.5 applies to the attention and maxpool_nms detectors"),
    (["--detector", "grid", "--subpixel-refinement", "neighbourhood"],
     "subpixel_refinement='neighbourhood' applies to the attention and maxpool_nms detectors"),
    (["--anchor-weight", "1", "--max-examples", "8"], "--anchor-weight applies to --detector grid, not --detector maxpool_nms"),
    (["--detector", "grid", "--anchor-weight", "1", "--anchor-loss", "ce", "--max-examples", "8"],
     "--anchor-loss ce needs --offset-mode softmax or dsnt"),
])
def test_bad_flags_give_one_line_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        common.run_main(lambda: classify.main(flags + ["--out", "/nonexistent/never-written"]))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and "Traceback" not in error


def test_cli_reports_errors_without_traceback():
    result = _run_cli("trainers.classify", "--epochs", "0")
    assert result.returncode == 2
    assert "error: --epochs=0 must be at least 1" in result.stderr and "Traceback" not in result.stderr
    result = _run_cli("trainers.classify", "--detector", "sift")
    assert result.returncode == 2 and "invalid choice: 'sift'" in result.stderr


def test_bad_config_file_contents(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(SystemExit):
        common.run_main(lambda: classify.main(["--config", str(path)]))
    assert "is not valid JSON" in capsys.readouterr().err
    path.write_text('{"graph_layer": 3}')
    with pytest.raises(SystemExit):
        common.run_main(lambda: classify.main(["--config", str(path)]))
    assert "unknown ModelConfig field(s) ['graph_layer']" in capsys.readouterr().err


def test_config_file_is_used_and_flags_override(tmp_path):
    path = tmp_path / "best.json"
    path.write_text(kg.ModelConfig(detector="attention", graph_layers=5).to_json())
    args = classify.parse_args(["--config", str(path), "--graph-layers", "3"])
    config = common.model_config(args)
    assert config.detector == "attention" and config.graph_layers == 3


def test_offset_uniformity_weight_flag_reaches_the_config():
    args = classify.parse_args(["--detector", "grid", "--offset-uniformity-weight", "2.5"])
    assert common.model_config(args).offset_uniformity_weight == 2.5
    assert common.model_config(classify.parse_args([])).offset_uniformity_weight == 0.0


def test_perturbed_estimator_flag_reaches_the_config():
    args = classify.parse_args(["--detector", "perturbed_topk", "--perturbed-estimator", "threshold"])
    assert common.model_config(args).perturbed_estimator == "threshold"
    assert common.model_config(classify.parse_args([])).perturbed_estimator == "sampled"


def test_selection_noise_flag_reaches_the_config():
    args = classify.parse_args(["--detector", "attention", "--selection-noise", "1.5"])
    assert common.model_config(args).selection_noise == 1.5
    assert common.model_config(classify.parse_args([])).selection_noise == 0.0


@pytest.mark.parametrize("mode", ["window", "centre"])
def test_subpixel_refinement_flag_reaches_the_config(mode):
    args = classify.parse_args(["--subpixel-refinement", mode])
    assert common.model_config(args).subpixel_refinement == mode
    assert common.model_config(classify.parse_args([])).subpixel_refinement == "none"


def test_standardize_offsets_flag_reaches_the_config():
    args = classify.parse_args(["--detector", "grid", "--standardize-offsets"])
    assert common.model_config(args).standardize_offsets is True
    assert common.model_config(classify.parse_args(["--detector", "grid"])).standardize_offsets is False


def test_mirrored_two_cpus_gives_the_same_loss_as_one_device(rng):
    config = kg.ModelConfig(image_size=16, num_classes=3, backbone_filters=(8,), detector_filters=(4,),
                            num_keypoints=6, graph_units=8, graph_layers=2, head_filters=(8,), dropout=0.0)
    images = rng.uniform(size=(8, 16, 16, 3)).astype("float32")
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    initial = kg.build_classifier(config).get_weights()

    def one_step_then_loss(strategy):
        with strategy.scope():
            model = kg.build_classifier(config)
            model.set_weights(initial)
            model.compile(keras.optimizers.SGD(0.1),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        first = model.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0).history["loss"][0]
        return first, model.evaluate(images, labels, batch_size=8, verbose=0)

    mirrored = training.make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    np.testing.assert_allclose(one_step_then_loss(mirrored), one_step_then_loss(tf.distribute.get_strategy()),
                               rtol=1e-4)


def test_strategy_errors(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):
        training.make_strategy("multiworker")
    with pytest.raises(ValueError, match="strategy='tpu' is not one of"):
        training.make_strategy("tpu")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.timeout(300)
def test_two_worker_multiworker_run_on_localhost(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    root = os.path.dirname(os.path.dirname(__file__))
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "trainers.classify", *TINY_FLAGS, "--epochs", "1", "--no-export",
             "--strategy", "multiworker", "--out", str(tmp_path / "run")],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=280)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["strategy"] == "multiworker" and metrics["replicas"] == 2


def test_classify_recalibrates_batch_norm_and_the_tool_measures_the_saved_run(tmp_path):
    out = tmp_path / "run"
    result = classify.main(TINY_FLAGS + ["--epochs", "1", "--detector", "perturbed_topk",
                                         "--recalibrate-bn", "2", "--no-export", "--out", str(out)])
    recalibration = json.loads((out / "metrics.json").read_text())["batch_norm_recalibration"]
    assert recalibration["batches"] == 2
    assert 0 <= recalibration["test_accuracy_moving_averages"] <= 1
    # model.keras holds the recalibrated statistics: evaluated again on the same test split it
    # gives classify's test accuracy.
    # Its data split (--max-examples 48) comes from the run's run.json.
    report = recalibrate_bn.main([str(out), "--batch-size", "16", "--batches", "2",
                                  "--save"])[str(out)]
    np.testing.assert_allclose(report["test_accuracy_moving_averages"], result["test_accuracy"],
                               atol=1e-6)
    assert report["batches"] == 2 and 0 <= report["test_accuracy_recalibrated"] <= 1
    assert (out / "model_recalibrated.keras").is_file()


def test_measuring_tools_use_the_runs_own_data_split(tmp_path):
    def run(name, recorded):
        path = tmp_path / name
        path.mkdir()
        if recorded is not None:
            (path / "run.json").write_text(json.dumps(recorded))
        return str(path)

    def data(*argv):
        parser = argparse.ArgumentParser()
        common.add_measured_runs_flags(parser)
        return common.measured_data(parser.parse_args(argv))

    a = run("a", {"dataset": "folder:/x", "seed": 3, "max_examples": 40, "name": "a"})
    b = run("b", {"dataset": "folder:/x", "seed": 4, "max_examples": 40})
    old = run("old", {"dataset": "builtin"})  # before run.json recorded the split
    pre = run("pre", None)  # a pre-training run: no run.json
    assert data(a) == ("folder:/x", 3, 40)
    assert data(a, "--seed", "1", "--dataset", "builtin") == ("builtin", 1, 40)
    assert data(old, pre) == ("builtin", 0, None)
    with pytest.raises(common.UserError, match=r"different seed values \{.*a': 3, .*b': 4\}; "
                                               r"measure them separately or pass --seed"):
        data(a, b)
    assert data(a, b, "--seed", "0") == ("folder:/x", 0, 40)
    broken = run("broken", None)
    (tmp_path / "broken" / "run.json").write_text("{not json")
    with pytest.raises(common.UserError, match=r"broken/run.json: not JSON"):
        data(broken)
    (tmp_path / "broken" / "run.json").write_text("[1, 2]")
    with pytest.raises(common.UserError, match=r"broken/run.json must hold a JSON object, not list"):
        data(broken)


def test_export_reads_run_json_with_the_shared_checks(tmp_path):
    from trainers import export

    (tmp_path / "model.keras").write_bytes(b"")
    (tmp_path / "config.json").write_text(kg.ModelConfig().to_json())
    (tmp_path / "run.json").write_text("[1]")
    with pytest.raises(common.UserError, match=r"run.json must hold a JSON object, not list"):
        export.read_run(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(common.UserError, match=r"bad config.json"):
        export.read_run(tmp_path)


def test_recalibration_bad_flags(tmp_path):
    with pytest.raises(common.UserError, match="--recalibrate-bn=-1 must be >= 0"):
        classify.parse_args(["--recalibrate-bn", "-1"])
    with pytest.raises(common.UserError, match="--batches=0 must be at least 1"):
        recalibrate_bn.main([str(tmp_path), "--batches", "0"])
    with pytest.raises(common.UserError, match="no config.json"):
        recalibrate_bn.main([str(tmp_path)])
