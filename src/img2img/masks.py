"""Masks for inpainting and outpainting: loading, invert, blur, "only masked" crop boxes, fill, overlay.

A mask is an 8-bit greyscale ("L") image the size of the input: white = repaint, black = keep. The box
arithmetic is pure (numbers in, numbers out, like geometry.py); the pixel work uses PIL and numpy only.
The behaviour follows AUTOMATIC1111's img2img so its parameters and results carry over:

- blur: a Gaussian with sigma = mask blur, separately along x and y, kernel 2*int(2.5*sigma + 0.5) + 1
- "whole picture": the mask follows the image through the resize plan; the overlay uses it doubled, so
  pixels the blurred mask touches at half strength or more come fully from the generation
- "only masked": the box around the mask plus padding, grown to the generation size's aspect ratio,
  is worked on at the generation size and pasted back into the untouched input
- overlay: outside the mask the input's own pixels are kept byte for byte (no VAE round trip)
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any

from .errors import ImageError, InvalidRequest
from .geometry import ResizePlan, plan_resize, target_size
from .images import apply_plan

# A1111's "masked content" (inpainting_fill) values, in its numbering.
INPAINT_FILLS = ("fill", "original", "latent-noise", "latent-nothing")
A1111_INPAINT_FILLS = dict(enumerate(INPAINT_FILLS))
FILL_INFOTEXT = {"fill": "fill", "original": "original", "latent-noise": "latent noise",
                 "latent-nothing": "latent nothing"}
INPAINT_AREAS = ("whole", "masked")
AREA_INFOTEXT = {"whole": "Whole picture", "masked": "Only masked"}
MAX_BLUR = 256
MAX_PADDING = 4096

Box = tuple[int, int, int, int]  # left, top, right, bottom (right and bottom exclusive)


# ---------------------------------------------------------------------------------------------- boxes


def pad_box(box: Box, padding: int, size: tuple[int, int]) -> Box:
    """Grow a box by `padding` on every side, clamped to the image."""
    x1, y1, x2, y2 = box
    width, height = size
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, width), min(y2 + padding, height)


def _grow_span(low: int, high: int, grow: int, limit: int) -> tuple[int, int]:
    """Grow [low, high) by `grow` pixels, centred; pushed back inside [0, limit) where it runs over."""
    low -= grow // 2
    high += grow - grow // 2
    if high > limit:  # slide left, keeping the length
        low, high = low - (high - limit), limit
    if low < 0:  # slide right; a span longer than the image ends up cut at the far side
        low, high = 0, high - low
    return low, min(high, limit)


def fit_box_to_aspect(box: Box, target: tuple[int, int], size: tuple[int, int]) -> Box:
    """Grow a box in one direction until it has the target's aspect ratio, staying inside the image.

    This is A1111's expand_crop_region arithmetic (same float expressions, same truncation), so the
    same mask gives the same box. The box only grows; where the image is too small it stays short.
    """
    x1, y1, x2, y2 = box
    width, height = size
    box_ratio = (x2 - x1) / (y2 - y1)
    target_ratio = target[0] / target[1]
    if box_ratio > target_ratio:  # too wide for the target: add rows
        grow = int((x2 - x1) / target_ratio - (y2 - y1))
        y1, y2 = _grow_span(y1, y2, grow, height)
    else:  # too tall (or exact): add columns
        grow = int((y2 - y1) * target_ratio - (x2 - x1))
        x1, x2 = _grow_span(x1, x2, grow, width)
    return x1, y1, x2, y2


@dataclass(frozen=True)
class OutpaintPlan:
    """Where the input sits on the larger canvas."""

    source: tuple[int, int]
    canvas: tuple[int, int]
    offset: tuple[int, int]  # the input's top-left corner on the canvas

    @property
    def inner(self) -> Box:
        (x, y), (w, h) = self.offset, self.source
        return x, y, x + w, y + h


def plan_outpaint(size: tuple[int, int], margins: tuple[int, int, int, int]) -> OutpaintPlan:
    """The canvas for extending an image by (left, top, right, bottom) pixels."""
    left, top, right, bottom = margins
    width, height = size
    return OutpaintPlan(size, (width + left + right, height + top + bottom), (left, top))


def parse_outpaint(value: Any) -> tuple[int, int, int, int] | None:
    """"LEFT,TOP,RIGHT,BOTTOM" (or a sequence of four whole numbers >= 0, not all 0) -> a tuple."""
    if value is None:
        return None
    parts = value.replace(" ", "").split(",") if isinstance(value, str) else value
    try:
        numbers = tuple(int(p) if not isinstance(p, bool) and float(p) == int(float(p)) else None for p in parts)
    except (TypeError, ValueError):
        numbers = (None,)
    if len(numbers) != 4 or None in numbers or min(numbers) < 0 or max(numbers) == 0:
        raise InvalidRequest(f"outpaint must be four whole numbers LEFT,TOP,RIGHT,BOTTOM (pixels, >= 0, not all 0), "
                             f"got {value!r}", "outpaint")
    return numbers  # type: ignore[return-value]


def parse_blur(value: Any) -> tuple[int, int]:
    """Mask blur N or (X, Y) / "X,Y" -> (x, y) sigmas in pixels."""
    if isinstance(value, str):
        value = value.replace(" ", "")
        value = tuple(value.split(",")) if "," in value else value
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    try:
        numbers = tuple(int(v) for v in values if not isinstance(v, bool) and float(v) == int(float(v)))
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != 2 or len(values) != 2 or not all(0 <= n <= MAX_BLUR for n in numbers):
        raise InvalidRequest(f"mask_blur must be a whole number of pixels 0-{MAX_BLUR}, or X,Y, got {value!r}",
                             "mask_blur")
    return numbers  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- loading


@dataclass
class LoadedMask:
    image: Any  # PIL "L" image, the input's size: 255 = repaint
    digest: str  # sha256 of the mask's pixels as loaded (before invert and blur)


def _as_pil(source: Any, name: str, *, array_is_mask: bool = True):
    from PIL import Image

    from .images import _from_array, _open

    if isinstance(source, Image.Image):
        return source
    if type(source).__module__ == "numpy":
        return _array_to_mask(source) if array_is_mask else _from_array(source)
    try:
        image, _ = _open(source)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}".replace(f"{name}: <bytes>: ", f"{name}: ")) from None
    return image


def _array_to_mask(array):
    """HxW (or HxWxC, first channel) bool, uint8, uint16 or float 0..1 -> an L image."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(array)
    if arr.ndim == 3:
        arr = arr[:, :, 0]
    if arr.ndim != 2 or arr.size == 0:
        raise ImageError(f"mask: expected an HxW array, got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageError("mask: the array contains NaN or infinite values")
        arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif arr.dtype == np.uint16:
        arr = (arr // 257).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageError(f"mask: unsupported dtype {arr.dtype}; use bool, uint8, uint16 or float in 0..1")
    return Image.fromarray(arr, "L")


def _upright(image, name: str, max_pixels: int):
    from PIL import ImageOps

    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,}")
    try:
        image.load()
        return ImageOps.exif_transpose(image) or image
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name}: the image data is corrupt or truncated ({exc})") from None


