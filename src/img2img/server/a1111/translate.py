"""An A1111 txt2img/img2img payload in our terms: a Request, the input images, n_iter, the model to use,
an optional hires-fix pass, and every notice about what was ignored or substituted.

The wire policy is A1111's: unknown keys, nulls and anything A1111 accepts are accepted, and what is
ignored or substituted is said in `notices`. A field that would change the image in a way this server
cannot do yet is refused with a 422 naming it (REFUSALS). docs/server.md has the field-by-field table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...errors import InvalidRequest
from ...geometry import SIZE_MULTIPLE
from ...request import Request, effective_steps
from ...schedulers import SAMPLERS, find_schedule, split_sampler_name
from . import upscalers
from .images import decode_base64_image
from .inpainting import latent_mask, mask_fields
from .options import SAMPLE_FORMATS, check
from .payloads import GenerationPayload, Img2ImgPayload, Txt2ImgPayload


@dataclass
class Hires:
    """A1111's hires fix: upscale the first pass, then an image-to-image pass over it."""

    scale: float
    resize: tuple[int, int] | None  # hr_resize_x/y (0: from the other side's ratio), else None: scale
    upscaler: str
    request: Request | None  # the second pass (size and seeds are set when it runs); None: upscale only
    params: dict  # the infotext keys A1111 writes for it

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The second pass's size for a first pass of width x height, in multiples of 8."""
        if self.resize:
            x, y = self.resize
            x, y = x or round(y * width / height), y or round(x * height / width)
        else:
            x, y = round(width * self.scale), round(height * self.scale)
        return _snap(x), _snap(y)


@dataclass
class Translated:
    mode: str  # "txt2img" or "img2img"
    request: Request
    images: list[bytes]
    parts: int  # A1111's n_iter
    model: str | None
    sticky_model: bool
    settings: dict  # the server's options with this request's override_settings on top
    notices: list[str] = field(default_factory=list)
    output_size: tuple[int, int] | None = None  # asked-for size that is not a multiple of 8
    hires: Hires | None = None
    mask: bytes | None = None  # img2img: the inpainting mask (white = repaint)
    latent_mask: bytes | None = None  # with a mask: what the generation repaints (A1111's latent_mask)

    @property
    def image_format(self) -> str:
        return SAMPLE_FORMATS[str(self.settings["samples_format"]).lower()]


def _snap(value: float) -> int:
    """The nearest multiple of 8 (halves up), at least 8."""
    return max(SIZE_MULTIPLE, int(value / SIZE_MULTIPLE + 0.5) * SIZE_MULTIPLE)


def _empty(value) -> bool:
    return value in (None, "", "None", [], {})


def _refusals(p: GenerationPayload, settings: dict) -> list[tuple[str, bool, str]]:
    """(field, refused?, why): what would change the image in a way this server cannot do (yet)."""
    checks = [
        ("seed_resize_from_h", p.seed_resize_from_h > 0 and p.seed_resize_from_h != p.height,
         "resizing the seed (seed_resize_from_h) is not supported"),
        ("seed_resize_from_w", p.seed_resize_from_w > 0 and p.seed_resize_from_w != p.width,
         "resizing the seed (seed_resize_from_w) is not supported"),
        ("restore_faces", bool(p.restore_faces if p.restore_faces is not None else settings["face_restoration"]),
         "face restoration is not available (it needs face-restoration model files)"),
        ("script_name", not _empty(p.script_name), f"scripts are not available (got {p.script_name!r})"),
        ("script_args", bool(p.script_args) and not _empty(p.script_name), "scripts are not available"),
        ("alwayson_scripts", bool(p.alwayson_scripts),
         f"extensions are not available (got {', '.join(map(str, p.alwayson_scripts))})"),
        ("refiner_checkpoint", not _empty(p.refiner_checkpoint), "a refiner checkpoint is not supported"),
        ("firstpass_image", not _empty(p.firstpass_image), "a given first-pass image is not supported"),
        ("s_min_uncond", (p.s_min_uncond or 0) > 0,
         "skipping the negative prompt at low noise (s_min_uncond) is not supported"),
    ]
    if isinstance(p, Img2ImgPayload):
        checks += [
        ]
    if isinstance(p, Txt2ImgPayload):
        checks += [
            ("hr_checkpoint_name", p.enable_hr and not _empty(p.hr_checkpoint_name)
             and p.hr_checkpoint_name != "Use same checkpoint", "a separate hires-fix checkpoint is not supported"),
        ]
    return checks


