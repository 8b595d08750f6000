"""One job queue in front of the engine: a bounded FIFO served by one worker thread per device.

A job is a plain function that receives its Job (for progress reporting and interrupt/skip checks). The
queue knows nothing about HTTP or diffusion, so the web UI and the server share it.

Micro-batching: a job submitted with `together=Together(key, images, payload)` may run in one call with
other waiting jobs of the same key (at most `max_batch` images, waiting up to `batch_wait` seconds for
company); the queue's `run_together(jobs)` returns one value per job. If that call fails, each job runs
alone with its own function, so a batch never fails a job that would have succeeded alone.

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
from collections.abc import Callable, Hashable
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


@dataclass(frozen=True)
class Together:
    """What lets a job share a call with others: jobs with equal keys may run together."""

    key: Hashable
    images: int  # how many images the job makes (counts against max_batch)
    payload: Any  # what run_together needs to run the job


class Job:
    """A unit of work plus the state its worker and its client share."""

    def __init__(self, job_id: int, fn: Callable[[Job], Any], client_gone: Callable[[], bool] | None, label: str,
                 together: Together | None = None):
        self.id = job_id
        self.fn = fn
        self.label = label
        self.together = together
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


class RunningJobControls:
    """interrupt() and skip() for a queue that lists its running job(s) in running_jobs(): this process's
    JobQueue, or the Ray engine's queue."""

    def running_jobs(self) -> list[Job]:
        raise NotImplementedError

    def interrupt(self) -> bool:
        """Interrupt the running job(s); True if any."""
        jobs = self.running_jobs()
        _interrupt_all(jobs)
        return bool(jobs)

    def skip(self) -> bool:
        """Drop the running part of the running job(s); True if any."""
        jobs = self.running_jobs()
        for job in jobs:
            job.skip()
        return bool(jobs)


class JobQueue(RunningJobControls):
    """Bounded FIFO with one worker thread. max_waiting counts jobs not yet started."""

    def __init__(self, max_waiting: int = 8, name: str = "img2img-worker", *, max_batch: int = 1,
                 batch_wait: float = 0.0, run_together: Callable[[list[Job]], list[Any]] | None = None):
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self.max_waiting = max_waiting
        self.max_batch = max_batch if run_together is not None else 1
        self.batch_wait = batch_wait
        self._run_together = run_together
        self._group: list[Job] = []  # the jobs of the running call (the running job first)
        self.batches = 0  # calls that ran several jobs together
        self.batched_jobs = 0  # jobs that ran in such calls
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
               label: str = "", together: Together | None = None) -> Job:
        with self._lock:
            if self._closed:
                raise ShuttingDown("the server is shutting down and accepts no new jobs")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(len(self._waiting), self._retry_after_locked())
            job = Job(next(self._ids), fn, client_gone, label, together)
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

    def running_jobs(self) -> list[Job]:
        """The running job, or every job of a batched call (they are one generation)."""
        return list(self._group) or ([self._running] if self._running is not None else [])

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
        running = self.running_jobs()
        if running and grace is not None:  # every job of a batched call: they stop together
            if grace <= 0:
                _interrupt_all(running)
            else:
                timer = threading.Timer(grace, _interrupt_all, args=(running,))
                timer.daemon = True
                timer.start()
        if wait:
            self._worker.join(timeout)

    # ---------------------------------------------------------------- worker side
    def _retry_after_locked(self) -> int:
        average = sum(self._durations) / len(self._durations) if self._durations else 5.0
        return max(1, round(average * (len(self._waiting) + 1)))

    def _next(self) -> list[Job]:
        """The next job, plus the waiting jobs that may run together with it (same key, up to max_batch
        images, waiting up to batch_wait for them). Empty when the queue is closed."""
        with self._lock:
            while not self._waiting and not self._closed:
                self._wakeup.wait()
            if not self._waiting:
                return []
            job = self._waiting.popleft()
            self._running = job
            group = [job]
            if job.together is None or self.max_batch <= 1 or job.together.images >= self.max_batch:
                return group
            deadline = time.monotonic() + self.batch_wait
            while True:
                room = self.max_batch - sum(member.together.images for member in group)
                for other in list(self._waiting):
                    if other.together is not None and other.together.key == job.together.key and \
                            other.together.images <= room:
                        self._waiting.remove(other)
                        group.append(other)
                        room -= other.together.images
                left = deadline - time.monotonic()
                if room <= 0 or left <= 0 or self._closed:
                    return group
                self._wakeup.wait(left)

    def _start(self, job: Job) -> bool:
        """Mark a job running; False (and the job is settled) when its client left or it was cancelled."""
        if job.client_gone():
            log.info("job %s dropped: its client disconnected before it started", job.id)
            job.future.set_exception(JobDropped("the client disconnected before the job started"))
            self.dropped += 1
            return False
        if not job.future.set_running_or_notify_cancel():
            return False
        job.progress.started = time.monotonic()
        return True

    def _work(self) -> None:
        while True:
            group = self._next()
            if not group:
                return
            try:
                group = [job for job in group if self._start(job)]
                if not group:
                    continue
                self._group = group
                self._running = group[0]
                started = time.perf_counter()
                if len(group) > 1:
                    self._run_group(group)
                else:
                    self._run_alone(group[0])
                self._durations.append((time.perf_counter() - started) / len(group))
                self.completed += len(group)
            finally:
                with self._lock:
                    self._running = None
                    self._group = []

    @staticmethod
    def _run_alone(job: Job) -> None:
        try:
            value = job.fn(job)
        except BaseException as exc:  # delivered to the waiting client, never kills the worker
            job.future.set_exception(exc)
        else:
            job.future.set_result(value)

    def _run_group(self, group: list[Job]) -> None:
        try:
            values = self._run_together(group)
        except Exception as exc:  # e.g. one bad job: each runs alone and gets its own answer
            log.info("jobs %s could not run together (%s); running them one by one",
                     ", ".join(str(job.id) for job in group), exc)
            for job in group:
                self._running = job
                self._group = [job]
                self._run_alone(job)
            return
        self.batches += 1
        self.batched_jobs += len(group)
        for job, value in zip(group, values):
            job.future.set_result(value)


def _interrupt_all(jobs: list[Job]) -> None:
    for job in jobs:
        job.interrupt()
