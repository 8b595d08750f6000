"""`img2img serve` started as users start it, with its flags, and the native multipart API over its socket.

One exposed server runs for most of this module: all interfaces, an API key given by flag plus Basic auth,
two models, API only, a queue of one, a CORS origin, small limits and a short shutdown grace. Each flag's
effect is checked on it; the last test stops it with SIGTERM. The native form fields are sent to it with
inputs where a dropped or swapped value shows: a non-square picture, a transparent one, a second model.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import signal
import threading

import httpx
import numpy as np
import pytest
from helpers import ServeProcess, wait_for
from PIL import Image

from img2img.images import read_infotext
from img2img.infotext import parse_infotext
from img2img.testing import make_photo

pytestmark = pytest.mark.timeout(300)

KEY = "Serve-Key-4f9A"  # mixed case: the same letters in another case must not pass
ORIGIN = "https://app.example"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def served(tiny_sd, tiny_sd_b, tmp_path_factory):
    server = ServeProcess(tmp_path_factory.mktemp("serve-exposed"), "--host", "0.0.0.0", "--api-key", KEY,
                          "--api-auth", "ann:pw", "--model", str(tiny_sd), "--models", str(tiny_sd_b), "--no-ui",
                          "--max-queue", "1", "--cors-origin", ORIGIN, "--max-pixels", "12000", "--max-body-mb", "1",
                          "--shutdown-grace", "1", "--log-level", "warning",
                          headers={"Authorization": f"Bearer {KEY}"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def photo(photo_path) -> bytes:
    return photo_path.read_bytes()  # 96x64


def native(server, image: bytes, **fields) -> httpx.Response:
    return httpx.post(server.url + "/v1/img2img", files={"image": ("in.png", image, "image/png")},
                      data={key: str(value) for key, value in fields.items()}, headers=server.headers, timeout=120)


def generated(response: httpx.Response) -> tuple[Image.Image, dict[str, str], str]:
    """(image, infotext parameters, negative prompt) of a PNG answer."""
    assert response.status_code == 200, response.text
    _, negative, params = parse_infotext(read_infotext(response.content))
    return Image.open(io.BytesIO(response.content)), params, negative


def a1111(server, image: bytes, **fields) -> httpx.Response:
    body = {"init_images": [base64.b64encode(image).decode()], "prompt": "x", **fields}
    return httpx.post(server.url + "/sdapi/v1/img2img", json=body, headers=server.headers, timeout=120)


def unet_hash(folder) -> str:
    return hashlib.sha256((folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()[:10]


BASE = {"prompt": "a harbour", "seed": 4, "steps": 2, "strength": 0.5}  # one denoising step


# ------------------------------------------------------------------------------------ the flags, one by one


def test_listening_line_names_the_real_port_and_the_settings(served):
    line = next(line for line in served.log().splitlines() if "listening on" in line)
    assert f"http://0.0.0.0:{served.port};" in line and "auth: on" in line and "API docs at /docs" in line
    assert "web UI" not in line  # --no-ui


def test_api_key_flag_and_basic_auth_both_work_and_letter_case_matters(served):
    health = served.url + "/v1/health"
    assert httpx.get(health).status_code == 401
    assert httpx.get(health, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(health, headers=basic("ann", "pw")).status_code == 200
    for wrong in ({"Authorization": f"Bearer {KEY.lower()}"}, {"Authorization": f"Bearer {KEY.upper()}"},
                  {"Authorization": f"Bearer {KEY.swapcase()}"}, {"Authorization": f"bearer {KEY}x"},
                  basic("Ann", "pw"), basic("ann", "PW")):
        assert httpx.get(health, headers=wrong).status_code == 401, wrong


def test_models_flag_offers_both_models_and_no_others(served, photo):
    listed = httpx.get(served.url + "/v1/models", headers=served.headers).json()
    assert listed["current"] == "tiny-sd" and [m["name"] for m in listed["models"]] == ["tiny-sd", "tiny-sd-b"]
    refused = native(served, photo, model="sd15", **BASE)
    assert refused.status_code == 422 and "not one this server offers (tiny-sd" in refused.json()["detail"]


def test_no_ui_serves_the_apis_only(served):
    assert httpx.get(served.url + "/", headers=served.headers).status_code == 404
    assert httpx.get(served.url + "/config", headers=served.headers).status_code == 404
    assert httpx.get(served.url + "/docs", headers=served.headers).status_code == 200


def test_cors_origin_is_allowed_and_no_other(served):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(served.url + "/sdapi/v1/interrupt", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(served.url + "/sdapi/v1/interrupt", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    allowed_post = httpx.post(served.url + "/sdapi/v1/interrupt", headers={"Origin": ORIGIN, **served.headers})
    assert allowed_post.status_code == 200
    assert httpx.post(served.url + "/sdapi/v1/interrupt",
                      headers={"Origin": "https://evil.example", **served.headers}).status_code == 403


def test_max_pixels_and_max_body_flags(served):
    over = native(served, png(make_photo(120, 120)), **BASE)  # 14,400 pixels > --max-pixels 12000
    assert over.status_code == 413 and "over this server's limit of 12,000" in over.json()["detail"]
    assert native(served, png(make_photo(100, 100)), **BASE).status_code == 200  # 10,000: under it
    big = httpx.post(served.url + "/v1/img2img", headers=served.headers, timeout=60,
                     files={"image": ("big.png", b"\x89PNG" + b"\0" * 1_200_000, "image/png")}, data={"prompt": "x"})
    assert big.status_code == 413 and "--max-body-mb" in big.json()["detail"]


# ------------------------------------------------------------------------------- native form fields


def test_negative_prompt_reaches_the_pixels_and_the_metadata(served, photo):
    plain, _, negative = generated(native(served, photo, **BASE))
    fog, _, fog_negative = generated(native(served, photo, negative_prompt="fog", **BASE))
    assert (negative, fog_negative) == ("", "fog") and plain.tobytes() != fog.tobytes()


def test_scheduler_reaches_the_pixels_and_the_metadata(served, photo):
    images = {}
    for schedule in ("Karras", "Exponential"):
        # 6 steps: with 2, both schedules are just [sigma_max, sigma_min] and agree
        image, params, _ = generated(native(served, photo, sampler="Euler", scheduler=schedule, **{**BASE, "steps": 6}))
        assert (params["Sampler"], params["Schedule type"]) == ("Euler", schedule)
        images[schedule] = image.tobytes()
    assert images["Karras"] != images["Exponential"]


@pytest.mark.parametrize("fields, size", [({"width": 64, "height": 48}, (64, 48)), ({"width": 48}, (48, 32)),
                                          ({"height": 48}, (72, 48))])
def test_width_and_height(served, photo, fields, size):
    image, params, _ = generated(native(served, photo, **fields, **BASE))
    assert image.size == size and params["Size"] == f"{size[0]}x{size[1]}"


def test_resize_modes_differ_and_match_the_a1111_numbers(served, photo):
    """The A1111 route's modes are checked against a hand-made expectation elsewhere; here the native names
    must give the same bytes as A1111's numbers 0, 1, 2 on the same server."""
    outputs = set()
    for name, number in (("stretch", 0), ("crop", 1), ("fill", 2)):
        image, params, _ = generated(native(served, photo, width=48, height=64, resize_mode=name, cfg_scale=7,
                                            sampler="DPM++ 2M", **BASE))
        assert params["Resize mode"] == name and image.size == (48, 64)
        answer = a1111(served, photo, prompt="a harbour", seed=4, steps=2, denoising_strength=0.5, cfg_scale=7,
                       sampler_name="DPM++ 2M", width=48, height=64, resize_mode=number)
        assert answer.status_code == 200, answer.text
        same = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
        assert same.tobytes() == image.tobytes(), name
        outputs.add(image.tobytes())
    assert len(outputs) == 3


