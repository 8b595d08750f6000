"""Real A1111 clients, replayed request by request from their sources against this server.

Each test names the client, the source file(s) and the commit its requests were read from, and checks what
that client reads from the answers. (webuiapi, a Python client, runs for real in test_server_a1111.py.)
Sizes and step counts are the tiny test model's; everything else is what the client sends.
"""

import base64
import io
import json
import threading

import httpx
import pytest
from helpers import wait_for
from PIL import Image

from img2img.server.config import ServerConfig
from img2img.server.runner import ServerThread
from img2img.testing import make_photo

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tiny_sd, tiny_sdxl, tmp_path_factory):
    config = ServerConfig(models=[str(tiny_sd), str(tiny_sdxl)], device="cpu", ui=False,
                          history_dir=str(tmp_path_factory.mktemp("clients-data")))
    with ServerThread(config) as running:
        yield running


def b64(image, fmt="PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def decode(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text.split(",", 1)[-1])))


def in_thread(fn):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("value", fn()), daemon=True)
    thread.start()
    return thread, box


# ----------------------------------------------------------------------------------- an editor plugin


def test_krita_plugin_cyanic_sd(server):
    """Cyanic SD, a Krita plugin: DrCyanide/cyanic-sd-krita @ 5678aa1, cyanic/sdapi_v1.py (init_api,
    cleanup_data, img2img), cyanic/widgets/*.py (get_generation_data) and generate.py (progress_check)."""
    http = httpx.Client(base_url=server.url, timeout=120)
    # init_api: the plugin thinks the server is down unless Gradio's queue status answers.
    assert http.get("/queue/status").status_code == 200
    models = http.get("/sdapi/v1/sd-models").json()
    vaes = http.get("/sdapi/v1/sd-vae").json()
    samplers = http.get("/sdapi/v1/samplers").json()
    upscalers = http.get("/sdapi/v1/upscalers").json()
    restorers = http.get("/sdapi/v1/face-restorers").json()
    styles = http.get("/sdapi/v1/prompt-styles").json()
    scripts = http.get("/sdapi/v1/scripts").json()
    loras = http.get("/sdapi/v1/loras").json()
    embeddings = http.get("/sdapi/v1/embeddings").json()
    hypernetworks = http.get("/sdapi/v1/hypernetworks").json()
    options = http.get("/sdapi/v1/options").json()
    assert [m["title"] for m in models] and all("model_name" in m for m in models)
    assert [s["name"] for s in samplers] and [u["name"] for u in upscalers]
    assert vaes == restorers == styles == loras == hypernetworks == [] and list(embeddings["loaded"]) == []
    assert not any(name in scripts[key] for key in scripts for name in ("controlnet", "adetailer"))
    # set_host_version: A1111, not SD.Next (fewer than half of SD.Next's own keys)
    assert sum(key in options for key in ("cross_attention_sep", "cuda_compile_sep", "sd_lyco")) == 0
    defaults = {"model": options["sd_model_checkpoint"], "vae": options["sd_vae"],
                "color_correction": options.get("img2img_color_correction", True)}
    assert defaults["model"] == models[0]["title"]
    # A 100x75 selection (min_size set to 64 in the plugin's settings), after cleanup_data:
    canvas = make_photo(100, 75)
    data = {"width": 100, "height": 75, "init_images": [b64(canvas)], "denoising_strength": 0.7,
            "override_settings": {"img2img_color_correction": True, "sd_model_checkpoint": defaults["model"],
                                  "sd_vae": defaults["vae"]},
            "sampler_name": "", "steps": 3, "prompt": "a castle", "negative_prompt": "", "n_iter": 1,
            "batch_size": 1, "cfg_scale": 7, "seed": -1, "subseed": -1, "subseed_strength": 0.0,
            "override_settings_restore_afterwards": False}
    thread, box = in_thread(lambda: http.post("/sdapi/v1/img2img", json=data))
    progress = http.get("/sdapi/v1/progress").json()  # progress_check, every second
    assert 0 <= progress["progress"] <= 1 and "skipped" in progress["state"] and "current_image" in progress
    thread.join(120)
    results = box["value"].json()
    results["info"] = json.loads(results["info"])
    parameters = results["parameters"]
    assert len(results["images"]) == parameters["batch_size"] * parameters["n_iter"] == 1
    assert decode(results["images"][0]).size == (100, 75)  # pasted back over the selection as is
    assert any("not a multiple of 8" in n for n in results["info"]["notices"])
    assert "Color correction: True" in results["info"]["infotexts"][0]  # img2img_color_correction honoured


