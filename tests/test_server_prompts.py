"""Prompt features on the HTTP APIs: a real A1111 client (webuiapi) against a real server, and the native route."""

import base64
import io
import json

import httpx
import pytest
import webuiapi
from PIL import Image

from img2img import Engine
from img2img.server.config import ServerConfig
from img2img.server.runner import ServerThread

pytestmark = pytest.mark.timeout(300)

RUN = {"steps": 6, "cfg_scale": 5.0, "denoising_strength": 0.7, "sampler_name": "Euler", "width": 64, "height": 64}


@pytest.fixture(scope="module")
def server(tiny_sd, folders):
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, lora_dir=str(folders / "loras"),
                          embeddings_dir=str(folders / "embeddings"), styles_file=str(folders / "styles.csv"))
    with ServerThread(config) as running:
        yield running


@pytest.fixture(scope="module")
def api(server):
    return webuiapi.WebUIApi(host="127.0.0.1", port=server.port)


@pytest.fixture(scope="module")
def local(tiny_sd, folders):
    return Engine(str(tiny_sd), device="cpu", lora_dir=folders / "loras", embeddings_dir=folders / "embeddings",
                  styles_file=folders / "styles.csv")


def same_as_local(local, square_path, prompt, **fields):
    return local.transform(square_path, prompt, steps=6, cfg_scale=5.0, strength=0.7, sampler="Euler", width=64,
                           height=64, **fields)


def test_lora_styles_and_variation_through_webuiapi(api, local, square_path):
    picture = Image.open(square_path).convert("RGB")
    result = api.img2img(images=[picture], prompt="a (boat:1.2) fuzzy <lora:kohya:0.7>", styles=["film"], seed=3,
                         subseed=50, subseed_strength=0.4, batch_size=2, **RUN)
    expected = same_as_local(local, square_path, "a (boat:1.2) fuzzy <lora:kohya:0.7>", styles=("film",), seed=3,
                             subseed=50, subseed_strength=0.4, batch_size=2)
    assert [im.tobytes() for im in result.images] == [im.tobytes() for im in expected.images]
    info = result.info
    assert info["all_seeds"] == [3, 3] and info["all_subseeds"] == [50, 51] and info["subseed_strength"] == 0.4
    assert info["styles"] == ["film"] and info["prompt"] == "a (boat:1.2) fuzzy <lora:kohya:0.7>, film grain"
    text = info["infotexts"][1]
    assert "Variation seed: 51, Variation seed strength: 0.4" in text
    assert 'Lora hashes: "kohya: ' in text and 'TI hashes: "fuzzy: ' in text


def test_unknown_and_unfitting_networks_are_skipped_with_notices(server, local, square_path):
    payload = {"init_images": [base64.b64encode(square_path.read_bytes()).decode()], "seed": 4,
               "prompt": "a boat <lora:missing:1> <lora:xl-only:0.5>", "styles": ["None", "noir"], **RUN}
    answer = httpx.post(server.url + "/sdapi/v1/img2img", json=payload, timeout=120)
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    notices = " | ".join(info["notices"])
    assert "'missing' not found" in notices and "noir" in notices and "xl-only" in notices
    image = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
    assert image.tobytes() == same_as_local(local, square_path, "a boat  ", seed=4).image.tobytes()


def test_clip_skip_and_colour_correction_overrides(server, square_path):
    payload = {"init_images": [base64.b64encode(square_path.read_bytes()).decode()], "prompt": "a boat", "seed": 5,
               "override_settings": {"CLIP_stop_at_last_layers": 2, "img2img_color_correction": True}, **RUN}
    answer = httpx.post(server.url + "/sdapi/v1/img2img", json=payload, timeout=120)
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert info["clip_skip"] == 2
    assert "Clip skip: 2" in info["infotexts"][0] and "Color correction: True" in info["infotexts"][0]


def test_listing_routes_in_a1111_shapes(api, server):
    loras = api.get_loras()
    assert [(item["name"], item["alias"]) for item in loras] == [("kohya", "kohya"), ("peft", "peft"),
                                                                   ("xl-only", "xl-only")]
    assert loras[0]["path"].endswith("kohya.safetensors") and loras[0]["metadata"]["ss_network_dim"] == "4"
    assert httpx.post(server.url + "/sdapi/v1/refresh-loras").status_code == 200
    styles = api.get_prompt_styles()
    assert styles == [{"name": "film", "prompt": "{prompt}, film grain", "negative_prompt": "blurry"},
                      {"name": "warm", "prompt": "warm light", "negative_prompt": ""}]
    embeddings = api.get_embeddings()  # the model is loaded by the tests above
    assert sorted(embeddings["loaded"]) == ["fuzzy", "legacy"] and sorted(embeddings["skipped"]) == ["xlemb"]
    assert embeddings["loaded"]["fuzzy"]["vectors"] == 3


def test_native_route_takes_the_prompt_fields(server, local, square_path):
    form = {"prompt": "a boat <lora:peft:1>", "steps": "6", "cfg_scale": "5", "strength": "0.7", "sampler": "Euler",
            "width": "64", "height": "64", "seed": "8", "subseed": "9", "subseed_strength": "1", "clip_skip": "2",
            "styles": ["warm", "film"], "response_format": "json"}
    answer = httpx.post(server.url + "/v1/img2img", files={"image": square_path.read_bytes()}, data=form, timeout=120)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = same_as_local(local, square_path, "a boat <lora:peft:1>", seed=8, subseed=9, subseed_strength=1.0,
                             clip_skip=2, styles=("warm", "film"))
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert image.tobytes() == expected.image.tobytes()
    assert body["subseeds"] == [9] and body["parameters"]["prompt"] == "a boat <lora:peft:1>, warm light, film grain"
    refused = httpx.post(server.url + "/v1/img2img", files={"image": square_path.read_bytes()},
                         data={"prompt": "x <lora:missing:1>"}, timeout=60)
    assert refused.status_code == 422 and "'missing' not found" in refused.text
