"""The local engine: one process, one pipeline, items one after another."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .job import BatchOptions, process_task


def run_local(tasks: Iterable[dict], options: BatchOptions, engine=None) -> Iterator[dict]:
    """Yield one log record per task, in order. The model loads before the first item, so a missing
    model stops the batch at once instead of failing every item."""
    options.apply_threads()
    engine = engine or options.engine()
    tasks = list(tasks)
    if not tasks:
        return
    engine.load()
    for task in tasks:
        yield process_task(engine, task, options)
