"""A1111's request bodies as pydantic models (v1.10 field names and defaults)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


class PngInfoPayload(BaseModel):
    image: str = Field(..., description="base64 image, data: prefix allowed")

