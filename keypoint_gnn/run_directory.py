"""The run directory contract: one run per folder at a time, finished runs kept, resumes that
keep the whole history and refuse another configuration.

    with RunDirectory(out, config_dict, overwrite=False) as run_dir:   # checks and locks
        model.fit(..., callbacks=[..., run_dir.epoch_log()])
        run_dir.history(), run_dir.epoch_seconds()                     # every epoch, every process

Files it keeps in the folder: `.lock` (the holder's pid, while a run holds it), `resume.json`
(the configuration a run started with), `epochs.json` (each finished epoch's logs and
seconds, written after every epoch) and, from the end of training until metrics.json is
written, the trained weights (`TRAINED_FILES`: `save_trained`, `load_trained`, used by
`training.fit_or_restore`). Keras's BackupAndRestore (in `training.standard_callbacks`)
restores the weights and the epoch of an interrupted fit; these files restore the rest.
"""
import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import time

import numpy as np

from keypoint_gnn._backend import keras
from keypoint_gnn.atomic import remove_stale, write_atomically, write_json

LOCK_FILE = ".lock"
RESUME_FILE = "resume.json"
EPOCHS_FILE = "epochs.json"
FINISHED_FILE = "metrics.json"
# The weights at the end of `fit` (and an EMA run's raw weights), kept until metrics.json is
# written: a run killed while it evaluated resumes from them instead of training again.
TRAINED_FILES = ("trained.weights.h5", "trained_raw.npz")
# What the trainers write into a run folder: removed by `overwrite`, nothing else is.
RUN_OUTPUTS = ("backup", "checkpoints", "logs", RESUME_FILE, EPOCHS_FILE, FINISHED_FILE,
               "model.keras", "config.json", "run.json", "keypoints.png", "curves.png",
               "offsets.png", "reconstructions.png", "detector.weights.h5",
               *TRAINED_FILES)


class RunDirectoryError(ValueError):
    """The run folder cannot be used as asked; the message says why and what to do."""


def _differences(old, new, prefix=""):
    """Dotted paths whose values differ between two nested dicts."""
    paths = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            paths += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            paths.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return paths


