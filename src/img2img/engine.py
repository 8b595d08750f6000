"""Request -> Result: the one place where an image-to-image generation happens.

torch and diffusers are imported inside methods so `import img2img` stays fast.
"""

from __future__ import annotations

import copy
import dataclasses
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from . import inpaint, networks, styles
from .backends import Acceleration, sized_for
from .backends.autoencoders import vae_name
from .errors import Interrupted, InvalidRequest
from .geometry import MAX_SIDE, MIN_SIDE, TargetSize, automatic_min_side, plan_resize, restore_box, target_size
from .images import DEFAULT_MAX_PIXELS, apply_plan, load_image, restore_size
from .infotext import format_infotext
from .latent_resize import encode_size, resize_encoded_latents
from .masks import paste_back
from .models import CACHE, LoadedModel, PipelineCache, choose_device, resolve_model
from .noise import apply_variation, batch_seeds, scale_initial_noise, text_to_image_noise
from .prompts import extract_networks
from .request import MAX_SEED, Request, Result
from .schedulers import parse_sampler, plan_sampling, recorded_schedule
from .version import __version__

# Serializes all generation in this process: one accelerator does one job at a time.
GPU_LOCK = threading.RLock()

StepCallback = Callable[[int, int, Any], None]  # (step done, total steps, latents)


