"""The replica side of `serve --engine ray`: a Ray Serve deployment that loads the model once and runs the
jobs the front process sends it, streaming their progress back and obeying the front's interrupt and skip.

Runs inside Ray worker processes; the front imports this module only to deploy it.

    front --(job id, model, prepared request, image, parts)--> Replica.generate
    front <--({"replica"}, {"step", "total", "part", "parts"[, "preview"]}..., {"outcome"})--
    front --interrupt/skip(job id)--> Signals actor <--polled at every step-- Replica
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from ..errors import Interrupted

log = logging.getLogger("img2img.server")

PREVIEW_EVERY_S = 2.0  # a rendered progress preview at most this often (the linear map costs little)


class Signals:
    """A small Ray actor owned by the front: interrupt and skip requests by job id. The front sets them; the
    replica running the job reads them, so they reach it whichever replica Serve picked."""

    def __init__(self):
        self._flags: dict[int, tuple[bool, int | None]] = {}

    def interrupt(self, job_id: int) -> None:
        self._flags[job_id] = (True, self._flags.get(job_id, (False, None))[1])

    def skip(self, job_id: int, part: int) -> None:
        self._flags[job_id] = (self._flags.get(job_id, (False, None))[0], part)

    def read(self, job_id: int) -> tuple[bool, int | None]:
        """(interrupted, the part to skip or None)."""
        return self._flags.get(job_id, (False, None))

    def forget(self, job_id: int) -> None:
        self._flags.pop(job_id, None)


class ReplicaJob:
    """The replica's stand-in for the front's Job (what service.run_parts calls): step callbacks send progress
    and raise Interrupted once the front has asked for an interrupt, or a skip of the running part."""

    def __init__(self, job_id: int, signals, send, render=None):
        self.id = job_id
        self._signals = signals
        self._send = send
        self._render = render
        self._pending = None  # the Signals read in flight
        self._interrupted = False
        self._skip_part: int | None = None
        self._part, self._parts = 0, 1
        self._last_preview = time.monotonic()

    def cancel(self) -> None:
        """The front stopped waiting (it was cancelled): stop at the next step."""
        self._interrupted = True

    @property
    def interrupted(self) -> bool:
        self._poll()
        return self._interrupted

    def start_part(self, part: int, parts: int) -> None:
        self._part, self._parts = part, parts
        self._send({"step": 0, "total": 0, "part": part, "parts": parts})

    def on_step(self, step: int, total: int, latents=None) -> None:
        event = {"step": step, "total": total, "part": self._part, "parts": self._parts}
        if latents is not None and self._render is not None and time.monotonic() - self._last_preview > PREVIEW_EVERY_S:
            self._last_preview = time.monotonic()
            try:
                event["preview"] = self._render(latents)
            except Exception as exc:  # a preview is a nicety; never fail the job for it
                log.warning("preview failed: %s", exc)
        self._send(event)
        self._poll()
        if self._interrupted or self._skip_part == self._part:
            raise Interrupted("generation interrupted" if self._interrupted else "generation skipped")

    def _poll(self) -> None:
        """Read the front's signals without waiting: the answer to the previous read, if it has come."""
        import ray

        if self._pending is not None:
            ready, _ = ray.wait([self._pending], timeout=0)
            if not ready:
                return
            try:
                interrupted, self._skip_part = ray.get(self._pending)
                self._interrupted = self._interrupted or interrupted
            except ray.exceptions.RayError:  # the front is gone; nobody is left to ask for anything
                pass
        self._pending = self._signals.read.remote(self.id)


class Replica:
    """One model replica. The first configured model is loaded before the replica takes requests; others on
    first use (the engine's cache decides what stays loaded). One job at a time (max_ongoing_requests=1)."""

    def __init__(self, settings: dict, specs: list[str], signals):
        import ray

        from .config import ServerConfig

        self.config = ServerConfig(**settings)
        self.signals = signals
        self.name = ray.get_runtime_context().get_actor_name() or "replica"
        self.engines: dict = {}
        # One thread runs every job: torch's thread settings and the model cache stay with it.
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="img2img-replica")
        self.worker.submit(lambda: self.engine(specs[0]).load()).result()
        log.info("replica %s ready with %s", self.name, specs[0])

    def engine(self, spec: str):
        if spec not in self.engines:
            from .service import make_engine

            self.engines[spec] = make_engine(spec, self.config)
        return self.engines[spec]

    async def embeddings(self, spec: str) -> dict:
        """/sdapi/v1/embeddings for a model: the embeddings folder read against its loaded text encoders."""
        from ..networks import describe_embeddings, load_embeddings

        engine = self.engine(spec)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.worker, lambda: describe_embeddings(load_embeddings(engine.load().pipe, engine.embeddings_dir)))

    async def generate(self, job_id: int, spec: str, request, image, parts: int, run=None):
        """Run one job (service.run_parts) in the worker thread; yield its progress, then {"outcome": ...}."""
        from .preview import preview_png
        from .service import run_parts

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def send(event: dict) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        engine = self.engine(spec)
        job = ReplicaJob(job_id, self.signals, send, render=lambda latents: preview_png(engine.load().pipe, latents))

        def work() -> None:
            try:
                send({"outcome": run_parts(job, engine, request, image, parts, run)})
            except BaseException as exc:  # delivered to the front, which raises it for the route
                send({"error": exc})

        yield {"replica": self.name}
        running = loop.run_in_executor(self.worker, work)
        try:
            while True:
                event = await events.get()
                while not events.empty() and "step" in event:  # the front needs only the latest step
                    newer = events.get_nowait()
                    if "preview" in event and "preview" not in newer:
                        newer["preview"] = event["preview"]
                    event = newer
                if "error" in event:
                    raise event["error"]
                yield event
                if "outcome" in event:
                    return
        except asyncio.CancelledError:
            job.cancel()
            await asyncio.shield(running)
            raise
