"""The routes clients call besides generation, in A1111's shapes: listings (models, samplers, schedulers,
upscalers, VAEs, scripts, ...), options, progress, interrupt/skip, PNG info, memory, flags. The styles,
LoRA and embedding listings are in networks.py.

Each answers honestly about this server: what it does not have is an empty list, never an invention.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

from ...errors import InvalidRequest
from .images import decode_base64_image
from .payloads import PngInfoPayload
from .upscalers import LATENT_UPSCALE_MODES, UPSCALERS


def _ram() -> dict:
    """A1111's ram entry: this process's resident memory and the machine's total and free memory."""
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    try:
        total = page * os.sysconf("SC_PHYS_PAGES")
        free = page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = free = 0
    try:
        with open("/proc/self/statm") as handle:
            used = int(handle.read().split()[1]) * page
    except (OSError, ValueError, IndexError):
        import resource

        used = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"free": free, "used": used, "total": total}


def _cuda() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"error": "unavailable"}
    free, total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()

    def pair(name):
        return {"current": stats.get(f"{name}_bytes.all.current", 0), "peak": stats.get(f"{name}_bytes.all.peak", 0)}

    return {"system": {"free": free, "used": total - free, "total": total}, "active": pair("active"),
            "allocated": pair("allocated"), "reserved": pair("reserved"), "inactive": pair("inactive_split"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}


def probe_routes(service):
    from fastapi import APIRouter, Body, Query
    from starlette.concurrency import run_in_threadpool

    from ...schedulers import SAMPLERS, SCHEDULES
    from ..config import is_loopback

    api = APIRouter()
    config = service.config

    # ------------------------------------------------------------------ models and listings
    async def hashed():
        for slot in service.slots:
            await run_in_threadpool(slot.find_hash)

    @api.get("/sd-models")
    async def sd_models():
        await hashed()
        return [{"title": s.title, "model_name": s.name, "hash": s.hash, "sha256": None,
                 "filename": s.source.location, "config": None} for s in service.slots]

    @api.post("/refresh-checkpoints")
    async def refresh_checkpoints():
        """The configured models are the list; nothing to rescan."""
        return None

    @api.get("/sd-vae")
    async def sd_vae():
        return []  # each model's own VAE; no separate VAE files

    @api.post("/refresh-vae")
    async def refresh_vae():
        return None

    @api.get("/sd-modules")
    async def sd_modules():
        return []

    @api.get("/samplers")
    async def samplers():
        return [{"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)} for s in SAMPLERS.values()]

    @api.get("/schedulers")
    async def schedulers():
        return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None,
                 "default_rho": s.default_rho, "need_inner_model": s.need_inner_model} for s in SCHEDULES.values()]

    @api.get("/upscalers")
    async def upscalers():
        return [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
                for name in UPSCALERS]

    @api.get("/latent-upscale-modes")
    async def latent_upscale_modes():
        return [{"name": name} for name in LATENT_UPSCALE_MODES]

    # prompt-styles, loras, refresh-loras and embeddings: networks.py
    @api.post("/refresh-embeddings")
    async def refresh_embeddings():
        return None  # the folder is read at every request

    @api.get("/hypernetworks")
    async def hypernetworks():
        return []

    @api.get("/face-restorers")
    async def face_restorers():
        return []

    @api.get("/realesrgan-models")
    async def realesrgan_models():
        return []

    @api.get("/scripts")
    async def scripts():
        return {"txt2img": [], "img2img": []}

    @api.get("/script-info")
    async def script_info():
        return []

    @api.get("/extensions")
    async def extensions():
        return []

    # ------------------------------------------------------------------ the server
    @api.get("/cmd-flags")
    async def cmd_flags():
        """A1111's command-line flags that mean something here; secrets are never shown."""
        engine = service.current._engine
        dtype = engine.dtype if engine else config.dtype
        return {"api": True, "nowebui": not config.ui, "listen": not is_loopback(config.host), "port": config.port,
                "server_name": config.host, "api_auth": None, "api_log": False, "share": False,
                "cors_allow_origins": ",".join(config.cors_origins) or None, "cors_allow_origins_regex": None,
                "ckpt": service.slots[0].spec, "ckpt_dir": None, "vae_dir": None, "lora_dir": None,
                "embeddings_dir": None, "hypernetwork_dir": None, "styles_file": [],
                "data_dir": str(service.a1111_options.path.parent) if service.a1111_options.path else None,
                "no_half": dtype == "float32", "no_half_vae": dtype == "float32",
                "precision": "full" if dtype == "float32" else "autocast", "lowvram": False, "medvram": False,
                "xformers": False, "opt_sdp_attention": True, "use_cpu": ["all"] if config.device == "cpu" else [],
                "device_id": None, "disable_safe_unpickle": False, "gradio_auth": None, "freeze_settings": False,
                "hide_ui_dir_config": True, "enable_insecure_extension_access": False, "disable_nan_check": False,
                "allow_image_urls": config.allow_image_urls}

    @api.get("/memory")
    async def memory():
        cuda = await run_in_threadpool(_cuda)
        return {"ram": _ram(), "cuda": cuda}

    def options_now() -> dict:
        current = service.current
        return {**service.a1111_options.snapshot(), "sd_model_checkpoint": current.title,
                "sd_checkpoint_hash": current.hash}

    @api.get("/options")
    async def get_options():
        await hashed()
        return options_now()

    @api.post("/options")
    async def set_options(changes: dict[str, Any] = Body(...)):
        """Settings are checked, kept in the data folder and used where they mean something; a model
        switch picks among the configured models only."""
        changes = dict(changes)
        wanted = changes.pop("sd_model_checkpoint", None)
        if wanted is not None and not isinstance(wanted, str):
            raise InvalidRequest("sd_model_checkpoint: expected a model title", "sd_model_checkpoint")
        slot = service.find_model(wanted) if wanted else None
        if slot is not None:
            changes["sd_model_checkpoint"] = slot.name
        notices = await run_in_threadpool(service.a1111_options.update, changes)
        if slot is not None:
            service.current = slot
        return {"notices": notices} if notices else None

    @api.get("/progress")
    async def progress(skip_current_image: bool = Query(False)):
        skip = skip_current_image or not service.a1111_options.get("live_previews_enable")
        snapshot, png = await run_in_threadpool(service.preview, skip)
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

        from ...images import read_infotext
        from ...infotext import parse_infotext

        def read():
            data = decode_base64_image(payload.image, "image")
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

    return api


def queue_routes(service):
    """Gradio 3's queue status, which some A1111 clients read to see whether the server is up."""
    from fastapi import APIRouter

    api = APIRouter(tags=["AUTOMATIC1111-compatible"])

    @api.get("/queue/status")
    async def queue_status():
        waiting = service.queue.waiting
        return {"msg": "estimation", "rank": None, "queue_size": waiting, "avg_event_process_time": None,
                "avg_event_concurrent_process_time": None, "rank_eta": None, "queue_eta": 0}

    return api
