"""What the routes call: configured models, the job queue, image checks and generation in the worker.

Routes translate their wire format into a Request and call `Service`; nothing here knows about HTTP.
"""

from __future__ import annotations

import functools
import io
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field

from ..errors import ImageError, Interrupted, InvalidRequest, ModelNotAvailable
from ..noise import batch_seeds
from ..request import MAX_BATCH, MAX_SEED, Request, Result
from .config import ServerConfig
from .jobs import Job, JobQueue, Together

log = logging.getLogger("img2img.server")


class TooManyPixels(ImageError):
    """The input image is over the server's pixel limit (HTTP 413)."""


@dataclass
class Outcome:
    """Results of one job: one Result per part (A1111's n_iter) that completed."""

    results: list[Result]
    seeds: list[int]  # every seed the job was asked to run, in order
    interrupted: bool = False
    skipped: int = 0
    notices: list[str] = field(default_factory=list)

    @property
    def images(self) -> list:
        return [image for result in self.results for image in result.images]

    @property
    def infotexts(self) -> list[str]:
        return [text for result in self.results for text in result.infotexts]

    @property
    def done_seeds(self) -> list[int]:
        return [seed for result in self.results for seed in result.seeds]


def _run_batch(engine, request: Request, image, on_step, mask=None) -> Result:
    return engine.run(request, image, mask=mask, on_step=on_step)


def run_parts(job, engine, request: Request, image, parts: int = 1, run=None) -> Outcome:
    """The body of a job: `parts` batches with consecutive seeds. Interrupt keeps what finished; skip drops
    the running part and goes on. `job` is the queue's Job, or a replica's stand-in with the same methods
    (interrupted, start_part, on_step)."""
    run = run or _run_batch
    variation = request.subseed_strength > 0
    # Seeds count up across the parts as within a batch, wrapping past the largest seed as the engine does.
    seeds, subseeds = batch_seeds(request.seed, request.batch_size * parts, request.subseed,
                                  request.subseed_strength)
    outcome = Outcome(results=[], seeds=seeds)
    for part in range(parts):
        if job.interrupted:
            break
        job.start_part(part, parts)
        if variation:
            part_request = request.replace(subseed=subseeds[part * request.batch_size])
        else:
            part_request = request.replace(seed=seeds[part * request.batch_size])
        try:
            outcome.results.append(run(engine, part_request, image, job.on_step))
        except Interrupted:
            if job.interrupted:
                break
            outcome.skipped += 1
    return _closed(outcome, job, parts)


def _closed(outcome: Outcome, job, parts: int) -> Outcome:
    """The outcome with how the job ended: interrupted (what finished is kept), parts skipped."""
    outcome.interrupted = job.interrupted
    if outcome.interrupted:
        outcome.notices.append(f"interrupted: {len(outcome.images)} of {len(outcome.seeds)} images finished")
    if outcome.skipped:
        outcome.notices.append(f"skipped {outcome.skipped} of {parts} batches")
    return outcome


ENGINE_SETTINGS = ("device", "dtype", "safety_checker", "max_pixels", "lora_dir", "embeddings_dir", "styles_file",
                   "vae", "backend", "compile", "offload", "cpu_threads")  # what make_engine reads


def make_engine(spec: str, config: ServerConfig):
    """The engine for one configured model, as the server's options say (here, or on a replica)."""
    from ..engine import Engine

    return Engine(spec, **{name: getattr(config, name) for name in ENGINE_SETTINGS})


