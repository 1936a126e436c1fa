"""The trainers end to end on tiny built-in data: outputs, resume, bad flags, strategies."""
import argparse
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

import keypoint_gnn as kg
from keypoint_gnn import training
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.run_config import RunConfig
from keypoint_gnn.run_directory import RunDirectory
from trainers import classify, common, pretrain_keypoints, recalibrate_bn, reconstruct

TINY_FLAGS = ["--image-size", "32", "--set", "data.max_examples=48", "--batch-size", "16",
              "--keypoints", "8", "--set", "graph.units=16", "--set", "graph.layers=2",
              "--verbose", "0"]


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
    for key in ("hit_rate", "coverage", "redundancy", "fixed_position_share"):
        assert 0 <= metrics["keypoints"][key] <= 1
    assert metrics["pipeline_images_per_second"] > 0
    # Speed: the epochs after the first (tracing), images of the training split over that.
    assert len(metrics["epoch_seconds"]) == 2
    assert metrics["seconds_per_epoch"] == pytest.approx(metrics["epoch_seconds"][1])
    assert metrics["images_per_second"] == pytest.approx(
        metrics["num_examples"]["train"] / metrics["epoch_seconds"][1])
    # The built-in set is not flip-invariant and this run does not flip: no TTA, raw weights.
    assert metrics["evaluated_weights"] == "raw"
    assert not any(key.startswith("test_accuracy_") for key in metrics), sorted(metrics)
    assert kg.ModelConfig.from_json((out / "config.json").read_text()).detector.num_keypoints == 8
    assert metrics["config"]["train"]["epochs"] == 2 and metrics["preset"] == "default"
    assert not (out / "backup").exists()  # BackupAndRestore's folder is not left behind
    # The export's name says what it was trained on: the model, the task, the data (a subset).
    version = tmp_path / "saved_models" / "keypoint_maxpool_nms_gcn_classify_builtin_max48" / "1"
    assert (version / "saved_model.pb").is_file()
    assert json.loads((out / "run.json").read_text())["name"] == version.parent.name


def test_an_ema_run_with_flips_reports_ema_raw_and_flip_tta_accuracies(tmp_path):
    """metrics.json of a run with weight EMA that trains with flips: the EMA weights are the
    evaluated ones, and the raw weights' accuracies and both flip-TTA figures are there."""
    out = tmp_path / "run"
    classify.main(TINY_FLAGS + ["--epochs", "1", "--set", "data.augment=flip,crop",
                                "--set", "train.ema=true", "--no-export", "--out", str(out)])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluated_weights"] == "ema"
    for key in ("test_accuracy", "test_accuracy_flip_tta", "test_accuracy_raw",
                "test_accuracy_raw_flip_tta"):
        assert 0 <= metrics[key] <= 1, key


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise RuntimeError("simulated crash after the first epoch")