_FROM_INFOTEXT = {"prompt": "prompt", "negative_prompt": "negative_prompt", "steps": "steps",
                  "cfg_scale": "cfg_scale", "seed": "seed", "strength": "denoising_strength",
                  "sampler": "sampler_name", "scheduler": "scheduler", "width": "width", "height": "height",
                  "resize_mode": "resize_mode", "eta": "eta", "s_churn": "s_churn", "s_tmin": "s_tmin",
                  "s_tmax": "s_tmax", "s_noise": "s_noise", "tiling": "tiling", "subseed": "subseed",
                  "subseed_strength": "subseed_strength", "noise_multiplier": "initial_noise_multiplier"}
_RESIZE_MODES = {"stretch": 0, "crop": 1, "fill": 2, "latent": 3}


def _sampler(values: dict, given: set, default: str, notices: list[str], prefix: str = "") -> tuple[str, str]:
    """A1111's rule: sampler_name, else sampler_index; a schedule folded into the name wins; unknown names fall
    back to the default, unknown schedules to Automatic (with notices here)."""
    name = values.get(f"{prefix}sampler_name") or (values.get("sampler_index") if not prefix and
                                                    "sampler_index" in given else None)
    sampler, folded = split_sampler_name(name) if name else (None, None)
    if name and sampler is None:
        notices.append(f"{prefix}sampler_name {name!r} is not a sampler this server knows; used {default}")
    schedule_name = values.get(f"{prefix}scheduler")
    schedule = find_schedule(schedule_name) if schedule_name else "Automatic"
    if schedule is None:
        notices.append(f"{prefix}scheduler {schedule_name!r} is not a schedule type this server knows; "
                       "used Automatic")
        schedule = "Automatic"
    return sampler or default, folded or schedule


def _side(value: int | None, name: str, notices: list[str]) -> int | None:
    if value is None or value <= 0:
        return None
    snapped = _snap(value)
    if snapped != value:
        notices.append(f"{name} {value} is not a multiple of {SIZE_MULTIPLE}: generated at {snapped}")
    return snapped


def _one_step_strength(steps: int, strength: float, notices: list[str]) -> float:
    """A1111 runs a request whose steps x strength is below one: one step, the last of the schedule."""
    if effective_steps(steps, strength) >= 1:
        return strength
    adjusted = 1 / steps
    while effective_steps(steps, adjusted) < 1:
        adjusted = math.nextafter(adjusted, 2)
    notices.append(f"steps x denoising_strength = {steps} x {strength:g} is below one step: ran one denoising "
                   f"step (strength {adjusted:g}), as A1111 does")
    return min(adjusted, 1.0)


def _background(colour) -> str:
    """A1111's img2img_background_color (for transparent inputs); its default is our default, white."""
    return "white" if str(colour).lower() in ("#ffffff", "#fff", "white") else str(colour)


