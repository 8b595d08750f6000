"""What to generate (Request) and what came out (Result). No torch here: validation is cheap and early."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequest
from .geometry import A1111_RESIZE_MODES, MAX_SIDE, MIN_SIDE, RESIZE_MODES, SIZE_MULTIPLE
from .masks import A1111_INPAINT_FILLS, INPAINT_AREAS, INPAINT_FILLS, MAX_PADDING, parse_blur, parse_outpaint

MAX_SEED = 2**32 - 1  # A1111's seed range, so seeds move between tools unchanged
MAX_NOISE_MULTIPLIER = 10.0
MAX_STEPS = 500
MAX_BATCH = 64
# Generous: long A1111-style prompts run to a few thousand characters. The cap keeps a hostile prompt from
# costing minutes of tokenizing and gigabytes of memory.
MAX_PROMPT_CHARS = 10_000


def effective_steps(steps: int, strength: float) -> int:
    """Denoising steps img2img really runs here: int(steps x strength), diffusers' count.

    A1111 counts differently: its k-diffusion samplers (Euler, DPM++, ...) run int(steps x strength) + 1
    steps in img2img, its DDIM, PLMS and UniPC int(steps x strength). So 20 steps at strength 0.75 run 15
    steps here and 16 in A1111 with DPM++ 2M.
    """
    return min(int(steps * strength), steps)


@dataclass(frozen=True)
class Request:
    """One image-to-image job. None means "the model's default" for steps, cfg_scale and sampler."""

    prompt: str
    negative_prompt: str = ""
    strength: float = 0.75
    steps: int | None = None
    cfg_scale: float | None = None
    seed: int | None = None
    sampler: str | None = None
    scheduler: str = "Automatic"
    width: int | None = None
    height: int | None = None
    resize_mode: str = "crop"
    batch_size: int = 1
    keep_size: bool = False
    background: str = "white"
    subseed: int | None = None  # variation seed; None: random when subseed_strength > 0
    subseed_strength: float = 0.0  # 0: the seed's image, 1: the subseed's image
    clip_skip: int = 1  # A1111's CLIP_stop_at_last_layers: 1 uses the text encoder's last layer
    styles: tuple[str, ...] = ()  # names from the styles file, applied to the prompts before anything else
    color_correction: bool = False  # match the output's colours to the input's (LAB histograms)
    # Sampler settings with A1111's names; None/defaults mean what A1111 does for the sampler (schedulers.py).
    eta: float | None = None
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float | None = None  # None: no upper limit
    s_noise: float = 1.0
    tiling: bool = False  # seamless: the image wraps around at its edges
    noise_multiplier: float = 1.0  # A1111's initial noise multiplier: scales the noise added to the input image
    # Inpainting: used with a mask, mask_from_alpha or outpaint. A1111's meanings and (web UI) defaults.
    mask_blur: int | tuple[int, int] = 4  # Gaussian sigma in pixels; (x, y) blurs the two directions apart
    invert_mask: bool = False  # repaint what the mask leaves black instead
    inpaint_fill: str | None = None  # masked content: fill, original, latent-noise, latent-nothing (A1111's 0-3);
    #                                  None: original, or fill when outpainting
    inpaint_area: str = "whole"  # whole (picture) or masked (only the masked area, at the generation size)
    inpaint_padding: int = 32  # pixels around the mask that "masked" also works on
    mask_round: bool = True  # threshold alpha masks at half and the latent mask at 0.5 (A1111's mask_round)
    mask_from_alpha: bool = False  # the input's transparent pixels are the mask
    outpaint: tuple[int, int, int, int] | None = None  # extend the canvas by LEFT, TOP, RIGHT, BOTTOM pixels

    def replace(self, **changes) -> Request:
        return dataclasses.replace(self, **changes)

    @property
    def effective_steps(self) -> int:
        return effective_steps(self.steps or 0, self.strength)

    def normalized(self) -> Request:
        """Accept the spellings other tools use: seed -1 means random, A1111's numeric resize modes, numpy
        scalars (np.int64(5) is 5, np.float32(0.3) is 0.3)."""
        numbers = {f.name: _plain_number(getattr(self, f.name)) for f in dataclasses.fields(self)
                   if _is_numpy_scalar(getattr(self, f.name))}
        request = self.replace(**numbers) if numbers else self
        changes: dict[str, Any] = {}
        for name in ("seed", "subseed"):
            value = getattr(request, name)
            if value is not None and not isinstance(value, bool) and value == -1:
                changes[name] = None
        if isinstance(request.styles, str):
            changes["styles"] = (request.styles,)
        elif isinstance(request.styles, list):
            changes["styles"] = tuple(request.styles)
        mode = request.resize_mode
        if isinstance(mode, int) and not isinstance(mode, bool) and mode in A1111_RESIZE_MODES:
            changes["resize_mode"] = A1111_RESIZE_MODES[mode]
        elif isinstance(mode, str) and mode.strip().isdigit() and int(mode) in A1111_RESIZE_MODES:
            changes["resize_mode"] = A1111_RESIZE_MODES[int(mode)]
        elif isinstance(mode, str):
            changes["resize_mode"] = mode.strip().lower()
        changes.update(_normalized_inpainting(request))
        return request.replace(**changes) if changes else request

    def validate(self) -> Request:
        """Raise InvalidRequest naming the field and the value; return self when all is well."""
        _check_text("prompt", self.prompt)
        _check_text("negative_prompt", self.negative_prompt)
        _check_number("strength", self.strength, 0.0, 1.0, low_open=True)
        if self.steps is not None:
            _check_int("steps", self.steps, 1, MAX_STEPS)
        if self.cfg_scale is not None:
            _check_number("cfg_scale", self.cfg_scale, 0.0, 50.0)
        if self.seed is not None:
            _check_int("seed", self.seed, 0, MAX_SEED, hint=" (or -1/None for a random seed)")
        if self.subseed is not None:
            _check_int("subseed", self.subseed, 0, MAX_SEED, hint=" (or -1/None for a random one)")
        _check_number("subseed_strength", self.subseed_strength, 0.0, 1.0)
        _check_int("clip_skip", self.clip_skip, 1, 12)
        if not isinstance(self.styles, tuple) or not all(isinstance(s, str) for s in self.styles):
            raise InvalidRequest(f"styles must be a list of style names, got {self.styles!r}", "styles")
        _check_type("color_correction", self.color_correction, bool)
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, MIN_SIDE, MAX_SIDE)
                if value % SIZE_MULTIPLE:
                    raise InvalidRequest(f"{name} must be a multiple of {SIZE_MULTIPLE}, got {value}", name)
        if self.resize_mode not in RESIZE_MODES:
            raise InvalidRequest(
                f"resize_mode must be one of {', '.join(RESIZE_MODES)} (or A1111's 0-3), got {self.resize_mode!r}",
                "resize_mode",
            )
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH)
        _check_type("keep_size", self.keep_size, bool)
        _check_colour(self.background)
        for name in ("eta", "s_churn", "s_tmin", "s_tmax", "s_noise"):
            value = getattr(self, name)
            if value is not None:
                _check_number(name, value, 0.0, math.inf)
        _check_type("tiling", self.tiling, bool)
        _check_number("noise_multiplier", self.noise_multiplier, 0.0, MAX_NOISE_MULTIPLIER)
        _validate_inpainting(self)
        if self.steps is not None and self.effective_steps < 1:
            fewest = _min_steps(self.strength)
            advice = (f"raise steps to at least {fewest} or raise strength" if fewest is not None else
                      f"even {MAX_STEPS} steps give none, so raise strength to at least {1 / MAX_STEPS:g}")
            raise InvalidRequest(f"steps x strength = {self.steps} x {self.strength:g} gives {self.effective_steps} "
                                 f"denoising steps; {advice}", "strength")
        return self


_AREA_NAMES = {"whole picture": "whole", "only masked": "masked"}


def _normalized_inpainting(request: Request) -> dict[str, Any]:
    """A1111's numbers and labels for the inpainting fields; blur and outpaint as tuples."""
    changes: dict[str, Any] = {}
    fill = request.inpaint_fill
    if isinstance(fill, int) and not isinstance(fill, bool) and fill in A1111_INPAINT_FILLS:
        changes["inpaint_fill"] = A1111_INPAINT_FILLS[fill]
    elif isinstance(fill, str):
        name = fill.strip().lower().replace(" ", "-").replace("_", "-")
        changes["inpaint_fill"] = A1111_INPAINT_FILLS[int(name)] if name.isdigit() and int(name) < 4 else name
    if isinstance(request.inpaint_area, str):
        area = request.inpaint_area.strip().lower()
        changes["inpaint_area"] = _AREA_NAMES.get(area, area)
    for name, parse in (("mask_blur", parse_blur), ("outpaint", parse_outpaint)):
        try:
            changes[name] = parse(getattr(request, name))
        except InvalidRequest:
            pass  # validate() names the problem
    return {k: v for k, v in changes.items() if v != getattr(request, k)}


