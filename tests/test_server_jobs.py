"""The job queue on its own: order, bound, dropping jobs of departed clients, interrupt, skip, shutdown."""

import threading
import time

import pytest

from img2img.errors import Interrupted
from img2img.server.jobs import JobDropped, JobQueue, QueueFull, ShuttingDown

pytestmark = pytest.mark.timeout(30)


def blocker():
    """A job that holds the worker until released, and an event set once it is running."""
    started, release = threading.Event(), threading.Event()

    def work(job):
        started.set()
        assert release.wait(10)
        return "released"

    return work, started, release


def test_jobs_run_in_order_and_return_values():
    queue = JobQueue(max_waiting=8)
    order = []
    jobs = [queue.submit(lambda job, i=i: order.append(i) or i * 10) for i in range(5)]
    assert [job.future.result(5) for job in jobs] == [0, 10, 20, 30, 40]
    assert order == [0, 1, 2, 3, 4]
    assert queue.depth == 0 and queue.completed == 5
    queue.shutdown(wait=True, timeout=5)


def test_full_queue_refuses_with_retry_after():
    queue = JobQueue(max_waiting=1)
    work, started, release = blocker()
    running = queue.submit(work)
    assert started.wait(5)
    waiting = queue.submit(lambda job: "second")
    assert queue.depth == 2 and queue.waiting == 1
    with pytest.raises(QueueFull) as caught:
        queue.submit(lambda job: "third")
    assert caught.value.retry_after >= 1
    release.set()
    assert running.future.result(5) == "released" and waiting.future.result(5) == "second"
    queue.shutdown(wait=True, timeout=5)


def test_job_of_a_departed_client_is_dropped_before_it_starts():
    queue = JobQueue()
    work, started, release = blocker()
    queue.submit(work)
    assert started.wait(5)
    ran = []
    gone = queue.submit(lambda job: ran.append(1), client_gone=lambda: True)
    cancelled = queue.submit(lambda job: ran.append(2))
    assert queue.cancel(cancelled)
    release.set()
    with pytest.raises(JobDropped):
        gone.future.result(5)
    with pytest.raises(JobDropped):
        cancelled.future.result(5)
    assert ran == [] and queue.dropped == 2
    queue.shutdown(wait=True, timeout=5)


def steps_job(steps=None, parts=1, gate=None):
    """A fake generation: `parts` runs of `steps` steps (None: endless, until interrupted), reporting progress
    like the engine does. With a gate (step, reached, release), the first part stops after that step until
    released: the test acts while the job is certainly running, at a known step."""

    def work(job):
        finished = []
        for part in range(parts):
            if job.interrupted:
                break
            job.start_part(part, parts)
            try:
                step = 0
                while steps is None or step < steps:
                    step += 1
                    job.on_step(step, steps or 10**9, None)
                    if gate and part == 0 and step == gate[0]:
                        gate[1].set()
                        assert gate[2].wait(10)
                    time.sleep(0.001)
                finished.append(part)
            except Interrupted:
                if job.interrupted:
                    break
        return finished

    return work


def gate_at(step):
    return step, threading.Event(), threading.Event()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_interrupt_stops_the_running_job_and_progress_is_reported():
    queue = JobQueue()
    gate = gate_at(3)
    job = queue.submit(steps_job(steps=400, parts=3, gate=gate), label="fake")
    assert gate[1].wait(10)
    snapshot = queue.progress()
    assert snapshot.label == "fake" and (snapshot.step, snapshot.total, snapshot.part, snapshot.parts) == (3, 400, 0, 3)
    assert snapshot.fraction == pytest.approx(3 / 400 / 3)
    assert queue.interrupt()
    gate[2].set()
    assert job.future.result(5) == []
    assert queue.progress().job_id is None and not queue.interrupt()
    queue.shutdown(wait=True, timeout=5)


def test_skip_abandons_only_the_current_part():
    queue = JobQueue()
    gate = gate_at(3)
    job = queue.submit(steps_job(steps=20, parts=2, gate=gate))
    assert gate[1].wait(10)
    assert queue.progress().part == 0
    assert queue.skip()
    gate[2].set()
    assert job.future.result(10) == [1]
    queue.shutdown(wait=True, timeout=5)


def test_errors_reach_the_client_and_the_worker_survives():
    queue = JobQueue()

    def boom(job):
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        queue.submit(boom).future.result(5)
    assert queue.submit(lambda job: "alive").future.result(5) == "alive"
    queue.shutdown(wait=True, timeout=5)


