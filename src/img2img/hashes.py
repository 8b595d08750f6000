"""SHA-256 of weight files, remembered on disk: a checkpoint of several gigabytes is read once, not once per process.

The cache is one small JSON file, `hashes.json`, in the user's cache folder: $IMG2IMG_CACHE_DIR if set, else
~/.cache/img2img on Linux ($XDG_CACHE_HOME honoured), ~/Library/Caches/img2img on macOS and
%LOCALAPPDATA%\\img2img\\Cache on Windows. Entries are keyed by the file's resolved path and checked against
its size and modification time, so a changed file is hashed again. A missing, unreadable or unwritable cache
only costs time: the hash is computed and the cache rebuilt where it can be.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

from .datadir import cache_dir

CACHE_FILE = "hashes.json"

_memory: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, from the cache when the file's path, size and mtime match."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key in _memory:
            return _memory[key]
        entry = _read_cache().get(real)
        if isinstance(entry, dict) and (entry.get("size"), entry.get("mtime_ns")) == key[1:]:
            digest = str(entry.get("sha256", ""))
            if len(digest) == 64:
                _memory[key] = digest
                return digest
    digest = _sha256_of(real)  # outside the lock: hashing gigabytes must not block other lookups
    with _lock:
        _memory[key] = digest
        cache = _read_cache()
        cache[real] = {"size": key[1], "mtime_ns": key[2], "sha256": digest}
        _write_cache(cache)
    return digest


def forget_in_memory() -> None:
    """Drop this process's memory of hashes (the disk cache stays), as a new process starts."""
    with _lock:
        _memory.clear()


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_cache() -> dict:
    try:
        data = json.loads((cache_dir() / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: dict) -> None:
    from .errors import OutputError
    from .images import write_atomically

    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # readers see the old or the new file, never half of one
        write_atomically(json.dumps(cache, indent=0, sort_keys=True).encode("utf-8"), folder / CACHE_FILE,
                         overwrite=True)
    except (OSError, OutputError):
        pass  # a read-only home folder: hashes are just computed again next time