class Engine:
    """A model on a device, ready for repeated transforms. The loaded pipeline lives in the shared cache."""

    def __init__(self, model: str | None = None, *, device: str | None = None, dtype: str | None = None,
                 safety_checker: bool = True, allow_unsafe_checkpoint: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, config: str | None = None,
                 lora_dir=None, embeddings_dir=None, styles_file=None, vae: str | None = None,
                 backend: str = "auto", compile: bool | str = False, offload: str = "auto",
                 cpu_threads: int | None = None, cache: PipelineCache = CACHE):
        self.source = resolve_model(model, allow_unsafe_checkpoint=allow_unsafe_checkpoint)
        self.device, self.dtype = choose_device(device, dtype)
        self.acceleration = Acceleration(backend, vae, compile, offload).validated(self.device)
        self.cpu_threads = _set_cpu_threads(cpu_threads)
        self.safety_checker = safety_checker
        self.max_pixels = max_pixels
        self.config = config
        # where prompts find <lora:name>, embedding names and styles (defaults: the user data folder)
        self.lora_dir = networks.lora_dir(lora_dir)
        self.embeddings_dir = networks.embeddings_dir(embeddings_dir)
        self.styles_file = styles.styles_file(styles_file)
        self._cache = cache
        self._interrupts = 0  # interrupt() calls so far; a run stops when the count moves past what it saw
        self._interrupts_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Engine(model={self.source.name!r}, device={self.device!r}, dtype={self.dtype!r})"

    def load(self, acceleration: Acceleration | None = None) -> LoadedModel:
        """The loaded model (from the cache, or loaded now), on the engine's backend unless one is given. Waits
        for a running generation: loading may evict the pipeline it uses."""
        with GPU_LOCK:
            return self._cache.get(self.source, self.device, self.dtype, safety_checker=self.safety_checker,
                                   config=self.config, acceleration=acceleration or self.acceleration)

    def acceleration_for(self, request: Request) -> tuple[Acceleration, list[str]]:
        """The backend this request runs on: the engine's, or torch when an automatically chosen backend
        cannot do what the request asks (LoRA, seamless tiling); an explicitly chosen one refuses."""
        features = ["lora"] if any(tag.kind == "lora" for tag in _network_tags(request)) else []
        if request.tiling:
            features.append("tiling")
        return self.acceleration.for_features(features)

    def interrupt(self) -> None:
        """Stop the running generation as soon as it can, wherever it is (reading its input, waiting for another
        run, loading, denoising); it raises Interrupted. Runs that start later are not affected."""
        with self._interrupts_lock:
            self._interrupts += 1

    def _stop_if_interrupted(self, seen: int) -> None:
        if self._interrupts != seen:
            raise Interrupted("generation interrupted")

    def prepare(self, request: Request, mode: str = "img2img") -> Request:
        """Fill the model's defaults and validate; no model is loaded, so bad requests fail fast."""
        profile = self.source.profile
        request = request.normalized()
        if mode == "txt2img":  # text-to-image denoises pure noise: the whole schedule, strength 1
            request = request.replace(strength=1.0)
        request = request.replace(
            steps=profile.steps if request.steps is None else request.steps,
            cfg_scale=profile.cfg_scale if request.cfg_scale is None else request.cfg_scale,
        ).validate()
        if mode == "txt2img" and request.noise_multiplier != 1:
            raise InvalidRequest("noise_multiplier scales the noise added to an input image; text-to-image has none",
                                 "noise_multiplier")
        prompt, negative = styles.apply_styles(request.prompt, request.negative_prompt, request.styles,
                                               self.styles_file)
        request = request.replace(prompt=prompt, negative_prompt=negative, styles=())
        self.acceleration_for(request)  # what the backend cannot do fails here, unless torch can stand in
        for tag in _network_tags(request):  # unknown LoRA names fail here, before the model loads
            if tag.kind == "lora":
                networks.find_lora(tag, networks.list_files(self.lora_dir), self.lora_dir)
        if request.inpaint_fill is None:  # A1111's web UI default; new canvas area starts from its surroundings
            request = request.replace(inpaint_fill="fill" if request.outpaint else "original")
        sampler, schedule = parse_sampler(request.sampler or profile.sampler, request.scheduler)
        request = request.replace(sampler=sampler, scheduler=schedule)
        if (mode == "img2img" and request.keep_size and request.resize_mode == "crop"
                and not (request.width and request.height)):
            # A size from the aspect ratio differs from it by a few pixels of rounding: a crop would cut them
            # off and keep_size would stretch the rest back; a stretch is undone exactly on the way back.
            request = request.replace(resize_mode="stretch")
        return request

    def transform(self, image, prompt: str = "", *, mask=None, on_step: StepCallback | None = None,
                  **fields) -> Result:
        """Transform `image` (path, bytes, PIL image or numpy array) as `prompt` says. See Request.

        With `mask` (same kinds; white = repaint, the image's size) only the masked part changes."""
        if image is None:
            raise InvalidRequest("transform() needs an input image; text_to_image() makes one from a prompt", "image")
        return self.run(Request(prompt=prompt, **fields), image, mask=mask, on_step=on_step)

    def text_to_image(self, prompt: str = "", *, on_step: StepCallback | None = None, **fields) -> Result:
        """Make an image from `prompt` alone, with the same loaded weights (LoadedModel.pipeline)."""
        return self.run(Request(prompt=prompt, **fields), None, on_step=on_step)

    def run(self, request: Request, image=None, *, mask=None, latent_mask=None,
            on_step: StepCallback | None = None) -> Result:
        """Generate for `request`: image-to-image from `image`, or text-to-image when `image` is None.

        `image` may also be a list of images, one per member of the batch (batch_size = their number).
        With `mask` (or mask_from_alpha, or outpaint) only part of the image is repainted; `latent_mask`
        (A1111's) replaces the mask for the generation itself, unblurred.
        """
        import numpy as np
        import torch

        if isinstance(image, (list, tuple)) and len(image) > 1 and mask is not None:
            return self._run_each(request, list(image), mask, latent_mask, on_step)
        started = time.perf_counter()
        interrupts = self._interrupts  # an interrupt() from here on stops this run
        mode = choose_mode(request, image)
        # 1. validate, with the model's defaults filled in (before any model loads)
        request = self.prepare(request, mode)
        # 2. read the input image(s) and the mask, if any (bad files fail before the model loads, too)
        sources = [] if image is None else list(image) if isinstance(image, (list, tuple)) else [image]
        if len(sources) > 1 and len(sources) != request.batch_size:
            raise InvalidRequest(f"{len(sources)} input images need batch_size {len(sources)}, got "
                                 f"{request.batch_size}", "batch_size")
        loaded_images = [load_image(source, max_pixels=self.max_pixels, background=request.background)
                         for source in sources]
        loaded_image = loaded_images[0] if loaded_images else None
        repaint = inpaint.read_repaint(request, sources, loaded_image, mask, max_pixels=self.max_pixels,
                                       latent_mask=latent_mask)
        if repaint is None:  # a repainted result is pasted into the input, so it lines up anyway
            for loaded in loaded_images:
                _check_keep_size(request, loaded.original_size)
        notices = [notice for loaded in loaded_images for notice in loaded.notices]
        acceleration, fallback_notices = self.acceleration_for(request)
        notices += fallback_notices
        with GPU_LOCK:
            self._stop_if_interrupted(interrupts)  # while the input was read or another run had the lock
            # 3. load the model (cached) on the backend that can do this request; masks and inpainting models
            # use its inpainting pipeline
            model = self.load(acceleration)
            notices += model.notices
            self._stop_if_interrupted(interrupts)
            if mode == "img2img" and (repaint is not None or model.is_inpainting):
                mode = "inpaint"
            blank = mode == "txt2img" and model.is_inpainting  # A1111: a blank picture, all of it masked
            if blank:
                mode = "inpaint"
            latent_resize = loaded_image is not None and request.resize_mode == "latent" and repaint is None
            if latent_resize and mode == "inpaint":
                raise InvalidRequest("resize_mode latent resizes latents, which an inpainting model's extra inputs "
                                     "cannot follow; use stretch, crop or fill", "resize_mode")
            # 4. plan the size (within the side limits) and prepare the image(s): all take the first one's size;
            # with a mask, what gets repainted (the whole picture or the masked area's box)
            masked = inpaint.prepare_inputs(request, repaint, model.native)
            plans = []  # how each input became the generation's input (keep_size undoes it)
            if loaded_image is None:
                width, height = request.width or model.native, request.height or model.native
                prepared, inputs = [], {"width": width, "height": height}
                if blank:
                    inputs["strength"] = 1.0
            elif masked is not None:
                (width, height), prepared = masked.size, [masked.image]
                inputs = {"strength": request.strength}
            else:
                size = target_size(*loaded_image.original_size, model.native, request.width, request.height)
                width, height = size.width, size.height
                if size.limited:
                    notices.append(_limited_size_notice(loaded_image.original_size, size, request, model.native))
                # latent: the pixels keep the first input's size (to whole latents), the latents are resized
                pixel_mode = "stretch" if latent_resize else request.resize_mode
                plans = [plan_resize(loaded.original_size, (width, height), pixel_mode) for loaded in loaded_images]
                encoded = encode_size(loaded_image.original_size) if latent_resize else (width, height)
                prepared = [apply_plan(loaded.image, plan_resize(loaded.original_size, encoded, pixel_mode))
                            for loaded in loaded_images]
                inputs = {"image": prepared[0] if len(prepared) == 1 else prepared, "strength": request.strength}
            # 5. seeds: given or random; a batch counts up as A1111 counts (noise.batch_seeds)
            first = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
            subseed = None
            if request.subseed_strength > 0:
                subseed = request.subseed if request.subseed is not None else secrets.randbelow(MAX_SEED + 1)
            seeds, subseeds = batch_seeds(first, request.batch_size, subseed, request.subseed_strength)
            generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]  # same noise on every device
            # 6. a private view of the mode's pipeline with a fresh scheduler (the cached one is never mutated),
            # its own noise (if it draws any) seeded from the image seeds
            pipe = copy.copy(model.pipeline(mode))
            sampling = plan_sampling(model.pipe.scheduler.config, request, xl=model.is_xl, seeds=seeds)
            pipe.scheduler = sampling.scheduler
            notices += sampling.notices
            if request.noise_multiplier != 1:  # before the variation's mixing, which wraps it
                scale_initial_noise(pipe, request.noise_multiplier)
            if subseeds and loaded_image is None:
                inputs["latents"] = text_to_image_noise(pipe, width, height, seeds, subseeds, request.subseed_strength)
            elif subseeds:
                apply_variation(pipe, subseeds, request.subseed_strength)
            if latent_resize:  # around the variation's VAE: the mixed draw is what gets resized
                resize_encoded_latents(pipe, width, height)
            if mode == "inpaint":
                if not request.mask_round:  # keep the blurred mask's grey levels (A1111's mask_round off)
                    pipe.mask_processor = inpaint.soft_mask_processor(pipe.mask_processor)
                pictures = [inpaint.blank_picture((width, height))] if blank else prepared
                inputs.update(inpaint.pipeline_args(pipe, request, pictures, masked, seeds, generators))
            if request.cfg_scale <= 1 and request.negative_prompt:
                notices.append("negative prompt has no effect with CFG scale <= 1")
            # 7. LoRAs named in the prompts join the models for this request only; embeddings by name
            with networks.applied_loras(pipe, _network_tags(request), self.lora_dir) as loras:
                embeddings = networks.load_embeddings(pipe, self.embeddings_dir)
                # 8. prompts: A1111 syntax -> text embeddings for every denoising step
                conditioning = _conditioning(pipe, request, embeddings)
                # 9. denoise, switching embeddings where the prompt schedule says so
                with sized_for(pipe, width, height, request.batch_size) as size_notices, \
                        _circular_padding(pipe, request.tiling):  # tiles for big outputs; seamless images
                    output = self._denoise(pipe, request, {**inputs, **sampling.call_kwargs}, generators,
                                           conditioning, on_step, interrupts)
            notices += size_notices
            pixels = output.images
            nsfw = list(getattr(output, "nsfw_content_detected", None) or [False] * len(pixels))
            # 10. half-precision VAEs can overflow to NaN (a black image): decode again in float32
            if np.isnan(pixels).any() and output.last_latents is not None:
                pixels, nsfw = _decode_in_float32(pipe, output.last_latents, nsfw)
                notices.append("the VAE overflowed in half precision; decoded again in float32")
                if np.isnan(pixels).any():
                    notices.append("the decoded image still contains NaN values (shown black)")
                    pixels = np.nan_to_num(pixels)
        images = pipe.image_processor.numpy_to_pil(pixels)
        for index, flagged in enumerate(nsfw):
            if flagged:
                notices.append(f"image {index + 1} (seed {seeds[index]}) was blacked out by the model's "
                               "safety checker; pass --no-safety-checker to disable it")
        # 11. colour correction towards the input; with a mask, into the input, whose pixels outside the mask
        # stay exactly as they were
        if request.color_correction and prepared:
            from .colors import match_colors

            images = [match_colors(im, prepared[min(i, len(prepared) - 1)]) for i, im in enumerate(images)]
        if masked is not None:
            images = [paste_back(im, masked) for im in images]
        # 12. optionally back onto the input's own pixels (undoing the resize plan; the canvas when outpainting),
        # then metadata
        if request.keep_size and plans:
            images = [restore_size(im, plans[min(i, len(plans) - 1)]) for i, im in enumerate(images)]
        elif request.keep_size and repaint is not None and images[0].size != repaint.canvas.size:
            from PIL import Image

            images = [im.resize(repaint.canvas.size, Image.Resampling.LANCZOS) for im in images]
        extra = {**sampling.params, "Tiling": True if request.tiling else None,
                 **inpaint.infotext_params(request, repaint), "Lora hashes": loras.hashes(),
                 "TI hashes": embeddings.hashes(conditioning.encoder.used_embeddings)}
        digests = [loaded.digest for loaded in loaded_images] or [None]
        infotexts = [
            format_infotext(request.prompt, request.negative_prompt,
                            _params(request, seed, subseeds[i] if subseeds else None, width, height, model,
                                    digests[min(i, len(digests) - 1)], extra, self.acceleration.vae))
            for i, seed in enumerate(seeds)
        ]
        return Result(images=images, seeds=seeds, infotexts=infotexts,
                      request=request.replace(seed=first, subseed=subseed), model=model.source.name,
                      device=self.device, dtype=self.dtype, width=width, height=height,
                      effective_steps=request.effective_steps, nsfw=nsfw, notices=notices,
                      seconds=time.perf_counter() - started, subseeds=subseeds)

    def _run_each(self, request: Request, images: list, mask, latent_mask, on_step) -> Result:
        """Several input images with one mask (A1111 lays it over each): each is repainted on its own, with the
        seed a batch would give it; one Result for all. Every input and the mask are checked first."""
        request = self.prepare(request)
        if len(images) != request.batch_size:
            raise InvalidRequest(f"{len(images)} input images need batch_size {len(images)}, got "
                                 f"{request.batch_size}", "batch_size")
        for source in images:  # bad files or a mask of another size fail before anything runs
            loaded = load_image(source, max_pixels=self.max_pixels, background=request.background)
            inpaint.read_repaint(request, [source], loaded, mask, max_pixels=self.max_pixels, latent_mask=latent_mask)
        first = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
        subseed = None
        if request.subseed_strength > 0:
            subseed = request.subseed if request.subseed is not None else secrets.randbelow(MAX_SEED + 1)
        seeds, subseeds = batch_seeds(first, len(images), subseed, request.subseed_strength)
        results = [self.run(request.replace(batch_size=1, seed=seeds[i], subseed=subseeds[i] if subseeds else subseed),
                            source, mask=mask, latent_mask=latent_mask, on_step=on_step)
                   for i, source in enumerate(images)]
        notices = list(dict.fromkeys(notice for result in results for notice in result.notices))
        return dataclasses.replace(
            results[0], images=[im for r in results for im in r.images], seeds=[s for r in results for s in r.seeds],
            infotexts=[t for r in results for t in r.infotexts], nsfw=[f for r in results for f in r.nsfw],
            subseeds=[s for r in results for s in r.subseeds], notices=notices,
            seconds=sum(r.seconds for r in results), request=results[0].request.replace(batch_size=len(images)))

    def _denoise(self, pipe, request: Request, inputs: dict, generators, conditioning, on_step, interrupts: int):
        """Run the pipeline; the step-end callback reports progress, switches scheduled prompts, stops."""
        last: dict[str, Any] = {}

        def step_end(pipeline, index, timestep, tensors):
            last["latents"] = tensors["latents"]
            if conditioning.key(index + 1) != conditioning.key(index):
                tensors.update(conditioning.step_tensors(index + 1, request.batch_size,
                                                         pipeline.do_classifier_free_guidance))
            if on_step is not None:
                on_step(index + 1, pipeline.num_timesteps, tensors["latents"])
            self._stop_if_interrupted(interrupts)
            return tensors

        output = pipe(
            **conditioning.pipeline_kwargs(0),
            **inputs,
            num_inference_steps=request.steps,
            guidance_scale=request.cfg_scale,
            num_images_per_prompt=request.batch_size,
            generator=generators[0] if len(generators) == 1 else generators,
            output_type="np",
            callback_on_step_end=step_end,
            callback_on_step_end_tensor_inputs=["latents", *conditioning.step_tensor_names],
        )
        output.last_latents = last.get("latents")
        return output