def _alpha(image):
    """The alpha channel as an L image, or None when the image has no transparency."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("LA", "La", "PA", "RGBa") or (image.mode in ("L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode != "RGBA":
        return None
    return image.getchannel("A")


def _threshold(mask):
    return mask.point(lambda v: 255 if v > 128 else 0)


def _finish(mask) -> LoadedMask:
    return LoadedMask(mask, hashlib.sha256(mask.tobytes()).hexdigest())


def load_mask(source: Any, image_size: tuple[int, int], *, max_pixels: int, round_alpha: bool = True,
              field: str = "mask") -> LoadedMask:
    """A mask from a path, bytes, PIL image or numpy array; white (or opaque, for a mask with transparency,
    as A1111 reads painted masks) = repaint. It must have the input's size (after EXIF rotation)."""
    name = f"{field} {source}" if isinstance(source, (str, os.PathLike)) else field
    image = _upright(_as_pil(source, name), name, max_pixels)
    alpha = _alpha(image)
    if alpha is not None and alpha.getextrema() != (255, 255):
        mask = _threshold(alpha) if round_alpha else alpha
    else:
        mask = image.convert("L")
    if mask.size != tuple(image_size):
        raise InvalidRequest(f"{name}: {mask.size[0]}x{mask.size[1]} does not match the image's "
                             f"{image_size[0]}x{image_size[1]}; a mask must have the image's size", field)
    return _finish(mask)


