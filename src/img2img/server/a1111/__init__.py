"""The AUTOMATIC1111-compatible API (/sdapi/v1): payload models, their translation, responses and routes."""

from .probes import queue_routes
from .routes import router

__all__ = ["queue_routes", "router"]
