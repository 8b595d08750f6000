"""The front side of `serve --engine ray`: jobs run on Ray Serve replicas (ray_replica.Replica) instead of
this process's worker thread; routes, auth, limits and history stay here.

RayJobQueue has JobQueue's interface, so routes and the web UI do not change: each job gets a thread that
sends it to the deployment and waits for its stream. Ray Serve routes it to a free replica or queues it
(max_ongoing_requests=1 per replica, at most --max-queue waiting; more get 503 with Retry-After). A replica
that dies mid-job is replaced by Serve; its job is sent once more, then answered 503.

Ray is imported only here and in ray_replica, and only when the server runs with --engine ray.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from ..errors import ModelNotAvailable
from .config import ServerConfig
from .jobs import Job, JobDropped, Progress, QueueFull, RunningJobControls, ShuttingDown, WorkerLost

log = logging.getLogger("img2img.server")

DEPLOYMENT = "Replica"
START_TIMEOUT_S = 600  # replicas load the model before they count as started


class RemoteJob(Job):
    """A Job whose interrupt and skip also reach the replica running it (through the Signals actor)."""

    def __init__(self, *args, signals=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.signals = signals
        self.response = None  # the Serve response being streamed, once sent
        self.cancelled = False

    def interrupt(self) -> None:
        super().interrupt()
        if self.signals is not None:
            self.signals.interrupt.remote(self.id)

    def skip(self) -> None:
        super().skip()
        if self.signals is not None:
            self.signals.skip.remote(self.id, self.progress.part)


class RayJobQueue(RunningJobControls):
    """JobQueue's interface over the deployment. A job is waiting until a replica has taken it; "the running
    job" of the A1111 routes is the oldest running one, and interrupt/skip act on every running job (A1111
    runs one job at a time, so its "interrupt" means: stop what is running)."""

    def __init__(self, backend: RayBackend, max_waiting: int):
        self.backend = backend
        self.max_waiting = max_waiting
        self._jobs: list[RemoteJob] = []  # in flight, in submission order
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False
        self._durations: deque[float] = deque(maxlen=20)
        self.completed = 0
        self.dropped = 0
        self.by_replica: Counter = Counter()  # jobs finished, by the replica that answered

    # ---------------------------------------------------------------- client side
    def submit(self, fn: Callable[[Job], Any], *, client_gone: Callable[[], bool] | None = None,
               label: str = "", together=None) -> Job:
        """As JobQueue.submit; every job runs alone on a replica (`together` is always None here)."""
        with self._lock:
            if self._closed:
                raise ShuttingDown("the server is shutting down and accepts no new jobs")
            waiting = sum(1 for job in self._jobs if not job.progress.started)
            free = max(0, self.backend.replicas_at_most - (len(self._jobs) - waiting))
            if waiting >= self.max_waiting + free:
                raise QueueFull(waiting, self.retry_after(waiting))
            job = RemoteJob(next(self._ids), fn, client_gone, label, signals=self.backend.signals)
            self._jobs.append(job)
        thread = threading.Thread(target=self._run, args=(job,), name=f"img2img-job-{job.id}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return job

    @property
    def depth(self) -> int:
        return len(self._jobs)

    @property
    def waiting(self) -> int:
        return sum(1 for job in list(self._jobs) if not job.progress.started)

    @property
    def running(self) -> Job | None:
        return next((job for job in list(self._jobs) if job.progress.started), None)

    def running_jobs(self) -> list[RemoteJob]:
        return [job for job in list(self._jobs) if job.progress.started]

    @property
    def closed(self) -> bool:
        return self._closed

    def progress(self) -> Progress:
        job = self.running
        return job.progress if job is not None else Progress()

    def cancel(self, job: Job) -> bool:
        """Withdraw a job no replica has taken yet; True if it was withdrawn."""
        if job.progress.started or job.future.done() or job not in self._jobs:
            return False
        job.cancelled = True
        if job.response is not None:
            job.response.cancel()
        _fail(job, JobDropped("the job was cancelled before it started"))
        self.dropped += 1
        return True

    def shutdown(self, *, grace: float | None = None, wait: bool = False, timeout: float | None = None) -> None:
        """Stop accepting jobs and withdraw the waiting ones; running jobs may finish for `grace` seconds (None:
        as long as they take), then they are interrupted."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs)
        for job in jobs:
            if not job.progress.started:
                job.cancelled = True
                if job.response is not None:
                    job.response.cancel()
                _fail(job, ShuttingDown("the server is shutting down; the job did not start"))
            elif grace is not None:
                timer = threading.Timer(max(grace, 0), job.interrupt)
                timer.daemon = True
                timer.start()
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            for thread in list(self._threads):
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def retry_after(self, waiting: int) -> int:
        average = sum(self._durations) / len(self._durations) if self._durations else 5.0
        return max(1, round(average * (waiting + 1) / max(1, self.backend.running_replicas(cached=True))))

    # ---------------------------------------------------------------- the job's thread
    def _run(self, job: RemoteJob) -> None:
        started = time.perf_counter()
        try:
            if job.client_gone():
                self.dropped += 1
                raise JobDropped("the client disconnected before the job started")
            self.backend.wait_ready()
            job.signals = self.backend.signals  # made at start-up, which this job may have waited for
            with _FUTURES:
                if job.cancelled or job.future.done():
                    return
                job.future.set_running_or_notify_cancel()
            value = job.fn(job)
        except BaseException as exc:  # delivered to the waiting client
            _fail(job, JobDropped("the job was cancelled before it started") if job.cancelled else exc)
        else:
            with _FUTURES:
                if not job.future.done():
                    job.future.set_result(value)
            self._durations.append(time.perf_counter() - started)
            self.completed += 1
            self.by_replica[job.progress.replica] += 1
        finally:
            with self._lock:
                if job in self._jobs:
                    self._jobs.remove(job)
            if job.signals is not None:
                job.signals.forget.remote(job.id)


