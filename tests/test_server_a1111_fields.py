"""A1111 fields whose effect only shows with the right input: echoed init images, answers without images, a
switch between two configured models, and resize modes on a non-square picture, checked against an
expectation computed here (the picture resized by hand, then bare diffusers), not against our own engine."""

import base64
import hashlib
import io
import json

import httpx
import numpy as np
import pytest
import torch
from diffusers import AutoPipelineForImage2Image, EulerDiscreteScheduler
from PIL import Image

from img2img import Engine
from img2img.images import read_infotext
from img2img.infotext import parse_infotext
from img2img.server.config import ServerConfig
from img2img.server.runner import ServerThread

pytestmark = pytest.mark.timeout(180)

FAST = {"prompt": "a lighthouse", "seed": 8, "steps": 6, "cfg_scale": 5.0, "denoising_strength": 0.5,
        "sampler_name": "Euler", "scheduler": "Karras"}


@pytest.fixture(scope="module")
def server(tiny_sd, tiny_sd_b):
    config = ServerConfig(models=[str(tiny_sd), str(tiny_sd_b)], device="cpu", ui=False, preload=False)
    with ServerThread(config) as running:
        yield running


@pytest.fixture(autouse=True)
def first_model_is_current(server):
    yield
    server.service.set_current("tiny-sd")  # a test that makes a switch stick must not leak it


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def post(server, **fields):
    response = httpx.post(server.url + "/sdapi/v1/img2img", json=fields, timeout=90)
    assert response.status_code == 200, response.text
    body = response.json()
    return body, json.loads(body["info"])


def pixels(encoded: str) -> bytes:
    return Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB").tobytes()


def unet_hash(model_folder) -> str:
    return hashlib.sha256((model_folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()[:10]


def test_include_init_images_echoes_the_input_and_changes_nothing_else(server, square_path):
    sent = b64(square_path)
    plain, _ = post(server, init_images=[sent], width=64, height=64, **FAST)
    echoed, _ = post(server, init_images=[sent], width=64, height=64, include_init_images=True, **FAST)
    assert plain["parameters"]["init_images"] is None
    assert echoed["parameters"]["init_images"] == [sent]
    assert echoed["images"] == plain["images"]


def test_send_images_false_answers_seeds_and_infotexts_without_images(server, square_path):
    full, full_info = post(server, init_images=[b64(square_path)], width=64, height=64, batch_size=2, **FAST)
    bare, info = post(server, init_images=[b64(square_path)], width=64, height=64, batch_size=2, send_images=False,
                      **FAST)
    assert bare["images"] == [] and len(full["images"]) == 2
    assert info["all_seeds"] == full_info["all_seeds"] == [8, 9]
    assert info["infotexts"] == full_info["infotexts"] == [read_infotext(base64.b64decode(i)) for i in full["images"]]


def test_override_picks_the_other_model_for_one_request(server, square_path, tiny_sd_b):
    request = {"init_images": [b64(square_path)], "width": 64, "height": 64, **FAST}
    first, first_info = post(server, **request)
    other, info = post(server, **request, override_settings={"sd_model_checkpoint": "tiny-sd-b"})
    assert info["sd_model_name"] == "tiny-sd-b" and first_info["sd_model_name"] == "tiny-sd"
    params = parse_infotext(info["infotexts"][0])[2]
    assert params["Model"] == "tiny-sd-b" and params["Model hash"] == unet_hash(tiny_sd_b)
    expected = Engine(str(tiny_sd_b), device="cpu").transform(
        square_path, "a lighthouse", seed=8, steps=6, cfg_scale=5.0, strength=0.5, sampler="Euler",
        scheduler="Karras", width=64, height=64, resize_mode="stretch")
    assert pixels(other["images"][0]) == expected.image.tobytes()
    assert pixels(other["images"][0]) != pixels(first["images"][0])
    # override_settings_restore_afterwards defaults to true: the next request is the first model's again
    again, again_info = post(server, **request)
    assert again_info["sd_model_name"] == "tiny-sd" and again["images"] == first["images"]
    assert httpx.get(server.url + "/sdapi/v1/options").json()["sd_model_checkpoint"].split(" [")[0] == "tiny-sd"


def test_override_without_restoring_makes_the_switch_stick(server, square_path):
    request = {"init_images": [b64(square_path)], "width": 64, "height": 64, **FAST}
    switched, _ = post(server, **request, override_settings={"sd_model_checkpoint": "tiny-sd-b"},
                       override_settings_restore_afterwards=False)
    assert httpx.get(server.url + "/sdapi/v1/options").json()["sd_model_checkpoint"].split(" [")[0] == "tiny-sd-b"
    assert httpx.get(server.url + "/v1/health").json()["model"] == "tiny-sd-b"
    plain, info = post(server, **request)  # no override: the model that stuck
    assert info["sd_model_name"] == "tiny-sd-b" and plain["images"] == switched["images"]
    # and the options route switches back
    assert httpx.post(server.url + "/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd"}).status_code == 200
    assert post(server, **request)[1]["sd_model_name"] == "tiny-sd"


# ------------------------------------------------------------------------------------------ resize modes


def by_hand(source: Image.Image, size: tuple[int, int], mode: int) -> Image.Image:
    """A1111's resize modes for a source wider than the target, written out for this case: 0 stretches,
    1 scales to cover and keeps the centre, 2 scales to fit and repeats the first and last rows into the bands."""
    (sw, sh), (tw, th) = source.size, size
    assert sw / sh > tw / th
    if mode == 0:
        return source.resize(size, Image.Resampling.LANCZOS)
    if mode == 1:
        covered = source.resize((sw * th // sh, th), Image.Resampling.LANCZOS)
        left = (covered.width - tw) // 2
        return covered.crop((left, 0, left + tw, th))
    fitted = np.asarray(source.resize((tw, sh * tw // sw), Image.Resampling.LANCZOS))
    top = (th - fitted.shape[0]) // 2
    bottom = th - fitted.shape[0] - top
    return Image.fromarray(np.concatenate([fitted[:1].repeat(top, 0), fitted, fitted[-1:].repeat(bottom, 0)]))


@pytest.fixture(scope="module")
def bare(tiny_sd):
    pipe = AutoPipelineForImage2Image.from_pretrained(tiny_sd)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_resize_modes_on_a_wide_picture_to_a_tall_size_match_a_hand_made_expectation(server, photo_path, bare):
    source = Image.open(photo_path).convert("RGB")  # 96x64
    size = (48, 64)
    outputs = {}
    for mode in (0, 1, 2):
        body, info = post(server, init_images=[b64(photo_path)], width=size[0], height=size[1], resize_mode=mode,
                          **FAST)
        out = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
        assert out.size == size and info["width"] == 48 and info["height"] == 64
        expected = bare(prompt="a lighthouse", image=by_hand(source, size, mode), strength=0.5, num_inference_steps=6,
                        guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(8)).images[0]
        assert out.convert("RGB").tobytes() == expected.tobytes(), f"resize_mode {mode}"
        assert parse_infotext(info["infotexts"][0])[2]["Resize mode"] == ("stretch", "crop", "fill")[mode]
        outputs[mode] = out.tobytes()
    assert len(set(outputs.values())) == 3  # the three modes are told apart