def mask_from_alpha(source: Any, *, max_pixels: int, round_alpha: bool = True) -> LoadedMask:
    """The mask of an image with transparency: transparent = repaint (what editors' erasers leave)."""
    from PIL import ImageOps

    name = str(source) if isinstance(source, (str, os.PathLike)) else "image"
    image = _upright(_as_pil(source, name, array_is_mask=False), name, max_pixels)
    alpha = _alpha(image)
    if alpha is None or alpha.getextrema() == (255, 255):
        raise InvalidRequest(f"{name}: has no transparent pixels, so the mask cannot come from its alpha channel; "
                             "erase the area to repaint in an editor and save as PNG or WebP, or pass a mask file",
                             "mask_from_alpha")
    mask = ImageOps.invert(alpha)
    return _finish(_threshold(mask) if round_alpha else mask)


def repaint_area(mask: LoadedMask, inverted: bool = False):
    """The mask to work with (inverted when asked); an all-black result is refused: nothing would change."""
    image = invert(mask.image) if inverted else mask.image
    if bounding_box(image) is None:
        what = "all white, so inverted it" if inverted else "all black: it"
        raise InvalidRequest(f"mask: nothing to repaint: the mask is {what} selects no pixel (white = repaint)",
                             "mask")
    return image


def full_mask(size: tuple[int, int]):
    from PIL import Image

    return Image.new("L", size, 255)


# ---------------------------------------------------------------------------------------------- pixels


def invert(mask):
    from PIL import ImageOps

    return ImageOps.invert(mask)


def gaussian_kernel(sigma: float):
    """A1111's (OpenCV's) kernel for a sigma: 2*int(2.5*sigma + 0.5) + 1 taps, normalised."""
    import numpy as np

    radius = int(2.5 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-(offsets**2) / (2.0 * sigma * sigma))
    return weights / weights.sum()


def _convolve_axis(array, kernel, axis: int):
    """Convolve along one axis; borders mirror without repeating the edge (OpenCV's default)."""
    import numpy as np

    radius = len(kernel) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    padded = np.pad(array, pad, mode="reflect" if array.shape[axis] > 1 else "edge")
    out = np.zeros(array.shape, dtype=np.float32)
    length = array.shape[axis]
    for index, weight in enumerate(kernel.astype(np.float32)):
        window = padded[index:index + length, :] if axis == 0 else padded[:, index:index + length]
        out += weight * window
    return out


def blur(mask, blur_x: int, blur_y: int):
    """Gaussian blur of an L mask with separate sigmas along x and y (0 = none along that axis).

    Only the mask's box plus the kernel's reach is computed: the rest stays black, and the mirrored
    borders of that region hold black pixels just as the full image's neighbours would."""
    import numpy as np
    from PIL import Image

    box = bounding_box(mask)
    if (not blur_x and not blur_y) or box is None:
        return mask
    reach_x = len(gaussian_kernel(blur_x)) // 2 if blur_x else 0
    reach_y = len(gaussian_kernel(blur_y)) // 2 if blur_y else 0
    width, height = mask.size
    region = (max(box[0] - 2 * reach_x, 0), max(box[1] - 2 * reach_y, 0), min(box[2] + 2 * reach_x, width),
              min(box[3] + 2 * reach_y, height))
    values = np.asarray(mask.crop(region), dtype=np.float32)
    if blur_x:
        values = _convolve_axis(values, gaussian_kernel(blur_x), axis=1)
    if blur_y:
        values = _convolve_axis(values, gaussian_kernel(blur_y), axis=0)
    blurred = Image.new("L", mask.size, 0)
    blurred.paste(Image.fromarray(np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8), "L"), region[:2])
    return blurred


