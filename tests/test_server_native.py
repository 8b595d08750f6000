"""Native routes: multipart in, PNG or JSON out; models and health; OpenAPI docs."""

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from img2img.images import read_infotext
from img2img.server.app import create_app
from img2img.server.config import ServerConfig

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client(tiny_sd):
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, preload=False, max_pixels=200 * 200)
    with TestClient(create_app(config), base_url="http://localhost") as test_client:
        yield test_client


@pytest.fixture(scope="module")
def upload(square_path):
    return {"image": ("square.png", square_path.read_bytes(), "image/png")}


def test_png_answer_matches_the_python_api(client, upload, engine, square_path):
    response = client.post("/v1/img2img", files=upload,
                           data={"prompt": "a lighthouse", "seed": "11", "steps": "6", "strength": "0.5",
                                 "sampler": "Euler a", "cfg_scale": "4"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png" and response.headers["x-seed"] == "11"
    expected = engine.transform(square_path, "a lighthouse", seed=11, steps=6, strength=0.5, sampler="Euler a",
                                cfg_scale=4.0)
    assert Image.open(io.BytesIO(response.content)).convert("RGB").tobytes() == expected.image.tobytes()
    assert read_infotext(response.content) == expected.infotexts[0]


def test_json_answer_with_a_batch(client, upload):
    response = client.post("/v1/img2img", files=upload, data={"prompt": "x", "seed": "20", "steps": "4",
                                                              "batch_size": "2", "response_format": "json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["seeds"] == [20, 21] and len(body["images"]) == 2 and body["model"] == "tiny-sd"
    assert body["parameters"]["steps"] == 4 and body["effective_steps"] == 3
    assert "Seed: 21" in read_infotext(base64.b64decode(body["images"][1]))
    by_accept = client.post("/v1/img2img", files=upload, data={"prompt": "x", "steps": "4"},
                            headers={"Accept": "application/json"})
    assert by_accept.headers["content-type"] == "application/json" and by_accept.json()["seeds"][0] >= 0


def big_png():
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), "red").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("files, data, status, words", [
    (None, {"prompt": "x"}, 422, "image: required"),
    ("ok", {}, 422, "prompt: required"),
    ({"image": ("a.png", b"not an image at all", "image/png")}, {"prompt": "x"}, 422, "not an image"),
    ({"image": ("a.png", b"", "image/png")}, {"prompt": "x"}, 422, "empty"),
    ({"image": ("big.png", big_png(), "image/png")}, {"prompt": "x"}, 413, "over this server's limit"),
    ("ok", {"prompt": "x", "strength": "2"}, 422, "strength must be in (0, 1]"),
    ("ok", {"prompt": "x", "strength": "abc"}, 422, "strength"),
    ("ok", {"prompt": "x", "steps": "2", "strength": "0.3"}, 422, "denoising steps"),
    ("ok", {"prompt": "x", "batch_size": "2"}, 422, "response_format=json"),
    ("ok", {"prompt": "x", "response_format": "gif"}, 422, "response_format must be png or json"),
    ("ok", {"prompt": "x", "model": "../../etc"}, 422, "not one this server offers"),
    ("ok", {"prompt": "x", "resize_mode": "zoom"}, 422, "resize_mode"),
    ("ok", {"prompt": "x", "sampler": "Nope"}, 422, "Sampler not found"),
])
def test_bad_native_requests_are_4xx(client, upload, files, data, status, words):
    response = client.post("/v1/img2img", files=upload if files == "ok" else files, data=data)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_models_health_and_docs(client):
    models = client.get("/v1/models").json()
    assert models["current"] == "tiny-sd" and models["models"][0]["kind"] == "folder"
    assert models["models"][0]["defaults"]["sampler"] == "DPM++ 2M"
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["device"] == "cpu" and health["load_policy"] == "on first use"
    assert health["queue"]["depth"] == 0 and health["model"] == "tiny-sd"
    assert client.get("/docs").status_code == 200