class ModelSlot:
    """One configured model: its engine (made on first use) and what we know about its loading."""

    def __init__(self, spec: str, config: ServerConfig):
        from ..models import resolve_model

        self.spec = spec
        self.source = resolve_model(spec)  # cheap; refuses bad specs at start-up
        self.name = self.source.name
        self._config = config
        self._engine = None
        self._lock = threading.Lock()
        self.loading = False
        self.error: str | None = None
        self.hash: str | None = None
        self._hash_looked_up = False

    @property
    def title(self) -> str:
        return f"{self.name} [{self.hash}]" if self.hash else self.name

    def find_hash(self) -> str | None:
        """The short hash, from the model's files if it is not loaded yet, so its title is the same before and
        after loading (clients compare titles)."""
        if self.hash is None and not self._hash_looked_up:
            self._hash_looked_up = True
            from ..models import model_hash

            try:
                self.hash = model_hash(self.source)
            except OSError as exc:
                log.warning("cannot hash model %s: %s", self.name, exc)
        return self.hash

    @property
    def engine(self):
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.spec, self._config)
            return self._engine

    @property
    def loaded(self) -> bool:
        if self._engine is None:
            return False
        from ..models import CACHE

        return any(m.source == self.source and m.device == self._engine.device for m in CACHE.loaded())

    @property
    def state(self) -> str:
        if self.loaded:
            return "loaded"
        if self.loading:
            return "loading"
        if self.error:
            return "failed"
        return "not loaded"

    def load(self):
        self.loading = True
        try:
            loaded = self.engine.load()
        except ModelNotAvailable as exc:
            self.error = str(exc)
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.loading = False
        self.error = None
        self.hash = loaded.model_hash
        return loaded

    def matches(self, wanted: str) -> bool:
        wanted = wanted.strip().casefold()
        bare = wanted.split(" [", 1)[0].strip()
        names = {self.name.casefold(), self.spec.casefold(), self.title.casefold(), self.source.location.casefold()}
        return wanted in names or bare in names