def translate(payload: GenerationPayload, service, *, fetch=None) -> Translated:
    """Payload -> Translated. Raises InvalidRequest naming the field."""
    mode = "img2img" if isinstance(payload, Img2ImgPayload) else "txt2img"
    notices: list[str] = []
    if payload.unknown_fields:
        notices.append(f"ignored fields this API does not have: {', '.join(payload.unknown_fields)}")
    values, given, model = _with_infotext(payload, service, notices)
    model, settings = _settings(payload, service, model, notices)
    for name, refused, why in _refusals(payload, settings):
        if refused:
            raise InvalidRequest(f"{name}: {why}", name)
    slot = service.find_model(model, "override_settings.sd_model_checkpoint" if "sd_model_checkpoint" in
                              payload.override_settings else "infotext")
    profile = slot.source.profile
    prompt, negative = _prompts(payload, values, notices)
    sampler, schedule = _sampler(values, given, profile.sampler, notices)
    steps = values["steps"] if values["steps"] is not None else profile.steps
    width, height = _side(values["width"], "width", notices), _side(values["height"], "height", notices)
    output_size = None
    if width and height and (width, height) != (values["width"], values["height"]):
        output_size = (values["width"], values["height"])
        notices.append(f"the images were resized to the requested {values['width']}x{values['height']}")
    for name in ("batch_size", "n_iter"):
        if values[name] < 1:
            raise InvalidRequest(f"{name} must be at least 1, got {values[name]}", name)
    images, batch_size, strength, mask, latent, inpainting = [], values["batch_size"], 1.0, None, None, {}
    if mode == "img2img":
        images, batch_size = _init_images(payload, batch_size, fetch, notices)
        mask, inpainting = mask_fields(payload, fetch)
        latent = latent_mask(payload, notices, fetch)
        strength = values["denoising_strength"] if values["denoising_strength"] is not None else 0.75
        if not 0 < strength <= 1:
            raise InvalidRequest(f"denoising_strength must be in (0, 1], got {strength:g}", "denoising_strength")
        if settings["img2img_fix_steps"]:  # A1111's "do exactly the amount of steps the slider specifies"
            steps = int(steps / min(strength, 0.999))
        strength = _one_step_strength(steps, strength, notices)
    request = Request(
        prompt=prompt, negative_prompt=negative, strength=strength, steps=steps,
        cfg_scale=values["cfg_scale"] if values["cfg_scale"] is not None else profile.cfg_scale,
        seed=values["seed"], sampler=sampler, scheduler=schedule, width=width, height=height,
        resize_mode=values.get("resize_mode", 0), batch_size=batch_size,
        background=_background(settings["img2img_background_color"]),
        tiling=bool(values["tiling"] if values["tiling"] is not None else settings["tiling"]),
        subseed=values["subseed"], subseed_strength=values["subseed_strength"],
        styles=tuple(name for name in payload.styles if name not in ("", "None")),
        clip_skip=int(settings["CLIP_stop_at_last_layers"]),
        color_correction=bool(settings["img2img_color_correction"]) and mode == "img2img",
        noise_multiplier=_noise_multiplier(values, settings) if mode == "img2img" else 1.0,
        **_sampler_settings(values, settings, sampler),
        **inpainting,
    )
    hires = None
    if mode == "txt2img" and payload.enable_hr:
        hires, request = _hires(payload, values, given, request, notices)
        output_size = None  # the second pass decides the size
    return Translated(mode, request, images, values["n_iter"], model,
                      sticky_model=model is not None and not payload.override_settings_restore_afterwards,
                      settings=settings, notices=notices, output_size=output_size, hires=hires, mask=mask,
                      latent_mask=latent)


def _with_infotext(payload: GenerationPayload, service, notices: list[str]) -> tuple[dict, set, str | None]:
    """The payload's values, with the fields it leaves unset filled from its `infotext`, and the model that
    infotext names (when this server offers it)."""
    values = payload.model_dump()
    given = set(payload.model_fields_set)
    if not payload.infotext:
        return values, given, None
    from ...infotext import fields_from_infotext

    stored = fields_from_infotext(payload.infotext)
    if isinstance(stored.get("resize_mode"), str):
        stored["resize_mode"] = _RESIZE_MODES.get(stored["resize_mode"], stored["resize_mode"])
    for ours, theirs in _FROM_INFOTEXT.items():
        if ours in stored and theirs not in given:
            values[theirs] = stored[ours]
            given.add(theirs)
    model = stored.get("model")
    if model and not any(slot.matches(model) for slot in service.slots):
        notices.append(f"the infotext names model {model!r}, which this server does not offer; "
                       "the current model was used")
        model = None
    return values, given, model


def _settings(payload: GenerationPayload, service, model: str | None, notices: list[str]) -> tuple:
    """The model override_settings asks for (else `model`), and the server's options with the request's
    override_settings on top, each checked as a POST to /options would be."""
    overrides = dict(payload.override_settings)
    if "sd_model_checkpoint" in overrides:
        model = overrides.pop("sd_model_checkpoint")
        if not isinstance(model, str):
            raise InvalidRequest("override_settings.sd_model_checkpoint: expected a model title",
                                 "override_settings.sd_model_checkpoint")
    for key, value in overrides.items():
        notices += check(key, value, f"override_settings.{key}")
    return model, service.a1111_options.effective(overrides)


def _prompts(payload: GenerationPayload, values: dict, notices: list[str]) -> tuple[str, str]:
    prompt, negative = values["prompt"] or "", values["negative_prompt"] or ""
    if payload.disable_extra_networks:
        from ...prompts import extract_networks

        (prompt, tags), (negative, negative_tags) = extract_networks(prompt), extract_networks(negative)
        if tags or negative_tags:
            notices.append("disable_extra_networks: removed " + ", ".join(t.tag for t in tags + negative_tags))
    return prompt, negative


