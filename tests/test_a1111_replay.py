"""AUTOMATIC1111's own API tests, replayed against this server: the payloads of its test/test_img2img.py,
test/test_txt2img.py and test/test_utils.py (stable-diffusion-webui v1.10), with their assertion (status
200) and, where one can be checked, what the answer must contain. Where this server answers otherwise, the
test says so and why (face restoration: needs model files).
"""

import base64
import copy
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from img2img.images import read_infotext
from img2img.server.config import ServerConfig
from img2img.server.runner import ServerThread
from img2img.testing import make_photo

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("a1111-data")


@pytest.fixture(scope="module")
def server(tiny_sd, data_dir):
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, history_dir=str(data_dir))
    with ServerThread(config) as running:
        yield running


def file_to_base64(image) -> str:  # as A1111's test/conftest.py sends files
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def img2img_basic_image_base64():
    return file_to_base64(make_photo(64, 64, seed=5))


@pytest.fixture(scope="module")
def mask_basic_image_base64():
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return file_to_base64(mask)


@pytest.fixture
def simple_img2img_request(img2img_basic_image_base64):
    return {"batch_size": 1, "cfg_scale": 7, "denoising_strength": 0.75, "eta": 0, "height": 64,
            "include_init_images": False, "init_images": [img2img_basic_image_base64], "inpaint_full_res": False,
            "inpaint_full_res_padding": 0, "inpainting_fill": 0, "inpainting_mask_invert": False, "mask": None,
            "mask_blur": 4, "n_iter": 1, "negative_prompt": "", "override_settings": {}, "prompt": "example prompt",
            "resize_mode": 0, "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0,
            "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1,
            "steps": 3, "styles": [], "subseed": -1, "subseed_strength": 0, "tiling": False, "width": 64}


@pytest.fixture
def simple_txt2img_request():
    return {"batch_size": 1, "cfg_scale": 7, "denoising_strength": 0, "enable_hr": False, "eta": 0,
            "firstphase_height": 0, "firstphase_width": 0, "height": 64, "n_iter": 1, "negative_prompt": "",
            "prompt": "example prompt", "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0,
            "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1, "steps": 3,
            "styles": [], "subseed": -1, "subseed_strength": 0, "tiling": False, "width": 64}


def post(server, route, payload):
    return httpx.post(f"{server.url}/sdapi/v1/{route}", json=payload, timeout=120)


def images_of(response):
    return [Image.open(io.BytesIO(base64.b64decode(text))) for text in response.json()["images"]]


def info_of(response):
    return json.loads(response.json()["info"])


# ------------------------------------------------------------------------------- test/test_img2img.py


def test_img2img_simple_performed(server, simple_img2img_request):
    response = post(server, "img2img", simple_img2img_request)
    assert response.status_code == 200
    [image] = images_of(response)
    assert image.size == (64, 64) and "Sampler: Euler a" in image.info["parameters"]
    info = info_of(response)
    assert info["sampler_name"] == "Euler a" and info["steps"] == 3 and info["notices"] == []
    assert "Eta: 0" in info["infotexts"][0]  # eta 0 from the payload is honoured: Euler a becomes Euler


@pytest.mark.parametrize("invert", [False, True])
def test_inpainting_masked_performed(server, simple_img2img_request, img2img_basic_image_base64,
                                     mask_basic_image_base64, invert):
    # A1111's test only asks for 200; here also: the kept side is the init image's pixels, the other changed.
    simple_img2img_request["mask"] = mask_basic_image_base64
    simple_img2img_request["inpainting_mask_invert"] = invert
    simple_img2img_request["steps"] = 6
    response = post(server, "img2img", simple_img2img_request)
    assert response.status_code == 200, response.text
    [image] = images_of(response)
    out = np.asarray(image.convert("RGB")).astype(int)
    original = np.asarray(make_photo(64, 64, seed=5)).astype(int)
    inside = np.zeros((64, 64), bool)
    inside[16:48, 16:48] = True  # the mask's square; blur 4 reaches 10 px further
    near = np.zeros((64, 64), bool)
    near[6:58, 6:58] = True
    deep = np.zeros((64, 64), bool)
    deep[26:38, 26:38] = True
    kept, changed = (deep, ~near) if invert else (~near, inside)
    assert np.array_equal(out[kept], original[kept])
    assert np.abs(out[changed] - original[changed]).mean() > 5
    params = info_of(response)["infotexts"][0]
    assert "Masked content: fill" in params and "Inpaint area: Whole picture" in params
    assert ("Mask mode: Inpaint not masked" in params) == invert


