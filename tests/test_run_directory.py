"""The run directory contract (keypoint_gnn.run_directory): lock, finished runs, resumes."""
import json
import os

import numpy as np
import pytest

from keypoint_gnn import recipe, training
from keypoint_gnn._backend import keras, tf
from keypoint_gnn.run_directory import (
    EPOCHS_FILE,
    RUN_OUTPUTS,
    RunDirectory,
    RunDirectoryError,
)

CONFIG = {"run_config": {"model": {"graph": {"layers": 2}}, "train": {"epochs": 1}}, "seed": 0}


def test_a_second_run_on_the_same_folder_is_refused_naming_the_holder(tmp_path):
    with RunDirectory(tmp_path / "run", CONFIG):
        assert (tmp_path / "run" / ".lock").read_text() == str(os.getpid())
        with pytest.raises(RunDirectoryError, match=rf"in use by another run \(process {os.getpid()}\)"):
            RunDirectory(tmp_path / "run", CONFIG).__enter__()
    assert not (tmp_path / "run" / ".lock").exists()  # released
    with RunDirectory(tmp_path / "run", CONFIG):  # and free again
        pass


def test_a_finished_run_is_kept_unless_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("metrics.json", "model.keras", "notes.txt"):
        (run / name).write_text("x")
    (run / "checkpoints").mkdir()
    with pytest.raises(RunDirectoryError, match="holds a finished run .*pass --overwrite"):
        RunDirectory(run, CONFIG).__enter__()
    assert (run / "model.keras").is_file()  # nothing touched
    with RunDirectory(run, CONFIG, overwrite=True):
        pass
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "resume.json"]
    assert "notes.txt" not in RUN_OUTPUTS


def test_a_resume_with_another_configuration_names_the_differing_fields(tmp_path):
    with RunDirectory(tmp_path, CONFIG):
        pass
    changed = json.loads(json.dumps(CONFIG))
    changed["run_config"]["model"]["graph"]["layers"] = 3
    changed["seed"] = 1
    with pytest.raises(RunDirectoryError, match=r"interrupted run of another configuration "
                                                r"\(run_config.model.graph.layers: 2 -> 3; "
                                                r"seed: 0 -> 1\)"):
        RunDirectory(tmp_path, changed).__enter__()
    with RunDirectory(tmp_path, CONFIG):  # its own configuration resumes
        pass


def test_a_checkpoint_of_an_unknown_run_is_refused(tmp_path):
    (tmp_path / "backup").mkdir()
    with pytest.raises(RunDirectoryError, match="checkpoint of an unknown run"):
        RunDirectory(tmp_path, CONFIG).__enter__()


def test_out_must_be_a_folder(tmp_path):
    path = tmp_path / "file"
    path.write_text("keep me")
    with pytest.raises(RunDirectoryError, match=r"is a file, not a folder"):
        RunDirectory(path, CONFIG).__enter__()
    assert path.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_must_be_writable(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(RunDirectoryError, match="cannot create the folder"):
            RunDirectory(tmp_path / "run", CONFIG).__enter__()
    finally:
        tmp_path.chmod(0o700)


def test_epoch_log_keeps_every_epoch_across_processes(tmp_path):
    with RunDirectory(tmp_path, CONFIG) as first:
        log = first.epoch_log()
        for epoch, loss in ((0, 2.0), (1, 1.5)):
            log.on_epoch_begin(epoch)
            log.on_epoch_end(epoch, {"loss": loss, "val_loss": float("nan")})
    with RunDirectory(tmp_path, CONFIG) as second:  # a resumed process: epoch 1 redone, then 2
        log = second.epoch_log()
        for epoch, loss in ((1, 1.4), (2, 1.0)):
            log.on_epoch_begin(epoch)
            log.on_epoch_end(epoch, {"loss": loss, "val_loss": 0.5})
        assert second.history() == {"loss": [2.0, 1.4, 1.0], "val_loss": [None, 0.5, 0.5]}
        assert len(second.epoch_seconds()) == 3 and len(log.seconds) == 2
    text = (tmp_path / EPOCHS_FILE).read_text()
    assert "NaN" not in text and json.loads(text)["0"]["logs"]["val_loss"] is None


def test_a_killed_runs_temporary_file_goes_when_the_folder_is_taken(tmp_path):
    with RunDirectory(tmp_path, CONFIG):
        pass
    killed = tmp_path / ".tmp999999999.epochs.json"  # beyond any pid_max: never running
    killed.write_text('{"0": ')
    with RunDirectory(tmp_path, CONFIG):
        assert not killed.exists()


def test_abandon_undoes_only_what_entering_wrote(tmp_path):
    # A run that fails before its first epoch (bad data) leaves no folder behind ...
    fresh = RunDirectory(tmp_path / "fresh", CONFIG).__enter__()
    fresh.abandon()
    assert not (tmp_path / "fresh").exists()
    # ... a folder that held something keeps it, and an interrupted run keeps its resume.json.
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("x")
    RunDirectory(kept, CONFIG).__enter__().abandon()
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
    with RunDirectory(tmp_path / "resumed", CONFIG):
        (tmp_path / "resumed" / EPOCHS_FILE).write_text("{}")
    RunDirectory(tmp_path / "resumed", CONFIG).__enter__().abandon()
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == [EPOCHS_FILE, "resume.json"]


def test_trained_weights_round_trip_and_go_when_the_run_finishes(tmp_path):
    """save_trained/load_trained give back the very weights (and an EMA run's raw weights); no
    temporary file is left; leaving a finished run removes them, an unfinished one keeps them."""
    def model():
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])

    trained = model()
    raw = [np.arange(6.0).reshape(3, 2), np.array([7.0, 8.0])]
    run = tmp_path / "run"
    with RunDirectory(run, CONFIG) as run_dir:
        assert not run_dir.has_trained()
        run_dir.save_trained(trained, raw)
        assert run_dir.has_trained(with_raw=True)
        fresh = model()
        loaded_raw = run_dir.load_trained(fresh, with_raw=True)
        assert run_dir.load_trained(fresh) is None
    for got, want in zip(fresh.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(loaded_raw, raw, strict=True):
        np.testing.assert_array_equal(got, want)
    assert not [p.name for p in run.iterdir() if p.name.startswith(".tmp")]
    assert (run / "trained.weights.h5").is_file()  # unfinished: kept for the rerun
    with RunDirectory(run, CONFIG) as run_dir:
        assert run_dir.has_trained(with_raw=True)
        (run / "trained.weights.h5").rename(run / "elsewhere.h5")
        assert not run_dir.has_trained() and not run_dir.has_trained(with_raw=True)  # raw only
        (run / "elsewhere.h5").rename(run / "trained.weights.h5")
        (run / "metrics.json").write_text("{}")
    assert not (run / "trained.weights.h5").exists() and not (run / "trained_raw.npz").exists()


def test_an_ema_run_without_raw_weights_after_fit_is_refused_not_mislabelled(tmp_path):
    """A fit that ran no last epoch (resumed from a backup of it) leaves KeepRawWeights empty:
    fit_or_restore says so instead of keeping the EMA weights alone, which the evaluation
    would then report as the raw ones; nothing is written."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    raw = recipe.KeepRawWeights()
    with RunDirectory(tmp_path / "run", CONFIG) as run_dir:
        with pytest.raises(RuntimeError, match="raw weights were not kept.*--overwrite"):
            training.fit_or_restore(model, run_dir, lambda: None,
                                    tf.distribute.get_strategy(), raw=raw)
        assert not run_dir.has_trained()