def _check_keep_size(request: Request, source: tuple[int, int]) -> None:
    """keep_size maps the result back onto the input; a crop that cut part of the input off cannot."""
    if not (request.keep_size and request.width and request.height and request.resize_mode == "crop"):
        return
    plan = plan_resize(source, (request.width, request.height), request.resize_mode)
    if restore_box(plan) is None:
        left, top, right, bottom = plan.crop
        cut = (f"{source[0] - (right - left)} of the input's {source[0]} columns" if right - left < source[0]
               else f"{source[1] - (bottom - top)} of the input's {source[1]} rows")
        raise InvalidRequest(f"keep_size: resize mode crop would cut {cut} off, so the result could not line up "
                             "with the input; use resize mode stretch or fill, or leave width/height automatic",
                             "keep_size")


def _limited_size_notice(source: tuple[int, int], size: TargetSize, request: Request, native: int) -> str:
    width, height = source
    ratio = f"{width / height:.3g}:1" if width >= height else f"1:{height / width:.3g}"
    low = MIN_SIDE if request.width or request.height else automatic_min_side(native)
    how = {"crop": "the input cropped to fit", "stretch": "the input stretched to fit",
           "fill": "the bands filled from the input's edges", "latent": "its latents stretched to fit"}.get(
        request.resize_mode, "the input stretched to fit")
    return (f"the input's aspect ratio {ratio} does not fit the side limits ({low}-{MAX_SIDE} px): "
            f"generated at {size.width}x{size.height}, {how}")


