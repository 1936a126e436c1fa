"""Decoded images at training size, cached in files that later runs reuse.

    cache = FileCache(folder, key_parts)          # key_parts: what the split's images depend on
    dataset = cache(resized_examples)             # writes the files on first use, then reads them

Decoding and resizing a folder of JPEGs takes longer than a 64-pixel epoch; with a cache
folder (`load_dataset(cache=FOLDER)`, `--set data.cache=FOLDER`) it happens once per data set,
image size, channels and split. The files are tf.data's own cache format
(`tf.data.Dataset.cache`). They are written whole before a run reads them, to a temporary name
renamed at the end, so that an interrupted write never leaves a cache that looks complete; the
temporary files of a writer that is gone are removed by the next one.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib

from keypoint_gnn._backend import tf
from keypoint_gnn.export.files import pid_running

_TEMPORARY = "writing-"


def cache_key(parts: dict) -> str:
    """A file name for a cache of the split that `parts` (JSON-able) describe."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _writer_alive(name: str) -> bool:
    """Whether the process that writes `writing-<pid>-...` is still running."""
    try:
        pid = int(name[len(_TEMPORARY):].split("-", 1)[0])
    except ValueError:
        return False
    return pid_running(pid)


class FileCache:
    """Caches one split's resized examples under `folder` (created if missing)."""

    def __init__(self, folder, parts: dict):
        self.folder = pathlib.Path(folder)
        self.parts = dict(parts)
        self.prefix = self.folder / cache_key(self.parts)

    @property
    def complete(self) -> bool:
        return pathlib.Path(f"{self.prefix}.index").is_file()

    def remove_stale(self) -> list[pathlib.Path]:
        """Removes temporary files of writers that are gone (interrupted runs); returns them."""
        stale = [path for path in self.folder.glob(f"{_TEMPORARY}*")
                 if not _writer_alive(path.name)]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def write(self, examples: tf.data.Dataset) -> None:
        """Writes the cache of `examples` whole, then renames it into place."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.remove_stale()
        temporary = self.folder / f"{_TEMPORARY}{os.getpid()}-{self.prefix.name}"
        for _ in examples.cache(str(temporary)).prefetch(tf.data.AUTOTUNE):
            pass
        (self.folder / f"{self.prefix.name}.json").write_text(
            json.dumps(self.parts, sort_keys=True, indent=1, default=str) + "\n")
        # The data first, the index last: an index means a complete cache.
        for path in sorted(self.folder.glob(f"{temporary.name}.data-*")):
            path.replace(self.folder / (self.prefix.name + path.name[len(temporary.name):]))
        pathlib.Path(f"{temporary}.index").replace(f"{self.prefix}.index")

    def __call__(self, examples: tf.data.Dataset) -> tf.data.Dataset:
        """`examples` read from the cache files, written first if missing."""
        if not self.complete:
            self.write(examples)
        return examples.cache(str(self.prefix))