# ----------------------------------------------------------------------------------- chat front ends


def test_chat_front_end_sillytavern(server):
    """SillyTavern: SillyTavern/SillyTavern @ ba6f7b7, src/endpoints/stable-diffusion.js (the server side:
    /ping, /samplers, /schedulers, /models, /get-model, /set-model, /upscalers, /vaes, /generate) and
    public/scripts/extensions/stable-diffusion/index.js (generateAutoImage builds the body, defaults: DDIM,
    schedule 'normal', 20 steps, scale 7). The body keeps its url/auth keys when forwarded."""
    http = httpx.Client(base_url=server.url, timeout=120)
    auth = {"Authorization": ""}  # getBasicAuthHeader('') when no credentials are set
    assert http.get("/sdapi/v1/options", headers=auth).is_success  # /ping
    samplers = [x["name"] for x in http.get("/sdapi/v1/samplers", headers=auth).json()]
    schedulers = [x["name"] for x in http.get("/sdapi/v1/schedulers", headers=auth).json()]
    assert "DDIM" in samplers and "normal" in schedulers
    models = [{"value": x["title"], "text": x["title"]} for x in http.get("/sdapi/v1/sd-models").json()]
    upscalers = [x["name"] for x in http.get("/sdapi/v1/upscalers").json()]
    upscalers[1:1] = [x["name"] for x in http.get("/sdapi/v1/latent-upscale-modes").json()]
    assert upscalers[:2] == ["None", "Latent"]
    vaes = [http.get("/sdapi/v1/sd-vae"), http.get("/sdapi/v1/sd-modules")]
    assert isinstance(next(r for r in vaes if r.is_success).json(), list)
    # /set-model: POST options, then wait until progress is 0 with no job
    second = models[1]["value"]
    assert http.post("/sdapi/v1/options", json={"sd_model_checkpoint": second}, headers=auth).is_success
    state = http.get("/sdapi/v1/progress").json()
    assert state["progress"] == 0.0 and state["state"]["job_count"] == 0
    assert http.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == second  # /get-model
    http.post("/sdapi/v1/options", json={"sd_model_checkpoint": models[0]["value"]})
    # /generate: reads options (Forge check), then forwards the whole body to txt2img
    assert "forge_preset" not in http.get("/sdapi/v1/options").json()
    body = {"url": server.url, "auth": "", "prompt": "a cosy tavern", "negative_prompt": "lowres",
            "sampler_name": "DDIM", "scheduler": "normal", "steps": 3, "cfg_scale": 7, "width": 64, "height": 64,
            "restore_faces": False, "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2.0,
            "denoising_strength": 0.7, "hr_second_pass_steps": 0,
            "override_settings": {"CLIP_stop_at_last_layers": 1}, "override_settings_restore_afterwards": True,
            "clip_skip": 1, "save_images": True, "send_images": True, "do_not_save_grid": False,
            "do_not_save_samples": False}
    result = http.post("/sdapi/v1/txt2img", json=body, headers={**auth, "Content-Type": "application/json"})
    assert result.is_success, result.text
    data = result.json()
    assert decode(data["images"][0]).size == (64, 64)  # { format: 'png', data: data.images[0] }
    info = json.loads(data["info"])
    assert info["notices"][0] == "ignored fields this API does not have: auth, clip_skip, url"
    assert "Schedule type Normal does not apply to DDIM (A1111 ignores it there too)" in info["notices"]
    assert server.service.history.list(limit=1)[0].prompt == "a cosy tavern"  # save_images: kept