def _validate_inpainting(request: Request) -> None:
    parse_blur(request.mask_blur)  # each raises InvalidRequest naming the field
    parse_outpaint(request.outpaint)
    if request.inpaint_fill is not None and request.inpaint_fill not in INPAINT_FILLS:
        raise InvalidRequest(f"inpaint_fill must be one of {', '.join(INPAINT_FILLS)} (or A1111's 0-3), "
                             f"got {request.inpaint_fill!r}", "inpaint_fill")
    if request.inpaint_area not in INPAINT_AREAS:
        raise InvalidRequest(f"inpaint_area must be whole or masked, got {request.inpaint_area!r}", "inpaint_area")
    _check_int("inpaint_padding", request.inpaint_padding, 0, MAX_PADDING)
    for name in ("invert_mask", "mask_round", "mask_from_alpha"):
        _check_type(name, getattr(request, name), bool)


def _is_numpy_scalar(value) -> bool:
    return type(value).__module__ == "numpy" and getattr(value, "shape", None) == ()


def _plain_number(value):
    """The Python number a numpy scalar stands for; floats by their shortest spelling, so float32(0.3) is 0.3."""
    kind = value.dtype.kind
    if kind == "b":
        return bool(value)
    if kind in "iu":
        return int(value)
    if kind == "f":
        return float(str(value))
    return value


