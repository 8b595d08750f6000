"""img2img: Stable Diffusion image-to-image that really uses your image.

    from img2img import transform
    result = transform("photo.jpg", "oil painting in the style of Van Gogh", strength=0.6, seed=1)
    result.images[0].save("painting.png")  # or result.save("painting.png") to keep the metadata

Importing this package does not import torch or diffusers; they load on first use.
"""

from .engine import Engine, transform
from .errors import ImageError, Img2ImgError, Interrupted, InvalidRequest, ModelNotAvailable, OutputError
from .request import Request, Result
from .version import __version__

__all__ = [
    "Engine", "transform", "Request", "Result", "Img2ImgError", "InvalidRequest", "ImageError",
    "ModelNotAvailable", "OutputError", "Interrupted", "__version__",
]
