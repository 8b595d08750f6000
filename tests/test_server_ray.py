"""`serve --engine ray`: the same server with jobs on Ray Serve replicas (a private local Ray, CPU, tiny model).

One Ray-backed server (2 replicas x 1 thread) is shared by the whole module: Ray's start-up is slow.
"""

import base64
import io
import json
import threading
import time

import httpx
import pytest
from helpers import wait_for
from PIL import Image

from img2img.server.config import ServerConfig
from img2img.server.runner import ServerThread
from img2img.testing import make_photo

pytest.importorskip("ray.serve")

KEY = "ray-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_PIXELS = 96 * 64


def photo_b64(width=96, height=64) -> str:
    buffer = io.BytesIO()
    make_photo(width, height).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def payload(seed: int, steps: int = 6, **more) -> dict:
    # Non-square input and output: a swapped side would show.
    return {"prompt": "a lighthouse at dusk", "init_images": [photo_b64()], "steps": steps, "seed": seed,
            "width": 64, "height": 48, "denoising_strength": 0.8, **more}


def post_all(url: str, bodies: list[dict], headers=AUTH) -> list[httpx.Response]:
    answers: list = [None] * len(bodies)

    def send(index):
        answers[index] = httpx.post(url + "/sdapi/v1/img2img", json=bodies[index], headers=headers, timeout=240)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # submission order = body order
    for thread in threads:
        thread.join()
    return answers


def health(server) -> dict:
    return httpx.get(server.url + "/v1/health", headers=AUTH, timeout=30).json()


@pytest.fixture(scope="module")
def ray_server(tiny_sd, folders):
    import torch

    threads = torch.get_num_threads()  # the front's engine settings apply to this test process too
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, engine="ray", replicas=2, cpu_threads=1,
                          api_keys=[KEY], max_queue=2, max_pixels=MAX_PIXELS,
                          embeddings_dir=str(folders / "embeddings"))
    with ServerThread(config) as server:
        wait_for(lambda: health(server)["replicas"]["running"] == 2, timeout=300, interval=0.5)
        yield server
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_answers(tiny_sd):
    """The local engine's answers (same thread count) for the seeds the parity tests use."""
    import torch

    threads = torch.get_num_threads()
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, cpu_threads=1)
    with ServerThread(config) as server:
        answers = {seed: httpx.post(server.url + "/sdapi/v1/img2img", json=payload(seed), timeout=120).json()
                   for seed in (11, 12, 13, 14)}
    torch.set_num_threads(threads)
    return answers


def test_two_replicas_answer_the_local_engines_bytes(ray_server, local_answers):
    answers = post_all(ray_server.url, [payload(seed) for seed in (11, 12, 13, 14)])
    assert [a.status_code for a in answers] == [200] * 4, [a.text[:200] for a in answers]
    for seed, answer in zip((11, 12, 13, 14), answers):
        body = answer.json()
        assert body["images"] == local_answers[seed]["images"], f"seed {seed}: pixels differ from the local engine"
        assert json.loads(body["info"])["infotexts"] == json.loads(local_answers[seed]["info"])["infotexts"]
        assert Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).size == (64, 48)
    # four jobs at once on two replicas that take one job each: both replicas did work
    by_replica = health(ray_server)["queue"]["completed_by_replica"]
    assert len(by_replica) == 2 and all(count >= 1 for count in by_replica.values()), by_replica


def test_embeddings_are_listed_by_a_replica(ray_server):
    # the front loads no model: a replica reads the folder against the text encoders it holds
    embeddings = httpx.get(ray_server.url + "/sdapi/v1/embeddings", headers=AUTH, timeout=120).json()
    assert sorted(embeddings["loaded"]) == ["fuzzy", "legacy"] and sorted(embeddings["skipped"]) == ["xlemb"]
    assert embeddings["loaded"]["fuzzy"]["vectors"] == 3


