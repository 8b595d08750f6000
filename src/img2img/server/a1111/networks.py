"""LoRAs, embeddings and styles on the A1111 wire: the listing routes, and A1111's leniency.

A1111 runs a prompt that names an unknown LoRA or style without it (and says so in its console); the
strict engine refuses such requests, so this layer removes what cannot be used and says so in the
response's notices.
"""

from __future__ import annotations

from ...networks import NetworkError, describe_embeddings, list_files, load_embeddings
from ...prompts import extract_networks
from ...request import Request
from ...styles import load_styles


def without_tag(request: Request, tag: str) -> Request:
    return request.replace(prompt=request.prompt.replace(tag, ""),
                           negative_prompt=request.negative_prompt.replace(tag, ""))


def drop_unusable(request: Request, engine, notices: list[str]) -> Request:
    """Unknown style names and <lora:...> tags naming no file are removed, each with a notice."""
    if request.styles:
        known = load_styles(engine.styles_file)
        missing = [name for name in request.styles if name not in known]
        if missing:
            notices.append(f"styles not found in {engine.styles_file}, skipped: {', '.join(missing)}")
            request = request.replace(styles=tuple(n for n in request.styles if n in known))
    available = None
    for tag in extract_networks(request.prompt)[1] + extract_networks(request.negative_prompt)[1]:
        if tag.kind == "lora":
            available = list_files(engine.lora_dir) if available is None else available
            if tag.name in available:
                continue
            notices.append(f"LoRA {tag.name!r} not found in {engine.lora_dir}; {tag.tag} was skipped")
        else:
            notices.append(f"unknown network type in {tag.tag}; skipped")
        request = without_tag(request, tag.tag)
    return request


def generate_leniently(service, job, slot, request: Request, image, parts: int, notices: list[str], run=None):
    """Generate; a LoRA that does not fit the model is left out with a notice and the job runs again."""
    while True:
        try:
            return service.generate(job, slot, request, image, parts, run=run)
        except NetworkError as exc:
            if not exc.tag or exc.tag not in request.prompt + request.negative_prompt:
                raise
            notices.append(f"{exc}; {exc.tag} was skipped")
            request = without_tag(request, exc.tag)


def network_routes(service):
    """/loras, /refresh-loras, /embeddings, /prompt-styles in A1111's shapes."""
    from fastapi import APIRouter
    from starlette.concurrency import run_in_threadpool

    api = APIRouter()

    def engine():
        return service.current.engine

    @api.get("/loras")
    async def loras():
        def listing():
            return [{"name": f.name, "alias": f.metadata().get("ss_output_name", f.name), "path": str(f.path),
                     "metadata": f.metadata()} for f in list_files(engine().lora_dir).values()]

        return await run_in_threadpool(listing)

    @api.post("/refresh-loras")
    async def refresh_loras():
        return None  # the folder is read at every request

    @api.get("/embeddings")
    async def embeddings():
        """The embeddings that fit the current model (loaded) and those that do not (skipped)."""
        slot = service.current
        if service.backend is not None:  # --engine ray: the replicas hold the model
            return await run_in_threadpool(service.backend.embeddings, slot.spec)
        if not slot.loaded:
            return {"loaded": {}, "skipped": {}}
        return await run_in_threadpool(
            lambda: describe_embeddings(load_embeddings(slot.engine.load().pipe, slot.engine.embeddings_dir)))

    @api.get("/prompt-styles")
    async def prompt_styles():
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                for s in (await run_in_threadpool(load_styles, engine().styles_file)).values()]

    return api


__all__ = ["NetworkError", "drop_unusable", "generate_leniently", "network_routes"]
