"""A1111's settings (GET/POST /sdapi/v1/options and a request's override_settings), kept across restarts.

Clients read many of A1111's keys and post them back, so all the commonly read ones are here with A1111's
defaults. Writes are checked (known key, same type as A1111's value) and saved as JSON in the server's data
folder. Keys in EFFECTIVE change what this server does; the rest are kept so clients read back what they
wrote. Keys in FIXED describe this server and accept only their one value.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from typing import Any

from ...errors import InvalidRequest

log = logging.getLogger("img2img.server")

OPTIONS_FILE = "a1111-options.json"
MAX_VALUE_CHARS = 10_000  # a setting is a name, a number or a short list; this keeps the file small

DEFAULTS: dict[str, Any] = {
    # models (sd_model_checkpoint and sd_checkpoint_hash are the current model's; see Options.snapshot)
    "sd_model_checkpoint": "", "sd_checkpoint_hash": "", "sd_vae": "Automatic", "sd_unet": "Automatic",
    "sd_vae_overrides_per_model_preferences": True, "sd_checkpoints_limit": 1, "sd_checkpoints_keep_in_cpu": True,
    "sd_checkpoint_cache": 0, "sd_vae_checkpoint_cache": 0, "sd_vae_encode_method": "Full",
    "sd_vae_decode_method": "Full", "sd_model_refiner": "None", "CLIP_stop_at_last_layers": 1,
    # sampling
    "eta_ddim": 0.0, "eta_ancestral": 1.0, "ddim_discretize": "uniform", "s_churn": 0.0, "s_tmin": 0.0,
    "s_tmax": 0.0, "s_noise": 1.0, "s_min_uncond": 0.0, "k_sched_type": "Automatic", "sigma_min": 0.0,
    "sigma_max": 0.0, "rho": 0.0, "eta_noise_seed_delta": 0, "always_discard_next_to_last_sigma": False,
    "sgm_noise_multiplier": False, "uni_pc_variant": "bh1", "uni_pc_skip_type": "time_uniform", "uni_pc_order": 3,
    "uni_pc_lower_order_final": True, "sd_noise_schedule": "Default", "beta_dist_alpha": 0.6,
    "beta_dist_beta": 0.6, "randn_source": "CPU", "tiling": False, "enable_batch_seeds": True,
    "hires_fix_use_firstpass_conds": False, "use_old_hires_fix_width_height": False,
    "hires_fix_refiner_pass": "second pass", "emphasis": "Original", "comma_padding_backtrack": 20,
    "upcast_attn": False, "auto_vae_precision": True, "sdxl_crop_top": 0, "sdxl_crop_left": 0,
    "sdxl_refiner_low_aesthetic_score": 2.5, "sdxl_refiner_high_aesthetic_score": 6.0,
    # img2img
    "img2img_fix_steps": False, "img2img_color_correction": False, "img2img_background_color": "#ffffff",
    "initial_noise_multiplier": 1.0, "inpainting_mask_weight": 1.0, "img2img_extra_noise": 0.0,
    "upscaler_for_img2img": None, "img2img_editor_height": 720,
    # saving
    "samples_save": True, "samples_format": "png", "samples_filename_pattern": "", "save_images_add_number": True,
    "grid_save": True, "grid_format": "png", "enable_pnginfo": True, "save_txt": False, "jpeg_quality": 80,
    "webp_lossless": False, "export_for_4chan": True, "save_init_img": False, "outdir_samples": "",
    "outdir_txt2img_samples": "outputs/txt2img-images", "outdir_img2img_samples": "outputs/img2img-images",
    "outdir_extras_samples": "outputs/extras-images", "outdir_grids": "", "outdir_save": "log/images",
    "save_to_dirs": True, "grid_save_to_dirs": True, "use_original_name_batch": True,
    # face restoration, upscalers, networks, styles
    "face_restoration": False, "face_restoration_model": "CodeFormer", "code_former_weight": 0.5,
    "face_restoration_unload": False, "ESRGAN_tile": 192, "ESRGAN_tile_overlap": 8, "realesrgan_enabled_models":
        ["R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"], "upscaling_max_images_in_cache": 5, "sd_lora": "None",
    "lora_preferred_name": "Alias from file", "lora_add_hashes_to_infotext": True,
    "extra_networks_default_multiplier": 1.0, "infotext_styles": "Apply if any", "sd_hypernetwork": "None",
    # user interface and live previews
    "send_seed": True, "send_size": True, "show_progressbar": True, "live_previews_enable": True,
    "live_preview_content": "Prompt", "show_progress_every_n_steps": 10, "show_progress_type": "Approx NN",
    "live_preview_refresh_period": 1000, "return_grid": True, "do_not_show_images": False,
    "js_modal_lightbox": True, "quicksettings_list": ["sd_model_checkpoint"], "hidden_tabs": [],
    "ui_reorder_list": [], "localization": "None", "show_warnings": False, "samples_log_stdout": False,
    "multiple_tqdm": True, "enable_console_prompts": False, "disable_weights_auto_swap": True,
    "api_enable_requests": True, "api_forbid_local_requests": True, "api_useragent": "",
    "auto_launch_browser": "Local", "memmon_poll_rate": 8,
}

# Keys that change what this server does (docs/server.md says how).
EFFECTIVE = ("sd_model_checkpoint", "samples_format", "jpeg_quality", "enable_pnginfo", "eta_ddim", "eta_ancestral",
             "s_churn", "s_tmin", "s_tmax", "s_noise", "img2img_fix_steps", "img2img_background_color", "tiling",
             "live_previews_enable", "img2img_color_correction", "CLIP_stop_at_last_layers", "initial_noise_multiplier")

# Keys that describe this server: only their one value is accepted (more once the feature exists).
FIXED: dict[str, tuple[Any, str]] = {
    "sd_checkpoint_hash": (None, "it is the current model's hash"),
    "sd_vae": ("Automatic", "this server uses each model's own VAE"),
    "eta_noise_seed_delta": (0, "a noise seed delta is not supported"),
    "randn_source": ("CPU", "noise is always made on the CPU, so a seed gives the same image on every device"),
    "face_restoration": (False, "face restoration is not available"),
    "s_min_uncond": (0.0, "skipping the negative prompt at low noise (s_min_uncond) is not supported"),
}
FIXED_ALIASES = {"sd_vae": ("Automatic", "None", "", None)}

SAMPLE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}


def _same_kind(value, default) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, type(default))


def check(key: str, value, field: str) -> list[str]:
    """Refuse a value this server cannot honour; return notices for values it keeps but does not use."""
    if key not in DEFAULTS:
        return [f"{field}: not a setting of this server; ignored"]
    if key in FIXED:
        fixed, reason = FIXED[key]
        if key == "sd_checkpoint_hash":
            return []  # read-only; clients post the whole dictionary back
        if value not in FIXED_ALIASES.get(key, (fixed,)) and value != fixed:
            raise InvalidRequest(f"{field}: {reason} (got {value!r})", field)
        return []
    if not _same_kind(value, DEFAULTS[key]):
        raise InvalidRequest(f"{field}: expected a {type(DEFAULTS[key]).__name__} like {DEFAULTS[key]!r}, "
                             f"got {value!r}", field)
    if len(json.dumps(value, default=str)) > MAX_VALUE_CHARS:
        raise InvalidRequest(f"{field}: the value is longer than {MAX_VALUE_CHARS:,} characters", field)
    if key == "CLIP_stop_at_last_layers" and not (float(value).is_integer() and 1 <= value <= 12):
        raise InvalidRequest(f"{field}: CLIP skip must be a whole number from 1 to 12, got {value!r}", field)
    if key == "samples_format" and str(value).lower() not in SAMPLE_FORMATS:
        raise InvalidRequest(f"{field}: expected png, jpg or webp, got {value!r}", field)
    if key == "img2img_background_color":
        from PIL import ImageColor

        try:
            ImageColor.getrgb(value)
        except ValueError:
            raise InvalidRequest(f"{field}: not a colour: {value!r}", field) from None
    return []


class Options:
    """The stored settings of one server: A1111's defaults overlaid with what clients wrote."""

    def __init__(self, folder: str | Path | None):
        self.path = Path(folder) / OPTIONS_FILE if folder else None
        self._lock = threading.Lock()
        self._stored: dict[str, Any] = {}
        if self.path and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text())
                self._stored = {k: v for k, v in loaded.items() if k in DEFAULTS and k not in FIXED}
            except (OSError, ValueError, AttributeError) as exc:
                log.warning("%s: unreadable (%s); starting from A1111's defaults", self.path, exc)

    def get(self, key: str):
        return self._stored.get(key, DEFAULTS.get(key))

    def effective(self, overrides: dict | None) -> dict:
        """Stored settings with one request's override_settings on top (already checked)."""
        merged = {**DEFAULTS, **self._stored}
        merged.update({k: v for k, v in (overrides or {}).items() if k in DEFAULTS and k not in FIXED})
        return merged

    def snapshot(self) -> dict:
        return {**DEFAULTS, **self._stored}

    def update(self, changes: dict) -> list[str]:
        """Check every change first, then keep them all (or none). sd_model_checkpoint is the caller's."""
        notices: list[str] = []
        for key, value in changes.items():
            notices += check(key, value, key)
        with self._lock:
            for key, value in changes.items():
                if key in DEFAULTS and key not in FIXED:
                    self._stored[key] = value
            self._save()
        for notice in notices:
            log.warning("options: %s", notice)
        return notices

    def _save(self) -> None:
        if self.path is None:
            return
        from ...errors import OutputError
        from ...images import write_atomically

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(json.dumps(self._stored, indent=1, sort_keys=True).encode(), self.path, overwrite=True)
        except (OSError, OutputError) as exc:
            raise OutputError(f"the settings could not be saved: {exc}") from None
