"""The A1111-compatible API on a real uvicorn server, driven by the real `webuiapi` client and raw HTTP."""

import base64
import io
import itertools
import json
import threading
from contextlib import contextmanager

import httpx
import pytest
import webuiapi
from PIL import Image

from img2img.images import read_infotext
from img2img.server.config import ServerConfig
from img2img.server.runner import ServerThread
from img2img.testing import make_photo

pytestmark = pytest.mark.timeout(120)

MAX_PIXELS = 200 * 200
FAST = {"steps": 4, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def server(tiny_sd, tmp_path_factory):
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, max_pixels=MAX_PIXELS, max_body_mb=1,
                          history_dir=str(tmp_path_factory.mktemp("a1111-server-data")))
    with ServerThread(config) as running:
        yield running


@pytest.fixture(scope="module")
def api(server):
    return webuiapi.WebUIApi(host="127.0.0.1", port=server.port)


@pytest.fixture(scope="module")
def picture(square_path):
    return Image.open(square_path).convert("RGB")


def b64(image, prefix=True) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    text = base64.b64encode(buffer.getvalue()).decode()
    return "data:image/png;base64," + text if prefix else text


def post(server, payload, path="/sdapi/v1/img2img", **kwargs):
    return httpx.post(server.url + path, json=payload, timeout=60, **kwargs)


def decoded(response_json, index=0):
    return Image.open(io.BytesIO(base64.b64decode(response_json["images"][index])))


def test_webuiapi_gets_the_same_bytes_as_the_python_api(api, engine, picture, square_path):
    result = api.img2img(images=[picture], prompt="a lighthouse", negative_prompt="fog", seed=42, steps=6,
                         cfg_scale=5.0, denoising_strength=0.6, sampler_name="Euler a", width=64, height=64)
    expected = engine.transform(square_path, "a lighthouse", negative_prompt="fog", seed=42, steps=6, cfg_scale=5.0,
                                strength=0.6, sampler="Euler a", width=64, height=64, resize_mode="stretch")
    assert len(result.images) == 1
    assert result.image.convert("RGB").tobytes() == expected.image.tobytes()
    assert result.image.info["parameters"] == expected.infotexts[0]  # the PNG carries the infotext
    assert result.info["all_seeds"] == [42] and result.info["seed"] == 42
    assert result.info["infotexts"] == expected.infotexts
    assert result.info["sd_model_name"] == "tiny-sd" and result.info["sampler_name"] == "Euler a"
    assert result.parameters["init_images"] is None  # not echoed unless include_init_images


def test_data_prefix_is_optional(server, picture):
    base = {"prompt": "x", "seed": 3, **FAST}
    with_prefix = post(server, {**base, "init_images": [b64(picture)]})
    without = post(server, {**base, "init_images": [b64(picture, prefix=False)]})
    assert with_prefix.status_code == without.status_code == 200
    assert with_prefix.json()["images"] == without.json()["images"]
    assert not with_prefix.json()["images"][0].startswith("data:")


def test_legacy_combined_sampler_names(server, picture):
    base = {"prompt": "x", "seed": 9, "init_images": [b64(picture)], **FAST}
    legacy = post(server, {**base, "sampler_name": "DPM++ 2M Karras"}).json()
    split = post(server, {**base, "sampler_name": "DPM++ 2M", "scheduler": "Karras"}).json()
    index_only = post(server, {**base, "sampler_index": "DPM++ 2M Karras"}).json()
    assert legacy["images"] == split["images"] == index_only["images"]
    info = json.loads(legacy["info"])
    assert (info["sampler_name"], info["scheduler"]) == ("DPM++ 2M", "Karras")
    exponential = post(server, {**base, "sampler_name": "Euler", "scheduler": "exponential"})
    assert exponential.status_code == 200


def test_seed_minus_one_reports_the_seed_used(server, picture):
    first = post(server, {"prompt": "x", "seed": -1, "init_images": [b64(picture)], **FAST}).json()
    info = json.loads(first["info"])
    assert info["seed"] >= 0 and info["all_seeds"] == [info["seed"]]
    again = post(server, {"prompt": "x", "seed": info["seed"], "init_images": [b64(picture)], **FAST}).json()
    assert again["images"] == first["images"]


def test_batch_size_two_gives_consecutive_seeds_and_n_iter_continues(server, picture):
    batch = post(server, {"prompt": "x", "seed": 100, "batch_size": 2, "init_images": [b64(picture)], **FAST}).json()
    info = json.loads(batch["info"])
    assert len(batch["images"]) == 2 and info["all_seeds"] == [100, 101]
    assert batch["images"][0] != batch["images"][1]
    assert [read_infotext(base64.b64decode(i)).count("Seed: 10") for i in batch["images"]] == [1, 1]
    iterations = post(server, {"prompt": "x", "seed": 100, "n_iter": 2, "batch_size": 2,
                               "init_images": [b64(picture)], **FAST}).json()
    assert json.loads(iterations["info"])["all_seeds"] == [100, 101, 102, 103]
    # The second iteration is the batch that starts at seed 102 (a batch is computed together, so compare
    # with a batch of the same size: batched arithmetic may differ from single images in the last bit).
    second = post(server, {"prompt": "x", "seed": 102, "batch_size": 2, "init_images": [b64(picture)],
                           **FAST}).json()
    assert iterations["images"][2:] == second["images"]


