"""AUTOMATIC1111-compatible wire format: the img2img payload, its translation to a Request, the response.

Every field of A1111's img2img payload is known here and falls in one of three groups (see FIELD_TABLE):
accepted and mapped, rejected (422 naming the field) when set to anything but its default, or ignored
because it cannot change our output. Unknown fields are rejected too, so nothing is silently dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from typing import Any

from fastapi import Request as HttpRequest
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidRequest
from ..request import Request
from ..version import __version__

DATA_URL = re.compile(r"^\s*data:[^,;]*(;[^,;]*)*;base64,", re.IGNORECASE)

# What happens to each A1111 field (documented in docs/server.md).
FIELD_TABLE: dict[str, str] = {
    # accepted
    "init_images": "accepted: exactly one image, base64 with or without a data: prefix",
    "prompt": "accepted", "negative_prompt": "accepted",
    "denoising_strength": "accepted -> strength",
    "steps": "accepted (omitted: the model's default)", "cfg_scale": "accepted (omitted: the model's default)",
    "seed": "accepted; -1 = random, the seed used is reported",
    "sampler_name": "accepted, legacy names such as 'DPM++ 2M Karras' too",
    "sampler_index": "accepted when sampler_name is empty", "scheduler": "accepted",
    "width": "accepted (omitted: from the input's aspect at the model's native area)", "height": "accepted",
    "resize_mode": "accepted: 0 stretch, 1 crop, 2 fill; 3 (latent upscale) rejected",
    "batch_size": "accepted", "n_iter": "accepted: batches with consecutive seeds",
    "override_settings": "accepted: sd_model_checkpoint (configured models only); see OVERRIDES",
    "override_settings_restore_afterwards": "accepted: false makes the model switch stick",
    "include_init_images": "accepted", "send_images": "accepted", "infotext": "accepted: fills unset fields",
    # rejected unless default
    "mask": "rejected: inpainting is not supported", "latent_mask": "rejected: inpainting is not supported",
    "subseed_strength": "rejected unless 0: variation seeds are not implemented",
    "seed_resize_from_h": "rejected unless <= 0", "seed_resize_from_w": "rejected unless <= 0",
    "restore_faces": "rejected unless false", "tiling": "rejected unless false",
    "styles": "rejected unless empty (no saved styles on this server)",
    "script_name": "rejected unless empty", "script_args": "rejected unless empty",
    "alwayson_scripts": "rejected unless empty", "refiner_checkpoint": "rejected unless empty",
    "firstpass_image": "rejected unless empty (txt2img only)",
    "save_images": "accepted: true keeps the outputs in the server's history (shown in the web UI)",
    "eta": "rejected unless null or 1", "s_churn": "rejected unless 0", "s_tmin": "rejected unless 0",
    "s_tmax": "rejected unless null, 0 or inf", "s_noise": "rejected unless 1", "s_min_uncond": "rejected unless 0",
    "initial_noise_multiplier": "rejected unless null or 1",
    # ignored, harmlessly
    "mask_blur": "ignored: applies to a mask only", "mask_blur_x": "ignored: applies to a mask only",
    "mask_blur_y": "ignored: applies to a mask only", "inpainting_fill": "ignored: applies to a mask only",
    "inpaint_full_res": "ignored: applies to a mask only",
    "inpaint_full_res_padding": "ignored: applies to a mask only",
    "inpainting_mask_invert": "ignored: applies to a mask only",
    "image_cfg_scale": "ignored: applies to instruct-pix2pix models only, which this server does not load",
    "subseed": "ignored: used only with subseed_strength > 0",
    "seed_enable_extras": "ignored: only enables the variation/resize-seed fields, which must be default",
    "do_not_save_samples": "ignored: nothing is ever saved", "do_not_save_grid": "ignored: no grids are made",
    "refiner_switch_at": "ignored: used only with refiner_checkpoint",
    "disable_extra_networks": "ignored: prompts are used literally, extra-network tags are not parsed",
    "comments": "ignored: not part of the image or its infotext",
    "force_task_id": "ignored: /progress reports the running job",
}

# override_settings keys that are accepted when they ask for what this server does anyway.
OVERRIDES = {"CLIP_stop_at_last_layers": (1,), "sd_vae": ("Automatic", "None", None),
             "samples_format": ("png",), "eta_noise_seed_delta": (0,)}


class Img2ImgPayload(BaseModel):
    """A1111's img2img payload (v1.10). Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    init_images: list[str] = Field(..., description="base64 images, 'data:image/png;base64,' prefix allowed")
    prompt: str = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str | None = None
    sampler_index: str | None = "Euler"
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    s_min_uncond: float = 0
    s_churn: float = 0
    s_tmax: float | None = None
    s_tmin: float = 0
    s_noise: float = 1
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    inpainting_fill: int = 0
    inpaint_full_res: bool | int = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    force_task_id: str | None = None
    denoising_strength: float | None = 0.75
    include_init_images: bool = False
    script_name: str | None = None
    script_args: list[Any] | None = None
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] | None = None
    infotext: str | None = None