def _network_tags(request: Request) -> list:
    """<lora:...> tags of both prompts (A1111 reads them from the negative prompt too)."""
    return extract_networks(request.prompt)[1] + extract_networks(request.negative_prompt)[1]


def _conditioning(pipe, request: Request, embeddings):
    from .conditioning import Conditioning, PromptEncoder

    encoder = PromptEncoder(pipe, clip_skip=request.clip_skip, embeddings=embeddings.vectors())
    request = request.replace(prompt=extract_networks(request.prompt)[0],
                              negative_prompt=extract_networks(request.negative_prompt)[0])
    return Conditioning(encoder, request.prompt, request.negative_prompt, request.steps,
                        zero_negative=bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False)),
                        unguided=request.cfg_scale <= 1)


def _set_cpu_threads(count: int | None) -> int:
    """torch's CPU threads: the physical core count unless told (hyper-threads only slow the math down)."""
    from .backends.cpu import set_threads
    from .request import _check_int

    if count is not None:
        _check_int("cpu_threads", count, 1, 1024)
    return set_threads(count)


def choose_mode(request: Request, image) -> str:
    """The pipeline mode a request runs in (models.MODES): without an input image it is text-to-image."""
    return "txt2img" if image is None else "img2img"


def _params(request: Request, seed: int, subseed: int | None, width: int, height: int, model: LoadedModel,
            digest: str | None, extra: dict, vae: str | None = None) -> dict:
    """Infotext keys; a text-to-image run (no input digest) has no strength, resize mode or input hash."""
    from_image = digest is not None
    return {
        "Steps": request.steps,
        "Sampler": request.sampler,
        "Schedule type": recorded_schedule(request.sampler, request.scheduler),
        "CFG scale": request.cfg_scale,
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model hash": model.model_hash,
        "Model": model.source.name,
        "VAE": vae_name(vae),  # None (the model's own) is left out, as A1111 does
        "Variation seed": subseed,
        "Variation seed strength": request.subseed_strength if subseed is not None else None,
        "Denoising strength": request.strength if from_image else None,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        "Resize mode": request.resize_mode if from_image else None,
        "Keep size": True if request.keep_size and from_image else None,
        "Background": request.background if request.background != "white" and from_image else None,
        "Init image hash": digest[:10] if from_image else None,
        "Color correction": True if request.color_correction and from_image else None,
        "Noise multiplier": request.noise_multiplier if request.noise_multiplier != 1 and from_image else None,
        **extra,
        "Version": f"img2img {__version__}",
    }


