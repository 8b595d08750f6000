"""A1111's inpainting fields: the mask and its options, in our terms.

A1111's API defaults differ from its web UI's (and ours): "only masked" (inpaint_full_res) is on with no
padding, and the masked content is "fill" (inpainting_fill 0). A request without a mask ignores them,
as A1111 does. A mask of another size than the init image is resized to it, as A1111 does, with a notice.
"""

from __future__ import annotations

import io

from ...errors import ImageError
from .images import decode_base64_image


def _empty(value) -> bool:
    return value in (None, "", "None")


def latent_mask(payload, notices: list[str], fetch=None) -> bytes | None:
    """A1111's latent_mask: with a mask, what the generation repaints (unblurred); without one, ignored."""
    if _empty(payload.latent_mask):
        return None
    if _empty(payload.mask):
        notices.append("latent_mask was ignored: it applies with a mask")
        return None
    return decode_base64_image(payload.latent_mask, "latent_mask", fetch)


def mask_fields(payload, fetch=None) -> tuple[bytes | None, dict]:
    """(mask bytes or None, Request fields) for an img2img payload."""
    if _empty(payload.mask):
        return None, {}
    mask = decode_base64_image(payload.mask, "mask", fetch)
    if payload.mask_blur is not None:  # mask_blur sets both directions, as A1111's setter does
        blur = (payload.mask_blur, payload.mask_blur)
    else:
        blur = (payload.mask_blur_x, payload.mask_blur_y)
    fields = {
        "mask_blur": blur,
        "inpaint_fill": payload.inpainting_fill,
        "inpaint_area": "masked" if payload.inpaint_full_res else "whole",
        "inpaint_padding": payload.inpaint_full_res_padding,
        "invert_mask": bool(payload.inpainting_mask_invert),
        "mask_round": payload.mask_round,
    }
    return mask, fields


def fit_mask(mask: bytes, image: bytes, field: str = "mask") -> tuple[bytes, list[str]]:
    """The mask at the init image's size (A1111 resizes it; our core refuses another size)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(image)) as probe:
            size = (ImageOps.exif_transpose(probe) or probe).size
        with Image.open(io.BytesIO(mask)) as probe:
            upright = ImageOps.exif_transpose(probe) or probe
            if upright.size == size:
                return mask, []
            mode = "RGBA" if "A" in upright.getbands() else "L"
            resized = upright.convert(mode).resize(size, Image.Resampling.LANCZOS)
            old = upright.size
    except (OSError, ValueError, SyntaxError):
        return mask, []  # unreadable: the engine's loader names the problem
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{field}: {exc}") from None
    buffer = io.BytesIO()
    resized.save(buffer, "PNG")
    return buffer.getvalue(), [f"the {field} ({old[0]}x{old[1]}) was resized to the init image's {size[0]}x{size[1]}"]
