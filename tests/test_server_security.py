"""Secure defaults: loopback binding, Bearer and Basic auth, /docs behind auth, CORS off by default, limits."""

import base64
import os
import re
import subprocess
import sys
import time

import httpx
import pytest
import webuiapi
from fastapi.testclient import TestClient

from img2img.errors import InvalidRequest
from img2img.server import login
from img2img.server.app import create_app
from img2img.server.config import ServerConfig, is_loopback, parse_api_auth
from img2img.server.runner import ServerThread
from img2img.server.security import HostOriginMiddleware, split_host
from img2img.ui.files import FileRefused, check_upload, read_upload, sweep_uploads

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
    {"Authorization": "Bearer S3CRET-KEY"},  # the key in other letter case
    {"Authorization": "Bearer s3cret-Key"},
    basic("alice", "wrong"),
    basic("Alice", "wonder:land"),  # user name and password are case-sensitive too
    basic("alice", "Wonder:land"),
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


# ---------------------------------------------------------------------------------------------- pure checks


@pytest.mark.parametrize("changes, message", [
    ({"max_connections": 0}, "--max-connections must be between 1 and 100000"),
    ({"client_timeout": 0}, "--client-timeout must be in (0, 3600]"),
    ({"upload_cache_mb": 10}, "--upload-cache-mb must be at least --max-body-mb (50)"),
    ({"allowed_hosts": ["https://x.example"]}, "--allowed-host takes a host name"),
    ({"allowed_hosts": ["x.example:8080"]}, "--allowed-host takes a host name"),
    ({"allowed_hosts": ["[::1]:80"]}, "--allowed-host takes a host name"),
    ({"allowed_hosts": [""]}, "--allowed-host takes a host name"),
    ({"cors_origins": ["app.example"]}, "--cors-origin takes scheme://host[:port]"),
    ({"cors_origins": ["https://app.example/path"]}, "--cors-origin takes scheme://host[:port]"),
])
def test_new_limits_are_validated(changes, message):
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        ServerConfig(**changes).validate()


def test_valid_limits_pass():
    ServerConfig(allowed_hosts=["img2img.lan", "[::1]"], cors_origins=["https://app.example:8443/", "*"],
                 max_connections=1, client_timeout=0.5, upload_cache_mb=50).validate()


@pytest.mark.parametrize("host, expected", [
    ("localhost:7860", ("localhost", "7860")), ("Example.ORG.", ("example.org", "")), ("[::1]:80", ("::1", "80")),
    ("[::1", (None, "")), ("a:b", (None, "")), ("", (None, "")), ("[::1]x", (None, "")),
])
def test_split_host(host, expected):
    assert split_host(host) == expected


@pytest.mark.parametrize("bound, host, ok", [
    ("127.0.0.1", "127.0.0.1:7860", True), ("127.0.0.1", "localhost", True), ("127.0.0.1", "[::1]:7860", True),
    ("127.0.0.1", "127.0.0.2", True), ("127.0.0.1", "192.168.1.5:7860", False), ("127.0.0.1", "evil.example", False),
    ("127.0.0.1", "localhost.evil.example", False), ("127.0.0.1", "img2img.lan:80", True),
    ("0.0.0.0", "192.168.1.5:7860", True), ("0.0.0.0", "[fe80::1]:7860", True), ("0.0.0.0", "evil.example", False),
    ("myhost.lan", "MYHOST.LAN:7860", True),
])
def test_host_names(bound, host, ok):
    guard = HostOriginMiddleware(None, ServerConfig(host=bound, allowed_hosts=["img2img.lan"], insecure=True))
    assert guard.host_allowed(host) == ok


