"""The AUTOMATIC1111-compatible API (/sdapi/v1): payload models, their translation, responses and routes."""

from .routes import router

__all__ = ["router"]