def test_auth_limits_and_backpressure_hold_on_the_ray_path(ray_server):
    url = ray_server.url
    assert httpx.post(url + "/sdapi/v1/img2img", json=payload(1), timeout=30).status_code == 401
    wrong = httpx.post(url + "/sdapi/v1/img2img", json=payload(1), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    too_big = httpx.post(url + "/sdapi/v1/img2img", json={**payload(1), "init_images": [photo_b64(100, 100)]},
                         headers=AUTH, timeout=30)
    assert too_big.status_code == 413 and "10,000 pixels" in too_big.json()["detail"]
    # 2 replicas x 1 running job + 2 waiting (--max-queue 2): of six slow jobs at once, two are refused
    answers = post_all(url, [payload(20 + i, steps=24) for i in range(6)])
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 200, 200, 503, 503], [a.text[:200] for a in answers]
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.json()["error"] == "QueueFull" and int(refused.headers["Retry-After"]) >= 1


def test_progress_skip_and_interrupt_reach_the_replica_running_the_job(ray_server):
    url = ray_server.url

    def progress():
        return httpx.get(url + "/sdapi/v1/progress", headers=AUTH, timeout=30).json()

    answers: list = []
    job = threading.Thread(target=lambda: answers.extend(post_all(url, [payload(40, steps=30, n_iter=3)])))
    job.start()
    wait_for(lambda: progress()["state"]["sampling_step"] >= 1, timeout=120, interval=0.1)
    state = progress()["state"]
    assert state["job_count"] == 3 and state["job_no"] == 0 and state["sampling_steps"] == 24
    httpx.post(url + "/sdapi/v1/skip", headers=AUTH)  # drops part 1 of 3, the job goes on
    wait_for(lambda: progress()["state"]["job_no"] == 1 and progress()["state"]["sampling_step"] >= 1,
             timeout=120, interval=0.1)
    httpx.post(url + "/sdapi/v1/interrupt", headers=AUTH)  # ends the job with what it finished: nothing more
    job.join(240)
    assert answers[0].status_code == 200
    body = answers[0].json()
    info = json.loads(body["info"])
    assert body["images"] == [] and info["interrupted"] is True, "interrupt or skip did not reach the replica"
    assert "interrupted: 0 of 3 images finished" in info["notices"] and "skipped 1 of 3 batches" in info["notices"]
    assert progress()["state"]["job"] == ""  # nothing runs any more


def test_a_killed_replica_loses_no_request_and_is_replaced(ray_server, local_answers):
    import ray

    bodies = [payload(seed, steps=6) for seed in (11, 12, 13)]
    slow = payload(11, steps=60)
    answers: list = []
    clients = threading.Thread(target=lambda: answers.extend(post_all(ray_server.url, [slow] + bodies)))
    clients.start()

    def running_replica():
        job = ray_server.service.queue.running
        return job.progress.replica if job is not None and job.progress.step >= 1 else None

    victim = wait_for(running_replica, timeout=120, interval=0.05)
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    clients.join(240)
    assert [a.status_code for a in answers] == [200] * 4, [a.text[:200] for a in answers]
    for seed, answer in zip((11, 12, 13), answers[1:]):
        assert answer.json()["images"] == local_answers[seed]["images"]
    # the killed job, run again on the other replica
    assert json.loads(answers[0].json()["info"])["all_seeds"] == [11] and len(answers[0].json()["images"]) == 1
    # Serve starts a new replica in the dead one's place
    wait_for(lambda: health(ray_server)["replicas"]["running"] == 2, timeout=180, interval=0.5)
    again = httpx.post(ray_server.url + "/sdapi/v1/img2img", json=bodies[0], headers=AUTH, timeout=120)
    assert again.status_code == 200 and again.json()["images"] == local_answers[11]["images"]


def run_cli(args, capsys):
    from img2img.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_serve_help_documents_the_ray_options(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(["serve", "--help"], capsys)
    assert code == 0
    for option in ("--engine", "--replicas", "--min-replicas", "--max-replicas", "--ray-address", "--cpu-threads"):
        assert option in out, option


@pytest.mark.parametrize("args, message", [
    (["--replicas", "2"], "--replicas needs --engine ray"),
    (["--ray-address", "auto"], "--ray-address needs --engine ray"),
    (["--engine", "dask"], "--engine must be one of local, ray"),
    (["--engine", "ray", "--replicas", "3", "--max-replicas", "2"], "--replicas 3 must lie between"),
    (["--engine", "ray", "--replicas", "0"], "--replicas must be between 1 and"),
])
def test_bad_ray_options_are_one_line_errors(args, message, capsys):
    code, _, err = run_cli(["serve", *args], capsys)
    assert code == 2 and message in err and "Traceback" not in err