def test_img2img_sd_upscale_script_is_refused_naming_it(server, simple_img2img_request):
    simple_img2img_request["script_name"] = "sd upscale"
    simple_img2img_request["script_args"] = ["", 8, "Lanczos", 2.0]
    response = post(server, "img2img", simple_img2img_request)
    assert response.status_code == 422 and response.json()["field"] == "script_name"
    assert "sd upscale" in response.json()["detail"]


# ------------------------------------------------------------------------------- test/test_txt2img.py


def test_txt2img_simple_performed(server, simple_txt2img_request):
    response = post(server, "txt2img", simple_txt2img_request)
    assert response.status_code == 200
    [image] = images_of(response)
    assert image.size == (64, 64) and "Denoising strength" not in image.info["parameters"]


def test_txt2img_with_negative_prompt_performed(server, simple_txt2img_request):
    simple_txt2img_request["seed"] = 5
    plain = images_of(post(server, "txt2img", simple_txt2img_request))[0]
    simple_txt2img_request["negative_prompt"] = "example negative prompt"
    response = post(server, "txt2img", simple_txt2img_request)
    assert response.status_code == 200
    assert images_of(response)[0].tobytes() != plain.tobytes()
    assert info_of(response)["negative_prompt"] == "example negative prompt"


def test_txt2img_with_complex_prompt_performed(server, simple_txt2img_request):
    simple_txt2img_request["prompt"] = "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"
    response = post(server, "txt2img", simple_txt2img_request)
    assert response.status_code == 200 and info_of(response)["prompt"] == simple_txt2img_request["prompt"]


def test_txt2img_not_square_image_performed(server, simple_txt2img_request):
    simple_txt2img_request["height"] = 128
    response = post(server, "txt2img", simple_txt2img_request)
    assert response.status_code == 200 and images_of(response)[0].size == (64, 128)


def test_txt2img_with_hrfix_performed(server, simple_txt2img_request):
    # denoising_strength 0 with the hires fix: the first pass, upscaled by hr_scale (default 2).
    simple_txt2img_request["enable_hr"] = True
    response = post(server, "txt2img", simple_txt2img_request)
    assert response.status_code == 200
    [image] = images_of(response)
    assert image.size == (128, 128)
    assert "Size: 64x64" in image.info["parameters"] and "Hires upscale: 2" in image.info["parameters"]


def test_txt2img_with_tiling_performed(server, simple_txt2img_request):
    simple_txt2img_request["seed"] = 8
    plain = images_of(post(server, "txt2img", simple_txt2img_request))[0]
    simple_txt2img_request["tiling"] = True
    response = post(server, "txt2img", simple_txt2img_request)
    assert response.status_code == 200
    [image] = images_of(response)
    assert image.tobytes() != plain.tobytes() and "Tiling: True" in image.info["parameters"]


def test_txt2img_with_restore_faces_is_refused_naming_it(server, simple_txt2img_request):
    # A1111 answers 200 with CodeFormer/GFPGAN; those need model files this server does not have.
    simple_txt2img_request["restore_faces"] = True
    response = post(server, "txt2img", simple_txt2img_request)
    assert response.status_code == 422 and response.json()["field"] == "restore_faces"


@pytest.mark.parametrize("sampler", ["PLMS", "DDIM", "UniPC"])
def test_txt2img_with_vanilla_sampler_performed(server, simple_txt2img_request, sampler):
    simple_txt2img_request["sampler_index"] = sampler
    response = post(server, "txt2img", simple_txt2img_request)
    assert response.status_code == 200 and info_of(response)["sampler_name"] == sampler
    assert f"Sampler: {sampler}," in images_of(response)[0].info["parameters"]


def test_txt2img_multiple_batches_performed(server, simple_txt2img_request):
    simple_txt2img_request["n_iter"] = 2
    response = post(server, "txt2img", simple_txt2img_request)
    assert response.status_code == 200 and len(images_of(response)) == 2
    seeds = info_of(response)["all_seeds"]
    assert seeds[1] == seeds[0] + 1


def test_txt2img_batch_performed(server, simple_txt2img_request):
    simple_txt2img_request["batch_size"] = 2
    response = post(server, "txt2img", simple_txt2img_request)
    assert response.status_code == 200
    first, second = images_of(response)
    assert first.tobytes() != second.tobytes()


# ------------------------------------------------------------------------------- test/test_utils.py


def test_options_write(server, tiny_sd, data_dir):
    url_options = f"{server.url}/sdapi/v1/options"
    response = httpx.get(url_options)
    assert response.status_code == 200
    pre_value = response.json()["send_seed"]
    assert httpx.post(url_options, json={"send_seed": (not pre_value)}).status_code == 200
    response = httpx.get(url_options)
    assert response.status_code == 200 and response.json()["send_seed"] == (not pre_value)
    # Kept across restarts: a second server on the same data folder reads it.
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, history_dir=str(data_dir), preload=False)
    with ServerThread(config) as restarted:
        assert httpx.get(f"{restarted.url}/sdapi/v1/options").json()["send_seed"] == (not pre_value)
    httpx.post(url_options, json={"send_seed": pre_value})