def test_chat_front_end_open_webui(server):
    """Open WebUI: open-webui/open-webui @ 02530d5, backend/open_webui/routers/images.py (set_image_model
    posts the whole options dictionary back with a new sd_model_checkpoint; image_generations' txt2img body;
    get_image_data decodes the answer)."""
    http = httpx.Client(base_url=server.url, timeout=120, headers={"authorization": ""})
    models = [{"id": m["title"], "name": m["model_name"]} for m in http.get("/sdapi/v1/sd-models").json()]
    options = http.get("/sdapi/v1/options").json()
    model = models[1]["id"]
    if model != options["sd_model_checkpoint"]:
        options["sd_model_checkpoint"] = model
        response = http.post("/sdapi/v1/options", json=options)
        response.raise_for_status()
    assert http.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == model
    data = {"prompt": "a fox in the snow", "batch_size": 2, "width": 64, "height": 64, "steps": 3,
            "negative_prompt": "blurry"}
    response = http.post("/sdapi/v1/txt2img", json=data)
    res = response.json()
    images = []
    for image in res["images"]:
        if "," in image:
            image = image.split(",", 1)[1]
        images.append(Image.open(io.BytesIO(base64.b64decode(image))))
    assert [im.size for im in images] == [(64, 64)] * 2
    info = json.loads(res["info"])
    assert info["sd_model_name"] == models[1]["name"] and len(info["all_seeds"]) == 2
    options["sd_model_checkpoint"] = models[0]["id"]
    http.post("/sdapi/v1/options", json=options).raise_for_status()


# ----------------------------------------------------------------------------------- a Discord bot


def test_discord_bot_aiya(server):
    """AIYA: Kilvoctu/aiyabot @ eb8ff68, core/settings.py (startup probes and how their answers are read)
    and core/stablecog.py (dream: the payload, the model switch, png-info per image)."""
    s = httpx.Client(base_url=server.url, timeout=120)
    response = s.get("/sdapi/v1/cmd-flags")
    assert response.status_code not in (401, 404)  # "API is unreachable!" otherwise
    assert s.get("/sdapi/v1/version").status_code == 404  # an SD.Next route; the bot expects it to fail
    sampler_names = [s1["name"] for s1 in s.get("/sdapi/v1/samplers").json()]
    style_names = {"None": ""}
    for s2 in s.get("/sdapi/v1/prompt-styles").json():
        style_names[s2["name"]] = s2["prompt"], s2["negative_prompt"]
    facefix_models = [s3["name"] for s3 in s.get("/sdapi/v1/face-restorers").json()]
    embeddings = s.get("/sdapi/v1/embeddings").json()
    assert isinstance(embeddings["loaded"], dict) and isinstance(embeddings["skipped"], dict)
    assert isinstance(s.get("/sdapi/v1/hypernetworks").json(), list)
    upscaler_names = [s6["name"] for s6 in s.get("/sdapi/v1/upscalers").json()]
    lora_names = [s7["alias"] for s7 in s.get("/sdapi/v1/loras").json()]
    models = s.get("/sdapi/v1/sd-models").json()
    model_info = {m["model_name"]: (m["title"], m.get("name") or m["model_name"], m["hash"]) for m in models
                  if m["filename"]}
    config = s.get("/config")  # the Web UI's Gradio config; read inside a try
    assert config.json() is not None
    assert "Euler a" in sampler_names and facefix_models == [] and lora_names == []
    assert "Lanczos" in upscaler_names and style_names == {"None": ""}
    # /draw with an attachment (a JPEG from Discord, labelled PNG) and the hires-fix option on
    title = model_info["tiny-sd"][0]
    s.post("/sdapi/v1/options", json={"sd_model_checkpoint": title})
    attachment = b64(make_photo(64, 48).convert("RGB"), "JPEG")
    steps = 5
    payload = {"prompt": "a knight", "negative_prompt": "", "steps": steps, "width": 64, "height": 48,
               "cfg_scale": 7.0, "sampler_index": "Euler a", "seed": 1234, "seed_resize_from_h": -1,
               "seed_resize_from_w": -1, "denoising_strength": None, "n_iter": 1, "batch_size": 2,
               "styles": ["None"]}
    payload.update({"init_images": ["data:image/png;base64," + attachment], "denoising_strength": 0.6})
    payload.update({"enable_hr": True, "hr_upscaler": "Latent", "hr_scale": 1, "hr_second_pass_steps": steps / 2,
                    "denoising_strength": 0.6})
    payload.update({"override_settings": {"CLIP_stop_at_last_layers": 1}})
    response = s.post("/sdapi/v1/img2img", json=payload)
    assert response.status_code == 200, response.text
    response_data = response.json()
    assert len(response_data["images"]) == 2
    for i in response_data["images"]:
        png_response = s.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + i})
        str_parameters = png_response.json().get("info")
        assert "Seed: 123" in str_parameters and "Sampler: Euler a" in str_parameters
    info = json.loads(response_data["info"])
    assert info["all_seeds"] == [1234, 1235]
    assert info["notices"] == ["ignored fields this API does not have: enable_hr, hr_scale, hr_second_pass_steps, "
                               "hr_upscaler"]  # img2img has no hires fix in A1111 either
    # The same with text-to-image: there the hires fix runs (hr_scale 1: the second pass at the same size)
    del payload["init_images"]
    response = s.post("/sdapi/v1/txt2img", json={**payload, "batch_size": 1})
    assert response.status_code == 200, response.text
    image = decode(response.json()["images"][0])
    assert image.size == (64, 48) and "Hires steps: 2" in image.info["parameters"]


