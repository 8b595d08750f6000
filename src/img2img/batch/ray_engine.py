"""The Ray engine: a Ray Data pipeline whose actors each load the pipeline once and process items.

items (from_items) -> map_batches(Generator actor pool: one GPU per actor when the cluster has GPUs,
else CPUs) -> records back to the driver, which writes the results log. Actors read inputs and write
outputs themselves, so on a multi-machine cluster the input and output folders must be on a shared
filesystem. Ray is imported only here, and only when the Ray engine runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterator

from ..errors import Img2ImgError
from .job import BatchOptions, process_task

INSTALL_HINT = 'the Ray engine needs Ray: pip install "img2img[ray]" (or pip install -e ".[ray]" in a checkout)'
OBJECT_STORE_BYTES = 500 * 2**20  # outputs go to disk, not through the object store; keep it small


class BatchError(Img2ImgError):
    """The batch cannot run as asked (for example, Ray is not installed or its workers cannot start)."""


class Generator:
    """A Ray Data actor: builds the engine and loads the model once, then processes batches of tasks."""

    def __init__(self, options: dict):
        self.options = BatchOptions(**options)
        self.options.apply_threads()
        self.engine = self.options.engine()
        self.engine.load()

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        records = [process_task(self.engine, json.loads(task), self.options) for task in batch["task"]]
        return {"record": np.array([json.dumps(r) for r in records], dtype=object)}


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise BatchError(INSTALL_HINT) from None
    return ray


def _quiet_ray() -> None:
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_ray(tasks: list[dict], options: BatchOptions, *, address: str | None = None, workers: int | None = None,
            batch_size: int = 1) -> Iterator[dict]:
    """Yield one log record per task as actors finish them (in no particular order)."""
    if not tasks:
        return
    ray = _import_ray()
    _quiet_ray()
    threads = options.cpu_threads or 1
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        if address:
            ray.init(address=address, **kwargs)
        else:
            # A private local Ray: just enough CPUs for the actors (GPUs are detected by Ray itself).
            ray.init(num_cpus=max(1, (workers or 1) * threads), object_store_memory=OBJECT_STORE_BYTES, **kwargs)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1 and options.device not in ("cpu", "mps")
        if workers is None:
            workers = int(ray.cluster_resources().get("GPU", 0)) if use_gpu else 1
        per_actor = {"num_gpus": 1} if use_gpu else {"num_cpus": threads}
        worker_options = options if use_gpu or options.device else _on_cpu(options)
        dataset = ray.data.from_items([{"task": json.dumps(task)} for task in tasks],
                                      override_num_blocks=max(1, math.ceil(len(tasks) / batch_size)))
        dataset = dataset.map_batches(
            Generator,
            fn_constructor_kwargs={"options": dataclasses.asdict(worker_options)},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=workers),
            **per_actor,
        )
        try:
            for row in dataset.iter_rows():
                yield json.loads(row["record"])
        except Exception as exc:  # Ray wraps actor start-up errors (a missing model, ...) in its own types
            cause = _root_cause(exc)
            if isinstance(cause, Img2ImgError):
                raise BatchError(f"a Ray worker failed: {cause}") from None
            raise
    finally:
        if started_here:
            ray.shutdown()


def _on_cpu(options: BatchOptions) -> BatchOptions:
    return dataclasses.replace(options, device="cpu")


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None) or exc.__cause__
        if inner is None:
            break
        exc = inner
    return exc