class RunDirectory:
    """A trainer's `--out` folder. `configuration` is a JSON-able dict of everything that must
    match for a resume (the RunConfig, the seed, the model kind)."""

    def __init__(self, path, configuration, *, overwrite=False):
        self.path = pathlib.Path(path)
        self.configuration = json.loads(json.dumps(configuration))
        self.overwrite = overwrite
        self._lock = None
        self._created = False
        self._wrote_resume = False

    def __enter__(self):
        """Checks and locks the folder; entering an already entered one does nothing."""
        if self._lock is not None:
            return self
        self.check_writable()
        self.acquire()
        try:
            self.check_finished()
            self.check_resume()
        except Exception:
            self.release()
            raise
        return self

    def __exit__(self, *exc):
        if self._lock is not None and (self.path / FINISHED_FILE).is_file():
            for name in TRAINED_FILES:  # the finished run's model.keras holds them
                with contextlib.suppress(OSError):
                    (self.path / name).unlink()
        self.release()

    def check_writable(self):
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"--out {self.path} is a file, not a folder; choose a folder")
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunDirectoryError(f"--out {self.path}: cannot create the folder "
                                    f"({error.strerror})") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise RunDirectoryError(f"--out {self.path}: the folder is not writable by this user")

    def acquire(self):
        """Locks the folder (an flock on `.lock`, freed by the kernel if the process dies)."""
        handle = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115  (held for the run)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunDirectoryError(
                f"--out {self.path} is in use by another run (process {holder}); wait for it "
                "to finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle
        remove_stale(self.path)  # temporary files of a killed run

    def release(self):
        if self._lock is not None:
            with contextlib.suppress(OSError):
                (self.path / LOCK_FILE).unlink()
            self._lock.close()
            self._lock = None

    def abandon(self):
        """Releases a run that failed before its first epoch (bad data, say) and undoes what
        entering wrote: its resume.json, and the folder itself if entering created it and it is
        empty. A folder that held anything before is left as it was."""
        untouched = not (self.path / EPOCHS_FILE).exists() and not (self.path / "backup").exists()
        self.release()
        if self._wrote_resume and untouched:
            with contextlib.suppress(OSError):
                (self.path / RESUME_FILE).unlink()
            if self._created:
                with contextlib.suppress(OSError):
                    self.path.rmdir()

    def check_finished(self):
        """A finished run (its metrics.json) is kept unless `overwrite`; with it, the run's
        outputs (and only those) are removed first."""
        if not (self.path / FINISHED_FILE).is_file():
            return
        if not self.overwrite:
            raise RunDirectoryError(
                f"--out {self.path} holds a finished run ({FINISHED_FILE}); pass --overwrite to "
                "train it again, or choose a new --out")
        for name in RUN_OUTPUTS:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    def check_resume(self):
        """An interrupted run resumes only with the configuration it started with."""
        resume = self.path / RESUME_FILE
        if resume.is_file():
            try:
                started = json.loads(resume.read_text())
            except ValueError:
                started = None
            if started is not None and started != self.configuration:
                changes = _differences(started, self.configuration)
                raise RunDirectoryError(
                    f"--out {self.path} holds an interrupted run of another configuration "
                    f"({'; '.join(changes[:5])}{'; ...' if len(changes) > 5 else ''}); resume "
                    "it with its own settings, pass --overwrite to start again, or choose a "
                    "new --out")
        elif (self.path / "backup").exists() and not self.overwrite:
            raise RunDirectoryError(
                f"--out {self.path} holds a checkpoint of an unknown run (backup/ without "
                f"{RESUME_FILE}); pass --overwrite to start again, or choose a new --out")
        self._wrote_resume = not resume.is_file()
        write_json(resume, self.configuration)

    def has_trained(self, with_raw=False):
        """Whether the weights at the end of a finished `fit` are kept here (and, `with_raw`,
        an EMA run's raw weights too)."""
        weights, raw = (self.path / name for name in TRAINED_FILES)
        return weights.is_file() and (not with_raw or raw.is_file())

    def save_trained(self, model, raw_weights=None):
        """Keeps `model`'s weights (and `raw_weights`, a list of arrays) until metrics.json is
        written; each file is written under a temporary name and renamed, the weights last, so
        their presence means both files are whole."""
        weights, raw = (self.path / name for name in TRAINED_FILES)
        if raw_weights is not None:
            write_atomically(raw, lambda tmp: np.savez(
                tmp, **{f"w{i}": value for i, value in enumerate(raw_weights)}))
        write_atomically(weights, lambda tmp: model.save_weights(str(tmp)))

    def load_trained(self, model, with_raw=False):
        """Loads the kept weights into `model`; returns the raw weights (a list of arrays) when
        `with_raw`, else None."""
        weights, raw = (self.path / name for name in TRAINED_FILES)
        model.load_weights(str(weights))
        if not with_raw:
            return None
        with np.load(raw) as arrays:
            return [arrays[f"w{i}"] for i in range(len(arrays.files))]

    def _epochs(self):
        path = self.path / EPOCHS_FILE
        if not path.is_file():
            return {}
        try:
            return {int(k): v for k, v in json.loads(path.read_text()).items()}
        except (ValueError, AttributeError):
            return {}

    def epoch_log(self):
        """A callback writing each finished epoch's logs and seconds to `epochs.json`."""
        return EpochLog(self)

    def history(self):
        """{metric: [value per epoch]} over every epoch of every process, in epoch order."""
        epochs = self._epochs()
        keys = sorted({key for entry in epochs.values() for key in entry["logs"]})
        return {key: [epochs[e]["logs"].get(key) for e in sorted(epochs)] for key in keys}

    def epoch_seconds(self):
        epochs = self._epochs()
        return [epochs[e]["seconds"] for e in sorted(epochs)]


class EpochLog(keras.callbacks.Callback):
    """Records each finished epoch (logs, wall-clock seconds) in the run folder. Epochs are
    keyed by their index, so an epoch redone after a kill replaces its first record."""

    def __init__(self, run_directory):
        super().__init__()
        self.run_directory = run_directory
        self.seconds = []  # this process's epochs
        self._epochs = run_directory._epochs()  # read once; each epoch then writes it whole

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self.seconds.append(seconds)
        self._epochs[int(epoch)] = {
            "seconds": seconds, "logs": {key: float(value) for key, value in (logs or {}).items()}}
        write_json(self.run_directory.path / EPOCHS_FILE,
                   {str(k): v for k, v in sorted(self._epochs.items())})
