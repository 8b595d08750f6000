"""Fetching an input image from an http(s) URL without letting a request reach inside the network (SSRF).

Every address a host name resolves to must be public (no loopback, private, link-local, shared,
multicast or reserved ranges, IPv4-mapped forms included); the connection goes to the checked address
itself, so a second DNS answer cannot swap it; redirects are followed only a few times and each target is
checked again; the body is capped in bytes and the whole fetch in seconds.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from urllib.parse import urljoin, urlsplit

from ..errors import InvalidRequest

MAX_REDIRECTS = 3
USER_AGENT = "img2img-server"


def is_public(address: str) -> bool:
    """True for globally routable unicast addresses only."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local
                                 or ip.is_private or ip.is_unspecified)


def _resolve(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


class _PinnedHTTP(http.client.HTTPConnection):
    """Talks to `address` while naming `host` (Host header)."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """Talks to `address` while naming `host` (Host header, SNI and certificate check)."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch_image(url: str, field: str, *, max_bytes: int, timeout: float = 10.0, resolve=_resolve,
                allow=is_public) -> bytes:
    """The body at `url`, or InvalidRequest naming `field` and what was wrong."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(f"{field}: only http and https URLs are fetched, got {url[:80]!r}", field)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = resolve(parts.hostname, port)
        except (OSError, UnicodeError) as exc:
            raise InvalidRequest(f"{field}: cannot resolve {parts.hostname!r} ({exc})", field) from None
        if not addresses:
            raise InvalidRequest(f"{field}: {parts.hostname!r} has no address", field)
        refused = [a for a in addresses if not allow(a)]
        if refused:
            raise InvalidRequest(f"{field}: {parts.hostname} resolves to {refused[0]}, a private, loopback or "
                                 "otherwise non-public address; such URLs are never fetched", field)
        connection_class = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        remaining = max(0.1, deadline - time.monotonic())
        connection = connection_class(parts.hostname, port, addresses[0], remaining)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise InvalidRequest(f"{field}: fetching {url[:80]} gave HTTP {response.status}", field)
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise InvalidRequest(f"{field}: the image at {url[:80]} is larger than {max_bytes:,} bytes", field)
            chunks, size = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise InvalidRequest(f"{field}: fetching {url[:80]} took longer than {timeout:g} s", field)
                chunk = response.read(65536)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > max_bytes:
                    raise InvalidRequest(f"{field}: the image at {url[:80]} is larger than {max_bytes:,} bytes",
                                         field)
                chunks.append(chunk)
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError) or "timed out" in str(exc):
                raise InvalidRequest(f"{field}: fetching {url[:80]} took longer than {timeout:g} s", field) from None
            raise InvalidRequest(f"{field}: cannot fetch {url[:80]} ({exc})", field) from None
        finally:
            connection.close()
    raise InvalidRequest(f"{field}: more than {MAX_REDIRECTS} redirects from {url[:80]}", field)
