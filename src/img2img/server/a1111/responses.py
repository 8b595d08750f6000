"""A1111's response body: {images, parameters, info}, with info as a JSON string of A1111's keys plus
`notices` (what was ignored or substituted) and a few of ours."""

from __future__ import annotations

import base64
import json
import time

from ...version import __version__
from .payloads import GenerationPayload, Img2ImgPayload
from .translate import Translated


def encode(outcome, translated: Translated, notices: list[str] | None = None) -> list[str]:
    """The images in the server's samples_format, with their infotext unless enable_pnginfo is off (an infotext
    too long for JPEG metadata is shortened, said in `notices`)."""
    from ...images import encode_image

    settings = translated.settings
    keep_text = bool(settings["enable_pnginfo"])
    quality = int(settings["jpeg_quality"]) if translated.image_format != "PNG" else None
    return [base64.b64encode(encode_image(image, translated.image_format, text if keep_text else None,
                                          quality=quality, notices=notices)).decode("ascii")
            for image, text in zip(outcome.images, outcome.infotexts)]


def parameters(payload: GenerationPayload, translated: Translated, used) -> dict:
    """The request as A1111 echoes it, with the defaults this server filled in."""
    echoed = payload.model_dump()
    filled = {"steps": used.steps, "cfg_scale": used.cfg_scale, "sampler_name": used.sampler,
              "scheduler": used.scheduler, "batch_size": used.batch_size}
    if translated.mode == "img2img":
        filled["denoising_strength"] = used.strength
    for key, value in filled.items():
        if echoed.get(key) is None or key == "batch_size":
            echoed[key] = value
    if isinstance(payload, Img2ImgPayload) and not payload.include_init_images:
        echoed["init_images"] = None
        echoed["mask"] = None
    return echoed


def response(payload: GenerationPayload, translated: Translated, prepared, outcome, slot) -> dict:
    from ...schedulers import recorded_schedule

    saving_notices: list[str] = []
    images = encode(outcome, translated, saving_notices) if payload.send_images else []
    first = outcome.results[0] if outcome.results else None
    seeds = outcome.done_seeds
    count = len(seeds)
    hires = translated.hires
    size = (prepared.width, prepared.height)
    if outcome.infotexts:  # the generation size (a hires job's first pass), as A1111 reports it
        from ...infotext import parse_infotext

        width, _, height = parse_infotext(outcome.infotexts[0])[2].get("Size", "x").partition("x")
        size = (int(width), int(height)) if width.isdigit() and height.isdigit() else size
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
        "width": size[0],
        "height": size[1],
        "sampler_name": prepared.sampler,
        "scheduler": recorded_schedule(prepared.sampler, prepared.scheduler),
        "cfg_scale": prepared.cfg_scale,
        "steps": prepared.steps,
        "batch_size": prepared.batch_size,
        "n_iter": translated.parts,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": slot.name,
        "sd_model_hash": slot.hash,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": (hires.request.strength if hires.request else 0) if hires else
        (prepared.strength if translated.mode == "img2img" else None),
        "extra_generation_params": dict(hires.params) if hires else {},
        "index_of_first_image": 0,
        "infotexts": outcome.infotexts,
        "styles": list(payload.styles),
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": prepared.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": f"img2img {__version__}",
        "tiling": prepared.tiling,
        "effective_steps": first.effective_steps if first else prepared.effective_steps,
        "interrupted": outcome.interrupted,
        "notices": list(dict.fromkeys(translated.notices + outcome.notices +
                                      [n for r in outcome.results for n in r.notices] + saving_notices)),
    }
    return {"images": images, "parameters": parameters(payload, translated, prepared), "info": json.dumps(info)}
