"""A1111's resize mode 3, "Just resize (latent upscale)": the input is encoded at its own size and its latents,
not its pixels, are resized (bilinear, as A1111) to the generation size.

The pipeline still encodes the picture itself (same VAE draw from the same generator, so seeds mean what they
mean in the other modes); a stand-in for its VAE resizes what the encoder hands out. Scaling factors and SDXL's
latent normalisation are per-channel affine maps, so resizing before or after them gives the same latents.
"""

from __future__ import annotations

from .geometry import SIZE_MULTIPLE


def encode_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size the input is encoded at: its own, cut down to whole latent pixels."""
    return tuple(max(SIZE_MULTIPLE, side - side % SIZE_MULTIPLE) for side in size)  # type: ignore[return-value]


def _resized(latents, size: tuple[int, int]):
    """Bilinear, as A1111; `size` is in latent pixels (width, height)."""
    import torch

    return torch.nn.functional.interpolate(latents, size=(size[1], size[0]), mode="bilinear")


class _ResizedDistribution:
    def __init__(self, distribution, size: tuple[int, int]):
        self._distribution, self._size = distribution, size

    def __getattr__(self, name):
        return getattr(self._distribution, name)

    def sample(self, generator=None):
        return _resized(self._distribution.sample(generator), self._size)

    def mode(self):
        return _resized(self._distribution.mode(), self._size)


class _Encoded:
    def __init__(self, output, size: tuple[int, int]):
        if hasattr(output, "latent_dist"):
            self.latent_dist = _ResizedDistribution(output.latent_dist, size)
        else:  # a tiny autoencoder hands out latents directly
            self.latents = _resized(output.latents, size)


class _LatentResizingVae:
    """Stands in for the pipeline's VAE: encode() resizes the latents; all else is the VAE's."""

    def __init__(self, vae, size: tuple[int, int]):
        self._vae, self._size = vae, size

    def __getattr__(self, name):
        return getattr(self._vae, name)

    def encode(self, *args, **kwargs):
        return _Encoded(self._vae.encode(*args, **kwargs), self._size)


def resize_encoded_latents(pipe, width: int, height: int) -> None:
    """Make the private pipeline view resize the encoded input's latents to width x height pixels."""
    factor = pipe.vae_scale_factor
    # not through the pipeline's __setattr__, which would record the stand-in in the pipeline's config
    object.__setattr__(pipe, "vae", _LatentResizingVae(pipe.vae, (width // factor, height // factor)))
