"""Request -> Result: the one place where an image-to-image generation happens.

torch and diffusers are imported inside methods so `import img2img` stays fast.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from . import inpaint, networks, styles
from .backends import Acceleration, sized_for
from .backends.autoencoders import vae_name
from .conditioning import StackedConditioning
from .errors import Interrupted, InvalidRequest
from .geometry import MAX_SIDE, MIN_SIDE, TargetSize, automatic_min_side, target_size
from .images import DEFAULT_MAX_PIXELS, load_image, restore_size
from .infotext import format_infotext
from .job import PER_JOB, GenerationJob, NotTogether, check_input_count, input_size, tell
from .latent_resize import resize_encoded_latents
from .masks import paste_back
from .models import CACHE, LoadedModel, PipelineCache, choose_device, resolve_model
from .noise import apply_variation, scale_initial_noise, text_to_image_noise
from .prompts import extract_networks
from .request import Request, Result
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
        if isinstance(image, (list, tuple)) and len(image) > 1 and mask is not None:
            return self._run_each(request, list(image), mask, latent_mask, on_step)
        return self._generate([GenerationJob(request, image, mask, latent_mask)], on_step)[0]

    def run_together(self, jobs: list[tuple[Request, Any]], *,
                     on_step: StepCallback | None = None) -> list[Result]:
        """Several (request, image) jobs as one batched pipeline call; one Result each, as `run` gives it.

        Each job keeps its own prompts, input image and seeds; they must agree on what the call shares
        (`together_key`), else InvalidRequest. Each result equals the job run alone (the same seeds draw the
        same noise) up to float rounding of batched arithmetic. Jobs the call cannot hold after all (prompts
        that encode to different lengths, an inpainting model) run one after another. `on_step` sees the whole
        batch's latents, in job order.
        """
        if not jobs:
            return []
        try:
            return self._generate([GenerationJob(request, image) for request, image in jobs], on_step)
        except NotTogether:
            return [self.run(request, image, on_step=on_step) for request, image in jobs]

    def together_key(self, request: Request, image) -> tuple | None:
        """What jobs must share to run as one pipeline call (run_together): everything but their prompts, input
        images, seeds and what is done to each result afterwards, plus the input's size (which decides the output
        size) and the LoRAs named (they apply to the whole call). None for a job that runs alone: a mask from
        alpha, outpainting, latent resizing, several input images. Takes a prepared request (`prepare`)."""
        if request.mask_from_alpha or request.outpaint is not None or request.resize_mode == "latent" \
                or isinstance(image, (list, tuple)):
            return None
        shared = tuple((name, getattr(request, name)) for name in sorted(vars(request)) if name not in PER_JOB)
        loras = tuple(sorted((tag.name, tag.text_encoder, tag.unet) for tag in _network_tags(request)
                             if tag.kind == "lora"))
        return choose_mode(request, image), input_size(image), shared, loras

    def _generate(self, jobs: list[GenerationJob], on_step: StepCallback | None) -> list[Result]:
        """The generation of `run` for one job, or for several that share one pipeline call (run_together)."""
        import numpy as np
        import torch

        started = time.perf_counter()
        interrupts = self._interrupts  # an interrupt() from here on stops this run
        together = len(jobs) > 1
        # 1. validate, with the model's defaults filled in (before any model loads); jobs run together must agree
        for job in jobs:
            job.request = self.prepare(job.request, choose_mode(job.request, job.image))
        if together:
            keys = {self.together_key(job.request, job.image) for job in jobs}
            if None in keys or len(keys) > 1:
                raise InvalidRequest("jobs run together must agree on everything but prompts, images and seeds",
                                     "jobs")
        mode = choose_mode(jobs[0].request, jobs[0].image)
        # 2. read the input image(s) and the mask, if any (bad files fail before the model loads, too)
        for job in jobs:
            job.read(self.max_pixels)
        first, request = jobs[0], jobs[0].request  # the first job's settings are every job's (together_key)
        loaded_image = first.loaded[0] if first.loaded else None
        acceleration, fallback_notices = self.acceleration_for(request)
        tell(jobs, fallback_notices)
        with GPU_LOCK:
            self._stop_if_interrupted(interrupts)  # while the input was read or another run had the lock
            # 3. load the model (cached) on the backend that can do this request; masks and inpainting models
            # use its inpainting pipeline
            model = self.load(acceleration)
            tell(jobs, model.notices)
            self._stop_if_interrupted(interrupts)
            if mode == "img2img" and (first.repaint is not None or model.is_inpainting):
                mode = "inpaint"
            blank = mode == "txt2img" and model.is_inpainting  # A1111: a blank picture, all of it masked
            if blank:
                mode = "inpaint"
            if together and mode == "inpaint":
                raise NotTogether()  # an inpainting model's extra inputs are prepared for one job
            latent_resize = loaded_image is not None and request.resize_mode == "latent" and first.repaint is None
            if latent_resize and mode == "inpaint":
                raise InvalidRequest("resize_mode latent resizes latents, which an inpainting model's extra inputs "
                                     "cannot follow; use stretch, crop or fill", "resize_mode")
            # 4. plan the size (within the side limits) and prepare the image(s): all take the first one's size;
            # with a mask, what gets repainted (the whole picture or the masked area's box)
            masked = inpaint.prepare_inputs(request, first.repaint, model.native)
            if loaded_image is None:
                width, height = request.width or model.native, request.height or model.native
                inputs = {"width": width, "height": height}
                if blank:
                    inputs["strength"] = 1.0
            elif masked is not None:
                (width, height), first.prepared = masked.size, [masked.image]
                inputs = {"strength": request.strength}
                if masked.area is None and getattr(masked.size, "limited", False):  # the whole picture, resized
                    first.notices.append(_limited_size_notice(first.repaint.canvas.size, masked.size, request,
                                                              model.native))
            else:
                size = target_size(*loaded_image.original_size, model.native, request.width, request.height)
                width, height = size.width, size.height
                for job in jobs:
                    if size.limited:
                        job.notices.append(_limited_size_notice(loaded_image.original_size, size, job.request,
                                                                model.native))
                    job.plan_images(width, height, latent_resize)
                images = [image for job in jobs for image in job.images_per_output()] if together else first.prepared
                inputs = {"image": images[0] if len(images) == 1 else images, "strength": request.strength}
            # 5. seeds: given or random; a batch counts up as A1111 counts (noise.batch_seeds)
            for job in jobs:
                job.choose_seeds()
            seeds = [seed for job in jobs for seed in job.seeds]
            subseeds = [subseed for job in jobs for subseed in job.subseeds]
            generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]  # same noise on every device
            # 6. a private view of the mode's pipeline with a fresh scheduler (the cached one is never mutated),
            # its own noise (if it draws any) seeded from the image seeds
            pipe = copy.copy(model.pipeline(mode))
            sampling = plan_sampling(model.pipe.scheduler.config, request, xl=model.is_xl, seeds=seeds)
            pipe.scheduler = sampling.scheduler
            tell(jobs, sampling.notices)
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
                pictures = [inpaint.blank_picture((width, height))] if blank else first.prepared
                inputs.update(inpaint.pipeline_args(pipe, request, pictures, masked, seeds, generators))
            for job in jobs:
                if job.request.cfg_scale <= 1 and job.request.negative_prompt:
                    job.notices.append("negative prompt has no effect with CFG scale <= 1")
            # 7. LoRAs named in the prompts join the models for this call only (the same for every job);
            # embeddings by name
            with networks.applied_loras(pipe, _network_tags(request), self.lora_dir) as loras:
                embeddings = networks.load_embeddings(pipe, self.embeddings_dir)
                # 8. prompts: A1111 syntax -> text embeddings for every denoising step, per job
                for job in jobs:
                    job.conditioning = _conditioning(pipe, job.request, embeddings)
                if len({job.conditioning.length for job in jobs}) > 1:
                    raise NotTogether()  # prompts of different token lengths cannot share a tensor
                conditioning = StackedConditioning([(job.conditioning, len(job.seeds)) for job in jobs]) \
                    if together else first.conditioning
                # 9. denoise, switching embeddings where the prompt schedules say so
                with sized_for(pipe, width, height, len(seeds)) as size_notices, \
                        _circular_padding(pipe, request.tiling):  # tiles for big outputs; seamless images
                    output = self._denoise(pipe, request, {**inputs, **sampling.call_kwargs}, generators,
                                           conditioning, on_step, interrupts, 1 if together else request.batch_size)
            tell(jobs, size_notices)
            pixels = output.images
            nsfw = list(getattr(output, "nsfw_content_detected", None) or [False] * len(pixels))
            # 10. half-precision VAEs can overflow to NaN (a black image): decode again in float32
            if np.isnan(pixels).any() and output.last_latents is not None:
                pixels, nsfw = _decode_in_float32(pipe, output.last_latents, nsfw)
                tell(jobs, ["the VAE overflowed in half precision; decoded again in float32"])
                if np.isnan(pixels).any():
                    tell(jobs, ["the decoded image still contains NaN values (shown black)"])
                    pixels = np.nan_to_num(pixels)
        images = pipe.image_processor.numpy_to_pil(pixels)
        extra = {**sampling.params, "Tiling": True if request.tiling else None, "Lora hashes": loras.hashes()}
        results, offset = [], 0
        for job in jobs:
            count = len(job.seeds)
            job_images, job_nsfw = images[offset:offset + count], nsfw[offset:offset + count]
            offset += count
            job_extra = {**extra, **inpaint.infotext_params(job.request, job.repaint),
                         "TI hashes": embeddings.hashes(job.conditioning.encoder.used_embeddings)}
            results.append(self._finish(job, job_images, job_nsfw, masked, width, height, model, job_extra,
                                        started))
        return results

    def _finish(self, job: GenerationJob, images: list, nsfw: list[bool], masked, width: int, height: int,
                model: LoadedModel, extra: dict, started: float) -> Result:
        """Steps 11 and 12 for one job: its images onto its input, its metadata."""
        request = job.request
        for index, flagged in enumerate(nsfw):
            if flagged:
                job.notices.append(f"image {index + 1} (seed {job.seeds[index]}) was blacked out by the model's "
                                   "safety checker; pass --no-safety-checker to disable it")
        # 11. colour correction towards the input; with a mask, into the input, whose pixels outside the mask
        # stay exactly as they were
        prepared = job.prepared
        if request.color_correction and prepared:
            from .colors import match_colors

            images = [match_colors(im, prepared[min(i, len(prepared) - 1)]) for i, im in enumerate(images)]
        if masked is not None:
            images = [paste_back(im, masked) for im in images]
        # 12. optionally back onto the input's own pixels (undoing the resize plan; the canvas when outpainting),
        # then metadata
        if request.keep_size and job.plans:
            images = [restore_size(im, job.plans[min(i, len(job.plans) - 1)]) for i, im in enumerate(images)]
        elif request.keep_size and job.repaint is not None and images[0].size != job.repaint.canvas.size:
            from PIL import Image

            images = [im.resize(job.repaint.canvas.size, Image.Resampling.LANCZOS) for im in images]
        digests = [loaded.digest for loaded in job.loaded] or [None]
        subseeds = job.subseeds
        infotexts = [
            format_infotext(request.prompt, request.negative_prompt,
                            _params(request, seed, subseeds[i] if subseeds else None, width, height, model,
                                    digests[min(i, len(digests) - 1)], extra, self.acceleration.vae))
            for i, seed in enumerate(job.seeds)
        ]
        return Result(images=images, seeds=job.seeds, infotexts=infotexts,
                      request=request.replace(seed=job.first_seed, subseed=job.subseed), model=model.source.name,
                      device=self.device, dtype=self.dtype, width=width, height=height,
                      effective_steps=request.effective_steps, nsfw=nsfw, notices=job.notices,
                      seconds=time.perf_counter() - started, subseeds=subseeds)

    def _run_each(self, request: Request, images: list, mask, latent_mask, on_step) -> Result:
        """Several input images with one mask (A1111 lays it over each): each is repainted on its own, with the
        seed a batch would give it; one Result for all. Every input and the mask are checked first."""
        request = self.prepare(request)
        check_input_count(len(images), request)
        for source in images:  # bad files or a mask of another size fail before anything runs
            loaded = load_image(source, max_pixels=self.max_pixels, background=request.background)
            inpaint.read_repaint(request, [source], loaded, mask, max_pixels=self.max_pixels, latent_mask=latent_mask)
        seeding = GenerationJob(request)  # the seeds a batch of these images would get
        seeding.choose_seeds()
        subseeds = seeding.subseeds
        results = [self.run(request.replace(batch_size=1, seed=seeding.seeds[i],
                                            subseed=subseeds[i] if subseeds else seeding.subseed),
                            source, mask=mask, latent_mask=latent_mask, on_step=on_step)
                   for i, source in enumerate(images)]
        notices = list(dict.fromkeys(notice for result in results for notice in result.notices))
        return dataclasses.replace(
            results[0], images=[im for r in results for im in r.images], seeds=[s for r in results for s in r.seeds],
            infotexts=[t for r in results for t in r.infotexts], nsfw=[f for r in results for f in r.nsfw],
            subseeds=[s for r in results for s in r.subseeds], notices=notices,
            seconds=sum(r.seconds for r in results), request=results[0].request.replace(batch_size=len(images)))

    def _denoise(self, pipe, request: Request, inputs: dict, generators, conditioning, on_step, interrupts: int,
                 images_per_prompt: int):
        """Run the pipeline; the step-end callback reports progress, switches scheduled prompts, stops."""
        last: dict[str, Any] = {}

        def step_end(pipeline, index, timestep, tensors):
            last["latents"] = tensors["latents"]
            if conditioning.key(index + 1) != conditioning.key(index):
                tensors.update(conditioning.step_tensors(index + 1, images_per_prompt,
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
            num_images_per_prompt=images_per_prompt,
            generator=generators[0] if len(generators) == 1 else generators,
            output_type="np",
            callback_on_step_end=step_end,
            callback_on_step_end_tensor_inputs=["latents", *conditioning.step_tensor_names],
        )
        output.last_latents = last.get("latents")
        return output


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
