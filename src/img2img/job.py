"""One request's own part of a generation: its inputs, seeds and prompts, and what lets several requests share
one batched pipeline call (Engine.run_together, the server's --max-batch)."""

from __future__ import annotations

import secrets
from typing import Any

from . import inpaint
from .errors import InvalidRequest
from .geometry import plan_resize, restore_box
from .images import apply_plan, load_image
from .latent_resize import encode_size
from .noise import batch_seeds
from .request import MAX_SEED, Request

# Request fields each job of a shared call keeps for itself; every other field is the call's.
PER_JOB = frozenset({"prompt", "negative_prompt", "seed", "subseed", "batch_size", "styles", "color_correction",
                     "keep_size", "background", "resize_mode"})


class NotTogether(Exception):
    """These jobs cannot share one pipeline call after all (prompts of different lengths, an inpainting model)."""


class GenerationJob:
    """A request with its input image(s) and mask, and what the engine works out for it on the way."""

    def __init__(self, request: Request, image=None, mask=None, latent_mask=None):
        self.request, self.image, self.mask, self.latent_mask = request, image, mask, latent_mask
        self.sources = [] if image is None else list(image) if isinstance(image, (list, tuple)) else [image]
        self.loaded: list = []  # images.LoadedImage per source
        self.repaint = None  # inpaint.Repaint with a mask
        self.plans: list = []  # how each input became the generation's input (keep_size undoes it)
        self.prepared: list = []  # the inputs at the generation's size
        self.notices: list[str] = []
        self.conditioning = None
        self.first_seed = self.subseed = None
        self.seeds: list[int] = []
        self.subseeds: list[int] = []

    def read(self, max_pixels: int) -> None:
        """Read the input image(s) and the mask; bad files and impossible keep_size crops fail here."""
        request = self.request
        if len(self.sources) > 1:
            check_input_count(len(self.sources), request)
        self.loaded = [load_image(source, max_pixels=max_pixels, background=request.background)
                       for source in self.sources]
        self.repaint = inpaint.read_repaint(request, self.sources, self.loaded[0] if self.loaded else None,
                                            self.mask, max_pixels=max_pixels, latent_mask=self.latent_mask)
        if self.repaint is None:  # a repainted result is pasted into the input, so it lines up anyway
            for loaded in self.loaded:
                check_keep_size(request, loaded.original_size)
        self.notices = [notice for loaded in self.loaded for notice in loaded.notices]

    def plan_images(self, width: int, height: int, latent_resize: bool) -> None:
        """Bring the inputs to the generation's size by the request's resize mode (latent: the pixels keep the
        first input's size, to whole latents, and the latents are resized)."""
        pixel_mode = "stretch" if latent_resize else self.request.resize_mode
        self.plans = [plan_resize(loaded.original_size, (width, height), pixel_mode) for loaded in self.loaded]
        encoded = encode_size(self.loaded[0].original_size) if latent_resize else (width, height)
        self.prepared = [apply_plan(loaded.image, plan_resize(loaded.original_size, encoded, pixel_mode))
                         for loaded in self.loaded]

    def images_per_output(self) -> list:
        """One prepared input per output image (a single input serves the job's whole batch)."""
        return self.prepared * self.request.batch_size if len(self.prepared) == 1 else list(self.prepared)

    def choose_seeds(self) -> None:
        """Seeds given or random; a batch counts up as A1111 counts (noise.batch_seeds)."""
        request = self.request
        self.first_seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
        self.subseed = None
        if request.subseed_strength > 0:
            self.subseed = request.subseed if request.subseed is not None else secrets.randbelow(MAX_SEED + 1)
        self.seeds, self.subseeds = batch_seeds(self.first_seed, request.batch_size, self.subseed,
                                                request.subseed_strength)


def tell(jobs: list[GenerationJob], notices: list[str]) -> None:
    """Notices about the shared call reach every job of it."""
    for job in jobs:
        job.notices.extend(notices)


def check_input_count(count: int, request: Request) -> None:
    """Several input images are one per member of the batch."""
    if count != request.batch_size:
        raise InvalidRequest(f"{count} input images need batch_size {count}, got {request.batch_size}", "batch_size")


def check_keep_size(request: Request, source: tuple[int, int]) -> None:
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


def input_size(image: Any) -> tuple | None:
    """The size of an input image (path, bytes, PIL or numpy) from its header, turned by its EXIF orientation;
    None without one. Jobs share a call only with inputs of one size (it decides the output's)."""
    if image is None:
        return None
    if hasattr(image, "shape"):
        return tuple(image.shape)
    if hasattr(image, "size") and hasattr(image, "getexif"):
        return tuple(image.size), image.getexif().get(0x0112, 1)
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image) as probe:
            return probe.size, probe.getexif().get(0x0112, 1)
    except Exception:
        return ("unreadable", id(image))  # never grouped; load_image names the problem when the job runs
