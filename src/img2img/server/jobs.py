"""One job queue in front of the engine: a bounded FIFO served by one worker thread per device.

A job is a plain function that receives its Job (for progress reporting and interrupt/skip checks). The
queue knows nothing about HTTP or diffusion, so the web UI and the server share it.

    queue = JobQueue(max_waiting=8)
    job = queue.submit(lambda job: work(job), client_gone=lambda: False)
    result = job.future.result()        # or: await asyncio.wrap_future(job.future)
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ..errors import Interrupted

log = logging.getLogger("img2img.server")


class QueueFull(Exception):
    """The queue holds max_waiting jobs already; retry_after is a guess in seconds."""

    def __init__(self, depth: int, retry_after: int):
        super().__init__(f"the job queue is full ({depth} jobs waiting); retry in about {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The queue no longer accepts or starts jobs."""


class JobDropped(Exception):
    """The job's client went away before the job started, so it never ran."""


class WorkerLost(Exception):
    """The process running the job died (a Ray Serve replica), and the one retry failed too."""


@dataclass
class Progress:
    """A snapshot of the running job, for progress routes."""

    job_id: int | None = None
    label: str = ""
    step: int = 0
    total: int = 0
    part: int = 0  # which of `parts` sub-tasks (A1111's n_iter) is running, from 0
    parts: int = 1
    started: float = 0.0
    interrupted: bool = False
    skipped: bool = False
    latents: Any = None  # the latest latents tensor, for previews
    preview: bytes | None = None  # or a rendered preview PNG, when the job runs on a replica
    replica: str = ""  # the Ray Serve replica running the job (--engine ray)

    @property
    def fraction(self) -> float:
        if self.job_id is None:
            return 0.0
        within = self.step / self.total if self.total else 0.0
        return min(1.0, (self.part + within) / max(self.parts, 1))


class Job:
    """A unit of work plus the state its worker and its client share."""

    def __init__(self, job_id: int, fn: Callable[[Job], Any], client_gone: Callable[[], bool] | None, label: str):
        self.id = job_id
        self.fn = fn
        self.label = label
        self.future: Future = Future()
        self.submitted = time.monotonic()
        self._client_gone = client_gone
        self._lock = threading.Lock()
        self._interrupt = threading.Event()
        self._skip = threading.Event()
        self.progress = Progress(job_id=job_id, label=label)

    # -- called by the client side
    def client_gone(self) -> bool:
        try:
            return bool(self._client_gone and self._client_gone())
        except Exception:  # a broken probe must not kill the worker
            return False

    def mark_client_gone(self) -> None:
        self._client_gone = lambda: True

    def interrupt(self) -> None:
        """Stop at the next step; the job ends with what it finished so far."""
        self._interrupt.set()
        self.progress.interrupted = True

    def skip(self) -> None:
        """Abandon the current part (one of n_iter) and go on with the next one."""
        self._skip.set()
        self.progress.skipped = True

    # -- called by the job function, in the worker thread
    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    def start_part(self, part: int, parts: int) -> None:
        self._skip.clear()
        self.progress.skipped = False
        self.progress.part, self.progress.parts = part, parts
        self.progress.step, self.progress.total, self.progress.latents = 0, 0, None

    def skipped(self) -> bool:
        return self._skip.is_set()

    def on_step(self, step: int, total: int, latents: Any = None) -> None:
        """Engine step callback: records progress, raises Interrupted when interrupted or skipped."""
        self.progress.step, self.progress.total, self.progress.latents = step, total, latents
        if self._interrupt.is_set() or self._skip.is_set():
            raise Interrupted("generation interrupted" if self._interrupt.is_set() else "generation skipped")


class JobQueue:
    """Bounded FIFO with one worker thread. max_waiting counts jobs not yet started."""

    def __init__(self, max_waiting: int = 8, name: str = "img2img-worker"):
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self.max_waiting = max_waiting
        self._waiting: deque[Job] = deque()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._running: Job | None = None
        self._ids = itertools.count(1)
        self._closed = False
        self._durations: deque[float] = deque(maxlen=20)
        self.completed = 0
        self.dropped = 0  # jobs whose client left before they started
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    # ---------------------------------------------------------------- client side
    def submit(self, fn: Callable[[Job], Any], *, client_gone: Callable[[], bool] | None = None,
               label: str = "") -> Job:
        with self._lock:
            if self._closed:
                raise ShuttingDown("the server is shutting down and accepts no new jobs")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(len(self._waiting), self._retry_after_locked())
            job = Job(next(self._ids), fn, client_gone, label)
            self._waiting.append(job)
            self._wakeup.notify()
            return job

    @property
    def depth(self) -> int:
        """Jobs waiting plus the one running."""
        with self._lock:
            return len(self._waiting) + (self._running is not None)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    @property
    def running(self) -> Job | None:
        return self._running

    @property
    def closed(self) -> bool:
        return self._closed

    def progress(self) -> Progress:
        job = self._running
        return job.progress if job is not None else Progress()

    def interrupt(self) -> bool:
        """Interrupt the running job; True if there was one."""
        job = self._running
        if job is None:
            return False
        job.interrupt()
        return True

    def skip(self) -> bool:
        job = self._running
        if job is None:
            return False
        job.skip()
        return True

    def cancel(self, job: Job) -> bool:
        """Take a job out of the queue if it has not started; True if it was removed."""
        with self._lock:
            try:
                self._waiting.remove(job)
            except ValueError:
                return False
            self.dropped += 1
        job.future.set_exception(JobDropped("the job was cancelled before it started"))
        return True

    def shutdown(self, *, grace: float | None = None, wait: bool = False, timeout: float | None = None) -> None:
        """Stop accepting jobs and fail the waiting ones; the running job may finish for `grace` seconds
        (None: as long as it takes), then it is interrupted. With wait, join the worker."""
        with self._lock:
            self._closed = True
            dropped = list(self._waiting)
            self._waiting.clear()
            self._wakeup.notify_all()
        for job in dropped:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(ShuttingDown("the server is shutting down; the job did not start"))
        running = self._running
        if running is not None and grace is not None:
            if grace <= 0:
                running.interrupt()
            else:
                timer = threading.Timer(grace, running.interrupt)
                timer.daemon = True
                timer.start()
        if wait:
            self._worker.join(timeout)

    # ---------------------------------------------------------------- worker side
    def _retry_after_locked(self) -> int:
        average = sum(self._durations) / len(self._durations) if self._durations else 5.0
        return max(1, round(average * (len(self._waiting) + 1)))

    def _next(self) -> Job | None:
        with self._lock:
            while not self._waiting and not self._closed:
                self._wakeup.wait()
            if not self._waiting:
                return None
            job = self._waiting.popleft()
            self._running = job
            return job

    def _work(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            try:
                if job.client_gone():
                    log.info("job %s dropped: its client disconnected before it started", job.id)
                    job.future.set_exception(JobDropped("the client disconnected before the job started"))
                    self.dropped += 1
                    continue
                if not job.future.set_running_or_notify_cancel():
                    continue
                job.progress.started = time.monotonic()
                started = time.perf_counter()
                try:
                    value = job.fn(job)
                except BaseException as exc:  # delivered to the waiting client, never kills the worker
                    job.future.set_exception(exc)
                else:
                    job.future.set_result(value)
                self._durations.append(time.perf_counter() - started)
                self.completed += 1
            finally:
                with self._lock:
                    self._running = None