def bounding_box(mask) -> Box | None:
    """The smallest box holding every non-black pixel; None for an all-black mask."""
    return mask.getbbox()


def double(mask):
    """The whole-picture overlay mask: twice the blurred mask, clipped (A1111's)."""
    return mask.point(lambda v: min(255, v * 2))


def _box_blur(values, radius: int, axis: int):
    """Mean over a window of 2*radius+1 along an axis (0 or 1), edges clamped; O(n) whatever the radius."""
    import numpy as np

    if radius < 1:
        return values
    pad = [(0, 0)] * values.ndim
    pad[axis] = (radius + 1, radius)
    sums = np.cumsum(np.pad(values, pad, mode="edge"), axis=axis, dtype=np.float32)
    length, window = values.shape[axis], 2 * radius + 1
    if axis == 0:
        return (sums[window:window + length] - sums[:length]) / window
    return (sums[:, window:window + length] - sums[:, :length]) / window


def _soft_blur(values, sigma: float):
    """Close to a Gaussian of `sigma` (three box blurs each way); large sigmas are done at a reduced
    resolution, which loses nothing that matters in so smooth a result and is much faster."""
    import numpy as np
    from PIL import Image

    height, width = values.shape[:2]
    factor = max(1, min(int(sigma // 4), width // 4, height // 4))
    if factor > 1:
        small_size = (max(1, width // factor), max(1, height // factor))
        channels = [Image.fromarray(np.ascontiguousarray(values[:, :, c]), "F") for c in range(values.shape[2])]
        small = np.stack([np.asarray(c.resize(small_size, Image.Resampling.BOX)) for c in channels], axis=2)
        small = _soft_blur(small, sigma / factor)
        return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(small[:, :, c]), "F").resize(
            (width, height), Image.Resampling.BILINEAR)) for c in range(small.shape[2])], axis=2)
    radius = int(round((math.sqrt(4 * sigma * sigma + 1) - 1) / 2))
    for axis in (0, 1):
        for _ in range(3):
            values = _box_blur(values, radius, axis)
    return values


# A1111's "fill" masked content: the masked area gets the colours around it, from very blurred to sharp.
_FILL_PASSES = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))


def fill(image, mask):
    """Replace the masked part of an RGB image with the surrounding colours, blurred (masked content "fill").

    Unmasked pixels are layers of weight (1 - mask); each pass blurs them (premultiplied, so only
    unmasked colours spread) and lays the result over the previous passes; the last, sharp pass puts
    the unmasked pixels back on top.
    """
    import numpy as np
    from PIL import Image

    keep = 1.0 - np.asarray(mask, dtype=np.float32)[:, :, None] / 255.0
    colour = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    layer = np.concatenate([colour * keep, keep], axis=2)  # premultiplied RGB + alpha
    result = np.zeros_like(layer)
    for sigma, repeats in _FILL_PASSES:
        blurred = _soft_blur(layer, sigma) if sigma else layer
        for _ in range(repeats):
            result = blurred + result * (1.0 - blurred[:, :, 3:])
    alpha = result[:, :, 3:]
    rgb = np.where(alpha > 1e-6, result[:, :, :3] / np.maximum(alpha, 1e-6), colour)
    return Image.fromarray(np.clip(np.floor(rgb * 255.0 + 0.5), 0, 255).astype(np.uint8), "RGB")


def overlay(generated, original, mask):
    """Generated where the mask is white, the original's exact pixels where it is black, blended between."""
    from PIL import Image

    return Image.composite(generated.convert("RGB"), original, mask)


# ---------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class MaskedAreaPlan:
    """"Only masked": which box of the image is generated, at which size, and how it goes back."""

    box: Box  # on the input, after padding and growing to the generation size's aspect ratio
    size: tuple[int, int]  # generation size
    forward: ResizePlan  # box -> generation size (A1111's "resize and fill")
    back: ResizePlan  # generation size -> box (A1111's "crop and resize")