def _sampler_settings(values: dict, settings: dict, sampler: str) -> dict:
    """eta, s_churn, s_tmin, s_tmax, s_noise: the request's, else the server's settings (A1111's defaults)."""
    eta = values["eta"]
    if eta is None:  # only a setting that differs from A1111's default is passed on
        key, default = ("eta_ddim", 0.0) if SAMPLERS[sampler].timestep_sampler else ("eta_ancestral", 1.0)
        eta = settings[key] if settings[key] != default else None
    chosen = {key: values[key] if values[key] is not None else settings[key]
              for key in ("s_churn", "s_tmin", "s_tmax", "s_noise")}
    chosen["s_tmax"] = chosen["s_tmax"] or None  # A1111: 0 means no upper limit
    return {"eta": eta, **chosen}


def _noise_multiplier(values: dict, settings: dict) -> float:
    """initial_noise_multiplier: the request's, else the server's setting (A1111's rule)."""
    multiplier = values["initial_noise_multiplier"]
    return float(multiplier if multiplier is not None else settings["initial_noise_multiplier"])


def _init_images(payload: Img2ImgPayload, batch_size: int, fetch, notices: list[str]) -> tuple[list[bytes], int]:
    """The init images' bytes; several make one batch, one output per image (as A1111)."""
    if not payload.init_images:
        raise InvalidRequest("init_images: an init image is required", "init_images")
    images = [decode_base64_image(image, f"init_images[{i}]", fetch) for i, image in enumerate(payload.init_images)]
    if len(images) > 1 and batch_size != len(images):
        notices.append(f"{len(images)} init images: batch_size {len(images)} (one output per image)")
        batch_size = len(images)
    return images, batch_size


def _hires(p: Txt2ImgPayload, values: dict, given: set, first: Request, notices: list[str]) -> tuple[Hires, Request]:
    """The second pass of A1111's hires fix, and the first pass (whose size the old firstphase fields set)."""
    resize = (p.hr_resize_x, p.hr_resize_y) if (p.hr_resize_x or p.hr_resize_y) else None
    if p.firstphase_width or p.firstphase_height:  # before v1.0 width/height were the final size
        resize = (first.width or 0, first.height or 0)
        first = first.replace(width=_side(p.firstphase_width, "firstphase_width", notices) or first.width,
                              height=_side(p.firstphase_height, "firstphase_height", notices) or first.height)
    upscaler = p.hr_upscaler or "Latent"
    if upscaler not in upscalers.UPSCALERS + upscalers.LATENT_UPSCALE_MODES:
        notices.append(f"hr_upscaler {upscaler!r} is not available here (it needs model files); used Lanczos")
        upscaler = "Lanczos"
    if upscaler.startswith("Latent"):
        notices.append(f"hr_upscaler {upscaler}: upscaled in pixel space (bicubic), not in latent space")
    strength = values["denoising_strength"] if values["denoising_strength"] is not None else 0.75
    if not 0 <= strength <= 1:
        raise InvalidRequest(f"denoising_strength must be in [0, 1] for the hires fix, got {strength:g}",
                             "denoising_strength")
    params = {"Hires upscale": None if resize else p.hr_scale, "Hires steps": p.hr_second_pass_steps or None,
              "Hires upscaler": upscaler}
    if strength == 0:  # nothing to denoise: the second pass is the upscaled first pass, as in A1111
        notices.append("hires fix with denoising_strength 0: the first pass was only upscaled")
        return Hires(p.hr_scale, resize, upscaler, None, {k: v for k, v in params.items() if v is not None}), first
    requested = p.hr_second_pass_steps or first.steps
    steps = max(requested, int(requested / min(strength, 0.999)))  # A1111 runs hr_second_pass_steps exactly
    values = {**values, "hr_sampler_name": None if p.hr_sampler_name in (None, "Use same sampler") else
              p.hr_sampler_name, "hr_scheduler": None if p.hr_scheduler in (None, "Use same scheduler") else
              p.hr_scheduler}
    sampler, schedule = _sampler(values, given, first.sampler, notices, prefix="hr_")
    if values["hr_sampler_name"] is None and values["hr_scheduler"] is None:
        schedule = first.scheduler
    second = first.replace(
        prompt=p.hr_prompt or first.prompt, negative_prompt=p.hr_negative_prompt or first.negative_prompt,
        strength=_one_step_strength(steps, strength, notices), steps=steps, sampler=sampler, scheduler=schedule,
        width=None, height=None, resize_mode="stretch",
    )
    params.update({"Hires sampler": sampler if sampler != first.sampler else None,
                   "Hires prompt": p.hr_prompt or None, "Hires negative prompt": p.hr_negative_prompt or None})
    return Hires(p.hr_scale, resize, upscaler, second, {k: v for k, v in params.items() if v is not None}), first
