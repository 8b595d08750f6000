"""How one batch of an A1111 job runs on the engine: the plain run, plus A1111's hires fix (a second,
image-to-image pass over the upscaled first pass) and outputs resized to sizes that are not multiples of 8."""

from __future__ import annotations

from ...infotext import format_infotext, parse_infotext
from .translate import Translated

_RESAMPLE = {"Nearest": "NEAREST", "Latent (nearest)": "NEAREST", "Latent (nearest-exact)": "NEAREST",
             "Lanczos": "LANCZOS", "None": "LANCZOS"}


def batch_runner(translated: Translated):
    """A function (engine, request, image, on_step) -> Result for Service.generate."""

    def run(engine, request, image, on_step):
        result = engine.run(request, image, mask=translated.mask, latent_mask=translated.latent_mask,
                            on_step=on_step)
        if translated.hires is not None:
            result = _hires_pass(engine, translated, result, on_step)
        if translated.output_size and result.images[0].size != translated.output_size:
            from PIL import Image

            result.images = [im.resize(translated.output_size, Image.Resampling.LANCZOS) for im in result.images]
        return result

    return run


def _hires_pass(engine, translated: Translated, first, on_step):
    from PIL import Image

    hires = translated.hires
    width, height = hires.size(first.width, first.height)
    method = getattr(Image.Resampling, _RESAMPLE.get(hires.upscaler, "BICUBIC"))
    upscaled = [image.resize((width, height), method) for image in first.images]
    if hires.request is None:  # denoising strength 0: the upscaled first pass is the result
        first.images, first.width, first.height = upscaled, width, height
        strength = 0
        result = first
    else:
        second = hires.request.replace(seed=first.seeds[0], subseed=first.request.subseed, batch_size=len(upscaled),
                                       width=width, height=height)
        result = engine.run(second, upscaled if len(upscaled) > 1 else upscaled[0], on_step=on_step)
        strength = second.strength
    # The infotext is the first pass's, with the hires keys A1111 writes, so it describes the whole job.
    infotexts = []
    for text in first.infotexts:
        prompt, negative, params = parse_infotext(text)
        version = params.pop("Version", None)
        params.update({"Denoising strength": strength, **hires.params, "Version": version})
        infotexts.append(format_infotext(prompt, negative, params))
    result.infotexts = infotexts
    result.notices = first.notices + [n for n in result.notices if n not in first.notices]
    return result
