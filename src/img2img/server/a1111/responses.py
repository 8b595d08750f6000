"""A1111's response body: {images, parameters, info}, with info as a JSON string."""

from __future__ import annotations

import base64
import json
import time

from ...request import Request
from ...version import __version__
from .payloads import Img2ImgPayload


def response(payload: Img2ImgPayload, prepared: Request, outcome, slot, parts: int) -> dict:
    """A1111's {images, parameters, info}: info is a JSON string."""
    from ...images import encode_image
    from ...schedulers import resolve_schedule

    images = [base64.b64encode(encode_image(image, "PNG", text)).decode("ascii")
              for image, text in zip(outcome.images, outcome.infotexts)] if payload.send_images else []
    parameters = payload.model_dump()
    if not payload.include_init_images:
        parameters["init_images"] = None
        parameters["mask"] = None
    first = outcome.results[0] if outcome.results else None
    seeds = outcome.done_seeds
    count = len(seeds)
    info = {
        "prompt": prepared.prompt,
        "all_prompts": [prepared.prompt] * count,
        "negative_prompt": prepared.negative_prompt,
        "all_negative_prompts": [prepared.negative_prompt] * count,
        "seed": prepared.seed,
        "all_seeds": seeds,
        "subseed": prepared.subseed if prepared.subseed_strength > 0 else prepared.seed,
        "all_subseeds": [s for r in outcome.results for s in r.subseeds] or seeds,
        "subseed_strength": prepared.subseed_strength,
        "width": first.width if first else prepared.width,
        "height": first.height if first else prepared.height,
        "sampler_name": prepared.sampler,
        "scheduler": resolve_schedule(prepared.sampler, prepared.scheduler),
        "cfg_scale": prepared.cfg_scale,
        "steps": prepared.steps,
        "batch_size": prepared.batch_size,
        "n_iter": parts,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": slot.name,
        "sd_model_hash": slot.hash,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": prepared.strength,
        "resize_mode": prepared.resize_mode,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": outcome.infotexts,
        "styles": list(payload.styles or []),
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": prepared.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": f"img2img {__version__}",
        "effective_steps": prepared.effective_steps,
        "interrupted": outcome.interrupted,
        "notices": outcome.notices + [n for r in outcome.results for n in r.notices],
    }
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}

