"""Files written whole or not at all: a temporary name beside the target, then a rename.

A reader (a resumed run, `trainers.experiments` collecting results, a second process) sees
the old file or the new one, never half of one.
"""
import json
import os
import pathlib

import numpy as np


def write_atomically(path, write):
    """Calls `write(tmp)` with a temporary path beside `path` that ends like it (Keras and
    NumPy read the format from the name), then renames it over `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, payload):
    """Writes `payload` as strict JSON (sorted keys, indented), atomically: NaN and
    infinities, which JSON has no words for, are written as null; NumPy scalars and arrays
    and paths as numbers, lists and strings."""
    text = json.dumps(_finite_or_none(payload), indent=2, sort_keys=True, allow_nan=False,
                      default=_json_default)
    write_atomically(path, lambda tmp: pathlib.Path(tmp).write_text(text))


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
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
