"""How exports write files: temporary names, stale leftovers, permissions, strict JSON.

Every export writes under a temporary name in the folder of its final path and renames it into
place when complete (a rename is atomic: TF Serving and readers never see a half-written
version or file). Temporary names are `.tmp-<pid>@<host>@<random>` (`staging_prefix`): the
SavedModel's staging folder in `base/<name>/`, `<random>.partial` files next to a `.tflite`.

Stale leftovers (`clean_stale`): an export killed before its rename (SIGKILL, power loss) leaves
its temporary entry behind; the next export to the same folder removes such an entry when
  - its name says it was written on this host by a process that is no longer running
    (`.tmp-<pid>@<host>@...`, that pid not alive or a zombie), or
  - it was last modified more than `STALE_AFTER_S` (24 hours) ago: entries written on another
    host, or by a process whose pid was reused, and the `.tmp-*` entries of exports from
    before these names.
Any other temporary entry may belong to an export still in progress and is left alone.

Permissions (`make_readable`): `tempfile.mkdtemp` and `mkstemp` create 0o700 / 0o600; before the
rename the whole tree gets the modes a plain `mkdir` / `open` would give (0o777 / 0o666 less the
umask; the owner always keeps read and write), so a TF Serving process running as another user
reads the versions, as with TF Serving's own exports.

JSON (`dumps_strict`): standard JSON only; a NaN or an infinity is refused with its key path
(JSON has no words for them: Python would write bare `NaN`, which other readers reject).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
import shutil
import socket
import tempfile
import time

TMP_PREFIX = ".tmp-"
PARTIAL_SUFFIX = ".partial"
STALE_AFTER_S = 24 * 3600
_OWNED = re.compile(r"^\.tmp-(\d+)@([^@]*)@")


def _host():
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"


def staging_prefix():
    """`.tmp-<pid>@<host>@`: the prefix of this process's temporary entries."""
    return f"{TMP_PREFIX}{os.getpid()}@{_host()}@"


def pid_running(pid):
    """Whether process `pid` runs on this host (a zombie, killed but not reaped, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OSError, OverflowError):
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as status:
            state = status.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def is_stale(entry, now=None):
    """Whether the temporary entry `entry` (a path) is a leftover of a dead export (see the
    module's rule)."""
    entry = pathlib.Path(entry)
    if not entry.name.startswith(TMP_PREFIX):
        return False
    owner = _OWNED.match(entry.name)
    if owner and owner.group(2) == _host() and not pid_running(int(owner.group(1))):
        return True
    try:
        modified = entry.lstat().st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - modified > STALE_AFTER_S


def clean_stale(folder, select=None):
    """Removes the stale temporary entries of `folder` that `select(path)` accepts (default:
    every `.tmp-*` entry); returns the removed paths. Never raises: a failed removal (a
    concurrent cleaner, permissions) leaves the entry for a later export."""
    removed = []
    try:
        entries = sorted(pathlib.Path(folder).iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(TMP_PREFIX) or (select is not None and not select(entry)):
            continue
        if not is_stale(entry, now):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


def current_umask():
    """This process's umask (from /proc without changing it; else set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def modes(umask=None):
    """(folder mode, file mode) a plain mkdir / open gives under `umask` (default: this
    process's); the owner keeps read and write (and search on folders)."""
    mask = current_umask() if umask is None else umask
    return (0o777 & ~mask) | 0o700, (0o666 & ~mask) | 0o600


def make_readable(path, umask=None):
    """Gives `path` and, for a folder, everything under it the modes of `modes(umask)`
    (symbolic links are left alone)."""
    folder_mode, file_mode = modes(umask)
    path = pathlib.Path(path)
    if path.is_symlink():
        return
    if not path.is_dir():
        os.chmod(path, file_mode)
        return
    for root, folders, names in os.walk(path):
        os.chmod(root, folder_mode)
        for name in names:
            file_path = os.path.join(root, name)
            if not os.path.islink(file_path):
                os.chmod(file_path, file_mode)


def make_staging_dir(folder):
    """A new empty `.tmp-<pid>@<host>@*` folder in `folder`, for an export renamed into place."""
    return pathlib.Path(tempfile.mkdtemp(prefix=staging_prefix(), dir=folder))


def write_atomic(path, data):
    """Writes bytes or str `data` to `path` through a `.tmp-*.partial` file of this process in
    the same folder, renamed into place when complete; modes as `make_readable`."""
    path = pathlib.Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    descriptor, partial = tempfile.mkstemp(prefix=staging_prefix(), suffix=PARTIAL_SUFFIX,
                                           dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        make_readable(partial)
        os.replace(partial, path)
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise
    return path


def _non_finite(value, path):
    """(key path, value) of the first NaN or infinity in a JSON-able value, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "<root>", value
    if isinstance(value, dict):
        items = ((f"{path}.{key}" if path else str(key), item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for item_path, item in items:
        found = _non_finite(item, item_path)
        if found is not None:
            return found
    return None


def dumps_strict(payload, what):
    """`payload` as indented standard JSON (a final newline); ValueError naming `what` and the
    key path of a NaN or an infinity, which JSON cannot hold."""
    found = _non_finite(payload, "")
    if found is not None:
        raise ValueError(f"{what}: {found[0]}={found[1]!r} is not a finite number; JSON has no "
                         "NaN or Infinity, so it is not written")
    return json.dumps(payload, indent=2, allow_nan=False) + "\n"