def test_interrupted_run_resumes_with_its_whole_history_and_refuses_other_settings(
        tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    flags = TINY_FLAGS + ["--epochs", "3", "--out", str(out), "--no-export"]
    original = training.standard_callbacks
    monkeypatch.setattr(training, "standard_callbacks",
                        lambda *a, **k: original(*a, **k) + [_Interrupt()])
    with pytest.raises(RuntimeError, match="simulated crash"):
        classify.main(flags)
    assert (out / "backup").is_dir() and not (out / ".lock").exists()
    monkeypatch.setattr(training, "standard_callbacks", original)
    # Another configuration is refused, naming what differs, before anything is trained.
    with pytest.raises(SystemExit) as exit_info:
        common.run_main(lambda: classify.main(flags + ["--set", "graph.layers=3"]))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "interrupted run of another configuration (run_config.model.graph.layers: 2 -> 3)" in error
    result = classify.main(flags)
    assert result["epochs_run_this_session"] == 2  # epochs 2 and 3; epoch 1 was restored
    assert len(result["history"]["loss"]) == 3 and len(result["epoch_seconds"]) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"] == result["history"]


def test_a_finished_run_is_not_trained_again_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    flags = TINY_FLAGS + ["--epochs", "1", "--out", str(out), "--no-export"]
    classify.main(flags)
    before = (out / "metrics.json").read_text()
    with pytest.raises(SystemExit) as exit_info:
        common.run_main(lambda: classify.main(flags))
    assert exit_info.value.code == 2
    assert "holds a finished run (metrics.json); pass --overwrite" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == before
    result = classify.main(flags + ["--overwrite"])
    assert len(result["history"]["loss"]) == 1


@pytest.mark.parametrize("problem", ["locked", "file", "name"])
def test_run_folder_problems_stop_before_training(tmp_path, capsys, problem):
    out = tmp_path / "run"
    flags = TINY_FLAGS + ["--epochs", "1", "--out", str(out), "--export-dir", str(tmp_path / "sm")]
    expected = {"locked": f"in use by another run (process {os.getpid()})",
                "file": "is a file, not a folder",
                "name": "--name: name='../escape' is not a valid model name"}[problem]
    if problem == "file":
        out.write_text("keep me")
    if problem == "name":
        flags += ["--name", "../escape"]
    holder = RunDirectory(out, {}).__enter__() if problem == "locked" else None
    try:
        with pytest.raises(SystemExit) as exit_info:
            common.run_main(lambda: classify.main(flags))
    finally:
        if holder is not None:
            holder.release()
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and expected in error and error.count("\n") == 1
    assert not (tmp_path / "sm").exists() and not (tmp_path / "escape").exists()
    assert problem != "file" or out.read_text() == "keep me"
    assert problem == "file" or not (out / "model.keras").exists()


def test_a_diverged_run_is_neither_saved_nor_exported(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        common.run_main(lambda: classify.main(
            TINY_FLAGS + ["--epochs", "2", "--learning-rate", "1e30", "--out", str(out),
                          "--export-dir", str(tmp_path / "sm")]))
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert error.startswith("error: training diverged") and "nothing saved or exported" in error
    assert not (out / "model.keras").exists() and not (tmp_path / "sm").exists()
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=pytest.fail)
    assert metrics["diverged"]["test_loss_finite"] is False or metrics["diverged"]["non_finite_weights"]


def test_reconstruct_writes_quality_references_and_figure(tmp_path):
    out = tmp_path / "ae"
    result = reconstruct.main(TINY_FLAGS + ["--epochs", "1", "--out", str(out), "--loss", "conf_mse",
                                            "--set", "data.holdout_classes=2"])
    assert (out / "reconstructions.png").is_file() and (out / "model.keras").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < result["test_mse"] < 1 and metrics["test_mse"] == result["test_mse"]
    assert result["test_psnr"] == pytest.approx(10 * np.log10(1 / result["test_mse"]), rel=1e-6)
    assert -1 <= result["test_ssim"] <= 1
    # 8 keypoints x 16 channels + their positions; PCA capped at the training images' rank.
    assert result["graph_numbers"] == 8 * 16 + 16
    pca = result["references"]["test"]["pca"]
    assert pca["components_requested"] == 144
    assert pca["components_used"] == min(144, result["num_examples"]["train"] - 1)
    assert result["references"]["test"]["mean_image"]["mse"] > 0
    # Two of the six built-in classes held out: every image of theirs is an unseen-class test.
    assert len(result["holdout_classes"]) == 2 and result["num_examples"]["test_unseen"] > 0
    assert 0 < result["test_unseen_mse"] < 1 and "test_unseen" in result["references"]
    # The model reconstructs from its own keypoints: they are drawn and measured.
    assert 0 <= result["keypoints"]["redundancy"] <= 1


def test_reconstruct_epochs_sized_by_steps_and_the_plain_autoencoder(tmp_path):
    out = tmp_path / "plain"
    result = reconstruct.main(TINY_FLAGS + ["--epochs", "2", "--out", str(out),
                                            "--set", "train.steps_per_epoch=3",
                                            "--plain-autoencoder"])
    assert result["architecture"] == "plain_autoencoder"
    # At least as many numbers as the keypoint graph (144) in its 8x8 bottleneck: 3 channels.
    assert result["bottleneck_numbers"] == 8 * 8 * 3 >= result["graph_numbers"] == 144
    assert len(result["history"]["loss"]) == 2
    # images/s counts the steps an epoch ran (3 x 16), not one pass over the 48 images.
    assert result["images_per_second"] == pytest.approx(3 * 16 / result["seconds_per_epoch"])
    assert result["pipeline_images_per_second"] > 0
    run = json.loads((out / "run.json").read_text())
    assert run["plain_autoencoder"] is True
    restored = keras.models.load_model(out / "model.keras")
    assert "bottleneck" in {layer.name for layer in restored.layers}


def test_reconstruct_plain_autoencoder_at_most(tmp_path):
    out = tmp_path / "plain"
    result = reconstruct.main(TINY_FLAGS + ["--epochs", "1", "--out", str(out),
                                            "--set", "train.steps_per_epoch=2",
                                            "--plain-autoencoder", "at-most"])
    # No more numbers than the graph's 144 in the 8x8 bottleneck: 2 channels.
    assert result["bottleneck"] == "at-most"
    assert result["bottleneck_numbers"] == 8 * 8 * 2 <= result["graph_numbers"] == 144
    run = json.loads((out / "run.json").read_text())
    assert run["plain_autoencoder"] is True and run["plain_bottleneck"] == "at-most"


@pytest.mark.parametrize("flags, message", [
    (["--loss", "l1"], "argument --loss: invalid choice: 'l1'"),
    (["--plain-autoencoder", "--loss", "conf_mse"], "--plain-autoencoder trains on mse"),
    (["--plain-autoencoder", "half"], "argument --plain-autoencoder: invalid choice: 'half'"),
    # 8 keypoints x (4 channels + 2 positions) = 48 numbers, fewer than one 8x8 channel.
    (["--plain-autoencoder", "at-most", "--set", "graph.units=4"],
     "bottleneck='at-most': a 8x8 map holds more than the graph's 48 numbers in one channel"),
    (["--set", "head.fuse=concat"], "head.fuse='concat': the autoencoder decodes the keypoint "
                                     "graph only"),
    (["--set", "train.steps_per_epoch=0"], "train.steps_per_epoch=0 must be a positive integer"),
    (["--set", "data.holdout_classes=6"], "holdout_classes=6"),
])
def test_reconstruct_bad_flags_give_one_line_errors(flags, message, capsys, tmp_path):
    out = tmp_path / "never-written"
    error = _exit_2_error(reconstruct.main, TINY_FLAGS + flags + ["--out", str(out)], capsys)
    assert "error: " in error and message in error and not out.exists()


def test_reconstruct_refuses_a_folder_of_one_image(tmp_path, capsys):
    from PIL import Image
    (tmp_path / "faces" / "person").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "faces" / "person" / "1.png")
    out = tmp_path / "never-written"
    error = _exit_2_error(reconstruct.main, [
        "--dataset", f"folder:{tmp_path / 'faces'}", "--image-size", "32", "--keypoints", "8",
        "--verbose", "0", "--out", str(out)], capsys)
    assert "would be empty" in error and not out.exists()


