"""Cheap progress previews: a tiny autoencoder (TAESD) where one is at hand, else a linear map of the latents.

The tiny autoencoder is the model's own when it runs with one (--vae taesd), else the family's TAESD/TAESDXL
when it is already in the local Hugging Face cache (never downloaded for a preview); it decodes a full-size
picture for a few percent of the VAE's cost, and the final image still uses the model's own VAE.

Otherwise a linear map gives a preview of the latents' size (1/8 of the image):
The map is fitted once per loaded model, so it suits every family without hand-tuned tables: the model's
own VAE encodes a built-in colour test picture (two versions, channels rotated), and a least-squares fit
gives a (latent channels + 1) x 3 matrix from the pipeline's scaled latents to pixels in [-1, 1]. SD 1.x/2.x
and SDXL (4 latent channels) get a 5 x 3 matrix. A preview has the latents' size (1/8 of the image).
"""

from __future__ import annotations

import io
import threading

_FITS: dict[int, object] = {}
_LOCK = threading.Lock()


def fit_projection(pipe):
    """(C + 1) x 3 float tensor mapping [latent channels, 1] to RGB in [-1, 1]; cached per VAE."""
    import numpy as np
    import torch

    from ..testing import make_photo

    vae = pipe.vae
    with _LOCK:
        if id(vae) in _FITS:
            return _FITS[id(vae)]
        photo = np.asarray(make_photo(128, 128, seed=3), dtype=np.float32)
        pictures = np.stack([photo, np.roll(photo, 1, axis=-1), np.roll(photo, 2, axis=-1)])
        pixels = torch.from_numpy(pictures).permute(0, 3, 1, 2) / 127.5 - 1.0
        with torch.no_grad():
            latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean.float().cpu()
        config = vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            latents = (latents - torch.tensor(mean).view(1, -1, 1, 1)) * config.scaling_factor / \
                torch.tensor(std).view(1, -1, 1, 1)
        else:
            latents = (latents - (getattr(config, "shift_factor", None) or 0.0)) * config.scaling_factor
        factor = pixels.shape[-1] // latents.shape[-1]
        target = torch.nn.functional.avg_pool2d(pixels, factor)
        channels = latents.shape[1]
        design = torch.cat([latents.permute(0, 2, 3, 1).reshape(-1, channels),
                            torch.ones(latents.numel() // channels, 1)], dim=1)
        solution = torch.linalg.lstsq(design, target.permute(0, 2, 3, 1).reshape(-1, 3)).solution
        _FITS[id(vae)] = solution
        return solution


_TINY: dict[tuple, object] = {}


def tiny_decoder(pipe):
    """The tiny autoencoder to preview with, or None: the pipeline's own, else a cached TAESD (loaded once)."""
    from ..backends.autoencoders import cached_tiny, is_tiny

    if is_tiny(pipe.vae) or getattr(pipe.vae, "tiny", False):  # also OpenVINO's compiled tiny autoencoder
        return pipe.vae
    is_xl = "XL" in type(pipe).__name__
    dtype = str(pipe.vae.dtype).removeprefix("torch.")
    key = (is_xl, dtype, str(pipe.vae.device))
    with _LOCK:
        if key not in _TINY:
            _TINY[key] = cached_tiny(is_xl, dtype, str(pipe.vae.device))
        return _TINY[key]


def preview_png(pipe, latents) -> bytes:
    """A PNG of the first image in a latents batch (B, C, h, w): tiny autoencoder, or the fitted linear map."""
    import torch

    decoder = tiny_decoder(pipe)
    if decoder is not None:
        with torch.no_grad():
            first = latents[:1].detach().to(decoder.device, decoder.dtype)
            rgb = decoder.decode(first).sample[0].float().clamp(-1, 1).permute(1, 2, 0).cpu()
        return _png(rgb)
    projection = fit_projection(pipe)
    with torch.no_grad():
        first = latents[0].detach().float().cpu()
        channels, height, width = first.shape
        if channels + 1 != projection.shape[0]:
            raise ValueError("latent channels do not match the fitted preview map")
        flat = torch.cat([first.permute(1, 2, 0).reshape(-1, channels), torch.ones(height * width, 1)], dim=1)
        rgb = (flat @ projection).reshape(height, width, 3).clamp(-1, 1)
    return _png(rgb)


def _png(rgb) -> bytes:
    """HxWx3 float tensor in [-1, 1] -> PNG bytes."""
    import numpy as np
    from PIL import Image

    array = ((rgb.numpy() + 1.0) * 127.5 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, "PNG")
    return buffer.getvalue()