@pytest.mark.parametrize("origin, host, scheme, ok", [
    ("http://localhost:7860", "localhost:7860", "http", True),
    ("http://localhost:7860/", "localhost:7860", "http", True),
    ("http://localhost", "localhost:80", "http", True),  # default ports
    ("https://localhost:7860", "localhost:7860", "http", False),  # another scheme
    ("http://localhost:7861", "localhost:7860", "http", False),  # another port
    ("http://127.0.0.1:7860", "localhost:7860", "http", False),  # another host
    ("null", "localhost:7860", "http", False),
    ("http://localhost:7860", "localhost:7860", "ws", True),  # a websocket from the page itself
    ("https://app.example", "localhost:7860", "http", True),  # --cors-origin
])
def test_origins(origin, host, scheme, ok):
    guard = HostOriginMiddleware(None, ServerConfig(cors_origins=["https://app.example"]))
    assert guard.origin_allowed(origin, host, scheme) == ok


def test_login_tokens():
    token = login.make_token("key-one", 2_000_000_000)
    assert "key-one" not in token
    assert login.token_valid(token, ["other", "key-one"], now=1_999_999_999)
    assert not login.token_valid(token, ["key-one"], now=2_000_000_001)  # expired
    assert not login.token_valid(token, ["key-two"], now=0)  # the key changed
    assert not login.token_valid(login.make_token("key-one", 2_100_000_000)[:-1] + "0", ["key-one"], now=0)
    assert not login.token_valid("3000000000." + token.split(".")[1], ["key-one"], now=0)  # expiry is signed
    assert [login.safe_next(v) for v in ("/a?b=1", "//evil.example", "/\\evil", "https://x", "/x\r\nSet-Cookie: a")] \
        == ["/a?b=1", "/", "/", "/", "/"]
    assert login.secure_context("http", "127.0.0.1:7860") and login.secure_context("http", "[::1]:1")
    assert login.secure_context("https", "img2img.example") and not login.secure_context("http", "192.168.1.5")


def test_upload_checks(tmp_path):
    folder = tmp_path / "uploads"
    (folder / "a").mkdir(parents=True)
    good = folder / "a" / "photo.png"
    good.write_bytes(b"x" * 10)
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"s")
    (folder / "out.png").symlink_to(outside)
    (folder / "in.png").symlink_to(good)
    os.mkfifo(folder / "pipe.png")
    folder = folder.resolve()
    assert check_upload(str(good), folder) == good.resolve()
    assert check_upload(str(folder / "in.png"), folder) == good.resolve()  # a link within the folder is fine
    assert read_upload(str(good), 10, folder) == b"x" * 10
    for path in (outside, folder / "out.png", folder / "pipe.png", folder / "a", folder / "missing.png",
                 folder / "a" / ".." / ".." / "secret.png", "", "/dev/zero"):
        with pytest.raises(FileRefused, match="only files uploaded through this page"):
            read_upload(str(path), 10, folder)
    with pytest.raises(FileRefused):
        read_upload(str(good), 9, folder)  # over the size cap


def test_upload_sweep(tmp_path):
    now = time.time()
    files = []
    for i, (age, size) in enumerate([(90_000, 10), (300, 40), (200, 40), (100, 40)]):
        path = tmp_path / f"d{i}" / "f.png"
        path.parent.mkdir()
        path.write_bytes(b"x" * size)
        os.utime(path, (now - age, now - age))
        files.append(path)
    (tmp_path / "link.png").symlink_to(files[3])
    left = sweep_uploads(tmp_path, max_bytes=90, max_age_s=86_400, now=now)
    assert left == 80
    assert [p.exists() for p in files] == [False, False, True, True]  # too old, then the oldest over the size
    assert not (tmp_path / "link.png").is_symlink()  # not a regular file
    assert (tmp_path / "d0").exists()  # emptied just now: Gradio may be about to write into such a folder
    assert sweep_uploads(tmp_path, max_bytes=90, max_age_s=86_400, now=time.time() + 120) == 80
    assert not (tmp_path / "d0").exists() and not (tmp_path / "d1").exists() and (tmp_path / "d2").exists()