@pytest.mark.parametrize("url", ["sdapi/v1/cmd-flags", "sdapi/v1/samplers", "sdapi/v1/upscalers",
                                 "sdapi/v1/sd-models", "sdapi/v1/hypernetworks", "sdapi/v1/face-restorers",
                                 "sdapi/v1/realesrgan-models", "sdapi/v1/prompt-styles", "sdapi/v1/embeddings"])
def test_get_api_url(server, url):
    assert httpx.get(f"{server.url}/{url}").status_code == 200


# ------------------------------------------------------------------------------- beyond A1111's own tests


SHAPES = {  # route -> (type of the answer, keys every item has), as A1111 1.10 answers
    "samplers": (list, {"name", "aliases", "options"}),
    "schedulers": (list, {"name", "label", "aliases", "default_rho", "need_inner_model"}),
    "upscalers": (list, {"name", "model_name", "model_path", "model_url", "scale"}),
    "latent-upscale-modes": (list, {"name"}),
    "sd-models": (list, {"title", "model_name", "hash", "sha256", "filename", "config"}),
    "sd-vae": (list, set()), "sd-modules": (list, set()), "hypernetworks": (list, set()),
    "face-restorers": (list, set()), "realesrgan-models": (list, set()), "prompt-styles": (list, set()),
    "loras": (list, set()), "extensions": (list, set()), "script-info": (list, set()),
    "embeddings": (dict, {"loaded", "skipped"}), "scripts": (dict, {"txt2img", "img2img"}),
    "memory": (dict, {"ram", "cuda"}), "cmd-flags": (dict, {"api", "port", "nowebui"}),
    "progress": (dict, {"progress", "eta_relative", "state", "current_image", "textinfo"}),
    "options": (dict, {"sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers", "samples_format", "send_seed",
                       "send_size", "eta_ddim", "eta_ancestral", "img2img_fix_steps", "img2img_color_correction",
                       "sd_checkpoint_hash"}),
}


@pytest.mark.parametrize("route", sorted(SHAPES))
def test_probe_routes_answer_in_a1111_shapes(server, route):
    kind, keys = SHAPES[route]
    answer = httpx.get(f"{server.url}/sdapi/v1/{route}").json()
    assert isinstance(answer, kind)
    for item in answer if isinstance(answer, list) else [answer]:
        assert keys <= set(item), (route, item)


def test_refresh_routes_and_memory_numbers(server):
    for route in ("refresh-checkpoints", "refresh-vae", "refresh-loras", "refresh-embeddings"):
        response = httpx.post(f"{server.url}/sdapi/v1/{route}")
        assert response.status_code == 200 and response.json() is None
    ram = httpx.get(f"{server.url}/sdapi/v1/memory").json()["ram"]
    assert 0 < ram["used"] < ram["total"]
    flags = httpx.get(f"{server.url}/sdapi/v1/cmd-flags").json()
    assert flags["port"] == server.port and flags["api_auth"] is None


def test_samplers_and_schedulers_list_all_of_a1111s(server):
    from test_schedulers import A1111_SAMPLERS, A1111_SCHEDULES

    assert [s["name"] for s in httpx.get(f"{server.url}/sdapi/v1/samplers").json()] == A1111_SAMPLERS
    schedulers = httpx.get(f"{server.url}/sdapi/v1/schedulers").json()
    assert [s["label"] for s in schedulers] == A1111_SCHEDULES
    assert {s["name"] for s in schedulers} >= {"automatic", "karras", "sgm_uniform", "align_your_steps", "kl_optimal"}


def test_samples_format_changes_the_answer_and_the_file(server, simple_img2img_request):
    url_options = f"{server.url}/sdapi/v1/options"
    assert httpx.post(url_options, json={"samples_format": "webp"}).status_code == 200
    try:
        response = post(server, "img2img", copy.deepcopy(simple_img2img_request))
        [image] = images_of(response)
        assert image.format == "WEBP" and "Sampler: Euler a" in read_infotext(image)
        override = {**simple_img2img_request, "override_settings": {"samples_format": "png"}}
        assert images_of(post(server, "img2img", override))[0].format == "PNG"
    finally:
        httpx.post(url_options, json={"samples_format": "png"})
    refused = httpx.post(url_options, json={"CLIP_stop_at_last_layers": 13})
    assert refused.status_code == 422 and refused.json()["field"] == "CLIP_stop_at_last_layers"