def test_seeds_wrap_past_the_largest_seed_across_batches_and_iterations(server, picture):
    # As in the engine and the CLI: 4294967295, then 0, 1, ... (not refused, and every seed valid input again)
    response = post(server, {"prompt": "x", "seed": 4294967295, "n_iter": 2, "batch_size": 2,
                             "init_images": [b64(picture)], **FAST})
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["info"])["all_seeds"] == [4294967295, 0, 1, 2]
    # the second iteration is the batch that starts at seed 1
    second = post(server, {"prompt": "x", "seed": 1, "batch_size": 2, "init_images": [b64(picture)], **FAST})
    assert response.json()["images"][2:] == second.json()["images"]


def test_png_info_round_trip_and_infotext_fills_unset_fields(api, server, picture):
    result = api.img2img(images=[picture], prompt="red boat", negative_prompt="blur", seed=77, steps=5,
                         cfg_scale=4.0, sampler_name="Euler", scheduler="Karras", width=64, height=64)
    info = api.png_info(result.image)
    assert info.info == result.info["infotexts"][0]
    assert info.parameters["Prompt"] == "red boat" and info.parameters["Seed"] == "77"
    # Only the image and the infotext: every generation field comes from the infotext.
    replay = post(server, {"init_images": [b64(picture)], "infotext": info.info}).json()
    assert decoded(replay).tobytes() == result.image.convert("RGB").tobytes()


def test_a_jpeg_answer_too_long_for_its_metadata_keeps_every_parameter_and_says_so(server, picture):
    # Clients may ask for JPEG (samples_format). Its EXIF holds about 32,000 UTF-16 units; two prompts of 10,000
    # emoji (two units each) need 40,000: the file keeps the parameters whole and the prompts shortened, the
    # answer's infotext stays whole, and the notices say what happened.
    prompt, negative = "\U0001F305" * 10_000, "\U0001F327" * 10_000
    answer = post(server, {"prompt": prompt, "negative_prompt": negative, "seed": 5, "init_images": [b64(picture)],
                           "override_settings": {"samples_format": "jpg"}, **FAST})
    assert answer.status_code == 200, answer.text
    image, info = decoded(answer.json()), json.loads(answer.json()["info"])
    assert image.format == "JPEG"
    full, stored = info["infotexts"][0], read_infotext(image)
    assert full.startswith(prompt) and len(stored) < len(full)
    assert stored.splitlines()[-1] == full.splitlines()[-1] and "Seed: 5" in stored.splitlines()[-1]
    assert stored.startswith("\U0001F305" * 100) and "\u2026" in stored  # the prompt cut, ending in an ellipsis
    assert any("too long for JPEG metadata" in notice for notice in info["notices"])


def test_listing_routes(api, server):
    assert api.util_get_model_names() == ["tiny-sd [d122d9ced0]"] or \
        api.util_get_model_names()[0].startswith("tiny-sd")
    samplers = {s["name"] for s in api.get_samplers()}
    assert {"Euler a", "DPM++ 2M", "DDIM"} <= samplers
    assert "karras" in {s["name"] for s in api.get_schedulers()}
    options = api.get_options()
    assert options["sd_model_checkpoint"].startswith("tiny-sd")
    assert api.get_scripts() == {"txt2img": [], "img2img": []}
    assert httpx.post(server.url + "/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd"}).status_code == 200
    refused = httpx.post(server.url + "/sdapi/v1/options", json={"sd_model_checkpoint": "/etc/passwd"})
    assert refused.status_code == 422 and "not one this server offers" in refused.json()["detail"]
    fixed = httpx.post(server.url + "/sdapi/v1/options", json={"randn_source": "GPU"})
    assert fixed.status_code == 422 and "randn_source" in fixed.json()["detail"]


def big_picture():
    return make_photo(240, 240)


