"""Browser login for `--api-key`: browsers cannot send a Bearer token by themselves, so a page takes the key
once and answers with a cookie that stands for it.

The cookie holds an expiry time and an HMAC of it keyed with the API key, never the key itself: it cannot
be turned back into the key, it expires after LOGIN_DAYS, and changing the key invalidates every cookie.
It is HttpOnly (scripts cannot read it), SameSite=Strict (other sites' pages do not send it) and Secure
whenever the browser allows that (HTTPS, or a loopback address, which browsers treat as secure).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import time
from urllib.parse import parse_qs

COOKIE = "img2img_auth"
LOGIN_DAYS = 30
MAX_FORM_BYTES = 8192


def make_token(key: str, expires: int) -> str:
    signature = hmac.new(key.encode(), f"img2img-login:{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{signature}"


def token_valid(token: str, keys: list[str], now: float | None = None) -> bool:
    expires, _, signature = token.partition(".")
    if not expires.isdigit() or int(expires) < (time.time() if now is None else now):
        return False
    ok = False
    for key in keys:  # all of them, in constant time: timing tells nothing
        ok |= hmac.compare_digest(make_token(key, int(expires)).encode(), token.encode())
    return ok


def cookie_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                cookie_name, _, cookie_value = part.strip().partition("=")
                if cookie_name == COOKIE:
                    return cookie_value
    return ""


def set_cookie(token: str, secure: bool, max_age: int = LOGIN_DAYS * 86400) -> bytes:
    return (f"{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else "")).encode()


def secure_context(scheme: str, host: str) -> bool:
    """Whether a browser keeps a Secure cookie from this address: over HTTPS, or from a loopback host."""
    if scheme in ("https", "wss"):
        return True
    name = host.strip().lower()
    name = name[1:].partition("]")[0] if name.startswith("[") else name.partition(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def safe_next(value: str) -> str:
    """Where to go after logging in: a path on this server only (no `//host` or `/\\host` open redirects)."""
    if not value.startswith("/") or value.startswith(("//", "/\\")) or any(c in value for c in "\r\n\0"):
        return "/"
    return value


def read_form(body: bytes) -> dict[str, str]:
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=10)
    return {name: values[0] for name, values in fields.items()}


def login_page(next_path: str = "/", message: str = "") -> bytes:
    note = f'<p class="error">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>img2img: log in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:26em;margin:4em auto;padding:0 1em}}
input{{width:100%;padding:.5em;margin:.3em 0 1em;box-sizing:border-box}}button{{padding:.5em 1.5em}}
.error{{color:#b00020}}</style></head>
<body><h1>img2img</h1><p>This server needs its API key.</p>{note}
<form method="post" action="/login"><label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" autofocus required>
<input type="hidden" name="next" value="{html.escape(safe_next(next_path), quote=True)}">
<button type="submit">Log in</button></form></body></html>""".encode()


def logout_page() -> bytes:
    return b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>img2img: log out</title></head>
<body style="font-family:system-ui,sans-serif;max-width:26em;margin:4em auto">
<form method="post" action="/logout"><button type="submit">Log out of img2img</button></form></body></html>"""
