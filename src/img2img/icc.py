"""Colour profiles: pixels reach the model in sRGB, the colour space it was trained on.

Phones save photos in Display P3 and cameras often in Adobe RGB, with an ICC profile saying so. Read as if
they were sRGB, their colours shift (duller reds and greens). Such inputs are converted to sRGB, and the
notice says so; sRGB-tagged and untagged images pass unchanged. Outputs are sRGB, untagged: what every
viewer assumes for an image without a profile.
"""

from __future__ import annotations

import io

# The profile's colour space -> the pixel modes it can describe (alpha rides along).
_MODES = {"RGB": ("RGB", "RGBA"), "GRAY": ("L", "LA"), "CMYK": ("CMYK",)}


def to_srgb(img, icc: bytes | None, name: str):
    """(image in sRGB, notice or None). Alpha is kept; modes other than those above are left as they are."""
    if not icc:
        return img, None
    try:
        from PIL import ImageCms
    except ImportError:  # a Pillow built without LittleCMS
        return img, f"{name}: has a colour profile, but this Pillow cannot convert profiles; taken as sRGB"
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = (ImageCms.getProfileDescription(profile) or "").strip() or "unnamed"
        space = profile.profile.xcolor_space.strip()
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return img, f"{name}: its colour profile cannot be read; the pixels are taken as sRGB"
    if "srgb" in description.lower():
        return img, None
    base_mode = {"RGBA": "RGB", "LA": "L"}.get(img.mode, img.mode)
    if base_mode not in _MODES.get(space, ()):
        return img, (f"{name}: its colour profile ({description}) is for {space} pixels, not {img.mode}; "
                     "the pixels are taken as sRGB")
    alpha = img.getchannel("A") if img.mode != base_mode else None
    base = img.convert(base_mode) if alpha is not None else img
    try:
        srgb = ImageCms.profileToProfile(base, profile, ImageCms.createProfile("sRGB"), outputMode="RGB",
                                         renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    except (OSError, ValueError, ImageCms.PyCMSError) as exc:
        return img, f"{name}: its colour profile ({description}) cannot be applied ({exc}); taken as sRGB"
    if alpha is not None:
        srgb.putalpha(alpha)
    return srgb, f"{name}: converted from its colour profile ({description}) to sRGB"
