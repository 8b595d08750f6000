"""results.jsonl: one JSON line per finished item, appended and fsynced, read back to resume.

Two kinds of lines:
  {"event": "start", "base_seed": ..., ...}            one per run, written before any item
  {"key": ..., "input": ..., "output": ..., "outputs": [...], "seed": ..., "parameters": {...},
   "status": "done" | "failed", "error": null | "...", ...}   one per item processed

A process killed mid-write leaves at most a torn last line; it is ignored when read and cut off
before the next append, so the file stays one JSON object per line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

LOG_NAME = "results.jsonl"


@dataclass
class LogState:
    latest: dict[str, dict] = field(default_factory=dict)  # key -> the item's last line
    base_seed: int | None = None  # from the last start line
    torn: bool = False  # the last line was incomplete (a killed run)


def read_log(path: str | os.PathLike) -> LogState:
    state = LogState()
    path = Path(path)
    if not path.exists():
        return state
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        state.torn = True  # no newline at the end: the last write did not finish
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"{path}: line {number} is not valid JSON; fix or remove it to resume") from None
        if record.get("event") == "start":
            if isinstance(record.get("base_seed"), int):
                state.base_seed = record["base_seed"]
        elif "key" in record and "status" in record:
            state.latest[record["key"]] = record
    return state


def item_records(path: str | os.PathLike) -> list[dict]:
    """Every complete item line, in order (for tests and reports)."""
    records = []
    data = Path(path).read_bytes()
    for raw in data.split(b"\n")[:-1]:  # the last piece is empty, or a torn line
        if raw.strip():
            record = json.loads(raw)
            if "status" in record:
                records.append(record)
    return records


class ResultsLog:
    """Append-only writer: each line is written whole, flushed and fsynced before the call returns."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._cut_torn_tail()
        self._handle = open(self.path, "ab")

    def _cut_torn_tail(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n"
        self._handle.write(line)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