class Service:
    def __init__(self, config: ServerConfig):
        from ..models import DEFAULT_MODEL

        self.config = config
        specs = config.models or [DEFAULT_MODEL]
        self.slots: list[ModelSlot] = []
        for spec in specs:
            slot = ModelSlot(spec, config)
            if any(existing.name == slot.name for existing in self.slots):
                raise InvalidRequest(f"two configured models share the name {slot.name!r}; rename one", "models")
            self.slots.append(slot)
        self.current = self.slots[0]
        self.backend = None  # where jobs run: None in this process, else a RayBackend (--engine ray)
        if config.engine == "ray":
            from .ray_backend import RayBackend

            self.backend = RayBackend(config, [slot.spec for slot in self.slots])
            self.queue = self.backend.queue
        else:
            self.queue = JobQueue(config.max_queue, max_batch=config.max_batch,
                                  batch_wait=config.batch_wait_ms / 1000, run_together=self.generate_together)
        self.started = time.time()
        self._history = None
        self._history_lock = threading.Lock()

    # ---------------------------------------------------------------- history
    @property
    def history(self):
        """The store of kept outputs, opened on first use (so an API-only server creates no folder)."""
        with self._history_lock:
            if self._history is None:
                from ..history import History

                self._history = History(self.config.history_dir)
                for notice in self._history.notices:
                    log.warning("%s", notice)
            return self._history

    def record(self, outcome: Outcome, origin: str) -> list:
        """Keep an outcome's images in the history. A full disk costs the copy, not the answer: it becomes a
        notice on the outcome."""
        from ..errors import OutputError

        try:
            return [entry for result in outcome.results for entry in self.history.add(result, origin=origin)]
        except OutputError as exc:
            outcome.notices.append(f"not kept in the history: {exc}")
            return []

    # ---------------------------------------------------------------- models
    def find_model(self, wanted: str | None, field_name: str = "sd_model_checkpoint") -> ModelSlot:
        if wanted is None or wanted == "":
            return self.current
        for slot in self.slots:
            if slot.matches(str(wanted)):
                return slot
        names = ", ".join(slot.title for slot in self.slots)
        raise InvalidRequest(f"{field_name}: model {wanted!r} is not one this server offers ({names})", field_name)

    def set_current(self, wanted: str, field_name: str = "sd_model_checkpoint") -> ModelSlot:
        self.current = self.find_model(wanted, field_name)
        return self.current

    def preload(self) -> threading.Thread:
        """Load the current model in the background so the first request does not wait for it (with --engine
        ray: start the replicas, each of which loads it)."""
        if self.backend is not None:
            return self.backend.start_in_background()
        slot = self.current

        def load():
            try:
                slot.load()
                log.info("model %s loaded on %s", slot.name, slot.engine.device)
            except Exception as exc:
                log.error("loading model %s failed: %s", slot.name, exc)

        slot.loading = True
        thread = threading.Thread(target=load, name="img2img-preload", daemon=True)
        thread.start()
        return thread

    def start(self) -> None:
        """At start-up: replicas are started even with --lazy, as nothing else would start them."""
        if self.config.preload or self.backend is not None:
            self.preload()

    def close(self, grace: float | None = None) -> None:
        """At shutdown: stop the queue (the running job may finish for `grace` seconds), then the replicas."""
        self.queue.shutdown(grace=grace)
        if self.backend is not None:
            self.backend.close(grace)

    def health(self) -> dict:
        if self.backend is not None:
            return self.backend.health(self.current.name, self.started)
        slot = self.current
        engine = slot._engine
        running = self.queue.running
        return {"engine": "local",
            "status": "shutting down" if self.queue.closed else "ok",
            "model": slot.name,
            "model_state": slot.state,
            "model_loaded": slot.loaded,
            "model_error": slot.error,
            "load_policy": "background at start-up" if self.config.preload else "on first use",
            "loaded_models": [s.name for s in self.slots if s.loaded],
            "device": engine.device if engine else (self.config.device or "auto"),
            "dtype": engine.dtype if engine else (self.config.dtype or "auto"),
            "queue": {"depth": self.queue.depth, "waiting": self.queue.waiting, "running": running is not None,
                      "max_waiting": self.queue.max_waiting, "completed": self.queue.completed,
                      "dropped": self.queue.dropped, "max_batch": self.queue.max_batch,
                      "batched_calls": self.queue.batches, "batched_jobs": self.queue.batched_jobs},
            "uptime_s": round(time.time() - self.started, 1),
        }

    # ---------------------------------------------------------------- checks before queueing
    def check_image(self, data: bytes, field_name: str = "image") -> None:
        """Refuse undecodable or over-limit images before they take a place in the queue."""
        from PIL import Image

        from ..images import load_image, pillow_pixel_limit_lifted

        limit = self.config.max_pixels
        try:
            with pillow_pixel_limit_lifted(), Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
        except Exception:
            width = height = 0  # load_image below names the problem
        if width * height > limit:
            raise TooManyPixels(f"{field_name}: {width}x{height} is {width * height:,} pixels, over this server's "
                                f"limit of {limit:,} (server option --max-pixels)")
        try:
            load_image(data, max_pixels=limit)
        except ImageError as exc:
            raise ImageError(f"{field_name}: {exc}".replace("<bytes>: ", "")) from None

    def prepare(self, slot: ModelSlot, request: Request, parts: int = 1, mode: str = "img2img") -> tuple[Request, int]:
        """Validate with the model's defaults; pick the first seed so every part's seed is known up front."""
        if isinstance(parts, bool) or not isinstance(parts, int) or not 1 <= parts <= MAX_BATCH:
            raise InvalidRequest(f"n_iter must be between 1 and {MAX_BATCH}, got {parts!r}", "n_iter")
        request = slot.engine.prepare(request, mode)
        if request.batch_size * parts > MAX_BATCH:
            raise InvalidRequest(f"batch_size x n_iter = {request.batch_size} x {parts} images; at most {MAX_BATCH} "
                                 "per request", "n_iter")
        total = request.batch_size * parts
        first = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
        if request.subseed_strength > 0:  # variations: one seed, subseeds counting up (A1111)
            subseed = request.subseed if request.subseed is not None else secrets.randbelow(MAX_SEED + 1)
            return request.replace(seed=first, subseed=subseed), total
        return request.replace(seed=first), total

    # ---------------------------------------------------------------- work in the worker thread
    def check_repaint(self, request: Request, image: bytes, mask: bytes | None, field_name: str = "mask",
                      latent_mask: bytes | None = None) -> None:
        """Refuse a mask that cannot be used (unreadable, another size, nothing to repaint; also a bad outpaint or
        an input without transparency for mask_from_alpha) before it takes a place in the queue."""
        from ..images import load_image
        from ..inpaint import check_repaint_options, read_repaint

        if not check_repaint_options(request, mask is not None):
            return
        loaded = load_image(image, max_pixels=self.config.max_pixels, background=request.background)
        try:
            read_repaint(request, [image], loaded, mask, max_pixels=self.config.max_pixels, latent_mask=latent_mask)
        except ImageError as exc:
            if str(exc).startswith("latent_mask"):
                exc.field = "latent_mask"  # type: ignore[attr-defined]
                raise
            error = ImageError(f"{field_name}: {exc}".replace(f"{field_name}: mask: ", f"{field_name}: "))
            error.field = field_name  # type: ignore[attr-defined]  # the HTTP error names the field
            raise error from None

    def generate(self, job: Job, slot: ModelSlot, request: Request, image, parts: int = 1, run=None,
                 mask: bytes | None = None) -> Outcome:
        """Run `parts` batches with consecutive seeds (A1111's n_iter): here, or on a Ray Serve replica when the
        server runs with --engine ray. `image` is None for text-to-image, or a list of images (one per member
        of the batch); `run(engine, request, image, on_step)` runs one batch (default: engine.run, with `mask`
        if given)."""
        run = run or functools.partial(_run_batch, mask=mask)
        if self.backend is not None:
            return self.backend.generate(job, slot.spec, request, image, parts, run)
        if not slot.loaded:
            slot.load()
        return run_parts(job, slot.engine, request, image, parts, run)

    # ---------------------------------------------------------------- micro-batching (--max-batch)
    def together(self, slot: ModelSlot, request: Request, image, parts: int = 1, *,
                 plain: bool = True) -> Together | None:
        """How a prepared job may share a pipeline call with other queued jobs, or None when it runs alone:
        --max-batch 1, the Ray engine, n_iter > 1, not `plain` (a mask, a second pass, a resize after), or what
        the engine cannot batch (Engine.together_key: several input images, outpainting, ...)."""
        if self.config.max_batch <= 1 or self.backend is not None or parts != 1 or not plain:
            return None
        key = slot.engine.together_key(request, image)
        if key is None:
            return None
        return Together((slot.name, key), request.batch_size, (slot, request, image))

    def generate_together(self, jobs: list[Job]) -> list[Outcome]:
        """Queued jobs with equal `together` keys as one batched pipeline call, one Outcome each, equal to the
        job run alone up to float rounding. Every job sees the call's progress (and its own latents for
        previews). Interrupting or skipping a job drops its images only; the call stops when all are stopped."""
        slot = jobs[0].together.payload[0]
        if not slot.loaded:
            slot.load()
        counts = [job.together.images for job in jobs]
        for job in jobs:
            job.start_part(0, 1)

        def on_step(step: int, total: int, latents) -> None:
            offset = 0
            for job, count in zip(jobs, counts):
                job.progress.step, job.progress.total = step, total
                job.progress.latents = None if latents is None else latents[offset:offset + count]
                offset += count
            if all(job.interrupted or job.skipped() for job in jobs):
                raise Interrupted("generation interrupted")

        try:
            results = slot.engine.run_together([job.together.payload[1:] for job in jobs], on_step=on_step)
        except Interrupted:
            results = [None] * len(jobs)
        outcomes = []
        for job, result in zip(jobs, results):
            request = job.together.payload[1]
            seeds, _ = batch_seeds(request.seed, request.batch_size, request.subseed, request.subseed_strength)
            outcome = Outcome(results=[], seeds=seeds)
            if result is not None and not job.interrupted and not job.skipped():
                outcome.results.append(result)
            elif not job.interrupted:  # skipped, or the call was stopped: as a skipped part when alone
                outcome.skipped = 1
            outcomes.append(_closed(outcome, job, 1))
        return outcomes

    def preview(self, skip_image: bool = False) -> tuple[object, bytes | None]:
        """The running job's progress and, unless skipped, a PNG preview of its latest latents."""
        progress = self.queue.progress()
        if self.backend is not None:  # replicas send a rendered preview now and then
            return progress, None if skip_image else progress.preview
        if skip_image or progress.latents is None:
            return progress, None
        slot = next((s for s in self.slots if s.name == progress.label), self.current)
        try:
            from ..models import CACHE

            pipes = [m.pipe for m in CACHE.loaded() if m.source == slot.source]
            if not pipes:
                return progress, None
            from .preview import preview_png

            return progress, preview_png(pipes[0], progress.latents)
        except Exception as exc:  # a preview is a nicety; never fail the progress route for it
            log.warning("preview failed: %s", exc)
            return progress, None
