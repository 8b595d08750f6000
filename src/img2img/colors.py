"""A1111's img2img colour correction: give the output the input's colour distribution, keep its lightness.

The output's LAB histograms are matched to the input's, then the output's own luminosity is put back
(a "luminosity" blend), so colours shift towards the input's without flattening the new image's detail.
"""

from __future__ import annotations


def match_colors(image, reference):
    """`image` (PIL RGB) with colours matched to `reference` (PIL RGB)."""
    import warnings

    import numpy as np
    from PIL import Image
    from skimage import color, exposure

    source = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    target = np.asarray(reference.convert("RGB"), dtype=np.float64) / 255.0
    matched = exposure.match_histograms(color.rgb2lab(source), color.rgb2lab(target), channel_axis=-1)
    with warnings.catch_warnings():  # matched LAB values can fall outside sRGB: clipped, as intended
        warnings.simplefilter("ignore", UserWarning)
        corrected = np.clip(color.lab2rgb(matched), 0.0, 1.0)
    blended = _with_luminosity(corrected, source)
    return Image.fromarray(np.round(blended * 255.0).astype(np.uint8), "RGB")


def _luminosity(rgb):
    return rgb[..., 0:1] * 0.3 + rgb[..., 1:2] * 0.59 + rgb[..., 2:3] * 0.11


def _with_luminosity(colors, lightness_from):
    """The non-separable "luminosity" blend: hue and saturation of `colors`, luminosity of `lightness_from`."""
    import numpy as np

    shifted = colors + (_luminosity(lightness_from) - _luminosity(colors))
    lum = _luminosity(shifted)
    low = shifted.min(axis=-1, keepdims=True)
    high = shifted.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        below = np.where(low < 0, lum + (shifted - lum) * lum / (lum - low), shifted)
        above = np.where(high > 1, lum + (below - lum) * (1 - lum) / (high - lum), below)
    return np.clip(np.nan_to_num(above, nan=0.0), 0.0, 1.0)