@pytest.mark.parametrize("change, status, words", [
    ({"init_images": ["!!not base64!!"]}, 422, "init_images[0]: not valid base64"),
    ({"init_images": [base64.b64encode(b"hello, not an image").decode()]}, 422, "not an image"),
    ({"init_images": ["https://example.com/cat.png"]}, 422, "image URLs are not fetched by this server"),
    ({"init_images": []}, 422, "init_images"),
    ({"denoising_strength": 1.5}, 422, "strength must be in (0, 1], got 1.5"),
    ({"denoising_strength": 0}, 422, "denoising_strength must be in (0, 1], got 0"),
    ({"mask": "aGVsbG8="}, 422, "mask: not an image"),
    ({"restore_faces": True}, 422, "restore_faces: face restoration is not available"),
    ({"subseed_strength": 1.3}, 422, "subseed_strength must be in [0, 1], got 1.3"),
    ({"script_name": "x/y/z plot"}, 422, "script_name"),
    ({"alwayson_scripts": {"controlnet": {"args": []}}}, 422, "alwayson_scripts"),
    ({"width": 8192, "height": 64}, 422, "width must be between 8 and 4096"),
    ({"steps": "many"}, 422, "steps"),
    ({"override_settings": {"sd_model_checkpoint": "sdxl"}}, 422, "not one this server offers"),
    ({"override_settings": {"CLIP_stop_at_last_layers": 20}}, 422, "override_settings.CLIP_stop_at_last_layers"),
])
def test_bad_requests_get_a_clear_4xx(server, picture, change, status, words):
    payload = {"prompt": "x", "init_images": [b64(picture)], **FAST, **change}
    response = post(server, payload)
    assert response.status_code == status, response.text
    body = response.json()
    assert words in body["detail"], body
    assert body["error"]


def test_too_many_pixels_is_413(server):
    response = post(server, {"prompt": "x", "init_images": [b64(big_picture())], **FAST})
    assert response.status_code == 413
    assert "over this server's limit of 40,000" in response.json()["detail"]


def test_oversized_bodies_are_413_with_or_without_content_length(server):
    huge = {"prompt": "x" * (2 * 1024 * 1024), "init_images": ["aGVsbG8="]}
    assert post(server, huge).status_code == 413

    def chunks():  # no Content-Length: chunked transfer, counted as it arrives
        for _ in range(40):
            yield b"A" * 65536

    response = httpx.post(server.url + "/sdapi/v1/img2img", content=chunks(),
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413
    assert "--max-body-mb" in response.json()["detail"]


def test_malformed_json_is_422(server):
    response = httpx.post(server.url + "/sdapi/v1/img2img", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"] == "InvalidRequest"



def in_thread(fn):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("value", fn()), daemon=True)
    thread.start()
    return thread, box


@contextmanager
def unet_gate(server, call: int):
    """Stop the running job at its `call`-th UNet evaluation until released, so the test acts while the job is
    certainly running, at a known step (one UNet call per step: CFG runs both prompts in one batch)."""
    reached, release, calls = threading.Event(), threading.Event(), itertools.count(1)

    def hook(module, args):
        if next(calls) == call:
            reached.set()
            assert release.wait(60)

    handle = server.service.current.engine.load().pipe.unet.register_forward_pre_hook(hook)
    try:
        yield reached, release
    finally:
        release.set()
        handle.remove()


def test_progress_preview_then_interrupt_returns_what_finished(server, picture, engine):
    payload = {"prompt": "x", "seed": 5, "steps": 20, "denoising_strength": 1.0, "init_images": [b64(picture)],
               "width": 64, "height": 64}
    latent_side = 64 // engine.load().pipe.vae_scale_factor  # the tiny VAE scales by 2, real ones by 8
    # (asked before the job: loading waits for a running generation)
    with unet_gate(server, call=2) as (reached, release):  # held in step 2: step 1 is done, its latents known
        thread, box = in_thread(lambda: post(server, payload))
        assert reached.wait(60)
        progress = httpx.get(server.url + "/sdapi/v1/progress").json()
        assert progress["state"]["sampling_step"] == 1 and progress["state"]["sampling_steps"] == 20
        assert progress["progress"] == pytest.approx(1 / 20)
        preview = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
        assert preview.size == (latent_side, latent_side) and preview.mode == "RGB"  # from the linear map
        skipped = httpx.get(server.url + "/sdapi/v1/progress", params={"skip_current_image": "true"}).json()
        assert skipped["current_image"] is None
        assert httpx.post(server.url + "/sdapi/v1/interrupt").status_code == 200
    thread.join(30)
    response = box["value"]
    assert response.status_code == 200
    assert response.json()["images"] == []
    info = json.loads(response.json()["info"])
    assert info["interrupted"] is True and info["all_seeds"] == []


def test_skip_moves_on_to_the_next_batch(server, picture):
    payload = {"prompt": "x", "seed": 50, "steps": 4, "n_iter": 2, "denoising_strength": 1.0,
               "init_images": [b64(picture)], "width": 64, "height": 64}
    with unet_gate(server, call=1) as (reached, release):  # held in the first batch
        thread, box = in_thread(lambda: post(server, payload))
        assert reached.wait(60)
        assert httpx.post(server.url + "/sdapi/v1/skip").status_code == 200
    thread.join(60)
    info = json.loads(box["value"].json()["info"])
    assert info["all_seeds"] == [51] and not info["interrupted"]
    second = post(server, {**payload, "seed": 51, "n_iter": 1})  # what ran is exactly the second batch
    assert box["value"].json()["images"] == second.json()["images"]


def test_still_healthy_after_all_that(server):
    health = httpx.get(server.url + "/v1/health").json()
    assert health["status"] == "ok" and health["model_loaded"] and health["queue"]["depth"] == 0