def test_keep_size_gives_back_the_input_size(served, photo):
    kept, params, _ = generated(native(served, photo, keep_size="true", **BASE))
    assert kept.size == (96, 64) and params["Size"] == "80x56" and params["Keep size"] == "True"
    plain, plain_params, _ = generated(native(served, photo, keep_size="false", **BASE))
    assert plain.size == (80, 56) and "Keep size" not in plain_params


def test_background_fills_transparency_and_is_recorded(served):
    rgba = np.asarray(make_photo(64, 64, seed=5).convert("RGBA")).copy()
    rgba[:, :32, 3] = 0  # the left half fully transparent, the right half opaque
    data = png(Image.fromarray(rgba, "RGBA"))
    expected = rgba[:, :, :3].copy()
    expected[:, :32] = (255, 0, 0)  # what the left half must become on a red background
    red, params, _ = generated(native(served, data, background="#ff0000", **BASE))
    white, white_params, _ = generated(native(served, data, **BASE))
    assert params["Background"] == "#ff0000" and "Background" not in white_params
    assert params["Init image hash"] == hashlib.sha256(expected.tobytes()).hexdigest()[:10]
    expected[:, :32] = 255
    assert white_params["Init image hash"] == hashlib.sha256(expected.tobytes()).hexdigest()[:10]
    assert red.tobytes() != white.tobytes()


