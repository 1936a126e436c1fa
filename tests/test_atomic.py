"""Atomic writes: the whole file or the old one, strict JSON."""
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from keypoint_gnn.atomic import remove_stale, write_atomically, write_json


def test_write_json_is_strict_json_with_numpy_paths_and_non_finite_as_null(tmp_path):
    path = tmp_path / "deep" / "metrics.json"  # the folder is made
    write_json(path, {"b": np.float32(0.5), "a": [math.nan, np.inf, -np.inf, 1.0],
                      "n": np.int64(3), "flag": np.bool_(True), "array": np.array([[1, 2]]), "path": pathlib.Path("x/y"),
                      "nested": {"loss": np.float64(np.nan)}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": [None, None, None, 1.0], "array": [[1, 2]], "b": 0.5,
                                "n": 3, "flag": True, "nested": {"loss": None}, "path": "x/y"}
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_a_value_json_cannot_hold_leaves_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"kept": 1})
    with pytest.raises(TypeError, match="cannot write object to JSON"):
        write_json(path, {"kept": object()})
    assert json.loads(path.read_text()) == {"kept": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_failing_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "trained.weights.h5"
    path.write_bytes(b"old")
    seen = []

    def half_written_then_killed(tmp):
        seen.append(tmp)
        tmp.write_bytes(b"ha")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, half_written_then_killed)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["trained.weights.h5"]
    assert seen[0].parent == tmp_path and seen[0].name.endswith(".weights.h5")  # format kept

    write_atomically(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["trained.weights.h5"]


def test_remove_stale_takes_only_the_temporary_files_of_ended_processes(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = int(ended.stdout)
    for name in (f".tmp{dead}.metrics.json", f".tmp{dead}.trained.weights.h5",
                 f".tmp{os.getpid()}.epochs.json",  # a running process: maybe mid-write
                 "metrics.json", ".tmpx.json", f"tmp{dead}.json", ".lock"):
        (tmp_path / name).write_text("x")
    (tmp_path / f".tmp{dead}.folder").mkdir()  # not a file this module writes
    assert remove_stale(tmp_path) == [f".tmp{dead}.metrics.json", f".tmp{dead}.trained.weights.h5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        f".tmp{os.getpid()}.epochs.json", "metrics.json", ".tmpx.json", f"tmp{dead}.json",
        ".lock", f".tmp{dead}.folder"])
