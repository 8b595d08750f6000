"""ASGI middlewares for the secure defaults: host and origin checks, authentication (with a browser login
for API keys), and a request body limit with a timeout.

All are plain ASGI so they cover every route, /docs, /openapi.json and the web UI included.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import time

from . import login
from .config import ServerConfig


async def _send(send, status: int, body: bytes, content_type: bytes,
                headers: list[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await _send(send, status, json.dumps(payload).encode(), b"application/json", headers)


async def _send_html(send, status: int, page: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await _send(send, status, page, b"text/html; charset=utf-8",
                [(b"cache-control", b"no-store"), (b"x-frame-options", b"DENY"), *headers])


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def split_host(host: str, default_port: str = "") -> tuple[str | None, str]:
    """(name, port) of a Host header or of an origin's host part, lower case; (None, "") if malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None, ""
        port = rest[1:]
    else:
        name, _, port = host.partition(":")
    if not name or (port and not port.isdigit()):
        return None, ""
    return name.rstrip("."), port or default_port


class HostOriginMiddleware:
    """Refuses what a web page could make a browser send: a `Host` that is not a name of this server (DNS
    rebinding) and a state-changing request or websocket from a foreign `Origin` (CSRF).

    Hosts: `localhost`, loopback addresses, the address the server listens on, `--allowed-host` names and,
    when it listens on every interface, any IP address (rebinding needs a name). Origins: the request's own
    (same scheme, host and port) and the `--cors-origin` ones. A request without an Origin header is not a
    cross-origin browser request (curl, scripts, A1111 clients) and passes.
    """

    SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

    def __init__(self, app, config: ServerConfig):
        self.app = app
        bound = config.host.strip("[]").lower()
        self.names = {"localhost", bound, *(name.lower().strip("[]").rstrip(".") for name in config.allowed_hosts)}
        self.any_address = bound in ("0.0.0.0", "::")
        self.origins = {origin.rstrip("/").lower() for origin in config.cors_origins}
        self.any_origin = "*" in self.origins  # --cors-origin '*': every site may call (never the default)

    def host_allowed(self, host: str) -> bool:
        name = split_host(host)[0]
        if name is None:
            return False
        if name in self.names:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        return self.any_address or address.is_loopback

    def origin_allowed(self, origin: str, host: str, scheme: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if self.any_origin or origin in self.origins:
            return True
        origin_scheme, sep, origin_host = origin.partition("://")
        ours = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        if not sep or origin_scheme != ours:
            return False  # "null" (sandboxed frames, local files), another scheme, anything odd
        default_port = "443" if ours == "https" else "80"
        return split_host(origin_host, default_port) == split_host(host, default_port)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host, origin = _header(scope, b"host"), _header(scope, b"origin")
        problem = None
        if host is not None and not self.host_allowed(host):
            name = split_host(host)[0] or "NAME"
            problem = (400, "InvalidHost", f"Host {host!r} is not a name of this server; to serve it under that "
                                           f"name, start the server with --allowed-host {name}")
        elif origin is not None and (scope["type"] == "websocket" or scope["method"] not in self.SAFE_METHODS) \
                and not self.origin_allowed(origin, host or "", scope.get("scheme", "http")):
            problem = (403, "ForeignOrigin", f"cross-origin request from {origin!r} refused; to allow that origin, "
                                             "start the server with --cors-origin ORIGIN")
        if problem is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        status, error, detail = problem
        await _send_json(send, status, {"error": error, "detail": detail}, [(b"connection", b"close")])


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class AuthMiddleware:
    """Accepts `Authorization: Bearer <api key>` and HTTP Basic (A1111's --api-auth), each when configured.

    Every candidate is compared in constant time, and all of them are always compared, so timing reveals
    neither a secret nor which one matched.
    """

    def __init__(self, app, config: ServerConfig):
        self.app = app
        self.keys = list(config.api_keys)
        self.pairs = list(config.api_auth)
        self.client_timeout = config.client_timeout

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        scheme, value = scheme.lower(), value.strip()
        ok = False
        if scheme == "bearer" and self.keys:
            for key in self.keys:
                ok |= _equal(value, key)
        elif scheme == "basic" and self.pairs:
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            if not sep:
                return False
            for expected_user, expected_password in self.pairs:
                ok |= _equal(user, expected_user) & _equal(password, expected_password)
        return ok

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if self.keys and scope["type"] == "http" and scope["path"] in ("/login", "/logout"):
            return await self._login_route(scope, receive, send)
        cookie = login.cookie_from(scope.get("headers", []))
        if self._authorized(_header(scope, b"authorization") or "") or \
                (self.keys and cookie and login.token_valid(cookie, self.keys)):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":  # refuse the handshake: 1008 is "policy violation"
            return await send({"type": "websocket.close", "code": 1008})
        challenge = b'Basic realm="img2img"' if self.pairs else b'Bearer realm="img2img"'
        if self.keys and scope["method"] == "GET" and "text/html" in (_header(scope, b"accept") or ""):
            # A browser: it cannot send a Bearer key, so it gets the login page (Basic users get the
            # browser's own prompt from the challenge instead).
            path = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
            return await _send_html(send, 401, login.login_page(path), [(b"www-authenticate", challenge)])
        ways = (["'Authorization: Bearer <api key>'"] if self.keys else []) + \
            (["HTTP Basic user:password"] if self.pairs else [])
        await _send_json(send, 401, {"error": "Unauthorized", "detail": "authentication required: send "
                                     + " or ".join(ways)},
                         [(b"www-authenticate", challenge)])

    async def _login_route(self, scope, receive, send):
        """GET /login: the form. POST /login: check the key, set the cookie. GET/POST /logout: forget it."""
        secure = login.secure_context(scope.get("scheme", "http"), _header(scope, b"host") or "")
        if scope["path"] == "/logout":
            if scope["method"] != "POST":
                return await _send_html(send, 200, login.logout_page())
            return await _send(send, 303, b"", b"text/plain", [(b"location", b"/login"),
                                                                 (b"set-cookie", login.set_cookie("", secure, 0))])
        if scope["method"] != "POST":
            query = scope.get("query_string", b"").decode("latin-1")
            return await _send_html(send, 200, login.login_page(login.read_form(query.encode()).get("next", "/")))
        body, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.client_timeout)
            except asyncio.TimeoutError:
                return await _send_json(send, 408, {"error": "RequestTimeout", "detail": "the login form stalled"},
                                        [(b"connection", b"close")])
            if message["type"] != "http.request":
                return
            body.append(message.get("body", b""))
            size += len(body[-1])
            if size > login.MAX_FORM_BYTES:
                return await _send_json(send, 413, {"error": "PayloadTooLarge", "detail": "login form too large"})
            if not message.get("more_body", False):
                break
        form = login.read_form(b"".join(body))
        key, target = form.get("key", ""), login.safe_next(form.get("next", "/"))
        ok = False
        for expected in self.keys:
            ok |= _equal(key, expected)
        if not ok:
            await asyncio.sleep(0.5)  # slows down guessing a little; keys should be long and random anyway
            return await _send_html(send, 401, login.login_page(target, "That is not this server's API key."))
        token = login.make_token(self.keys[[_equal(key, k) for k in self.keys].index(True)],
                                 int(time.time()) + login.LOGIN_DAYS * 86400)
        await _send(send, 303, b"", b"text/plain", [(b"location", target.encode("latin-1", "replace")),
                                                     (b"set-cookie", login.set_cookie(token, secure))])


class BodyLimitMiddleware:
    """Reads the whole request body, counting bytes as they arrive, and answers 413 once it passes the limit,
    or 408 when the client sends nothing for `idle_timeout` seconds (a slow-body client holds no task forever).

    Content-Length is used to refuse early but never trusted: chunked uploads and lying headers are
    counted too. The app then gets the buffered body (memory is bounded by the limit), and later
    receive() calls go to the connection, so disconnects are still seen.
    """

    def __init__(self, app, max_bytes: int, idle_timeout: float | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout

    async def _too_large(self, send) -> None:
        limit_mb = self.max_bytes / (1024 * 1024)
        await _send_json(send, 413, {"error": "PayloadTooLarge",
                                     "detail": f"request body is larger than the limit of {limit_mb:g} MB "
                                               "(server option --max-body-mb)"},
                         [(b"connection", b"close")])

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    return await self._too_large(send)
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.idle_timeout)
            except asyncio.TimeoutError:
                return await _send_json(send, 408, {"error": "RequestTimeout", "detail": (
                    f"no part of the request body arrived for {self.idle_timeout:g} s (server option "
                    "--client-timeout)")}, [(b"connection", b"close")])
            if message["type"] == "http.disconnect":
                return  # nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        del chunks
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
