"""Pure width/height arithmetic: target sizes and resize plans. No PIL here; images.py applies plans."""

from __future__ import annotations

import math
from dataclasses import dataclass

SIZE_MULTIPLE = 8  # latents are 1/8 of the image in every SD-family VAE
MIN_SIDE = 8  # the grid's own limit, for sizes given explicitly
MAX_SIDE = 4096
AUTOMATIC_MIN_SIDE = 64  # below this, real models give mush: automatic sizes stay above it

RESIZE_MODES = ("stretch", "crop", "fill", "latent")
# A1111's numeric resize_mode values; 3 (latent upscale) resizes latents, not pixels (latent_resize.py).
A1111_RESIZE_MODES = {0: "stretch", 1: "crop", 2: "fill", 3: "latent"}


def snap(value: float, multiple: int = SIZE_MULTIPLE) -> int:
    """Nearest positive multiple of `multiple` (halves round up)."""
    return max(multiple, math.floor(value / multiple + 0.5) * multiple)


def native_area_size(width: int, height: int, native: int) -> tuple[int, int]:
    """The size with the input's aspect ratio whose area is closest to native x native, snapped."""
    aspect = width / height
    return snap(math.sqrt(native * native * aspect)), snap(math.sqrt(native * native / aspect))


def automatic_min_side(native: int) -> int:
    """The shortest side an automatic size may have: 64 px, or half the native size of a (tiny) test model
    (rounded down to the grid)."""
    return max(SIZE_MULTIPLE, min(AUTOMATIC_MIN_SIDE, native // 2 // SIZE_MULTIPLE * SIZE_MULTIPLE))


class TargetSize(tuple):
    """(width, height), a plain pair to unpack or compare; `limited` says the input's aspect ratio did not fit
    the side limits, so the resize mode bridges the rest."""

    limited: bool

    def __new__(cls, width: int, height: int, limited: bool = False) -> TargetSize:
        size = super().__new__(cls, (width, height))
        size.limited = limited
        return size

    def __getnewargs__(self):
        return (self[0], self[1], self.limited)

    @property
    def width(self) -> int:
        return self[0]

    @property
    def height(self) -> int:
        return self[1]


def target_size(width: int, height: int, native: int, want_width: int | None, want_height: int | None) -> TargetSize:
    """Generation size: both given -> as given; one given -> the other from the aspect ratio; none -> native area.

    Sizes derived from the aspect ratio stay within the side limits: MIN_SIDE..MAX_SIDE for the side
    derived from a given one, automatic_min_side..MAX_SIDE for automatic sizes (which keep about the
    native area). An aspect ratio too extreme for them is clamped, and `limited` says so.
    """
    if want_width and want_height:
        return TargetSize(want_width, want_height)
    if want_width or want_height:
        given = want_width or want_height
        derived = given * (height / width if want_width else width / height)
        side = _grid(derived)
        limited = not MIN_SIDE <= side <= MAX_SIDE
        side = min(MAX_SIDE, max(MIN_SIDE, side))
        return TargetSize(given, side, limited) if want_width else TargetSize(side, given, limited)
    low, high, area = automatic_min_side(native), MAX_SIDE, native * native
    aspect = width / height
    w, h = _grid(math.sqrt(area * aspect)), _grid(math.sqrt(area / aspect))
    if low <= w <= high and low <= h <= high:
        return TargetSize(w, h)
    # Too wide or too tall for the limits: the long side as long as they allow (the short one at its
    # minimum, or the long one at its maximum), and about the native area.
    long = min(high, snap(area / low))
    short = max(low, snap(area / long))
    return TargetSize(long, short, True) if w > h else TargetSize(short, long, True)


def _grid(value: float) -> int:
    """Nearest multiple of the grid, possibly 0 (snap() never goes below one grid step)."""
    return math.floor(value / SIZE_MULTIPLE + 0.5) * SIZE_MULTIPLE


@dataclass(frozen=True)
class ResizePlan:
    """How to turn a source image into a target-sized one.

    crop: box (left, top, right, bottom) of the source to use, in source pixels.
    scaled: size the cropped source is resized to.
    offset: where the scaled image is pasted on the target canvas (non-zero only for "fill").
    """

    source: tuple[int, int]
    target: tuple[int, int]
    crop: tuple[int, int, int, int]
    scaled: tuple[int, int]
    offset: tuple[int, int]

    @property
    def needs_fill(self) -> bool:
        return self.scaled != self.target


def plan_resize(source: tuple[int, int], target: tuple[int, int], mode: str) -> ResizePlan:
    """Plan one of A1111's resize modes: stretch (0), crop and resize (1), resize and fill (2)."""
    sw, sh = source
    tw, th = target
    full = (0, 0, sw, sh)
    if mode == "stretch":
        return ResizePlan(source, target, full, target, (0, 0))
    if mode == "crop":
        # Scale so the source covers the target, then keep the centre.
        # Keep at least one source pixel: an empty box would give an all-black input.
        if sw * th > tw * sh:  # source is wider than the target: crop left and right
            keep_w = max(1, round(sh * tw / th))
            left = (sw - keep_w) // 2
            box = (left, 0, left + keep_w, sh)
        else:  # source is taller: crop top and bottom
            keep_h = max(1, round(sw * th / tw))
            top = (sh - keep_h) // 2
            box = (0, top, sw, top + keep_h)
        return ResizePlan(source, target, box, target, (0, 0))
    if mode == "fill":
        # Scale so the source fits inside the target; the bands left over are filled by images.py.
        scale = min(tw / sw, th / sh)
        scaled = (max(1, min(tw, round(sw * scale))), max(1, min(th, round(sh * scale))))
        offset = ((tw - scaled[0]) // 2, (th - scaled[1]) // 2)
        return ResizePlan(source, target, full, scaled, offset)
    raise ValueError(f"unknown resize mode {mode!r}; expected one of {', '.join(RESIZE_MODES)}")


def restore_box(plan: ResizePlan) -> tuple[int, int, int, int] | None:
    """The part of the generated image that shows the whole source, to resize back onto it (keep_size).

    stretch: all of it; fill: the part between the bands; crop: all of it when nothing was cut off, else
    None: the result shows only part of the source and cannot line up with all of it.
    """
    tw, th = plan.target
    if plan.crop != (0, 0, *plan.source):
        return None
    ox, oy = plan.offset
    sw, sh = plan.scaled
    return (ox, oy, ox + sw, oy + sh) if plan.needs_fill else (0, 0, tw, th)
