"""An A1111 img2img payload in our terms: a Request, the image bytes, n_iter and the model to use.

Every field of A1111's img2img payload is known here and falls in one of three groups (see FIELD_TABLE):
accepted and mapped, rejected (422 naming the field) when set to anything but its default, or ignored
because it cannot change our output. Unknown fields are rejected too, so nothing is silently dropped.
"""

from __future__ import annotations

import math

from ...errors import InvalidRequest
from ...request import Request
from .images import decode_base64_image
from .payloads import Img2ImgPayload

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
    "subseed_strength": "accepted: variation seed strength (A1111's slerp of seed and subseed noise)",
    "seed_resize_from_h": "rejected unless <= 0", "seed_resize_from_w": "rejected unless <= 0",
    "restore_faces": "rejected unless false", "tiling": "rejected unless false",
    "styles": "accepted: names from the server's styles file; unknown names are skipped with a notice",
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
    "subseed": "accepted: the variation seed (-1 = random), used with subseed_strength > 0",
    "seed_enable_extras": "ignored: only enables the variation/resize-seed fields, which must be default",
    "do_not_save_samples": "ignored: nothing is ever saved", "do_not_save_grid": "ignored: no grids are made",
    "refiner_switch_at": "ignored: used only with refiner_checkpoint",
    "disable_extra_networks": "accepted: true removes <lora:...> tags without applying them",
    "comments": "ignored: not part of the image or its infotext",
    "force_task_id": "ignored: /progress reports the running job",
}

# override_settings keys that are accepted when they ask for what this server does anyway.
OVERRIDES = {"CLIP_stop_at_last_layers": tuple(range(1, 13)), "sd_vae": ("Automatic", "None", None),
             "samples_format": ("png",), "eta_noise_seed_delta": (0,), "img2img_color_correction": (True, False)}



def _empty(value) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _rejections(p: Img2ImgPayload) -> list[tuple[str, str]]:
    checks = [
        ("mask", _empty(p.mask), "inpainting (a mask) is not supported"),
        ("latent_mask", _empty(p.latent_mask), "inpainting (a latent mask) is not supported"),
        ("seed_resize_from_h", p.seed_resize_from_h <= 0, "resizing the seed (seed_resize_from_h) is not supported"),
        ("seed_resize_from_w", p.seed_resize_from_w <= 0, "resizing the seed (seed_resize_from_w) is not supported"),
        ("restore_faces", not p.restore_faces, "face restoration is not supported"),
        ("tiling", not p.tiling, "tiling is not supported"),
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



def _scheduler_name(value: str | None) -> str:
    if not value:
        return "Automatic"
    return value.replace("_", " ")  # A1111's schedulers route lists ids such as "sgm_uniform"


_FROM_INFOTEXT = {"prompt": "prompt", "negative_prompt": "negative_prompt", "steps": "steps",
                  "cfg_scale": "cfg_scale", "seed": "seed", "strength": "denoising_strength",
                  "sampler": "sampler_name", "scheduler": "scheduler", "width": "width", "height": "height",
                  "resize_mode": "resize_mode", "subseed": "subseed", "subseed_strength": "subseed_strength"}


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
        from ...infotext import fields_from_infotext

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
    prompt, negative = values["prompt"] or "", values["negative_prompt"] or ""
    if payload.disable_extra_networks:
        from ...prompts import extract_networks

        (prompt, tags), (negative, negative_tags) = extract_networks(prompt), extract_networks(negative)
        if tags or negative_tags:
            notices.append("disable_extra_networks: removed " + ", ".join(t.tag for t in tags + negative_tags))
    sampler = values["sampler_name"] or (values["sampler_index"] if "sampler_index" in given else None) or None
    request = Request(
        prompt=prompt,
        negative_prompt=negative,
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
        subseed=values["subseed"],
        subseed_strength=values["subseed_strength"],
        styles=tuple(s for s in values["styles"] or () if s not in ("", "None")),
        clip_skip=overrides.get("CLIP_stop_at_last_layers", 1),
        color_correction=bool(overrides.get("img2img_color_correction", False)),
    )
    return Translated(request, image, values["n_iter"], model,
                      sticky_model=model is not None and not payload.override_settings_restore_afterwards,
                      notices=notices)