def test_model_field_picks_the_second_model(served, photo, tiny_sd, tiny_sd_b):
    default = native(served, photo, **BASE)
    other = native(served, photo, model="tiny-sd-b", **BASE)
    first, first_params, _ = generated(default)
    second, params, _ = generated(other)
    assert other.headers["x-model"] == "tiny-sd-b" and default.headers["x-model"] == "tiny-sd"
    assert params["Model"] == "tiny-sd-b" and params["Model hash"] == unet_hash(tiny_sd_b)
    assert first_params["Model hash"] == unet_hash(tiny_sd)
    assert first.tobytes() != second.tobytes()
    assert httpx.get(served.url + "/v1/models", headers=served.headers).json()["current"] == "tiny-sd"  # not sticky


# --------------------------------------------------------------------------- queue bound and shutdown grace


def long_job(served, photo, box: dict) -> threading.Thread:
    """An A1111 job far longer than any test step (4 images x 500 steps), answered into box["answer"]."""
    def call():
        box["answer"] = a1111(served, photo, steps=500, batch_size=4, denoising_strength=1.0, width=64, height=64)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    wait_for(lambda: httpx.get(served.url + "/sdapi/v1/progress",
                               headers=served.headers).json()["state"]["sampling_step"] > 0, timeout=120)
    return thread


def test_max_queue_one_refuses_the_second_waiting_job(served, photo):
    running_box, waiting_box = {}, {}
    running = long_job(served, photo, running_box)
    waiting = threading.Thread(target=lambda: waiting_box.setdefault("answer", native(served, photo, **BASE)))
    waiting.start()
    wait_for(lambda: served.health()["queue"]["waiting"] == 1)
    refused = native(served, photo, **BASE)
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert "queue is full" in refused.json()["detail"]
    assert httpx.post(served.url + "/sdapi/v1/interrupt", headers=served.headers).status_code == 200
    running.join(120)
    waiting.join(120)
    info = json.loads(running_box["answer"].json()["info"])
    assert info["interrupted"] is True and running_box["answer"].json()["images"] == []
    assert waiting_box["answer"].status_code == 200


def test_sigterm_interrupts_the_running_job_after_the_grace_and_exits_0(served, photo):
    """Last in the module: it stops the server. The job would take far longer than --shutdown-grace 1."""
    box = {}
    running = long_job(served, photo, box)
    served.process.send_signal(signal.SIGTERM)
    running.join(120)
    assert served.process.wait(60) == 0
    answer = box["answer"]
    assert answer.status_code == 200 and json.loads(answer.json()["info"])["interrupted"] is True


# ------------------------------------------------------------------------- an open server on all interfaces


def test_insecure_serves_all_interfaces_without_auth_lazily_and_checks_host_names(tiny_sd, tmp_path, square_path):
    history = tmp_path / "kept"
    server = ServeProcess(tmp_path / "serve-open", "--host", "0.0.0.0", "--insecure", "--model", str(tiny_sd), "--lazy",
                          "--no-ui", "--allowed-host", "img2img.lan", "--history-dir", str(history))
    try:
        line = next(line for line in server.log().splitlines() if "listening on" in line)
        assert "auth: off" in line and "model loading: on first use" in line
        health = httpx.get(server.url + "/v1/health").json()  # no credentials needed
        assert health["load_policy"] == "on first use" and health["model_state"] == "not loaded"
        assert httpx.get(server.url + "/v1/health", headers={"Host": f"img2img.lan:{server.port}"}).status_code == 200
        assert httpx.get(server.url + "/v1/health", headers={"Host": "evil.example"}).status_code == 400
        kept = native(server, square_path.read_bytes(), save="true", **BASE)
        assert kept.status_code == 200 and httpx.get(server.url + "/v1/health").json()["model_loaded"]
        (saved,) = (history / "images").rglob("*.png")  # --history-dir: where save=true keeps results
        assert read_infotext(saved) == read_infotext(kept.content)
    finally:
        assert server.stop() == 0


# ------------------------------------------------------------------- every flag reaches the settings


