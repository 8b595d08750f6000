"""Files named by the browser: only Gradio's own upload folder may be read, and it stays bounded.

A UI event carries files as `{"path": ...}` objects that the client fills in, so a path is a claim, not a
fact. `check_upload` accepts a path only when it resolves, links followed, to a regular file inside the
upload folder; everything else gets the same message, so a refusal never tells whether a path exists.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

from ..errors import Img2ImgError

log = logging.getLogger("img2img.server")

REFUSED = "that file is not available here: only files uploaded through this page can be used"
UPLOAD_MAX_AGE_S = 24 * 3600  # uploads (and Gradio's copies of results) older than this are deleted
SWEEP_EVERY_S = 600.0
EMPTY_FOLDER_GRACE_S = 60.0  # an empty folder may be one Gradio is about to write an upload into


class FileRefused(Img2ImgError):
    """A client named a file it may not use (outside the upload folder, not a regular file, too large)."""

    def __init__(self) -> None:
        super().__init__(REFUSED)


def upload_folder() -> Path:
    """The folder Gradio keeps uploads (and its copies of results) in, links resolved."""
    from gradio.utils import get_upload_folder

    return Path(os.path.realpath(get_upload_folder()))


def check_upload(path, folder: Path | None = None, max_bytes: int | None = None) -> Path:
    """The resolved path of an uploaded file (at most `max_bytes`); FileRefused for anything else.
    Never opens the file."""
    if not isinstance(path, (str, os.PathLike)) or not str(path) or "\0" in str(path):
        raise FileRefused()
    folder = folder or upload_folder()
    real = Path(os.path.realpath(path))
    if folder not in real.parents:
        raise FileRefused()
    try:
        info = os.stat(real)
    except OSError:
        raise FileRefused() from None
    if not stat.S_ISREG(info.st_mode) or (max_bytes is not None and info.st_size > max_bytes):
        raise FileRefused()
    return real


def read_upload(path, max_bytes: int, folder: Path | None = None) -> bytes:
    """The bytes of an uploaded file, at most `max_bytes`. The checks are repeated on the open file itself,
    so swapping the path for a link or a device after the check changes nothing."""
    real = check_upload(path, folder, max_bytes)
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        raise FileRefused() from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            raise FileRefused()
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileRefused()
    return data


# ------------------------------------------------------------------------------------------ the folder itself

_private_folder: Path | None = None
_private_lock = threading.Lock()


def use_private_upload_folder() -> Path:
    """Point Gradio at a folder of this process's own (mode 0700, removed at exit), inside GRADIO_TEMP_DIR
    when that is set: other users cannot plant files in it, and sweeping it touches nobody else's files.
    Call before the UI is built: Gradio's components remember the folder when they are made."""
    global _private_folder
    with _private_lock:
        if _private_folder is None:
            parent = os.environ.get("GRADIO_TEMP_DIR") or None
            if parent:
                os.makedirs(parent, exist_ok=True)
            _private_folder = Path(os.path.realpath(tempfile.mkdtemp(prefix="img2img-uploads-", dir=parent)))
            atexit.register(shutil.rmtree, _private_folder, ignore_errors=True)
        os.environ["GRADIO_TEMP_DIR"] = str(_private_folder)
        return _private_folder


def sweep_uploads(folder: Path, max_bytes: int, max_age_s: float = UPLOAD_MAX_AGE_S, now: float | None = None) -> int:
    """Delete files older than `max_age_s`, then the oldest ones until the folder holds at most `max_bytes`;
    anything that is not a regular file goes too. Returns the bytes left."""
    now = time.time() if now is None else now
    files: list[tuple[float, int, Path]] = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            try:
                info = os.lstat(path)
                if not stat.S_ISREG(info.st_mode) or now - info.st_mtime > max_age_s:
                    path.unlink()
                else:
                    files.append((info.st_mtime, info.st_size, path))
            except FileNotFoundError:
                continue
    total = sum(size for _, size, _ in files)
    for _, size, path in sorted(files, key=lambda item: item[0]):
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
    for root, _, _ in os.walk(folder, topdown=False):  # Gradio makes a folder per file; drop empty ones
        try:
            if Path(root) != folder and not os.listdir(root) and now - os.lstat(root).st_mtime > EMPTY_FOLDER_GRACE_S:
                os.rmdir(root)
        except OSError:
            pass
    return total
