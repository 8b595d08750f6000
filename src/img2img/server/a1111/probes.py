"""The routes clients call besides generation: listings, options, progress, interrupt/skip, PNG info."""

from __future__ import annotations

import base64
import time
from typing import Any

from ...errors import InvalidRequest
from .images import decode_base64_image
from .payloads import PngInfoPayload


def probe_routes(service):
    from fastapi import APIRouter, Body, Query
    from starlette.concurrency import run_in_threadpool

    from ...schedulers import SAMPLERS, SCHEDULES

    api = APIRouter()

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

    @api.get("/scripts")
    async def scripts():
        return {"txt2img": [], "img2img": []}

    return api