def _exit_2_error(main, argv, capsys):
    """What `main(argv)` writes to stderr as a CLI: one line, exit status 2, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        common.run_main(lambda: main(argv))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert error.startswith("error: ") and error.count("\n") == 1, error
    return error


def test_pretrained_detector_weights_load_into_classify(tmp_path):
    grid_flags = ["--set", "detector.cell_size=1", "--set", "detector.points_per_cell=1"]
    pre = pretrain_keypoints.main(TINY_FLAGS + grid_flags + ["--epochs", "1", "--out", str(tmp_path / "pre")])
    assert (tmp_path / "pre" / "offsets.png").is_file()
    assert 0 <= pre["border_fraction_predicted"] <= 1
    weights = tmp_path / "pre" / "detector.weights.h5"
    result = classify.main(TINY_FLAGS + grid_flags + ["--detector", "grid", "--epochs", "1", "--no-export",
                                                      "--out", str(tmp_path / "cls"),
                                                      "--detector-weights", str(weights)])
    assert 0 <= result["test_accuracy"] <= 1
    quality = result["keypoints"]
    assert 0 <= quality["border_fraction"] <= 1 and 0 <= quality["border_fraction_all_slots"] <= 1
    # How much the regressor depends on the image (what trainers.border_fraction measured).
    assert 0 <= quality["noise_selection_overlap"] <= 1
    assert quality["offset_std_across_images"] >= 0 and quality["offset_std_across_slots"] >= 0
    assert (tmp_path / "cls" / "offsets.png").is_file()


def _run_cli(module, *flags):
    return subprocess.run([sys.executable, "-m", module, *flags], capture_output=True, text=True,
                          check=False,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "train.epochs=0 must be a positive integer"),
    (["--learning-rate", "-1"], "train.learning_rate=-1.0 must be a finite number >= 0"),
    (["--dataset", "folder:/no/such/folder"], "/no/such/folder"),
    (["--dataset", "mnistt:x"], "mnistt:x"),
    (["--keypoints", "999", "--image-size", "32"], "detector.num_keypoints=999 exceeds"),
    (["--config", "/no/such/config.json"], "no such file"),
    (["--devices", "/cpu:0"], "--devices applies to --strategy mirrored"),
    (["--preset", "best"], "--preset 'best' is not a preset; valid: default, accurate,"),
    (["--preset", "paper-t2-gcn5-64kp"], ("--preset 'paper-t2-gcn5-64kp' is a reconstruct preset; "
                                         "this trainer (classify) takes: default, accurate")),
    (["--set", "graph.layer=3"], "unknown field 'model.graph.layer'"),
    (["--set", "detector.pool_sise=3"], "unknown field 'model.detector.pool_sise'"),
    (["--set", "graph.layers"], "must be PATH=VALUE"),
    (["--set", "graph.layers=many"], "model.graph.layers='many' must be an integer"),
    (["--set", "head.dropout=high"], "model.head.dropout='high' must be a number"),
    (["--set", "head.dropout=nan"], "model.head.dropout=nan must be a finite number"),
    (["--set", "graph.residual=maybe"], "model.graph.residual='maybe' must be true or false"),
    (["--set", "backbone.filters=ab"], "model.backbone.filters='ab' must be a list of integers"),
    (["--set", "detector.refinement=neighbourhood"],
     "detector.refinement='neighbourhood' is not one of 'none', 'window', 'centre'"),
    (["--detector", "attention", "--set", "detector.refinement=centre"],
     "refinement='centre' needs NMS windows"),
    (["--detector", "perturbed_topk", "--set", "detector.perturbed_selection=slots", "--set",
      "detector.perturbed_estimator=threshold"],
     "perturbed_estimator='threshold' needs perturbed_selection='marginal'"),
    (["--set", "train.recalibrate_bn=-1"], "train.recalibrate_bn=-1 must be a finite number >= 0"),
    (["--set", "data.augment=rotate"], "data.augment='rotate' must be 'auto', 'none' or"),
])
def test_bad_flags_give_one_line_errors(flags, message, capsys, tmp_path):
    out = tmp_path / "never-written"
    error = _exit_2_error(classify.main, flags + ["--out", str(out)], capsys)
    assert error.startswith("error: ") and message in error
    assert error.count("\n") == 1
    # A run that fails before its first epoch leaves no folder (nor an "interrupted run").
    assert not out.exists()


def test_cli_reports_errors_without_traceback():
    result = _run_cli("trainers.classify", "--set", "graph.layers=0")
    assert result.returncode == 2
    assert result.stderr == "error: model.graph.layers=0 must be a positive integer\n"
    result = _run_cli("trainers.classify", "--detector", "sift")
    assert result.returncode == 2 and "invalid choice: 'sift'" in result.stderr


def test_bad_config_file_contents(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(SystemExit):
        common.run_main(lambda: classify.main(["--config", str(path)]))
    assert "is not valid JSON" in capsys.readouterr().err
    for contents, message in (('{"graph_layer": 3}', ("unknown field model.graph_layer; valid "
                                                     "fields of model: image_size, channels")),
                              ('{"backbone": {"filters": "ab"}}', ("model.backbone.filters='ab' must be "
                                                             "a list of integers")),
                              ('{"head": {"dropout": "high"}}', ("model.head.dropout='high' must "
                                                                "be a number")),
                              ('[1]', "must hold a JSON object")):
        path.write_text(contents)
        with pytest.raises(SystemExit):
            common.run_main(lambda: classify.main(["--config", str(path)]))
        assert message in capsys.readouterr().err


def _resolved(*argv):
    return common.run_config(classify.parse_args(list(argv)), "classify")


def test_configuration_layers_later_ones_win(tmp_path):
    path = tmp_path / "best.json"
    path.write_text(kg.ModelConfig(detector={"kind": "attention"}, graph={"layers": 5}).to_json())
    run = _resolved("--preset", "accurate", "--config", str(path), "--set", "graph.layers=3")
    # preset (refinement centre) <- file (attention, 5 layers: a bare ModelConfig is the model)
    # <- --set. The file's whole detector section replaces the preset's.
    assert run.model.detector.kind == "attention" and run.model.graph.layers == 3
    run = _resolved("--preset", "accurate", "--keypoints", "16", "--set", "detector.num_keypoints=8",
                    "--epochs", "3", "--set", "train.recalibrate_bn=50")
    assert run.model.detector.refinement == "centre" and run.model.detector.num_keypoints == 8
    assert run.train.epochs == 3 and run.train.recalibrate_bn == 50
    assert _resolved().model == kg.ModelConfig()
    path.write_text('{"data": {"max_examples": 10}, "train": {"epochs": 2}}')
    run = _resolved("--config", str(path))
    assert run.data.max_examples == 10 and run.train.epochs == 2


@pytest.mark.parametrize("name", sorted(kg.PRESETS))
def test_every_preset_builds_its_model(name):
    entry = kg.PRESETS[name]
    trainer = reconstruct if entry["task"] == "reconstruct" else classify
    # The paper's presets leave the image size to the command line; real-data ones set it.
    size = [] if "image_size" in entry["config"].get("model", {}) else ["--image-size", "64"]
    args = trainer.parse_args(["--preset", name, *size])
    task = "reconstruct" if trainer is reconstruct else "classify"
    config = common.run_config(args, task).model
    model = (kg.build_autoencoder if trainer is reconstruct else kg.build_classifier)(config)
    assert model.count_params() > 0 and entry["description"]


def test_presets_set_what_they_say():
    assert _resolved("--preset", "default").model == kg.ModelConfig()
    assert _resolved("--preset", "accurate").model.detector.refinement == "centre"
    perturbed = _resolved("--preset", "perturbed-topk").model.detector
    assert (perturbed.kind, perturbed.perturbed_estimator, perturbed.perturbed_sigma,
            perturbed.refinement) == ("perturbed_topk", "threshold", 0.5, "centre")
    row_1 = _resolved("--preset", "paper-t1-cnn-only").model
    assert (row_1.graph.kind, row_1.detector.score_activation) == ("none", "linear")
    row_5 = _resolved("--preset", "paper-t1-gcn5-sigmoid").model
    assert (row_5.graph.kind, row_5.graph.layers, row_5.detector.score_activation) == (
        "gcn", 5, "sigmoid")
    args = reconstruct.parse_args(["--preset", "paper-t2-gcn9-64kp", "--loss", "conf_mse",
                                   "--image-size", "64"])
    model = common.run_config(args, "reconstruct", reconstruct.DEFAULTS).model
    assert (model.graph.layers, model.detector.num_keypoints, model.head.reconstruction_loss) == (
        9, 64, "conf_mse")


def test_list_presets_prints_each_preset_of_the_trainer():
    result = _run_cli("trainers.classify", "--list-presets")
    assert result.returncode == 0 and result.stderr == ""
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == [name for name, entry in kg.PRESETS.items()
                     if entry["task"] in ("classify", "any")]
    result = _run_cli("trainers.reconstruct", "--list-presets")
    assert [line.split()[0] for line in result.stdout.splitlines()] == [
        name for name, entry in kg.PRESETS.items() if entry["task"] in ("reconstruct", "any")]


@pytest.mark.parametrize("module", ["classify", "reconstruct", "pretrain_keypoints", "tune",
                                    "experiments", "recalibrate_bn", "export", "predict",
                                    "benchmark"])
def test_help_lists_few_flags_each_with_help_and_usage(module, capsys):
    trainer = __import__(f"trainers.{module}", fromlist=["parse_args"])
    with pytest.raises(SystemExit) as exit_info:
        (getattr(trainer, "parse_args", None) or trainer.main)(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m trainers.{module}")
    options = text[text.index("options:"):]
    flags = re.findall(r"^  (--[a-z-]+)", options, flags=re.MULTILINE)
    assert len(flags) <= 25, flags
    # Every flag has a help text: its line goes on after the metavar, or the next line does.
    lines = options.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^  --[a-z-]+", line) and not re.search(r"\S {2,}\S", line.strip()):
            following = lines[index + 1] if index + 1 < len(lines) else ""
            assert following.startswith(" " * 8) and following.strip(), (module, line)


def test_mirrored_two_cpus_gives_the_same_loss_as_one_device(rng):
    config = kg.ModelConfig(image_size=16, num_classes=3, backbone={"filters": (8,)},
                            detector={"filters": (4,), "num_keypoints": 6},
                            graph={"units": 8, "layers": 2}, head={"filters": (8,), "dropout": 0.0})
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
                                         "--set", "train.recalibrate_bn=2", "--no-export",
                                         "--out", str(out)])
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
    with pytest.raises(common.UserError, match="--batches=0 must be at least 1"):
        recalibrate_bn.main([str(tmp_path), "--batches", "0"])
    with pytest.raises(common.UserError, match="no config.json"):
        recalibrate_bn.main([str(tmp_path)])


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("ema", [False, True])
def test_run_killed_while_evaluating_resumes_from_its_trained_weights(tmp_path, monkeypatch, ema):
    """Killed after training: the rerun evaluates the weights fit ended with (and, for EMA,
    the raw ones) without training again; the kept weights go once metrics.json is written."""
    out = tmp_path / "run"
    flags = TINY_FLAGS + ["--epochs", "2", "--out", str(out), "--no-export",
                          "--set", f"train.ema={str(ema).lower()}"]
    seen = []
    original_evaluate = classify.evaluate

    def kill_while_evaluating(model, data, raw_weights=None):
        seen.append(([w.copy() for w in model.get_weights()], raw_weights))
        raise RuntimeError("simulated kill while evaluating")

    monkeypatch.setattr(classify, "evaluate", kill_while_evaluating)
    with pytest.raises(RuntimeError, match="simulated kill"):
        classify.main(flags)
    assert (out / "trained.weights.h5").is_file() and not (out / "metrics.json").exists()
    assert (out / "trained_raw.npz").is_file() == ema

    fits = []
    original_fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda *a, **k: fits.append(1) or original_fit(*a, **k))

    def record(model, data, raw_weights=None):
        seen.append(([w.copy() for w in model.get_weights()], raw_weights))
        return original_evaluate(model, data, raw_weights)

    monkeypatch.setattr(classify, "evaluate", record)
    result = classify.main(flags)
    assert fits == []  # not trained again
    assert result["epochs_run_this_session"] == 0 and result["train_seconds_this_session"] == 0
    assert len(result["history"]["loss"]) == 2 and len(result["epoch_seconds"]) == 2
    (killed_weights, killed_raw), (resumed_weights, resumed_raw) = seen
    for killed, resumed in zip(killed_weights, resumed_weights, strict=True):
        np.testing.assert_array_equal(killed, resumed)
    if ema:
        assert result["evaluated_weights"] == "ema" and "test_accuracy_raw" in result
        for killed, resumed in zip(killed_raw, resumed_raw, strict=True):
            np.testing.assert_array_equal(killed, resumed)
        assert not all(np.array_equal(a, b) for a, b in zip(killed_raw, killed_weights))
    else:
        assert killed_raw is None and resumed_raw is None
    assert (out / "metrics.json").is_file()
    assert not (out / "trained.weights.h5").exists() and not (out / "trained_raw.npz").exists()


def test_reconstruct_killed_while_evaluating_resumes_from_its_trained_weights(tmp_path, monkeypatch):
    out = tmp_path / "ae"
    flags = TINY_FLAGS + ["--epochs", "1", "--out", str(out)]
    outputs = []
    original_quality = reconstruct.image_quality

    def kill_while_evaluating(originals, reconstructions):
        outputs.append(np.array(reconstructions))
        raise RuntimeError("simulated kill while evaluating")

    monkeypatch.setattr(reconstruct, "image_quality", kill_while_evaluating)
    with pytest.raises(RuntimeError, match="simulated kill"):
        reconstruct.main(flags)
    fits = []
    original_fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda *a, **k: fits.append(1) or original_fit(*a, **k))
    monkeypatch.setattr(reconstruct, "image_quality", lambda originals, reconstructions: (
        outputs.append(np.array(reconstructions)) or original_quality(originals, reconstructions)))
    result = reconstruct.main(flags)
    assert fits == [] and result["epochs_run_this_session"] == 0
    np.testing.assert_array_equal(outputs[0], outputs[1])  # the same trained weights
    assert not (out / "trained.weights.h5").exists()


def test_killed_run_resumes_with_its_history_and_a_second_process_is_refused(tmp_path):
    """Real processes: B on A's --out is refused naming A's pid; A killed (SIGKILL) after its
    first or second epoch resumes, losing at most the unfinished epoch."""
    import random
    import signal
    import time

    out = tmp_path / "run"
    flags = [*TINY_FLAGS, "--epochs", "4", "--no-export", "--out", str(out)]
    root = os.path.dirname(os.path.dirname(__file__))
    first = subprocess.Popen([sys.executable, "-m", "trainers.classify", *flags], cwd=root,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    kill_after = random.Random(0).choice([1, 2])
    deadline = time.time() + 400
    while not (out / ".lock").exists() and time.time() < deadline:
        time.sleep(0.2)
    second = _run_cli("trainers.classify", *flags)
    assert second.returncode == 2
    assert f"in use by another run (process {first.pid})" in second.stderr
    epochs = out / "epochs.json"
    while time.time() < deadline and (
            not epochs.exists() or len(json.loads(epochs.read_text())) < kill_after):
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished = len(json.loads(epochs.read_text()))
    resumed = subprocess.run([sys.executable, "-m", "trainers.classify", *flags], cwd=root,
                             capture_output=True, text=True, timeout=400, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == 4 and len(metrics["epoch_seconds"]) == 4
    assert metrics["epochs_run_this_session"] <= 4 - finished + 1


def test_run_identity_tells_the_plain_autoencoder_bottlenecks_apart(tmp_path):
    """An interrupted at-least run is not resumed as at-most (nor the other way round), and
    at-least keeps the identity (`True`) its runs had before the choice existed."""
    run = RunConfig()
    strategy = tf.distribute.get_strategy()

    def identity(plain_autoencoder):
        args = argparse.Namespace(seed=0, plain_cnn=False, plain_autoencoder=plain_autoencoder,
                                  out=str(tmp_path / "run"), overwrite=False)
        return common.run_directory(args, run, strategy, "reconstruct").configuration

    assert identity("at-least")["plain_autoencoder"] is True
    assert identity("at-most")["plain_autoencoder"] == "at-most"
    assert "plain_autoencoder" not in identity(None)
    assert len({json.dumps(identity(rule), sort_keys=True)
                for rule in (None, "at-least", "at-most")}) == 3
    assert not (tmp_path / "run").exists()  # building the identity creates nothing


@pytest.mark.parametrize("flip_invariant, train_flips, expected", [
    (True, False, True), (False, True, True), (False, False, False)])
def test_flip_tta_follows_the_source_or_the_runs_own_flips(flip_invariant, train_flips, expected):
    from types import SimpleNamespace

    from keypoint_gnn.data import Augmentation, DatasetInfo
    rng = np.random.default_rng(0)
    images = rng.random((40, 4, 4, 1)).astype("float32")
    labels = rng.integers(0, 3, 40)
    test = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    model = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4, 1)),
                              keras.layers.Dense(3)])  # logits, as the classifiers give
    info = DatasetInfo(name="idx:x", num_classes=3, class_names=["0", "1", "2"], image_size=4,
                       channels=1, num_examples={"test": 40}, flip_invariant=flip_invariant,
                       augmentation=Augmentation(flip=train_flips))
    result = classify.evaluate(model, SimpleNamespace(info=info, test=test))
    assert classify.flip_tta_applies(info) is expected
    assert ("test_accuracy_flip_tta" in result) is expected
    if expected:  # NumPy: the mean of both flips' softmax probabilities
        kernel, bias = model.get_weights()

        def probabilities(x):
            logits = x.reshape(len(x), -1) @ kernel + bias
            exp = np.exp(logits - logits.max(-1, keepdims=True))
            return exp / exp.sum(-1, keepdims=True)

        mean = (probabilities(images) + probabilities(images[:, :, ::-1])) / 2
        assert result["test_accuracy_flip_tta"] == pytest.approx(
            np.mean(mean.argmax(-1) == labels))