def plan_masked_area(mask_box: Box, padding: int, image_size: tuple[int, int], native: int,
                     width: int | None = None, height: int | None = None) -> MaskedAreaPlan:
    """Pad the mask's box, choose the generation size (given, or the padded box's aspect at the model's
    native area) and grow the box to that aspect."""
    padded = pad_box(mask_box, padding, image_size)
    size = target_size(padded[2] - padded[0], padded[3] - padded[1], native, width, height)
    box = fit_box_to_aspect(padded, size, image_size)
    box_size = (box[2] - box[0], box[3] - box[1])
    return MaskedAreaPlan(box, size, plan_resize(box_size, size, "fill"), plan_resize(size, box_size, "crop"))


@dataclass
class InpaintInputs:
    """What the inpainting pipeline gets, and what its output is pasted into."""

    image: Any  # RGB, generation size; the masked part pre-filled for masked content "fill"
    mask: Any  # L, generation size, blurred: what the pipeline sees
    canvas: Any  # RGB: the picture the result goes into (the resized input, or the whole input)
    overlay_mask: Any  # L, canvas size: where the generation shows through
    size: tuple[int, int]  # generation size
    area: MaskedAreaPlan | None = None  # set for "only masked"


def prepare_inpaint(image, mask, *, blur_xy: tuple[int, int], fill_mode: str, area: str, padding: int,
                    resize_mode: str, native: int, width: int | None, height: int | None,
                    latent_mask=None) -> InpaintInputs:
    """Blur the mask and cut out what gets generated: the whole (resized) picture, or the masked area.

    A `latent_mask` (A1111's; the image's size, not blurred) replaces the blurred mask for the generation and
    the fill; the mask still decides the area and what is pasted back."""
    blurred = blur(mask, *blur_xy)
    guide = blurred if latent_mask is None else latent_mask
    if area == "masked":
        box = bounding_box(blurred)
        if box is None:  # callers check emptiness first; a blurred non-empty mask is never empty
            raise InvalidRequest("mask: nothing to repaint (the mask is all black)", "mask")
        plan = plan_masked_area(box, padding, image.size, native, width, height)
        source, generation_mask = image.crop(plan.box), guide.crop(plan.box)
        picture, generation_mask = apply_plan(source, plan.forward), apply_plan(generation_mask, plan.forward)
        inputs = InpaintInputs(picture, generation_mask, image, blurred, plan.size, plan)
    else:
        size = target_size(*image.size, native, width, height)
        plan = plan_resize(image.size, size, resize_mode)
        picture, generation_mask = apply_plan(image, plan), apply_plan(guide, plan)
        overlay_mask = generation_mask if latent_mask is None else apply_plan(blurred, plan)
        inputs = InpaintInputs(picture, generation_mask, picture, double(overlay_mask), size)
    if fill_mode == "fill":
        inputs.image = fill(inputs.image, inputs.mask)
    return inputs


def paste_back(generated, inputs: InpaintInputs):
    """The generated picture inside the mask, the input's exact pixels outside it."""
    if inputs.area is None:
        return overlay(generated, inputs.canvas, inputs.overlay_mask)
    base = inputs.canvas.copy()
    base.paste(apply_plan(generated.convert("RGB"), inputs.area.back), inputs.area.box[:2])
    return overlay(base, inputs.canvas, inputs.overlay_mask)


def outpaint(image, margins: tuple[int, int, int, int]):
    """The image on a larger canvas, its edge pixels repeated into the new area, and a mask of the new area."""
    import numpy as np
    from PIL import Image

    left, top, right, bottom = margins
    plan = plan_outpaint(image.size, margins)
    spread = np.pad(np.asarray(image.convert("RGB")), ((top, bottom), (left, right), (0, 0)), mode="edge")
    mask = Image.new("L", plan.canvas, 255)
    mask.paste(0, plan.inner)
    return Image.fromarray(spread, "RGB"), mask