def _min_steps(strength: float) -> int | None:
    """The fewest steps that give one denoising step at this strength, or None if even MAX_STEPS do not.

    Closed form (about 1 / strength), corrected for float rounding by at most a step or two either way.
    """
    if effective_steps(MAX_STEPS, strength) < 1:
        return None
    steps = min(MAX_STEPS, max(1, math.ceil(1 / strength)))
    while effective_steps(steps, strength) < 1:
        steps += 1
    while steps > 1 and effective_steps(steps - 1, strength) >= 1:
        steps -= 1
    return steps


def _check_text(name: str, value) -> None:
    _check_type(name, value, str)
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"{name} is {len(value):,} characters long; the limit is {MAX_PROMPT_CHARS:,} characters",
                             name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from JSON "\ud800": no text encoder can take it
        raise InvalidRequest(f"{name} is not valid Unicode: character {exc.start + 1} is an unpaired surrogate",
                             name) from None


def _check_type(name: str, value, kind) -> None:
    if not isinstance(value, kind):
        raise InvalidRequest(f"{name} must be a {kind.__name__}, got {value!r}", name)


def _check_int(name: str, value, low: int, high: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be a whole number, got {value!r}", name)
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}{hint}, got {value}", name)


def _check_number(name: str, value, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InvalidRequest(f"{name} must be a number, got {value!r}", name)
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise InvalidRequest(f"{name} must be in {bracket}{low:g}, {high:g}], got {value:g}", name)


def _check_colour(value) -> None:
    from PIL import ImageColor

    try:
        ImageColor.getrgb(value)
    except (ValueError, AttributeError, TypeError):
        raise InvalidRequest(f"background must be a colour name or #rrggbb, got {value!r}", "background") from None


@dataclass
class Result:
    """Outputs of one Request: images with their seeds and infotexts, and what was really done."""

    images: list  # PIL images
    seeds: list[int]
    infotexts: list[str]
    request: Request  # with every default filled in: what actually ran
    model: str
    device: str
    dtype: str
    width: int  # generation size (outputs have the input's size when keep_size)
    height: int
    effective_steps: int
    nsfw: list[bool] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0
    subseeds: list[int] = field(default_factory=list)  # variation seeds per image (empty: none used)

    @property
    def image(self):
        return self.images[0]

    def save(self, path=None, *, output_dir=None, fmt: str | None = None, overwrite: bool = False,
             stem: str = "img2img") -> list:
        """Save every image with its infotext; returns the paths (naming rules: outputs.output_paths)."""
        from .outputs import output_paths, save_result

        paths = output_paths(stem, self.seeds, path=path, output_dir=output_dir, fmt=fmt, overwrite=overwrite)
        return save_result(self, paths, fmt=fmt, overwrite=overwrite)
