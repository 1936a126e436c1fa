"""Run outputs written whole or not at all: a temporary name beside the target, then a rename.

A reader (a resumed run, `trainers.experiments` collecting results, a second process) sees the
old file or the new one, never half of one. Temporary names are `.tmp<pid>.<name>`: one a
killed process left behind (SIGKILL, power loss) is removed by `remove_stale`, which the run
directory calls when it takes its lock.

Exports keep their own writer (`keypoint_gnn.export.files`): a TF Serving version must also be
synced to disk, readable by another user and cleaned up after writers on other hosts, and
its JSON refuses NaN; run outputs record a diverged loss as null instead.
"""
import json
import os
import pathlib
import re

import numpy as np

from keypoint_gnn.export.files import pid_running

_TMP = re.compile(r"^\.tmp(\d+)\.")


def write_atomically(path, write):
    """Calls `write(tmp)` with a temporary path beside `path` that ends like it (Keras and
    NumPy read the format from the name), then renames it over `path`. The folder is made;
    an exception in `write` leaves the old file and no temporary one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path, text):
    """Writes the string `text` to `path` atomically."""
    write_atomically(path, lambda tmp: pathlib.Path(tmp).write_text(text))


def write_json(path, payload):
    """Writes `payload` as strict JSON (sorted keys, indented), atomically: NaN and
    infinities, which JSON has no words for, are written as null; NumPy scalars and arrays
    and paths as numbers, booleans, lists and strings."""
    write_text(path, json.dumps(_finite_or_none(payload), indent=2, sort_keys=True,
                                allow_nan=False, default=_json_default))


def remove_stale(folder):
    """Removes the temporary files in `folder` that processes no longer running left behind;
    returns their names. Those of running processes may be mid-write and stay."""
    removed = []
    for entry in pathlib.Path(folder).iterdir():
        match = _TMP.match(entry.name)
        if match and entry.is_file() and not pid_running(int(match.group(1))):
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return sorted(removed)


def _finite_or_none(value):
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, np.ndarray):
        return _finite_or_none(value.tolist())
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