def _empty(value) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _rejections(p: Img2ImgPayload) -> list[tuple[str, str]]:
    checks = [
        ("mask", _empty(p.mask), "inpainting (a mask) is not supported"),
        ("latent_mask", _empty(p.latent_mask), "inpainting (a latent mask) is not supported"),
        ("subseed_strength", p.subseed_strength == 0, "variation seeds (subseed_strength > 0) are not supported"),
        ("seed_resize_from_h", p.seed_resize_from_h <= 0, "resizing the seed (seed_resize_from_h) is not supported"),
        ("seed_resize_from_w", p.seed_resize_from_w <= 0, "resizing the seed (seed_resize_from_w) is not supported"),
        ("restore_faces", not p.restore_faces, "face restoration is not supported"),
        ("tiling", not p.tiling, "tiling is not supported"),
        ("styles", _empty(p.styles), "saved styles are not supported; put the text into the prompt"),
        ("script_name", _empty(p.script_name) or p.script_name == "None", "scripts are not supported"),
        ("script_args", _empty(p.script_args), "scripts are not supported"),
        ("alwayson_scripts", _empty(p.alwayson_scripts), "extensions (alwayson_scripts) are not supported"),
        ("refiner_checkpoint", _empty(p.refiner_checkpoint) or p.refiner_checkpoint == "None",
         "a refiner checkpoint is not supported"),
        ("firstpass_image", _empty(p.firstpass_image), "firstpass_image is a txt2img hires-fix field"),
        ("eta", p.eta is None or p.eta == 1, "only eta 1 (the default) is supported"),
        ("s_churn", p.s_churn == 0, "only s_churn 0 is supported"),
        ("s_tmin", p.s_tmin == 0, "only s_tmin 0 is supported"),
        ("s_tmax", p.s_tmax is None or p.s_tmax == 0 or math.isinf(p.s_tmax), "only the default s_tmax is supported"),
        ("s_noise", p.s_noise == 1, "only s_noise 1 is supported"),
        ("s_min_uncond", p.s_min_uncond == 0, "only s_min_uncond 0 is supported"),
        ("initial_noise_multiplier", p.initial_noise_multiplier in (None, 1),
         "only initial_noise_multiplier 1 is supported"),
        ("resize_mode", p.resize_mode != 3, "resize_mode 3 (latent upscale) is not supported; use 0, 1 or 2"),
    ]
    return [(name, message) for name, ok, message in checks if not ok]