# ----------------------------------------------------------------------------------- a node tool


def test_comfyui_node_logicutils(tiny_sd, tmp_path):
    """ComfyUI-LogicUtils' "Get Image From Prompt" node: aria1th/ComfyUI-LogicUtils @ 653d366,
    webuiapi/out_api.py (construct_args, send_request: txt2img with HTTP Basic auth, raise_for_status)."""
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, history_dir=str(tmp_path),
                          api_auth=[("comfy", "secret")])
    with ServerThread(config) as running:
        session = httpx.Client(auth=("comfy", "secret"), timeout=120)
        for enable_hr in (False, True):
            arguments = {"prompt": "a lighthouse", "seed": 77, "steps": 3, "width": 64, "height": 64,
                         "hr_scale": 1.5, "hr_upscale": "Latent", "enable_hr": enable_hr, "cfg_scale": 7,
                         "negative_prompt": ""}
            response = session.post(running.url.rstrip("/") + "/sdapi/v1/txt2img", json=arguments)
            response.raise_for_status()
            response_json = response.json()
            assert "images" in response_json.keys()
            images = [Image.open(io.BytesIO(base64.b64decode(i))) for i in response_json["images"]]
            assert images[0].size == ((96, 96) if enable_hr else (64, 64))
            notices = json.loads(response_json["info"])["notices"]
            assert "ignored fields this API does not have: hr_upscale" in notices
        assert httpx.post(running.url + "/sdapi/v1/txt2img", json=arguments).status_code == 401  # no credentials


def test_progress_while_a_client_waits(server):
    """What every polling client reads while a job runs (AIYA's update_progress, Cyanic's progress_check)."""
    payload = {"prompt": "x", "steps": 60, "width": 64, "height": 64, "seed": 3}
    thread, box = in_thread(lambda: httpx.post(server.url + "/sdapi/v1/txt2img", json=payload, timeout=120))
    state = wait_for(lambda: (p := httpx.get(server.url + "/sdapi/v1/progress").json())["state"]["job"] and
                     p["state"]["sampling_step"] > 0 and p)
    assert state["state"]["sampling_steps"] == 60 and 0 < state["progress"] < 1
    httpx.post(server.url + "/sdapi/v1/interrupt")
    thread.join(60)
    assert box["value"].status_code == 200 and json.loads(box["value"].json()["info"])["interrupted"]
