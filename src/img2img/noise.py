"""Seeds -> starting noise, including A1111's variation seeds.

A variation seed (`subseed`) with a strength mixes a second noise into the seed's noise by spherical
interpolation, as A1111 does: strength 0 is the seed's noise, 1 the subseed's. In image-to-image the
"starting noise" is every draw made before denoising begins: the sample of the VAE's latent
distribution and the noise added to the encoded image. Both are mixed, so strength 1 gives exactly the
subseed's image (for samplers that add no noise of their own during the steps; those keep drawing
from the seed, as in A1111).

The mixing is attached to a private view of the pipeline (its VAE and its scheduler, both per request),
so the cached pipeline is never changed.
"""

from __future__ import annotations

from typing import Any

from .request import MAX_SEED


def batch_seeds(first: int, batch_size: int, subseed: int | None, strength: float) -> tuple[list[int], list[int]]:
    """A1111's seeds for a batch: seed, seed+1, ...; with variation, one seed and subseeds counting up.

    Counting wraps past the largest seed, so every recorded seed is valid input again.
    """
    if strength > 0 and subseed is not None:
        return [first] * batch_size, [(subseed + i) % (MAX_SEED + 1) for i in range(batch_size)]
    return [(first + i) % (MAX_SEED + 1) for i in range(batch_size)], []


def slerp(strength: float, low, high):
    """A1111's spherical interpolation between two noise tensors of one image (C, H, W), along dim 1."""
    import torch

    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:  # nearly parallel: a straight line is as good and avoids dividing by ~0
        return low * (1 - strength) + high * strength
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - strength) * omega) / so).unsqueeze(1) * low + \
        (torch.sin(strength * omega) / so).unsqueeze(1) * high


def _draw_like(reference, generator):
    """Noise for one image from `generator`, drawn as diffusers draws it (on the generator's device)."""
    import torch

    noise = torch.randn((1, *reference.shape[1:]), generator=generator, device=generator.device,
                        dtype=reference.dtype)
    return noise.to(reference.device)


def _mix(noise, subnoise, strength: float):
    import torch

    return torch.stack([slerp(strength, n, s) for n, s in zip(noise, subnoise)])


class _MixedLatentDistribution:
    """The VAE's latent distribution whose sample() mixes the seed's draw with the subseed's."""

    def __init__(self, distribution, subgenerator, strength: float):
        self._distribution = distribution
        self._subgenerator = subgenerator
        self._strength = strength

    def __getattr__(self, name):
        return getattr(self._distribution, name)

    def sample(self, generator=None):
        from diffusers.utils.torch_utils import randn_tensor

        dist = self._distribution
        drawn = randn_tensor(dist.mean.shape, generator=generator, device=dist.parameters.device,
                             dtype=dist.parameters.dtype)
        sub = _draw_like(drawn, self._subgenerator)
        return dist.mean + dist.std * _mix(drawn, sub, self._strength)


class _VariationVae:
    """Stands in for the pipeline's VAE: encode() hands out mixing distributions, all else is the VAE's."""

    def __init__(self, vae, subgenerators: list, strength: float):
        self._vae = vae
        self._subgenerators = subgenerators  # one per image, in the order the pipeline encodes them
        self._strength = strength
        self._calls = 0

    def __getattr__(self, name):
        return getattr(self._vae, name)

    def encode(self, *args, **kwargs):
        output = self._vae.encode(*args, **kwargs)
        if not hasattr(output, "latent_dist"):  # a VAE without a distribution (tiny autoencoders): no draw
            return output
        subgenerator = self._subgenerators[min(self._calls, len(self._subgenerators) - 1)]
        self._calls += 1
        return _Encoded(_MixedLatentDistribution(output.latent_dist, subgenerator, self._strength))


class _Encoded:
    def __init__(self, latent_dist):
        self.latent_dist = latent_dist


def apply_variation(pipe, subseeds: list[int], strength: float) -> None:
    """Make the private pipeline view mix the subseeds' noise into its starting noise (strength > 0)."""
    import torch

    subgenerators = [torch.Generator("cpu").manual_seed(s) for s in subseeds]
    # not through the pipeline's __setattr__, which would record the stand-in in the pipeline's config
    object.__setattr__(pipe, "vae", _VariationVae(pipe.vae, subgenerators, strength))
    scheduler = pipe.scheduler
    add_noise = scheduler.add_noise
    mixed: dict[str, Any] = {}

    def add_mixed_noise(original, noise, timesteps):
        # inpainting pipelines add the same starting noise again at every step: mix it once
        if mixed.get("from") is not noise:
            sub = torch.cat([_draw_like(noise[i:i + 1], g) for i, g in enumerate(subgenerators)])
            mixed.update({"from": noise, "to": _mix(noise, sub, strength)})
        return add_noise(original, mixed["to"], timesteps)

    scheduler.add_noise = add_mixed_noise


def scale_initial_noise(pipe, multiplier: float) -> None:
    """A1111's initial noise multiplier on the private pipeline view: the noise added to the encoded input is
    scaled, and so is the pure noise an inpainting pipeline starts from at strength 1."""
    scheduler = pipe.scheduler
    add_noise = scheduler.add_noise

    def add_scaled_noise(original, noise, timesteps):
        return add_noise(original, noise * multiplier, timesteps)

    scheduler.add_noise = add_scaled_noise
    sigma = getattr(type(scheduler), "init_noise_sigma", None)
    if isinstance(sigma, property):  # computed from the schedule: a subclass for this one instance
        base = type(scheduler)
        scheduler.__class__ = type(base.__name__, (base,),
                                   {"init_noise_sigma": property(lambda self: sigma.fget(self) * multiplier)})
    else:
        scheduler.init_noise_sigma = scheduler.init_noise_sigma * multiplier


def text_to_image_noise(pipe, width: int, height: int, seeds: list[int], subseeds: list[int], strength: float):
    """Text-to-image starting latents with variation: each seed's draw (as the pipeline would draw it) mixed
    with its subseed's; strength 0 is exactly the pipeline's own noise."""
    import torch

    # the latent channels (an inpainting UNet takes 9 inputs, but its latents have the VAE's 4)
    shape = (1, pipe.vae.config.latent_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    dtype = pipe.unet.dtype

    def draw(seed):
        return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype)

    noise = torch.cat([draw(seed) for seed in seeds])
    return _mix(noise, torch.cat([draw(seed) for seed in subseeds]), strength).to(pipe.unet.device)
