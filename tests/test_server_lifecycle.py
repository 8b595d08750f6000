"""The queue seen over HTTP (full -> 503, departed clients dropped), model loading states, and SIGTERM."""

import base64
import json
import signal
import threading

import httpx
import pytest
from helpers import ServeProcess, hold_worker, wait_for

from img2img.server.config import ServerConfig
from img2img.server.runner import ServerThread

pytestmark = pytest.mark.timeout(150)


def payload(square_path, **fields):
    image = base64.b64encode(square_path.read_bytes()).decode()
    return {"prompt": "x", "init_images": [image], "steps": 4, "width": 64, "height": 64, **fields}



@pytest.fixture(scope="module")
def server(tiny_sd):
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, max_queue=1, preload=False)
    with ServerThread(config) as running:
        yield running


def test_lazy_model_loads_on_first_use(server, square_path):
    health = httpx.get(server.url + "/v1/health").json()
    assert health["load_policy"] == "on first use"
    response = httpx.post(server.url + "/sdapi/v1/img2img", json=payload(square_path), timeout=60)
    assert response.status_code == 200
    health = httpx.get(server.url + "/v1/health").json()
    assert health["model_state"] == "loaded" and health["model_loaded"]


def test_full_queue_answers_503_with_retry_after(server, square_path):
    release = hold_worker(server.service)
    waiting = {}
    thread = threading.Thread(target=lambda: waiting.setdefault(
        "response", httpx.post(server.url + "/sdapi/v1/img2img", json=payload(square_path), timeout=60)))
    thread.start()
    try:
        wait_for(lambda: server.service.queue.waiting == 1)
        refused = httpx.post(server.url + "/sdapi/v1/img2img", json=payload(square_path), timeout=30)
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert "queue is full" in refused.json()["detail"]
        assert httpx.get(server.url + "/v1/health").json()["queue"]["depth"] == 2
    finally:
        release.set()
    thread.join(60)
    assert waiting["response"].status_code == 200


def test_job_of_a_client_that_hung_up_is_dropped_before_it_starts(server, square_path):
    release = hold_worker(server.service)
    dropped_before = server.service.queue.dropped
    completed_before = server.service.queue.completed
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/sdapi/v1/img2img", json=payload(square_path), timeout=1.0)
        wait_for(lambda: server.service.queue.dropped == dropped_before + 1)
        assert server.service.queue.waiting == 0
    finally:
        release.set()
    wait_for(lambda: server.service.queue.depth == 0)
    assert server.service.queue.completed == completed_before + 1  # only the holding job ran


def test_sigterm_finishes_the_running_job_refuses_queued_ones_and_exits_0(tiny_sd, square_path, tmp_path):
    server = ServeProcess(tmp_path, "--model", str(tiny_sd), "--no-ui", "--log-level", "warning",
                          "--allow-image-urls")
    url = server.url
    try:
        assert httpx.get(url + "/sdapi/v1/cmd-flags").json()["allow_image_urls"] is True  # the flag reached the app
        results = {}

        def call(name, **fields):
            try:
                results[name] = httpx.post(url + "/sdapi/v1/img2img", json=payload(square_path, **fields), timeout=120)
            except httpx.HTTPError as exc:
                results[name] = exc

        # Long enough (200 steps) that it is still running when the signal comes a moment after it started,
        # short enough to finish well within the default 30 s grace.
        running = threading.Thread(target=call, args=("running",), kwargs={"steps": 200, "denoising_strength": 1.0})
        running.start()
        wait_for(lambda: httpx.get(url + "/sdapi/v1/progress").json()["state"]["sampling_step"] > 0)
        queued = threading.Thread(target=call, args=("queued",))
        queued.start()
        wait_for(lambda: httpx.get(url + "/v1/health").json()["queue"]["waiting"] == 1)
        server.process.send_signal(signal.SIGTERM)
        running.join(120)
        queued.join(120)
        assert server.process.wait(60) == 0
        finished = results["running"]
        assert finished.status_code == 200 and len(finished.json()["images"]) == 1
        assert json.loads(finished.json()["info"])["interrupted"] is False
        assert results["queued"].status_code == 503 and "shutting down" in results["queued"].json()["detail"]
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/v1/health", timeout=2)
    finally:
        server.stop()
