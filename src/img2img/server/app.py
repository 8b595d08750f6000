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
from .security import AuthMiddleware, BodyLimitMiddleware
from .service import Service
from .web import install_error_handlers

log = logging.getLogger("img2img.server")


def create_app(config: ServerConfig, service: Service | None = None) -> FastAPI:
    config.validate()
    service = service or Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if config.preload:
            service.preload()
        yield
        service.queue.shutdown(grace=config.shutdown_grace)

    app = FastAPI(title="img2img", version=__version__, lifespan=lifespan,
                  description="Stable Diffusion image-to-image: an AUTOMATIC1111-compatible API (/sdapi/v1) "
                              "and a native API (/v1).")
    app.state.service = service
    app.state.config = config
    install_error_handlers(app)
    app.include_router(a1111.router(service))
    app.include_router(native.router(service))
    # The last one added runs first: CORS answers preflights before auth, and auth runs before the body is read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    if config.auth_enabled:
        app.add_middleware(AuthMiddleware, config=config)
    if config.ui:
        _mount_ui(app, service)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=["X-Seed", "Retry-After"])
    return app


def _mount_ui(app: FastAPI, service: Service) -> None:
    """The Gradio UI at /, on the same queue; API routes were added first, so they keep their paths."""
    try:
        import gradio as gr
    except ImportError:
        log.warning("web UI off: it needs gradio (pip install 'img2img[ui]')")
        return
    from ..ui.blocks import build_ui, launch_options

    history = service.history
    blocks = build_ui(service, history)
    options = launch_options(history)
    gr.mount_gradio_app(app, blocks, path="/", allowed_paths=options["allowed_paths"], css=options["css"],
                        footer_links=[], show_error=True)