_FUTURES = threading.Lock()  # a job's future is started or failed by its thread or by cancel/shutdown


def _fail(job: Job, exc: BaseException) -> None:
    with _FUTURES:
        if job.future.done():
            return
        if not job.future.running():
            job.future.set_running_or_notify_cancel()
        job.future.set_exception(exc)


class RayBackend:
    """Starts (or joins) Ray, deploys the replicas as a Serve application of this front's own, and runs jobs
    on them. Several fronts may share one cluster: each deploys its own application."""

    def __init__(self, config: ServerConfig, specs: list[str]):
        self.config = config
        self.specs = specs
        self.app_name = f"img2img-{os.getpid()}-{secrets.token_hex(3)}"
        self.replicas_at_most = config.replica_bounds[1]
        self.queue = RayJobQueue(self, config.max_queue)
        self.signals = None
        self.handle = None
        self.error: str | None = None
        self._ready = threading.Event()
        self._start_lock = threading.Lock()
        self._started_ray = False
        self._closed = False
        self._stopped = threading.Event()  # set by close(): the thread that owns Ray may end
        self._replica_count = (0, 0.0)  # (running replicas, when counted)

    # ---------------------------------------------------------------- start and stop
    def start_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self._own_ray, name="img2img-ray", daemon=True)
        thread.start()
        return thread

    def _own_ray(self) -> None:
        """Start Ray and stay alive until close(): Ray's local processes are killed when the thread that
        started them ends (they are tied to it by the parent-death signal)."""
        try:
            self.start()
        except Exception as exc:
            log.error("the Ray replicas did not start: %s", exc)
        self._stopped.wait()

    def start(self) -> None:
        with self._start_lock:
            if self._ready.is_set() or self._closed:
                return
            try:
                self._deploy()
            except Exception as exc:
                from ..batch.ray_engine import _root_cause

                self.error = f"{type(_root_cause(exc)).__name__}: {_root_cause(exc)}"
                raise ModelNotAvailable(f"the Ray replicas did not start: {self.error}") from None
            finally:
                self._ready.set()

    def _deploy(self) -> None:
        from ..batch.ray_engine import OBJECT_STORE_BYTES, _import_ray, _quiet_ray

        # Ray's crash handler would take SIGTERM from uvicorn, whose handler drains the queue and exits 0.
        # Ray reads this when it is imported.
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        ray = _import_ray()
        _quiet_ray()
        from ray import serve

        from .ray_replica import Replica, Signals
        from .service import ENGINE_SETTINGS

        config = self.config
        threads = config.cpu_threads or 1
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
            if config.ray_address:
                ray.init(address=config.ray_address, **kwargs)
            else:  # a private local Ray: CPUs for the most replicas there may be (GPUs Ray finds itself)
                ray.init(num_cpus=self.replicas_at_most * threads, object_store_memory=OBJECT_STORE_BYTES, **kwargs)
            self._started_ray = True
        serve.start(proxy_location="Disabled")  # the routes are this process's; Serve's HTTP proxy is unused
        logging.getLogger("ray.serve").setLevel(logging.ERROR)
        self.signals = ray.remote(Signals).options(num_cpus=0).remote()
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1 and config.device not in ("cpu", "mps")
        low, high = config.replica_bounds
        options: dict = dict(
            # The front refuses jobs beyond --max-queue waiting; Serve's own limit has room for the retries of
            # a dead replica's jobs on top.
            max_ongoing_requests=1, max_queued_requests=config.max_queue + self.replicas_at_most,
            ray_actor_options={"num_gpus": 1} if use_gpu else {"num_cpus": threads},
            graceful_shutdown_timeout_s=config.shutdown_grace, health_check_timeout_s=60,
            max_constructor_retry_count=3)  # a replica that cannot load the model fails the start-up soon
        if config.autoscaling:  # Serve's queue-depth autoscaler: about one job per replica, running or waiting
            options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                             "initial_replicas": config.replicas, "target_ongoing_requests": 1}
        else:
            options["num_replicas"] = config.replicas
        settings = {name: getattr(config, name) for name in ENGINE_SETTINGS}  # no keys or passwords
        deployment = serve.deployment(Replica, name=DEPLOYMENT, **options)
        self.handle = serve.run(deployment.bind(settings, self.specs, self.signals), name=self.app_name,
                                route_prefix=None)
        log.info("Ray Serve application %s: %s", self.app_name, self._replica_words())

    def wait_ready(self) -> None:
        if not self._ready.wait(START_TIMEOUT_S):
            raise ModelNotAvailable("the Ray replicas are still starting; retry later")
        if self.handle is None:
            raise ModelNotAvailable(f"the Ray replicas did not start: {self.error or 'the server is stopping'}")

    def close(self, grace: float | None = None) -> None:
        """Delete this front's application; stop Ray if this process started it."""
        self.queue.shutdown(grace=grace, wait=True, timeout=(grace or 0) + 10)
        with self._start_lock:
            self._closed = True
            if self.handle is None and not self._started_ray:
                self._stopped.set()
                return
            import ray
            from ray import serve

            try:
                if self._started_ray:  # the private Ray goes, and everything in it
                    ray.shutdown()
                else:
                    serve.delete(self.app_name)
                    if self.signals is not None:
                        ray.kill(self.signals)
            except Exception as exc:  # shutting down anyway
                log.warning("stopping the Ray replicas: %s", exc)
            self.handle = None
            self._stopped.set()

    def embeddings(self, spec: str) -> dict:
        """The embeddings that fit a model, as a replica that holds it reads them (it waits for a free one)."""
        return self.handle.embeddings.remote(spec).result(timeout_s=300)

    # ---------------------------------------------------------------- running a job
    def generate(self, job: RemoteJob, spec: str, request, image, parts: int, run=None):
        """Run the job on a replica; a replica that dies mid-job costs one retry on another one."""
        import ray

        for attempt in (1, 2):
            try:
                return self._stream(job, spec, request, image, parts, run)
            except (ray.exceptions.RayActorError, ray.serve.exceptions.ReplicaUnavailableError) as exc:
                lost = job.progress.replica or "a replica"
                if attempt == 2 or job.interrupted or self._closed:
                    raise WorkerLost(f"{lost} stopped while running this job, and so did the retry; "
                                     "retry later") from None
                log.warning("%s stopped while running job %s (%s); sending it again", lost, job.id,
                            type(exc).__name__)
                job.progress.step = job.progress.total = 0

    def _stream(self, job: RemoteJob, spec: str, request, image, parts: int, run):
        import ray
        from ray.serve.exceptions import BackPressureError

        response = self.handle.options(stream=True).generate.remote(job.id, spec, request, image, parts, run)
        job.response = response
        progress = job.progress
        try:
            for event in response:
                if "replica" in event:
                    progress.replica = event["replica"]
                    progress.started = progress.started or time.monotonic()
                if "step" in event:
                    progress.part, progress.parts = event["part"], event["parts"]
                    progress.step, progress.total = event["step"], event["total"]
                if "preview" in event:
                    progress.preview = event["preview"]
                if "outcome" in event:
                    return event["outcome"]
        except BackPressureError:
            waiting = self.queue.waiting
            raise QueueFull(waiting, self.queue.retry_after(waiting)) from None
        except ray.exceptions.RayTaskError as exc:  # the replica raised: the route answers for that error
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        raise WorkerLost(f"{progress.replica or 'the replica'} ended the job without an answer")

    # ---------------------------------------------------------------- what /v1/health reports
    def running_replicas(self, cached: bool = False) -> int:
        count, when = self._replica_count
        if cached and time.monotonic() - when < 2:
            return count
        count = 0
        if self.handle is not None:
            try:
                from ray import serve

                status = serve.status().applications[self.app_name].deployments[DEPLOYMENT]
                count = int(status.replica_states.get("RUNNING", 0))
            except Exception:  # Ray is stopping or unreachable: none we can count on
                count = 0
        self._replica_count = (count, time.monotonic())
        return count

    def _replica_words(self) -> str:
        low, high = self.config.replica_bounds
        return f"{low} to {high} replicas, autoscaling" if self.config.autoscaling else f"{high} replicas"

    def health(self, model: str, started: float) -> dict:
        running = self.running_replicas()
        queue = self.queue
        if not self._ready.is_set():
            state = "loading"
        elif self.handle is None:
            state = "failed"
        else:
            state = "loaded" if running else "loading"
        low, high = self.config.replica_bounds
        return {
            "status": "shutting down" if queue.closed else "ok",
            "engine": "ray",
            "model": model,
            "model_state": state,
            "model_loaded": state == "loaded",
            "model_error": self.error,
            "load_policy": "on every replica at start-up",
            "replicas": {"running": running, "min": low, "max": high, "autoscaling": self.config.autoscaling,
                         "application": self.app_name, "cluster": self.config.ray_address or "local"},
            "device": self.config.device or "auto",
            "dtype": self.config.dtype or "auto",
            "queue": {"depth": queue.depth, "waiting": queue.waiting, "running": len(queue.running_jobs()),
                      "max_waiting": queue.max_waiting, "completed": queue.completed, "dropped": queue.dropped,
                      "completed_by_replica": dict(queue.by_replica)},
            "uptime_s": round(time.time() - started, 1),
        }
