"""Secure defaults: loopback binding, Bearer and Basic auth, /docs behind auth, CORS off by default, limits."""

import base64
import subprocess
import sys

import httpx
import pytest
import webuiapi
from fastapi.testclient import TestClient

from img2img.errors import InvalidRequest
from img2img.server.app import create_app
from img2img.server.config import ServerConfig, is_loopback, parse_api_auth
from img2img.server.runner import ServerThread

pytestmark = pytest.mark.timeout(120)


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def locked(tiny_sd):
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, preload=False, api_keys=["s3cret-key"],
                          api_auth=[("alice", "wonder:land")])
    with TestClient(create_app(config), base_url="http://localhost") as client:
        yield client


@pytest.fixture(scope="module")
def open_client(tiny_sd):
    with TestClient(create_app(ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, preload=False)),
                    raise_server_exceptions=False, base_url="http://localhost") as client:
        yield client


@pytest.mark.parametrize("path", ["/sdapi/v1/scripts", "/sdapi/v1/sd-models", "/v1/health", "/v1/models",
                                  "/docs", "/openapi.json"])
def test_every_route_needs_credentials_when_auth_is_on(locked, path):
    refused = locked.get(path)
    assert refused.status_code == 401
    assert "Bearer" in refused.json()["detail"] and "Basic" in refused.json()["detail"]
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert locked.get(path, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
    assert locked.get(path, headers=basic("alice", "wonder:land")).status_code == 200


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer s3cret-key-and-more"},
    basic("alice", "wrong"),
    basic("bob", "wonder:land"),
    {"Authorization": "Basic !!!"},
    {"Authorization": "s3cret-key"},
])
def test_wrong_credentials_are_refused(locked, headers):
    assert locked.get("/sdapi/v1/scripts", headers=headers).status_code == 401


def test_posts_are_refused_before_the_body_is_read(locked):
    response = locked.post("/sdapi/v1/img2img", json={"init_images": ["aGVsbG8="]})
    assert response.status_code == 401


def test_auth_off_by_default_and_docs_served(open_client):
    assert open_client.get("/sdapi/v1/scripts").status_code == 200
    assert open_client.get("/docs").status_code == 200
    paths = open_client.get("/openapi.json").json()["paths"]
    assert {"/sdapi/v1/img2img", "/v1/img2img", "/v1/health", "/sdapi/v1/progress"} <= set(paths)


def test_cors_is_off_unless_configured(open_client, tiny_sd):
    response = open_client.get("/v1/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, preload=False, api_keys=["k"],
                          cors_origins=["https://app.example"])
    with TestClient(create_app(config), base_url="http://localhost") as client:
        preflight = client.options("/v1/health", headers={"Origin": "https://app.example",
                                                          "Access-Control-Request-Method": "GET",
                                                          "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        allowed = client.get("/v1/health", headers={"Origin": "https://app.example", "Authorization": "Bearer k"})
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = client.get("/v1/health", headers={"Origin": "https://evil.example", "Authorization": "Bearer k"})
        assert "access-control-allow-origin" not in other.headers


def test_unexpected_errors_are_json_500_and_logged(open_client, monkeypatch):
    service = open_client.app.state.service
    monkeypatch.setattr(service, "health", lambda: 1 / 0)
    response = open_client.get("/v1/health")
    assert response.status_code == 500
    assert response.json()["error"] == "InternalServerError" and "ZeroDivisionError" in response.json()["detail"]


def test_declared_content_length_over_the_limit_is_refused_at_once(tiny_sd):
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, preload=False, max_body_mb=0.001)
    with TestClient(create_app(config), base_url="http://localhost") as client:
        response = client.post("/sdapi/v1/png-info", json={"image": "A" * 5000})
        assert response.status_code == 413 and response.json()["error"] == "PayloadTooLarge"
        assert client.get("/v1/health").status_code == 200


@pytest.mark.parametrize("host, ok", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                      ("127.0.0.2", True), ("0.0.0.0", False), ("192.168.1.5", False),
                                      ("example.org", False)])
def test_non_loopback_binding_needs_auth_or_insecure(host, ok):
    assert is_loopback(host) == ok
    if ok:
        ServerConfig(host=host).validate()
    else:
        with pytest.raises(InvalidRequest, match="--api-key"):
            ServerConfig(host=host).validate()
        ServerConfig(host=host, api_keys=["k"]).validate()
        ServerConfig(host=host, api_auth=[("u", "p")]).validate()
        ServerConfig(host=host, insecure=True).validate()


def test_api_auth_parsing():
    assert parse_api_auth("a:b,c:d:e") == [("a", "b"), ("c", "d:e")]
    for bad in ("nopass", ":p", "u:", "a:b,"):
        with pytest.raises(InvalidRequest):
            parse_api_auth(bad)


def test_serve_refuses_an_open_address_without_auth():
    done = subprocess.run([sys.executable, "-m", "img2img.cli", "serve", "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in done.stderr


def test_command_module_imports_nothing_heavy():
    code = ("import sys, img2img.cli, img2img.server.command; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'torch', 'diffusers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_webuiapi_with_basic_auth_on_a_real_server(tiny_sd):
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, preload=False, api_auth=[("alice", "pw")])
    with ServerThread(config) as server:
        assert httpx.get(server.url + "/sdapi/v1/sd-models").status_code == 401
        api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port, username="alice", password="pw")
        assert api.util_get_model_names()[0].startswith("tiny-sd")


def test_websockets_need_auth_too(locked):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as refused:
        with locked.websocket_connect("/anything"):
            pass
    assert refused.value.code == 1008