def decode_base64_image(value: Any, field: str) -> bytes:
    """Raw bytes from base64 text, with or without a data: URL prefix. Never a URL or a path."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{field}: expected a base64-encoded image, got {type(value).__name__}", field)
    text = DATA_URL.sub("", value, count=1)
    if text.lstrip().lower().startswith(("http://", "https://", "file:", "/")):
        raise InvalidRequest(f"{field}: URLs and file paths are not accepted; send the image itself as base64", field)
    text = re.sub(r"\s+", "", text)
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{field}: not valid base64", field) from None
    if not data:
        raise InvalidRequest(f"{field}: the image is empty", field)
    return data


def _scheduler_name(value: str | None) -> str:
    if not value:
        return "Automatic"
    return value.replace("_", " ")  # A1111's schedulers route lists ids such as "sgm_uniform"


_FROM_INFOTEXT = {"prompt": "prompt", "negative_prompt": "negative_prompt", "steps": "steps",
                  "cfg_scale": "cfg_scale", "seed": "seed", "strength": "denoising_strength",
                  "sampler": "sampler_name", "scheduler": "scheduler", "width": "width", "height": "height",
                  "resize_mode": "resize_mode"}


class Translated:
    """An A1111 payload turned into our terms."""

    def __init__(self, request: Request, image: bytes, parts: int, model: str | None, sticky_model: bool,
                 notices: list[str]):
        self.request, self.image, self.parts = request, image, parts
        self.model, self.sticky_model, self.notices = model, sticky_model, notices


def translate(payload: Img2ImgPayload, is_configured=lambda name: True) -> Translated:
    """Payload -> Request (+ image bytes, n_iter, model). Raises InvalidRequest naming the field."""
    for name, message in _rejections(payload):
        raise InvalidRequest(f"{name}: {message}", name)
    values = payload.model_dump()
    given = set(payload.model_fields_set)
    notices: list[str] = []
    model = None
    if payload.infotext:
        from ..infotext import fields_from_infotext

        stored = fields_from_infotext(payload.infotext)
        for ours, theirs in _FROM_INFOTEXT.items():
            if ours in stored and theirs not in given:
                values[theirs] = stored[ours]
                given.add(theirs)
        if stored.get("model"):
            if is_configured(stored["model"]):
                model = stored["model"]
            else:
                notices.append(f"the infotext names model {stored['model']!r}, which this server does not offer; "
                               "the current model was used")
    overrides = dict(payload.override_settings or {})
    if "sd_model_checkpoint" in overrides:
        model = overrides.pop("sd_model_checkpoint")
        if not isinstance(model, str):
            raise InvalidRequest("override_settings.sd_model_checkpoint: expected a model title",
                                 "override_settings.sd_model_checkpoint")
    for key, value in overrides.items():
        if key not in OVERRIDES or value not in OVERRIDES[key]:
            raise InvalidRequest(f"override_settings.{key}: this setting cannot be overridden on this server "
                                 f"(got {value!r})", f"override_settings.{key}")
    if not payload.init_images:
        raise InvalidRequest("init_images: an init image is required", "init_images")
    if len(payload.init_images) > 1:
        raise InvalidRequest(f"init_images: exactly one image is supported, got {len(payload.init_images)}; "
                             "use batch_size for several outputs", "init_images")
    image = decode_base64_image(payload.init_images[0], "init_images[0]")
    sampler = values["sampler_name"] or (values["sampler_index"] if "sampler_index" in given else None) or None
    request = Request(
        prompt=values["prompt"] or "",
        negative_prompt=values["negative_prompt"] or "",
        strength=0.75 if values["denoising_strength"] is None else values["denoising_strength"],
        steps=values["steps"],
        cfg_scale=values["cfg_scale"],
        seed=values["seed"],
        sampler=sampler,
        scheduler=_scheduler_name(values["scheduler"]),
        width=values["width"],
        height=values["height"],
        resize_mode=values["resize_mode"],
        batch_size=values["batch_size"],
    )
    return Translated(request, image, values["n_iter"], model,
                      sticky_model=model is not None and not payload.override_settings_restore_afterwards,
                      notices=notices)


def response(payload: Img2ImgPayload, prepared: Request, outcome, slot, parts: int) -> dict:
    """A1111's {images, parameters, info}: info is a JSON string."""
    from ..images import encode_image
    from ..schedulers import resolve_schedule

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
        "subseed": prepared.seed,
        "all_subseeds": seeds,
        "subseed_strength": 0,
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
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": f"img2img {__version__}",
        "effective_steps": prepared.effective_steps,
        "interrupted": outcome.interrupted,
        "notices": outcome.notices + [n for r in outcome.results for n in r.notices],
    }
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}


# ---------------------------------------------------------------------------------------------- routes


class PngInfoPayload(BaseModel):
    image: str = Field(..., description="base64 image, data: prefix allowed")


