"""HTTP plumbing shared by the routers: waiting for a queued job, and exceptions -> JSON responses."""

from __future__ import annotations

import asyncio
import logging

from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ImageError, InvalidRequest, ModelNotAvailable, OutputError
from .jobs import JobDropped, QueueFull, ShuttingDown, WorkerLost
from .service import Service, TooManyPixels

log = logging.getLogger("img2img.server")

POLL_SECONDS = 0.2


async def await_job(http: HttpRequest, service: Service, fn, label: str = "", together=None):
    """Queue `fn(job)` and wait for it. A client that disconnects before its job starts loses its place.
    `together` (Service.together) lets the job share a batched call with others."""
    job = service.queue.submit(fn, label=label, together=together)
    future = asyncio.wrap_future(job.future)
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=POLL_SECONDS)
            if done:
                return future.result()
            if not job.progress.started and await http.is_disconnected():
                job.mark_client_gone()
                service.queue.cancel(job)
    except asyncio.CancelledError:
        job.mark_client_gone()
        service.queue.cancel(job)
        raise


def error_json(status: int, error: str, detail: str, field: str | None = None, headers: dict | None = None):
    body = {"error": error, "detail": detail}
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


def _location(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    name = ""
    for part in parts:
        name += f"[{part}]" if part.isdigit() else (f".{part}" if name else part)
    return name or "body"


def install_error_handlers(app) -> None:
    @app.exception_handler(InvalidRequest)
    async def invalid(_, exc: InvalidRequest):
        return error_json(422, "InvalidRequest", str(exc), exc.field)

    @app.exception_handler(TooManyPixels)
    async def too_many_pixels(_, exc: TooManyPixels):
        return error_json(413, "ImageTooLarge", str(exc), "image")

    @app.exception_handler(ImageError)
    async def bad_image(_, exc: ImageError):
        return error_json(422, "ImageError", str(exc), getattr(exc, "field", None) or "image")

    @app.exception_handler(ModelNotAvailable)
    async def no_model(_, exc: ModelNotAvailable):
        return error_json(503, "ModelNotAvailable", str(exc))

    @app.exception_handler(OutputError)
    async def output_error(_, exc: OutputError):
        return error_json(500, "OutputError", str(exc))

    @app.exception_handler(QueueFull)
    async def queue_full(_, exc: QueueFull):
        return error_json(503, "QueueFull", str(exc), headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(ShuttingDown)
    async def shutting_down(_, exc: ShuttingDown):
        return error_json(503, "ShuttingDown", str(exc), headers={"Connection": "close"})

    @app.exception_handler(JobDropped)
    async def dropped(_, exc: JobDropped):
        return error_json(503, "JobDropped", str(exc))

    @app.exception_handler(WorkerLost)
    async def worker_lost(_, exc: WorkerLost):
        return error_json(503, "WorkerLost", str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def validation(_, exc: RequestValidationError):
        problems = []
        first_field = None
        for error in exc.errors():
            where = _location(error.get("loc", ()))
            first_field = first_field or where
            if error.get("type") == "extra_forbidden":
                problems.append(f"{where}: unknown field; this server does not support it")
            elif error.get("type") == "missing":
                problems.append(f"{where}: required")
            else:
                problems.append(f"{where}: {error.get('msg', 'invalid value')} (got {error.get('input')!r:.60})")
        return error_json(422, "InvalidRequest", "; ".join(problems) or "invalid request", first_field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return error_json(exc.status_code, "HTTPError", detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_json(500, "InternalServerError",
                          f"internal error ({type(exc).__name__}); the server log has the details")
