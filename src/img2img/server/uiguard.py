"""The web UI's gate: what a browser may ask Gradio's routes to do with files.

Gradio checks file paths only when it runs its own server; mounted in ours it takes a client's word for
which file an event is about. So every request to the UI's routes passes here first:

- any `{"path": ...}` object in a JSON body must name a regular file in the upload folder (files.check_upload);
- `/gradio_api/file=...` serves only files in the upload folder (never the history folder, never a URL);
- routes that fetch URLs for the client (`/gradio_api/proxy=`) are closed;
- an event, API name, component or session Gradio does not know answers 404, and an event with the wrong
  number of inputs 422 (Gradio would answer 500, or fail mid-stream, and log a traceback);
- after each upload, the upload folder is swept back under its size limit.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from starlette.concurrency import run_in_threadpool

from ..ui.files import REFUSED, SWEEP_EVERY_S, FileRefused, check_upload, sweep_uploads

log = logging.getLogger("img2img.server")

API = "/gradio_api"
FILE_ROUTES = (f"{API}/file=", f"{API}/file/")
CLOSED_ROUTES = (f"{API}/proxy=",)
BIG_BODY = 64 * 1024  # larger JSON bodies are parsed off the event loop


async def _send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def file_paths(value, found: list) -> list:
    """Every `path` a JSON document names in an object, however deeply nested (iteratively: no recursion limit)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "path" in item and item["path"] is not None:
                found.append(item["path"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _check_body(body: bytes, folder, max_file_bytes: int):
    """The parsed JSON body (None if it is not JSON), after checking every file it names."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: Gradio refuses it as such
    for path in file_paths(document, []):
        check_upload(path, folder, max_file_bytes)
    return document


def _api_name(path: str) -> str | None:
    """The API name in /gradio_api/{run,api,call,call/v2}/NAME[/EVENT]."""
    parts = path[len(API) + 1:].strip("/").split("/")
    if parts[0] in ("run", "api", "call") and len(parts) >= 2:
        return parts[2] if parts[1] == "v2" and len(parts) >= 3 else parts[1]
    return None


class UIGuard:
    """ASGI middleware in front of the mounted UI; the API routes (`api_prefixes`) pass straight through."""

    def __init__(self, app, *, blocks, folder, max_file_bytes: int, max_folder_bytes: int,
                 api_prefixes=("/sdapi/", "/v1/")):
        self.app = app
        self.blocks = blocks
        self.folder = folder
        self.max_file_bytes = max_file_bytes  # no upload can be larger (the request body limit)
        self.max_folder_bytes = max_folder_bytes
        self.api_prefixes = tuple(api_prefixes)
        self._swept = 0.0
        self._sweep_lock = threading.Lock()

    def sweep(self) -> None:
        if not self._sweep_lock.acquire(blocking=False):
            return  # one sweep at a time is enough
        try:
            self._swept = time.monotonic()
            sweep_uploads(self.folder, self.max_folder_bytes)
        except OSError as exc:
            log.warning("cleaning the upload folder failed: %s", exc)
        finally:
            self._sweep_lock.release()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(self.api_prefixes):
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if path.startswith(CLOSED_ROUTES):
            return await _send_json(send, 403, {"error": "Forbidden", "detail": "this route is closed"})
        if path.startswith(FILE_ROUTES):
            named = path[len(FILE_ROUTES[0]):] if path.startswith(FILE_ROUTES[0]) else path[len(FILE_ROUTES[1]):]
            try:
                # relative names resolve from the working folder, as in Gradio
                check_upload(named, self.folder, self.max_file_bytes)
            except FileRefused:
                return await _send_json(send, 403, {"error": "FileNotAvailable", "detail": REFUSED})
            return await self.app(scope, receive, send)
        if method == "GET" and not self._known_session(path, scope):
            return await _send_json(send, 404, {"error": "NotFound", "detail": "no such session; join the queue first"})
        if time.monotonic() - self._swept > SWEEP_EVERY_S:
            threading.Thread(target=self.sweep, daemon=True).start()
        if method in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        content_type = dict(scope.get("headers", [])).get(b"content-type", b"").lower()
        if content_type.startswith(b"multipart/"):
            await self.app(scope, receive, send)
            if path.rstrip("/") == f"{API}/upload":
                await run_in_threadpool(self.sweep)
            return
        chunks = []  # the body limit in front has buffered the body already, so this is one message
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        message = {"type": "http.request", "body": body, "more_body": False}
        try:
            if len(body) > BIG_BODY:
                document = await run_in_threadpool(_check_body, body, self.folder, self.max_file_bytes)
            else:
                document = _check_body(body, self.folder, self.max_file_bytes)
        except FileRefused:
            return await _send_json(send, 403, {"error": "FileNotAvailable", "detail": REFUSED})
        problem = self._event_problem(path, document)
        if problem:
            return await _send_json(send, problem[0], {"error": "NotFound" if problem[0] == 404 else "InvalidRequest",
                                                       "detail": problem[1]})
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return message
            return await receive()

        await self.app(scope, replay, send)

    def _event_problem(self, path: str, document) -> tuple[int, str] | None:
        """What Gradio would fail on with a 500: an unknown event, API name or component, or too few inputs."""
        try:
            fns = self.blocks.fns
            fn = None
            name = _api_name(path)
            if name is not None:
                fn = next((f for f in fns.values() if f.api_name == name), None)
                if fn is None:
                    return 404, f"no API endpoint named {name!r}"
            if isinstance(document, dict) and document.get("fn_index") is not None:
                fn = fns.get(document["fn_index"]) if isinstance(document["fn_index"], int) else None
                if fn is None:
                    return 404, f"no event with fn_index {document['fn_index']!r}"
            if path.rstrip("/") == f"{API}/component_server" and isinstance(document, dict) \
                    and document.get("component_id") not in self.blocks.blocks:
                return 404, f"no component with id {document.get('component_id')!r}"
            data = document.get("data") if isinstance(document, dict) else None
            if fn is not None and isinstance(data, list) and "/call/" not in path:
                shown = [block for block in fn.inputs if not getattr(block, "skip_api", False)]
                if len(data) not in (len(fn.inputs), len(shown)):
                    return 422, f"this event takes {len(fn.inputs)} input values, got {len(data)}"
        except (AttributeError, TypeError):  # a Gradio that is built differently: let it judge for itself
            return None
        return None

    def _known_session(self, path: str, scope) -> bool:
        """Whether an event stream (/queue/data, /call/NAME/EVENT) names a session the queue knows."""
        from urllib.parse import parse_qs

        queue = getattr(self.blocks, "_queue", None)
        pending = getattr(queue, "pending_messages_per_session", None)
        if pending is None:
            return True
        if path == f"{API}/queue/data":
            session = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash", [""])[0]
        elif path.startswith(f"{API}/call/") and len(path[len(API) + 6:].strip("/").split("/")) >= 2:
            event_id = path.rstrip("/").rsplit("/", 1)[1]
            event = queue.event_ids_to_events.get(event_id)
            session = event.session_hash if event is not None else next(
                (s for s, ids in queue.pending_event_ids_session.items() if event_id in ids), event_id)
        else:
            return True
        return session in pending
