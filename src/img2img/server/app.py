"""create_app(config): the FastAPI application with the A1111 routes, native routes and the job queue.

    from img2img.server.app import create_app
    from img2img.server.config import ServerConfig
    app = create_app(ServerConfig(models=["sd21-base"]))
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ..version import __version__
from . import a1111, native
from .config import ServerConfig
from .security import AuthMiddleware, BodyLimitMiddleware, HostOriginMiddleware
from .service import Service
from .web import install_error_handlers

log = logging.getLogger("img2img.server")


def create_app(config: ServerConfig, service: Service | None = None) -> FastAPI:
    config.validate()
    service = service or Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        service.close(grace=config.shutdown_grace)

    app = FastAPI(title="img2img", version=__version__, lifespan=lifespan,
                  description="Stable Diffusion image-to-image: an AUTOMATIC1111-compatible API (/sdapi/v1) "
                              "and a native API (/v1).")
    app.state.service = service
    app.state.config = config
    install_error_handlers(app)
    app.include_router(a1111.router(service))
    app.include_router(a1111.queue_routes(service))
    app.include_router(native.router(service))
    # The last one added runs first: host and origin checks, then CORS (it answers preflights before auth),
    # then auth (before any body is read), then the body limit, then the web UI's file gate.
    if config.ui:
        _mount_ui(app, service)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes, idle_timeout=config.client_timeout)
    if config.auth_enabled:
        app.add_middleware(AuthMiddleware, config=config)
    from fastapi.middleware.cors import CORSMiddleware

    # Always present, even with no origin allowed: the web UI then adds no CORS headers of its own (Gradio
    # would answer any localhost origin, with credentials), so --cors-origin is the one policy.
    app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                       allow_headers=["Authorization", "Content-Type"], expose_headers=["X-Seed", "Retry-After"])
    app.add_middleware(HostOriginMiddleware, config=config)
    return app


def _mount_ui(app: FastAPI, service: Service) -> None:
    """The Gradio UI at /, on the same queue; API routes were added first, so they keep their paths."""
    try:
        import gradio as gr
    except ImportError:
        log.warning("web UI off: it needs gradio (pip install 'img2img[ui]')")
        return
    from ..ui.blocks import CSS, build_ui
    from ..ui.files import use_private_upload_folder
    from .uiguard import UIGuard

    folder = use_private_upload_folder()  # before the UI is built: Gradio's components remember it
    config = service.config
    blocks = build_ui(service, service.history)
    # No allowed_paths: results reach the browser as Gradio's copies in the upload folder, so neither the
    # history database nor any other file in the history folder is ever served.
    gr.mount_gradio_app(app, blocks, path="/", css=CSS, footer_links=[], show_error=True,
                        max_file_size=config.max_body_bytes)
    app.add_middleware(UIGuard, blocks=blocks, folder=folder, max_file_bytes=config.max_body_bytes,
                       max_folder_bytes=int(config.upload_cache_mb * 1024 * 1024))
