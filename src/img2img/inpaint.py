"""Inpainting for the engine: which mask a request means, the pipeline's inputs, the infotext keys.

A request repaints part of its image when it comes with a mask (a file, bytes, PIL image or array), asks
for the mask from the input's transparency, or outpaints (the canvas grows and the new area is the mask).
Pixel and box work lives in masks.py; here is what needs the request or the pipeline (A1111's latent
"masked content" modes among it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import masks
from .errors import InvalidRequest
from .masks import AREA_INFOTEXT, FILL_INFOTEXT, InpaintInputs
from .request import MAX_SIDE, Request


@dataclass
class Repaint:
    canvas: Any  # RGB: the picture to repaint (the input, or the outpaint canvas around it)
    mask: Any  # L, the canvas's size: white = repaint (inverted when asked; never empty)
    digest: str | None  # of the mask as given; None when the mask was made here (outpaint)
    latent_mask: Any = None  # L, the canvas's size: A1111's latent_mask, what the generation itself repaints


def check_repaint_options(request: Request, has_mask: bool) -> bool:
    """Whether the request repaints part of its image; refuses options that name no area, or two."""
    given = [name for name, on in (("a mask", has_mask), ("mask_from_alpha", request.mask_from_alpha),
                                   ("outpaint", request.outpaint is not None)) if on]
    if len(given) > 1:
        field = "outpaint" if request.outpaint is not None else "mask_from_alpha"
        raise InvalidRequest(f"{' and '.join(given)} both set the area to repaint; use one", field)
    if given and request.resize_mode == "latent" and request.inpaint_area == "whole":
        raise InvalidRequest("resize_mode latent resizes latents, not the mask; with a mask use inpaint_area masked "
                             "or resize_mode stretch, crop or fill", "resize_mode")
    if not given:
        for field, on in (("invert_mask", request.invert_mask), ("inpaint_area", request.inpaint_area == "masked")):
            if on:
                raise InvalidRequest(f"{field} applies to a mask; pass a mask (or mask_from_alpha)", field)
    return bool(given)


def read_repaint(request: Request, sources: list, loaded_image, mask_source: Any, *, max_pixels: int,
                 latent_mask: Any = None) -> Repaint | None:
    """The canvas and mask a request repaints, or None for a request without a mask.

    `sources` are the input images as the caller passed them (the first is read again for its alpha),
    `loaded_image` the first one loaded (images.LoadedImage), or None for text-to-image. `latent_mask`
    (A1111's, with a mask only) is what the generation repaints, unblurred; the mask still decides what
    is pasted back."""
    if latent_mask is not None and mask_source is None:
        raise InvalidRequest("latent_mask goes with a mask: it replaces the mask for the generation only",
                             "latent_mask")
    if not check_repaint_options(request, mask_source is not None):
        return None
    if loaded_image is None:
        raise InvalidRequest("a mask (or mask_from_alpha, outpaint) needs an input image", "mask")
    if len(sources) > 1:  # Engine.run repaints several inputs one by one, with a mask given as one
        raise InvalidRequest("mask_from_alpha and outpaint work on one input image at a time", "mask")
    image = loaded_image.image
    if request.outpaint is not None:
        canvas, mask = masks.outpaint(image, request.outpaint)
        width, height = canvas.size
        if max(width, height) > MAX_SIDE or width * height > max_pixels:
            raise InvalidRequest(f"outpaint: the canvas would be {width}x{height}, over the limit of {MAX_SIDE} px a "
                                 f"side and {max_pixels:,} pixels", "outpaint")
        return Repaint(canvas, masks.invert(mask) if request.invert_mask else mask, None)
    if request.mask_from_alpha:
        loaded = masks.mask_from_alpha(sources[0], max_pixels=max_pixels, round_alpha=request.mask_round)
    else:
        loaded = masks.load_mask(mask_source, image.size, max_pixels=max_pixels, round_alpha=request.mask_round)
    latent = None
    if latent_mask is not None:
        latent = masks.load_mask(latent_mask, image.size, max_pixels=max_pixels, round_alpha=request.mask_round,
                                 field="latent_mask").image
    return Repaint(image, masks.repaint_area(loaded, inverted=request.invert_mask), loaded.digest, latent)


def prepare_inputs(request: Request, repaint: Repaint | None, native: int) -> InpaintInputs | None:
    """Blur the mask and cut out what the pipeline repaints (None without a mask)."""
    if repaint is None:
        return None
    return masks.prepare_inpaint(repaint.canvas, repaint.mask, blur_xy=request.mask_blur,
                                 fill_mode=request.inpaint_fill, area=request.inpaint_area,
                                 padding=request.inpaint_padding, resize_mode=request.resize_mode, native=native,
                                 width=request.width, height=request.height, latent_mask=repaint.latent_mask)


def pipeline_args(pipe, request: Request, prepared: list, inputs: InpaintInputs | None, seeds: list[int],
                  generators: list) -> dict:
    """The inpainting pipeline's image arguments: the picture(s), the mask and the size."""
    width, height = prepared[0].size
    # an inpainting model without a mask repaints everything, as in A1111
    args = {"image": prepared[0] if len(prepared) == 1 else prepared,
            "mask_image": inputs.mask if inputs else masks.full_mask(prepared[0].size), "width": width,
            "height": height}
    if inputs is not None and request.inpaint_fill in ("latent-noise", "latent-nothing"):
        args.update(latent_fill(pipe, inputs, request.inpaint_fill, seeds, generators))
    return args


def blank_picture(size: tuple[int, int]):
    """Text-to-image on an inpainting model: the picture it is given, all of it masked, so its pixels never reach
    the model (the masked image is zero, as in A1111's text-to-image conditioning of inpainting models)."""
    from PIL import Image

    return Image.new("RGB", size, (128, 128, 128))


def soft_mask_processor(processor):
    """The pipeline's mask processor without its 0.5 threshold (A1111's mask_round off)."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor(vae_scale_factor=processor.config.vae_scale_factor, do_normalize=False,
                             do_binarize=False, do_convert_grayscale=True)


def infotext_params(request: Request, repaint: Repaint | None) -> dict:
    """A1111's inpainting infotext keys, plus the mask's digest and the outpaint margins."""
    if repaint is None:
        return {}
    blur_x, blur_y = request.mask_blur
    masked = request.inpaint_area == "masked"
    return {
        "Mask blur": blur_x if blur_x == blur_y else None,
        "Mask blur x": blur_x if blur_x != blur_y else None,
        "Mask blur y": blur_y if blur_x != blur_y else None,
        "Mask mode": "Inpaint not masked" if request.invert_mask else None,
        "Masked content": FILL_INFOTEXT[request.inpaint_fill],
        "Inpaint area": AREA_INFOTEXT[request.inpaint_area],
        "Masked area padding": request.inpaint_padding if masked else None,
        "Mask round": False if not request.mask_round else None,
        "Mask from alpha": True if request.mask_from_alpha else None,
        "Mask hash": repaint.digest[:10] if repaint.digest else None,
        "Outpaint": ",".join(str(m) for m in request.outpaint) if request.outpaint else None,
    }


def latent_fill(pipe, inputs: InpaintInputs, fill_mode: str, seeds: list[int], generators: list) -> dict:
    """Pipeline arguments that start the masked area from noise ("latent noise") or from zero ("latent
    nothing") instead of the encoded picture, as A1111 does. The picture is encoded with the run's
    generators, as the pipeline itself would; the noise is drawn from each image's seed."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    device, dtype = pipe._execution_device, pipe.vae.dtype
    width, height = inputs.size
    generator = generators[0] if len(generators) == 1 else generators
    picture = pipe.image_processor.preprocess(inputs.image, height=height, width=width).to(device, dtype)
    pixel_mask = pipe.mask_processor.preprocess(inputs.mask, height=height, width=width).to(device, dtype)
    with torch.no_grad():
        latents = pipe._encode_vae_image(picture, generator=generator)
        mask = torch.nn.functional.interpolate(pixel_mask, size=latents.shape[-2:]).to(latents.dtype)
        latents = latents.repeat(len(seeds), 1, 1, 1)
        if fill_mode == "latent-noise":
            shape = (1, *latents.shape[1:])
            noise = torch.cat([randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(seed), device=device,
                                            dtype=latents.dtype) for seed in seeds])
            latents = latents * (1 - mask) + noise * mask
        else:
            latents = latents * (1 - mask)
        if pipe.unet.config.in_channels == 9:  # the UNet also sees the picture with the masked part blanked
            masked_image_latents = pipe._encode_vae_image(picture * (pixel_mask < 0.5), generator=generator)
        else:  # a 4-channel UNet does not use it, but the pipeline cannot derive it from latents
            masked_image_latents = torch.zeros_like(latents[:1])
    return {"image": latents, "masked_image_latents": masked_image_latents}
