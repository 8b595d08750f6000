"""The per-user data folder (history, LoRAs, embeddings, styles live under it unless told otherwise)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def user_data_dir() -> Path:
    """~/.local/share/img2img on Linux, ~/Library/Application Support/img2img on macOS, %LOCALAPPDATA%\\img2img."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "img2img"


def user_cache_dir() -> Path:
    """~/.cache/img2img on Linux, ~/Library/Caches/img2img on macOS, %LOCALAPPDATA%\\img2img\\Cache on Windows:
    for what can be computed again (file hashes)."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "img2img" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "img2img"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "img2img"


def cache_dir() -> Path:
    """Where img2img keeps what it can compute again (file hashes, OpenVINO exports): $IMG2IMG_CACHE_DIR, else
    the platform's per-user cache folder."""
    explicit = os.environ.get("IMG2IMG_CACHE_DIR")
    return Path(explicit).expanduser() if explicit else user_cache_dir()


def folder_setting(explicit, variable: str, default_name: str) -> Path:
    """An explicit folder, else $variable, else <user data folder>/<default_name>."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(variable):
        return Path(os.environ[variable]).expanduser()
    return user_data_dir() / default_name
