"""Past generations, kept across restarts: image files plus an index in an embedded SQLite database.

The image files are the record; the database only indexes them. So a corrupt or missing database is
set aside and rebuilt from the files' own infotext, and no image is ever lost with it.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from .datadir import user_data_dir
from .errors import OutputError
from .images import encode_image, read_infotext, write_atomically
from .infotext import parse_infotext

DB_NAME = "history.sqlite3"
IMAGES_DIR = "images"
NAME_ATTEMPTS = 20  # tries for a free image name before a last one with a long random part
SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    image TEXT NOT NULL UNIQUE,      -- path relative to the history folder
    prompt TEXT NOT NULL,
    negative_prompt TEXT NOT NULL,
    parameters TEXT NOT NULL,        -- JSON object of the infotext's Key: value pairs
    infotext TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    seed INTEGER,
    model TEXT,
    origin TEXT NOT NULL             -- "ui", "api", "cli" or "rebuilt"
);
CREATE INDEX IF NOT EXISTS generations_created ON generations (created DESC);
"""


def default_history_dir() -> Path:
    """$IMG2IMG_HISTORY_DIR, else the platform's per-user data folder."""
    if os.environ.get("IMG2IMG_HISTORY_DIR"):
        return Path(os.environ["IMG2IMG_HISTORY_DIR"]).expanduser()
    return user_data_dir()


@dataclass(frozen=True)
class Entry:
    id: int
    created: float
    image: Path  # absolute
    prompt: str
    negative_prompt: str
    parameters: dict
    infotext: str
    width: int
    height: int
    seed: int | None
    model: str | None
    origin: str


class History:
    """Thread- and process-safe: one short SQLite connection per operation, WAL journal, busy timeout."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder).expanduser() if folder else default_history_dir()
        self.db_path = self.folder / DB_NAME
        self.images = self.folder / IMAGES_DIR
        self.notices: list[str] = []
        self._lock = threading.Lock()
        try:
            self.images.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.folder}: cannot create the history folder ({exc.strerror or exc})") from None
        self._open_or_recover()

    # ------------------------------------------------------------------ database plumbing

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        connection.execute("PRAGMA busy_timeout = 30000")
        return connection

    def _open_or_recover(self) -> None:
        existed = self.db_path.exists()
        try:
            with closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode = WAL")
                if existed and db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise sqlite3.DatabaseError("integrity check failed")
                db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            aside = self.db_path.with_name(f"{DB_NAME}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                part = Path(str(self.db_path) + suffix)
                if part.exists():
                    part.rename(Path(str(aside) + suffix))
            self.notices.append(f"the history database {self.db_path} was unreadable ({exc}); it was moved to "
                                f"{aside.name} and a new one was built from the image files")
            with closing(self._connect()) as db:
                db.execute("PRAGMA journal_mode = WAL")
                db.executescript(SCHEMA)
            existed = False
        if not existed and any(self.images.rglob("*.png")):
            count = self.rebuild()
            if not self.notices:
                self.notices.append(f"the history database was missing; {count} entries were rebuilt from "
                                    "the image files")

    # ------------------------------------------------------------------ writing

    def add(self, result, *, origin: str = "api") -> list[Entry]:
        """Store every image of a Result: file first (atomically), then its row."""
        day = time.strftime("%Y-%m-%d")
        folder = self.images / day
        folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for image, infotext, seed in zip(result.images, result.infotexts, result.seeds):
            path = self._write_new(folder, f"{time.strftime('%H%M%S')}-{seed}", encode_image(image, "PNG", infotext))
            entries.append(self._insert(path, infotext, image.size, origin))
        return entries

    @staticmethod
    def _write_new(folder: Path, stem: str, data: bytes) -> Path:
        """Write under a name no other writer holds: the final link is an exclusive create, and a name taken
        meanwhile (another thread or process, same second and seed, same random part) means another try."""
        for _ in range(NAME_ATTEMPTS - 1):
            path = folder / f"{stem}-{secrets.token_hex(3)}.png"
            try:
                return write_atomically(data, path)
            except OutputError:
                if not path.exists():  # a real write error (disk full, permissions): no retry helps
                    raise
        return write_atomically(data, folder / f"{stem}-{secrets.token_hex(8)}.png")

    def _insert(self, path: Path, infotext: str, size: tuple[int, int], origin: str,
                created: float | None = None) -> Entry:
        prompt, negative, params = parse_infotext(infotext)
        seed = int(params["Seed"]) if params.get("Seed", "").isdigit() else None
        row = (created or time.time(), str(path.relative_to(self.folder)), prompt, negative, json.dumps(params),
               infotext, size[0], size[1], seed, params.get("Model"), origin)
        with self._lock, closing(self._connect()) as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO generations (created, image, prompt, negative_prompt, parameters, infotext,"
                " width, height, seed, model, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            entry_id = cursor.lastrowid
        return self.get(entry_id)

    def rebuild(self) -> int:
        """Index image files that have no row (after a lost database); returns how many were added."""
        from PIL import Image

        known = {e.image for e in self.list(limit=None)}
        added = 0
        for path in sorted(self.images.rglob("*.png")):
            if path in known or path.name.startswith("."):
                continue
            try:
                infotext = read_infotext(path) or ""
                size = Image.open(path).size
            except Exception:  # an unreadable file stays on disk; it just is not listed
                continue
            self._insert(path, infotext, size, "rebuilt", created=path.stat().st_mtime)
            added += 1
        return added

    def delete(self, entry_id: int) -> bool:
        """Remove an entry's row and its image file together; False if there is no such entry."""
        entry = self.get(entry_id)
        if entry is None:
            return False
        with self._lock, closing(self._connect()) as db:
            db.execute("DELETE FROM generations WHERE id = ?", (entry_id,))
        entry.image.unlink(missing_ok=True)
        return True

    # ------------------------------------------------------------------ reading

    def get(self, entry_id: int) -> Entry | None:
        with closing(self._connect()) as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM generations WHERE id = ?", (entry_id,)).fetchone()
        return self._entry(row) if row else None

    def list(self, limit: int | None = 100, offset: int = 0) -> list[Entry]:
        """Newest first."""
        with closing(self._connect()) as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM generations ORDER BY created DESC, id DESC LIMIT ? OFFSET ?",
                              (-1 if limit is None else limit, offset)).fetchall()
        return [self._entry(row) for row in rows]

    def count(self) -> int:
        with closing(self._connect()) as db:
            return db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def _entry(self, row) -> Entry:
        values = list(row)
        values[2] = self.folder / values[2]
        values[5] = json.loads(values[5])
        return Entry(*values)


_COLUMNS = "id, created, image, prompt, negative_prompt, parameters, infotext, width, height, seed, model, origin"
