"""Exceptions users can catch. Every message names the problem and, where there is one, the fix."""


class Img2ImgError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidRequest(Img2ImgError, ValueError):
    """A parameter is out of range or inconsistent with the others."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ImageError(Img2ImgError):
    """An input image cannot be read: missing, empty, corrupt, truncated, too large or not an image."""


class ModelNotAvailable(Img2ImgError):
    """The model cannot be loaded: not cached and not downloadable, missing path, unsafe format."""


class OutputError(Img2ImgError):
    """An output cannot be written: it exists already, the folder is missing, the disk is full."""


class Interrupted(Img2ImgError):
    """The running generation was stopped on request."""