@contextmanager
def _circular_padding(pipe, enabled: bool):
    """Seamless tiling: the UNet's and VAE's convolutions wrap around the image edges for this run only."""
    if not enabled:
        yield
        return
    import torch

    convolutions = [m for part in (pipe.unet, pipe.vae) for m in part.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        for conv in convolutions:
            conv.padding_mode = "circular"
        yield
    finally:
        for conv in convolutions:
            conv.padding_mode = "zeros"


def _decode_in_float32(pipe, latents, nsfw: list[bool]):
    """Decode final latents with the VAE temporarily in float32; re-run the safety checker if any."""
    import torch

    vae = pipe.vae
    original = vae.dtype
    vae.to(torch.float32)
    try:
        latents = latents.to(torch.float32)
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
            std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        with torch.no_grad():
            decoded = vae.decode(latents, return_dict=False)[0]
    finally:
        vae.to(original)
    pixels = pipe.image_processor.postprocess(decoded, output_type="np")
    if getattr(pipe, "safety_checker", None) is not None:
        pixels, flagged = pipe.run_safety_checker(pixels, decoded.device, torch.float32)
        nsfw = list(flagged) if flagged is not None else nsfw
    return pixels, nsfw


def transform(image, prompt: str = "", *, model: str | None = None, device: str | None = None,
              dtype: str | None = None, safety_checker: bool = True, on_step: StepCallback | None = None,
              lora_dir=None, embeddings_dir=None, styles_file=None, vae: str | None = None,
              backend: str = "auto", compile: bool | str = False, offload: str = "auto",
              cpu_threads: int | None = None, **fields) -> Result:
    """One-call image-to-image. Repeated calls reuse the loaded pipeline (it stays cached)."""
    engine = Engine(model, device=device, dtype=dtype, safety_checker=safety_checker, lora_dir=lora_dir,
                    embeddings_dir=embeddings_dir, styles_file=styles_file, vae=vae, backend=backend,
                    compile=compile, offload=offload, cpu_threads=cpu_threads)
    return engine.transform(image, prompt, on_step=on_step, **fields)
