"""What every export checks before it writes anything: the model name and the weights.

`check_export_name` is the one name check of every format (the SavedModel's `base/<name>/`
folder, the TFLite `<name>[-quantize].tflite` file); `check_finite_weights` refuses a diverged
model (a NaN or an infinity in any weight predicts NaN for every input).
"""
from __future__ import annotations

import numpy as np

# Longest name in UTF-8 bytes: with '-float16.tflite.json' and the '.tmp-<pid>@<host>@...'
# staging prefix the file names stay well under the usual 255-byte limit.
MAX_NAME_BYTES = 200
VALID_NAME = (f"a model name is one folder name of printable characters, at most "
              f"{MAX_NAME_BYTES} bytes, without '/' or '\\', not '..', not starting with '.' or "
              "'tmp-' (e.g. 'keypoint_gnn')")


def _name_problem(name):
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a string"
    if not name:
        return "it is empty"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    if name == "..":
        return "it names the parent folder"
    if name.startswith("."):
        return "it starts with '.' (hidden, and the prefix of temporary exports)"
    if name.startswith("tmp-"):
        return "it starts with 'tmp-'"
    if not name.isprintable():
        return "it holds a non-printable character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_export_name(name, source=""):
    """Returns `name` when it is a valid model name, else raises ValueError saying why and what
    is valid. `source` says where the name came from, e.g. " (from --name)".

    Valid: one folder name (no '/' or '\\', not '..'), not empty, not starting with '.' (the
    temporary exports' prefix) or 'tmp-', printable, at most `MAX_NAME_BYTES` bytes in UTF-8.
    """
    problem = _name_problem(name)
    if problem is not None:
        raise ValueError(f"name={name!r}{source} is not a valid model name: {problem}; "
                         f"{VALID_NAME}")
    return name


def non_finite_weights(model):
    """[(variable name, count of NaN/Inf values)] of `model`'s floating-point variables, in the
    model's order; [] when every weight is finite."""
    found = []
    for variable in model.variables:
        if not variable.dtype.is_floating:
            continue
        values = np.asarray(variable.numpy())
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            found.append((variable.name, bad))
    return found


def check_finite_weights(model):
    """Raises ValueError when any weight of `model` is NaN or infinite (a diverged training),
    naming the first such variable and the counts; does nothing otherwise."""
    found = non_finite_weights(model)
    if not found:
        return
    name, count = found[0]
    where = f"{count} NaN/Inf value{'s' if count != 1 else ''} in variable {name!r}"
    if len(found) > 1:
        total = sum(count for _, count in found)
        where += f"; {total} in {len(found)} variables in all"
    raise ValueError(f"model has non-finite weights ({where}); refusing to export a diverged "
                     "model")