def router(service):
    """The /sdapi/v1 routes."""
    from fastapi import APIRouter, Body, Query
    from starlette.concurrency import run_in_threadpool

    from ..schedulers import SAMPLERS, SCHEDULES
    from .web import await_job

    api = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111-compatible"])

    def configured(name: str) -> bool:
        return any(slot.matches(name) for slot in service.slots)

    @api.post("/img2img")
    async def img2img(payload: Img2ImgPayload, http: HttpRequest):
        """Image-to-image as in A1111. Interrupted jobs answer 200 with the images finished so far."""
        translated = translate(payload, configured)
        field = "override_settings.sd_model_checkpoint" if payload.override_settings and \
            "sd_model_checkpoint" in payload.override_settings else "infotext"
        slot = service.find_model(translated.model, field)

        def check():
            prepared = service.prepare(slot, translated.request, translated.parts)
            service.check_image(translated.image, "init_images[0]")
            return prepared

        prepared, _ = await run_in_threadpool(check)
        if translated.sticky_model:
            service.current = slot
        outcome = await await_job(
            http, service,
            lambda job: service.generate(job, slot, prepared, translated.image, translated.parts),
            label=slot.name)
        outcome.notices.extend(translated.notices)
        if payload.save_images:  # A1111 saves to its outputs folder; we keep them in the history
            await run_in_threadpool(service.record, outcome, "api")
        return await run_in_threadpool(response, payload, prepared, outcome, slot, translated.parts)

    @api.get("/sd-models")
    async def sd_models():
        return [{"title": s.title, "model_name": s.name, "hash": s.hash, "sha256": None,
                 "filename": s.source.location if s.source.kind == "hub" else s.name, "config": None}
                for s in service.slots]

    @api.get("/samplers")
    async def samplers():
        return [{"name": s.name, "aliases": list(s.aliases), "options": {}} for s in SAMPLERS.values()]

    @api.get("/schedulers")
    async def schedulers():
        return [{"name": name.lower().replace(" ", "_"), "label": name, "aliases": None, "default_rho": -1,
                 "need_inner_model": False} for name in SCHEDULES]

    def options_now() -> dict:
        return {"sd_model_checkpoint": service.current.title, "sd_checkpoint_hash": None,
                "samples_format": "png", "CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic",
                "eta_noise_seed_delta": 0}

    @api.get("/options")
    async def get_options():
        return options_now()

    @api.post("/options")
    async def set_options(changes: dict[str, Any] = Body(...)):
        """Switch the current model among the configured ones; other settings are fixed."""
        current = options_now()
        for key, value in changes.items():
            if key == "sd_model_checkpoint":
                continue
            if key not in current or value != current[key]:
                raise InvalidRequest(f"{key}: this setting cannot be changed on this server (got {value!r})", key)
        if "sd_model_checkpoint" in changes:
            wanted = changes["sd_model_checkpoint"]
            if not isinstance(wanted, str):
                raise InvalidRequest("sd_model_checkpoint: expected a model title", "sd_model_checkpoint")
            service.set_current(wanted)
        return None

    @api.get("/progress")
    async def progress(skip_current_image: bool = Query(False)):
        snapshot, png = await run_in_threadpool(service.preview, skip_current_image)
        running = snapshot.job_id is not None
        fraction = snapshot.fraction
        elapsed = time.monotonic() - snapshot.started if running and snapshot.started else 0.0
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        return {
            "progress": round(fraction, 4),
            "eta_relative": round(eta, 3),
            "state": {"skipped": snapshot.skipped, "interrupted": snapshot.interrupted,
                      "job": f"job {snapshot.job_id}" if running else "", "job_count": snapshot.parts if running else 0,
                      "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "job_no": snapshot.part,
                      "sampling_step": snapshot.step, "sampling_steps": snapshot.total},
            "current_image": base64.b64encode(png).decode("ascii") if png else None,
            "textinfo": None,
            "current_task": f"job {snapshot.job_id}" if running else None,
        }

    @api.post("/interrupt")
    async def interrupt():
        service.queue.interrupt()
        return {}

    @api.post("/skip")
    async def skip():
        service.queue.skip()
        return {}

    @api.post("/png-info")
    async def png_info(payload: PngInfoPayload):
        import io

        from PIL import Image

        from ..images import read_infotext
        from ..infotext import parse_infotext

        data = decode_base64_image(payload.image, "image")

        def read():
            service.check_image(data, "image")
            image = Image.open(io.BytesIO(data))
            text = read_infotext(image) or ""
            items = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)
                     and k != "parameters"}
            parameters: dict = {}
            if text:
                prompt, negative, params = parse_infotext(text)
                parameters = {"Prompt": prompt, "Negative prompt": negative, **params}
            return {"info": text, "items": items, "parameters": parameters}

        return await run_in_threadpool(read)

    @api.get("/scripts")
    async def scripts():
        return {"txt2img": [], "img2img": []}

    return api