def test_every_flag_reaches_the_server_settings(monkeypatch, tmp_path, capsys):
    """Parsing only (run_server replaced): each flag lands in its own setting, none swapped or dropped."""
    from img2img.cli import main
    from img2img.server import runner
    from img2img.server.config import ServerConfig

    seen = {}

    def fake_run_server(config, log_level, announce):
        seen.update(config=config, log_level=log_level)
        announce("http://[::1]:5555")

    monkeypatch.setattr(runner, "run_server", fake_run_server)
    monkeypatch.delenv("IMG2IMG_API_KEY", raising=False)
    monkeypatch.delenv("IMG2IMG_HISTORY_DIR", raising=False)
    args = ["serve", "--host", "::1", "--port", "0", "-m", "sd15", "--model", "./a", "--models", "sd-turbo, ./b",
            "--device", "cpu", "--dtype", "float32", "--api-key", "k1", "--api-key", "k2", "--api-auth", "u:p,v:q",
            "--insecure", "--max-queue", "3", "--max-pixels", "1000", "--max-body-mb", "2.5", "--cors-origin",
            "https://a.example", "--cors-origin", "http://b.example:81", "--allowed-host", "img2img.lan",
            "--max-connections", "9", "--client-timeout", "4.5", "--upload-cache-mb", "77", "--lazy",
            "--no-safety-checker", "--shutdown-grace", "7", "--no-ui", "--history-dir", str(tmp_path / "h"),
            "--lora-dir", str(tmp_path / "l"), "--embeddings-dir", str(tmp_path / "e"), "--styles-file",
            str(tmp_path / "s.csv"), "--log-level", "debug"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    expected = ServerConfig(
        models=["sd15", "./a", "sd-turbo", "./b"], host="::1", port=0, device="cpu", dtype="float32",
        safety_checker=False, api_keys=["k1", "k2"], api_auth=[("u", "p"), ("v", "q")], insecure=True, max_queue=3,
        max_pixels=1000, max_body_mb=2.5, cors_origins=["https://a.example", "http://b.example:81"],
        allowed_hosts=["img2img.lan"], max_connections=9, client_timeout=4.5, upload_cache_mb=77.0, preload=False,
        shutdown_grace=7.0, ui=False, history_dir=str(tmp_path / "h"), lora_dir=str(tmp_path / "l"),
        embeddings_dir=str(tmp_path / "e"), styles_file=str(tmp_path / "s.csv"))
    assert seen["config"] == expected and seen["log_level"] == "debug"
    err = capsys.readouterr().err
    assert "img2img server: listening on http://[::1]:5555; API docs at /docs; models: sd15, ./a, sd-turbo, ./b; " \
           "auth: on; model loading: on first use" in err

    # the environment stands in for the secrets, and defaults are the documented ones
    monkeypatch.setenv("IMG2IMG_API_KEY", "from-env")
    monkeypatch.setenv("IMG2IMG_API_AUTH", "w:x")
    with pytest.raises(SystemExit):
        main(["serve"])
    config = seen["config"]
    assert (config.api_keys, config.api_auth) == (["from-env"], [("w", "x")])
    assert (config.host, config.port, config.max_queue, config.max_pixels, config.max_body_mb, config.shutdown_grace,
            config.max_connections, config.client_timeout, config.preload, config.ui, config.models) == \
        ("127.0.0.1", 7860, 8, 16_777_216, 50.0, 30.0, 256, 15.0, True, True, [])
    assert "web UI at http://[::1]:5555/" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--max-queue", "-1"], "--max-queue must be 0 or more, got -1"),
    (["--max-pixels", "0"], "--max-pixels must be between 1 and 100000000"),
    (["--max-body-mb", "0"], "--max-body-mb must be in (0, 1024]"),
    (["--api-auth", "nopassword"], "--api-auth expects user:password"),
    (["--api-key", ""], "--api-key must not be empty"),
    (["--port", "70000"], "--port must be between 0 and 65535"),
    (["--host", "192.168.1.5"], "refusing to listen on 192.168.1.5 without authentication"),
])
def test_bad_flags_are_one_line_and_exit_2(monkeypatch, capsys, args, message):
    from img2img.cli import main
    from img2img.server import runner

    monkeypatch.setattr(runner, "run_server", lambda *a, **k: pytest.fail("must not start"))
    monkeypatch.delenv("IMG2IMG_API_KEY", raising=False)
    monkeypatch.delenv("IMG2IMG_API_AUTH", raising=False)
    with pytest.raises(SystemExit) as done:
        main(["serve", *args])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1
