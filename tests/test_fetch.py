"""Image URLs (--allow-image-urls): only public addresses, re-checked on every redirect, size and time capped.

The only server a test can reach is on loopback, which the real check refuses; so the fetch tests stand in
a check that takes 127.0.0.1 for public and everything else (127.0.0.2 included) for private.
"""

import http.server
import threading
import time

import pytest

from img2img.errors import InvalidRequest
from img2img.server.fetch import fetch_image, is_public

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        port = self.server.server_address[1]
        routes = {
            "/cat.png": (200, {}, PNG),
            "/big.png": (200, {}, b"x" * 5000),
            "/hop": (302, {"Location": "/cat.png"}, b""),
            "/to-private": (302, {"Location": f"http://127.0.0.2:{port}/cat.png"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/missing": (404, {}, b""),
        }
        if self.path == "/slow.png":
            time.sleep(1.5)
        status, headers, body = routes.get(self.path, (200, {}, PNG))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if self.path != "/big.png":  # no Content-Length: the size is counted while reading
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def origin():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def only_loopback_one(address: str) -> bool:
    return address == "127.0.0.1"


def get(url, **kwargs):
    return fetch_image(url, "init_images[0]", max_bytes=kwargs.pop("max_bytes", 1000), allow=only_loopback_one,
                       **kwargs)


@pytest.mark.parametrize("address, public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("10.1.2.3", False),
    ("172.16.0.1", False), ("192.168.1.10", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("0.0.0.0", False), ("224.0.0.1", False), ("::1", False), ("fe80::1", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("240.0.0.1", False),
])
def test_only_public_addresses(address, public):
    assert is_public(address) is public


def test_fetches_and_follows_a_redirect(origin):
    assert get(origin + "/cat.png") == PNG
    assert get(origin + "/hop") == PNG


def test_loopback_is_refused_by_the_real_check(origin):
    with pytest.raises(InvalidRequest, match="non-public address"):
        fetch_image(origin + "/cat.png", "init_images[0]", max_bytes=1000)


def test_a_name_resolving_to_a_private_address_is_refused():
    with pytest.raises(InvalidRequest, match="cats.example resolves to 10.0.0.7"):
        fetch_image("http://cats.example/cat.png", "f", max_bytes=1000, resolve=lambda host, port: ["10.0.0.7"])


def test_a_redirect_to_a_private_address_is_refused(origin):
    with pytest.raises(InvalidRequest, match="127.0.0.2"):
        get(origin + "/to-private")


@pytest.mark.parametrize("path, words", [
    ("/big.png", "larger than 1,000 bytes"),
    ("/loop", "more than 3 redirects"),
    ("/missing", "HTTP 404"),
])
def test_limits_and_failures(origin, path, words):
    with pytest.raises(InvalidRequest, match=words):
        get(origin + path)


def test_slow_servers_time_out(origin):
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="took longer than 0.5 s"):
        get(origin + "/slow.png", timeout=0.5)
    assert time.monotonic() - started < 1.4


@pytest.mark.parametrize("url", ["ftp://example.com/cat.png", "file:///etc/passwd", "http:///nohost"])
def test_other_schemes_are_refused(url):
    with pytest.raises(InvalidRequest, match="only http and https"):
        get(url)


def test_the_a1111_route_fetches_only_when_allowed(tiny_sd, tmp_path, origin):
    import httpx

    from img2img.server.config import ServerConfig
    from img2img.server.runner import ServerThread

    payload = {"init_images": [origin + "/cat.png"], "prompt": "x"}
    for allow, words in ((False, "--allow-image-urls"), (True, "non-public address")):
        config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, preload=False,
                              history_dir=str(tmp_path), allow_image_urls=allow)
        with ServerThread(config) as running:
            response = httpx.post(running.url + "/sdapi/v1/img2img", json=payload, timeout=30)
        assert response.status_code == 422 and response.json()["field"] == "init_images[0]"
        assert words in response.json()["detail"]