def test_shutdown_fails_waiting_jobs_refuses_new_ones_and_interrupts_after_grace():
    queue = JobQueue()
    running = queue.submit(steps_job())  # endless: only an interrupt ends it
    wait_for(lambda: queue.progress().step > 0)
    waiting = queue.submit(lambda job: "never")
    queue.shutdown(grace=0.2)
    with pytest.raises(ShuttingDown):
        waiting.future.result(5)
    with pytest.raises(ShuttingDown):
        queue.submit(lambda job: "late")
    assert running.future.result(5) == []  # interrupted after the grace period
    queue.shutdown(wait=True, timeout=5)
    assert not queue._worker.is_alive()


# ---------------------------------------------------------------- micro-batching (serve --max-batch)

def grouping_queue(max_batch=4, batch_wait=0.0, fail=False):
    """A queue whose shared calls are recorded: each returns ("together", payload) per job, or fails."""
    calls = []

    def run_together(jobs):
        calls.append([job.together.payload for job in jobs])
        if fail:
            raise RuntimeError("the shared call failed")
        return [("together", job.together.payload) for job in jobs]

    return JobQueue(max_waiting=16, max_batch=max_batch, batch_wait=batch_wait, run_together=run_together), calls


def test_waiting_jobs_with_one_key_run_as_one_call_up_to_max_batch_images():
    from img2img.server.jobs import Together

    queue, calls = grouping_queue(max_batch=4)
    work, started, release = blocker()
    queue.submit(work)
    assert started.wait(5)
    specs = [("a", 1, "a1"), ("b", 1, "b1"), ("a", 2, "a2"), ("a", 2, "a3"), (None, 1, "alone"), ("a", 1, "a4")]
    jobs = [queue.submit(lambda job, p=payload: ("alone", p),
                         together=None if key is None else Together(key, images, payload))
            for key, images, payload in specs]
    release.set()
    answers = [job.future.result(5) for job in jobs]
    # the head "a" job takes the "a" jobs that fit its 4 images (1 + 2 + 1), in queue order; "a3" (2 more) waits
    assert calls[0] == ["a1", "a2", "a4"]
    assert answers[0] == ("together", "a1") and answers[2] == ("together", "a2") and answers[5] == ("together", "a4")
    assert answers[1] == ("alone", "b1")  # a key of its own and no company: its own function
    assert answers[3] == ("alone", "a3") and answers[4] == ("alone", "alone")
    assert len(calls) == 1 and queue.batches == 1 and queue.batched_jobs == 3 and queue.completed == 7
    queue.shutdown(wait=True, timeout=5)


def test_the_head_job_waits_batch_wait_for_company():
    from img2img.server.jobs import Together

    queue, calls = grouping_queue(max_batch=2, batch_wait=5.0)
    first = queue.submit(lambda job: ("alone", 1), together=Together("k", 1, 1))
    wait_for(lambda: queue.running is not None)  # waiting for company, not yet run
    assert not first.future.done()
    second = queue.submit(lambda job: ("alone", 2), together=Together("k", 1, 2))
    assert first.future.result(5) == ("together", 1) and second.future.result(5) == ("together", 2)
    assert calls == [[1, 2]]  # the second job arrived within the wait and filled the call at once
    queue.shutdown(wait=True, timeout=5)


def test_a_failed_shared_call_runs_each_job_alone_with_its_own_answer():
    from img2img.server.jobs import Together

    queue, calls = grouping_queue(fail=True)
    work, started, release = blocker()
    queue.submit(work)
    assert started.wait(5)

    def bad(job):
        raise ValueError("this job's own error")

    good = queue.submit(lambda job: "good alone", together=Together("k", 1, "good"))
    broken = queue.submit(bad, together=Together("k", 1, "bad"))
    release.set()
    assert good.future.result(5) == "good alone"
    with pytest.raises(ValueError, match="own error"):
        broken.future.result(5)
    assert calls == [["good", "bad"]] and queue.batches == 0
    queue.shutdown(wait=True, timeout=5)


def test_interrupt_and_shutdown_reach_every_job_of_a_shared_call():
    from img2img.server.jobs import Together

    inside = threading.Event()

    def run_together(jobs):
        inside.set()
        wait_for(lambda: all(job.interrupted for job in jobs), timeout=10)
        return [None for _ in jobs]

    queue = JobQueue(max_waiting=8, max_batch=4, run_together=run_together)
    work, started, release = blocker()
    queue.submit(work)
    assert started.wait(5)
    jobs = [queue.submit(lambda job: "alone", together=Together("k", 1, i)) for i in range(3)]
    release.set()
    assert inside.wait(5)
    queue.shutdown(grace=0.1)  # interrupts the whole call, not only its first job
    assert [job.future.result(15) for job in jobs] == [None, None, None]
    assert all(job.interrupted for job in jobs)
    queue.shutdown(wait=True, timeout=5)
