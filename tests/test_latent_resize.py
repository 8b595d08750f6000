"""Resize mode latent (A1111's resize_mode 3, "just resize (latent upscale)"): the input is encoded at its own
size and its latents are resized to the generation size, matching bare diffusers given those latents."""

import pytest
import torch
from diffusers import AutoPipelineForImage2Image, EulerDiscreteScheduler
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents
from PIL import Image

from img2img import InvalidRequest
from img2img.infotext import fields_from_infotext
from img2img.models import PipelineCache
from img2img.request import Request
from img2img.testing import make_photo

FAST = {"steps": 6, "strength": 0.75, "sampler": "Euler", "scheduler": "Automatic", "cfg_scale": 5.0}


def test_latents_are_resized_not_pixels(engine, tiny_sd):
    photo = make_photo(52, 36)  # encoded at 48x32 (whole latents), generated at 96x64: non-square, not 1:1
    pipe = AutoPipelineForImage2Image.from_pretrained(tiny_sd)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(13)
    pixels = pipe.image_processor.preprocess(photo.resize((48, 32), Image.Resampling.LANCZOS))
    with torch.no_grad():
        latents = retrieve_latents(pipe.vae.encode(pixels), generator=generator) * pipe.vae.config.scaling_factor
    factor = pipe.vae_scale_factor
    latents = torch.nn.functional.interpolate(latents, size=(64 // factor, 96 // factor), mode="bilinear")
    expected = pipe(prompt="x", image=latents, strength=0.75, num_inference_steps=6, guidance_scale=5.0,
                    generator=generator).images[0]
    result = engine.transform(photo, "x", seed=13, width=96, height=64, resize_mode=3, **FAST)
    assert result.image.size == (96, 64) and result.request.resize_mode == "latent"
    assert result.image.tobytes() == expected.tobytes()
    assert fields_from_infotext(result.infotexts[0])["resize_mode"] == "latent"
    stretched = engine.transform(photo, "x", seed=13, width=96, height=64, resize_mode="stretch", **FAST)
    assert stretched.image.tobytes() != result.image.tobytes()


def test_latent_resize_with_a_whole_picture_mask_is_refused_before_loading(tiny_sd, square_path):
    from img2img import Engine

    cache = PipelineCache()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 24, 24))
    with pytest.raises(InvalidRequest, match="resize_mode latent resizes latents, not the mask"):
        Engine(str(tiny_sd), cache=cache).transform(square_path, "x", mask=mask, resize_mode="latent")
    assert cache.loaded() == []
    assert Request("x", resize_mode="3").normalized().resize_mode == "latent"
