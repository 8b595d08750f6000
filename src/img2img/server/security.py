"""ASGI middlewares for the secure defaults: authentication and a request body limit.

Both are plain ASGI so they cover every route, /docs and /openapi.json included.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json

from .config import ServerConfig


async def _send_json(send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


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
        header = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if self._authorized(header):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":  # refuse the handshake: 1008 is "policy violation"
            return await send({"type": "websocket.close", "code": 1008})
        challenge = b'Basic realm="img2img"' if self.pairs else b'Bearer realm="img2img"'
        ways = (["'Authorization: Bearer <api key>'"] if self.keys else []) + \
            (["HTTP Basic user:password"] if self.pairs else [])
        await _send_json(send, 401, {"error": "Unauthorized", "detail": "authentication required: send "
                                     + " or ".join(ways)},
                         [(b"www-authenticate", challenge)])


class BodyLimitMiddleware:
    """Reads the whole request body, counting bytes as they arrive, and answers 413 once it passes the limit.

    Content-Length is used to refuse early but never trusted: chunked uploads and lying headers are
    counted too. The app then gets the buffered body (memory is bounded by the limit), and later
    receive() calls go to the connection, so disconnects are still seen.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

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
            message = await receive()
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
