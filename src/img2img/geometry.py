"""Pure width/height arithmetic: target sizes and resize plans. No PIL here; images.py applies plans."""

from __future__ import annotations

import math
from dataclasses import dataclass

SIZE_MULTIPLE = 8  # latents are 1/8 of the image in every SD-family VAE

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


def target_size(
    width: int, height: int, native: int, want_width: int | None, want_height: int | None
) -> tuple[int, int]:
    """Generation size: both given -> as given; one given -> the other from the aspect ratio; none -> native area."""
    if want_width and want_height:
        return want_width, want_height
    if want_width:
        return want_width, snap(want_width * height / width)
    if want_height:
        return snap(want_height * width / height), want_height
    return native_area_size(width, height, native)


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
        if sw * th > tw * sh:  # source is wider than the target: crop left and right
            keep_w = round(sh * tw / th)
            left = (sw - keep_w) // 2
            box = (left, 0, left + keep_w, sh)
        else:  # source is taller: crop top and bottom
            keep_h = round(sw * th / tw)
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
