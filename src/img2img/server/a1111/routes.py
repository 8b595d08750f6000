"""The /sdapi/v1 generation routes (txt2img, img2img); probes.py has the rest."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import Request as HttpRequest

from .inpainting import fit_mask
from .networks import drop_unusable, generate_leniently, network_routes
from .options import Options
from .passes import batch_runner
from .payloads import GenerationPayload, Img2ImgPayload, Txt2ImgPayload
from .responses import response
from .translate import translate

log = logging.getLogger("img2img.server")


def _data_folder(config) -> Path:
    from ...history import default_history_dir

    return Path(config.history_dir).expanduser() if config.history_dir else default_history_dir()


def attach_options(service) -> Options:
    """The server's A1111 settings, read from its data folder; a stored model choice is restored."""
    options = Options(_data_folder(service.config))
    stored = options.get("sd_model_checkpoint")
    if stored:
        try:
            service.set_current(stored)
        except Exception:  # a model no longer configured: keep the first one
            log.warning("the stored sd_model_checkpoint %r is not configured; using %s", stored, service.current.name)
    service.a1111_options = options
    return options


def router(service):
    """The /sdapi/v1 routes."""
    from fastapi import APIRouter
    from starlette.concurrency import run_in_threadpool

    from ..web import await_job
    from .probes import probe_routes

    attach_options(service)
    api = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111-compatible"])
    fetch = None
    if service.config.allow_image_urls:
        from ..fetch import fetch_image

        def fetch(url, field):
            return fetch_image(url, field, max_bytes=service.config.max_body_bytes)

    async def generate(payload: GenerationPayload, http: HttpRequest):
        translated = await run_in_threadpool(translate, payload, service, fetch=fetch)
        slot = service.find_model(translated.model)

        def check():
            request = drop_unusable(translated.request, slot.engine, translated.notices)
            prepared, _ = service.prepare(slot, request, translated.parts, mode=translated.mode)
            for index, image in enumerate(translated.images):
                service.check_image(image, f"init_images[{index}]")
            if translated.mask is not None:  # another size is resized to the init image's, as A1111 does
                translated.mask, resized = fit_mask(translated.mask, translated.images[0])
                translated.notices.extend(resized)
                if translated.latent_mask is not None:
                    translated.latent_mask, resized = fit_mask(translated.latent_mask, translated.images[0],
                                                               "latent_mask")
                    translated.notices.extend(resized)
                for image in translated.images:  # A1111 lays the mask over each init image
                    service.check_repaint(prepared, image, translated.mask, latent_mask=translated.latent_mask)
            if translated.hires is not None and translated.hires.request is not None:
                slot.engine.prepare(translated.hires.request, "img2img")
            return prepared

        prepared = await run_in_threadpool(check)
        if translated.sticky_model:
            service.current = slot
        images = translated.images
        image = None if not images else images[0] if len(images) == 1 else images
        # no mask, no second pass, no resize after: the job may share a batched call (--max-batch)
        plain = translated.mask is None and translated.hires is None and not translated.output_size
        outcome = await await_job(
            http, service,
            lambda job: generate_leniently(service, job, slot, prepared, image, translated.parts, translated.notices,
                                           run=batch_runner(translated)),
            label=slot.name,
            together=service.together(slot, prepared, image, translated.parts, plain=plain))
        for notice in translated.notices:
            log.info("sdapi %s: %s", translated.mode, notice)
        if payload.save_images:  # A1111 saves to its outputs folder; we keep them in the history
            await run_in_threadpool(service.record, outcome, "api")
        return await run_in_threadpool(response, payload, translated, prepared, outcome, slot)

    @api.post("/txt2img")
    async def txt2img(payload: Txt2ImgPayload, http: HttpRequest):
        """Text-to-image as in A1111, on the loaded weights; hires fix included. Interrupted jobs answer 200
        with the images finished so far."""
        return await generate(payload, http)

    @api.post("/img2img")
    async def img2img(payload: Img2ImgPayload, http: HttpRequest):
        """Image-to-image as in A1111. Interrupted jobs answer 200 with the images finished so far."""
        return await generate(payload, http)

    api.include_router(probe_routes(service))
    api.include_router(network_routes(service))
    return api
