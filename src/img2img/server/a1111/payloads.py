"""A1111's request bodies as pydantic models (v1.10 field names and defaults), read the way A1111 reads them.

A1111 accepts unknown keys (plugins add their own), null for any field (meaning its default), whole
numbers sent as 12.5 (truncated, as pydantic 1 did) and numbers where text is expected. So do these
models; translate.py reports what was ignored.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


def _truncate(value):
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_truncate)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _nulls_mean_defaults(cls, data):
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    @property
    def unknown_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class GenerationPayload(_Lenient):
    """Fields shared by txt2img and img2img. None means "the model's default" for steps, cfg_scale, size and
    sampler (A1111: 50 steps of Euler-default at 512x512; see docs/server.md)."""

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: Int = -1
    subseed: Int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: Int = -1
    seed_resize_from_w: Int = -1
    seed_enable_extras: bool = True
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    batch_size: Int = 1
    n_iter: Int = 1
    steps: Int | None = None
    cfg_scale: float | None = None
    width: Int | None = None
    height: Int | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] = Field(default_factory=dict)
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    force_task_id: str | None = None
    infotext: str | None = None


class Txt2ImgPayload(GenerationPayload):
    """A1111's txt2img payload (v1.10), hires fix included."""

    enable_hr: bool = False
    firstphase_width: Int = 0
    firstphase_height: Int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: Int = 0
    hr_resize_x: Int = 0
    hr_resize_y: Int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class Img2ImgPayload(GenerationPayload):
    """A1111's img2img payload (v1.10)."""

    init_images: list[Any] = Field(default_factory=list)
    resize_mode: Int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: Int = 4
    mask_blur_y: Int = 4
    mask_blur: Int | None = None
    mask_round: bool = True
    inpainting_fill: Int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: Int = 0
    inpainting_mask_invert: Int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


class PngInfoPayload(_Lenient):
    image: str = Field(..., description="base64 image, data: prefix allowed")
