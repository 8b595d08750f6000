"""Native routes: multipart upload in, PNG (or JSON) out; model list; health."""

from __future__ import annotations

import base64

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi import Request as HttpRequest
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..errors import InvalidRequest
from ..images import encode_image
from ..request import Request
from .service import Service
from .web import await_job

RESPONSE_FORMATS = ("png", "json")


def router(service: Service) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["native"])

    @api.post("/img2img", responses={200: {"content": {"image/png": {}, "application/json": {}}}})
    async def img2img(
        http: HttpRequest,
        image: UploadFile = File(..., description="The input picture (PNG, JPEG, WebP, ...)."),
        prompt: str = Form(..., description="What the result should show."),
        negative_prompt: str = Form(""),
        strength: float = Form(0.75, description="How far from the input, (0, 1]."),
        steps: int | None = Form(None, description="Sampling steps (default: the model's)."),
        cfg_scale: float | None = Form(None),
        seed: int | None = Form(None, description="-1 or empty for random."),
        sampler: str | None = Form(None, description="A1111 sampler name, legacy names too."),
        scheduler: str = Form("Automatic"),
        width: int | None = Form(None),
        height: int | None = Form(None),
        resize_mode: str = Form("crop", description="stretch, crop, fill or latent (or A1111's 0-3)."),
        batch_size: int = Form(1),
        keep_size: bool = Form(False),
        background: str = Form("white"),
        subseed: int | None = Form(None, description="Variation seed (-1 or empty: random)."),
        subseed_strength: float = Form(0.0, description="0: the seed's image, 1: the subseed's image."),
        clip_skip: int = Form(1, description="Use the text encoder's Nth layer from the end."),
        styles: list[str] = Form([], description="Style names from the server's styles file; repeatable."),
        color_correction: bool = Form(False, description="Match the result's colours to the input's."),
        mask: UploadFile | None = File(None, description="Inpainting: repaint where this image is white (the "
                                                          "input's size; with transparency: where it is opaque)."),
        mask_from_alpha: bool = Form(False, description="Inpainting: repaint the input's transparent pixels."),
        invert_mask: bool = Form(False, description="Repaint what the mask leaves black instead."),
        mask_blur: str = Form("4", description="Mask edge softness: Gaussian sigma in pixels, or X,Y."),
        inpaint_fill: str | None = Form(None, description="Masked content: original, fill, latent-noise or "
                                                          "latent-nothing (default: original; fill when outpainting)."),
        inpaint_area: str = Form("whole", description="whole (picture) or masked (only the area around the mask)."),
        inpaint_padding: int = Form(32, description="Pixels of context around the mask for inpaint_area=masked."),
        outpaint: str | None = Form(None, description="Extend the canvas by LEFT,TOP,RIGHT,BOTTOM pixels."),
        noise_multiplier: float = Form(1.0, description="Scale the noise added to the input (A1111's initial "
                                                        "noise multiplier)."),
        model: str | None = Form(None, description="One of GET /v1/models (default: the current one)."),
        save: bool = Form(False, description="Also keep the results in the server's history (web UI)."),
        response_format: str | None = Form(None, description="png (the first image; default) or json (all images, "
                                           "base64). Without it, 'Accept: application/json' picks json."),
    ):
        """Transform an uploaded image. PNG answers carry the seed in X-Seed and the infotext inside the file."""
        if response_format is None:
            accept = http.headers.get("accept", "")
            fmt = "json" if "application/json" in accept and "image/png" not in accept else "png"
        else:
            fmt = response_format.strip().lower()
        if fmt not in RESPONSE_FORMATS:
            raise InvalidRequest(f"response_format must be png or json, got {response_format!r}", "response_format")
        if fmt == "png" and batch_size != 1:
            raise InvalidRequest("a PNG answer holds one image; use response_format=json for batch_size > 1",
                                 "response_format")
        data = await image.read()
        mask_data = await mask.read() if mask is not None else None
        slot = service.find_model(model, "model")
        request = Request(prompt=prompt, negative_prompt=negative_prompt, strength=strength, steps=steps,
                          cfg_scale=cfg_scale, seed=seed, sampler=sampler, scheduler=scheduler, width=width,
                          height=height, resize_mode=resize_mode, batch_size=batch_size, keep_size=keep_size,
                          background=background, subseed=subseed, subseed_strength=subseed_strength,
                          clip_skip=clip_skip, styles=tuple(styles), color_correction=color_correction,
                          mask_from_alpha=mask_from_alpha, invert_mask=invert_mask,
                          mask_blur=mask_blur, inpaint_fill=inpaint_fill or None, inpaint_area=inpaint_area,
                          inpaint_padding=inpaint_padding, outpaint=outpaint or None,
                          noise_multiplier=noise_multiplier)

        def check():
            prepared, _ = service.prepare(slot, request)
            service.check_image(data, "image")
            service.check_repaint(prepared, data, mask_data)
            return prepared

        prepared = await run_in_threadpool(check)
        outcome = await await_job(http, service,
                                  lambda job: service.generate(job, slot, prepared, data, mask=mask_data),
                                  label=slot.name,
                                  together=service.together(slot, prepared, data, plain=mask_data is None))
        if not outcome.results:
            raise HTTPException(409, "the job was interrupted before an image was finished")
        if save:
            await run_in_threadpool(service.record, outcome, "api")
        result = outcome.results[0]
        if fmt == "png":
            png = await run_in_threadpool(encode_image, result.images[0], "PNG", result.infotexts[0])
            return Response(png, media_type="image/png",
                            headers={"X-Seed": str(result.seeds[0]), "X-Model": slot.name})

        def as_json():
            return {
                "images": [base64.b64encode(encode_image(im, "PNG", text)).decode("ascii")
                           for im, text in zip(result.images, result.infotexts)],
                "seeds": result.seeds,
                "subseeds": result.subseeds,
                "infotexts": result.infotexts,
                "parameters": {k: v for k, v in vars(result.request).items()},
                "model": slot.name,
                "model_hash": slot.hash,
                "width": result.width,
                "height": result.height,
                "effective_steps": result.effective_steps,
                "nsfw": result.nsfw,
                "notices": result.notices + outcome.notices,
                "seconds": round(result.seconds, 3),
            }

        return await run_in_threadpool(as_json)

    @api.get("/models")
    async def models():
        return {"current": service.current.name,
                "models": [{"name": s.name, "title": s.title, "spec": s.spec if s.source.kind == "hub" else s.name,
                            "kind": s.source.kind, "hash": s.hash, "state": s.state,
                            "current": s is service.current,
                            "defaults": {"steps": s.source.profile.steps, "cfg_scale": s.source.profile.cfg_scale,
                                         "sampler": s.source.profile.sampler}}
                           for s in service.slots]}

    @api.get("/health")
    async def health():
        return service.health()

    return api
