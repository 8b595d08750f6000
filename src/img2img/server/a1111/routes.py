"""The /sdapi/v1 routes."""

from __future__ import annotations

from fastapi import Request as HttpRequest

from .networks import drop_unusable, generate_leniently, network_routes
from .payloads import Img2ImgPayload
from .responses import response
from .translate import translate


def router(service):
    """The /sdapi/v1 routes."""
    from fastapi import APIRouter
    from starlette.concurrency import run_in_threadpool

    from ..web import await_job
    from .probes import probe_routes

    api = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111-compatible"])

    def configured(name: str) -> bool:
        return any(slot.matches(name) for slot in service.slots)

    @api.post("/img2img")
    async def img2img(payload: Img2ImgPayload, http: HttpRequest):
        """Image-to-image as in A1111. Interrupted jobs answer 200 with the images finished so far."""
        # Off the event loop: base64-decoding a large image and parsing an infotext are CPU work.
        translated = await run_in_threadpool(translate, payload, configured)
        field = "override_settings.sd_model_checkpoint" if payload.override_settings and \
            "sd_model_checkpoint" in payload.override_settings else "infotext"
        slot = service.find_model(translated.model, field)

        def check():
            request = drop_unusable(translated.request, slot.engine, translated.notices)
            prepared = service.prepare(slot, request, translated.parts)
            service.check_image(translated.image, "init_images[0]")
            return prepared

        prepared, _ = await run_in_threadpool(check)
        if translated.sticky_model:
            service.current = slot
        outcome = await await_job(
            http, service,
            lambda job: generate_leniently(service, job, slot, prepared, translated.image, translated.parts,
                                           translated.notices),
            label=slot.name)
        outcome.notices.extend(translated.notices)
        if payload.save_images:  # A1111 saves to its outputs folder; we keep them in the history
            await run_in_threadpool(service.record, outcome, "api")
        return await run_in_threadpool(response, payload, prepared, outcome, slot, translated.parts)

    api.include_router(probe_routes(service))
    api.include_router(network_routes(service))
    return api
