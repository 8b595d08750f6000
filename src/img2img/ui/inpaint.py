"""The web UI's inpainting and outpainting controls: a mask painted over the photo, and A1111's options.

The photo stays in the main image input (its file reaches img2img's loader untouched); the editor shows an
upright copy of it to paint on. Painted strokes (any layer, any opacity) are the mask: white = repaint.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..masks import INPAINT_FILLS

BRUSH_COLOUR = ("#ffffff", 0.75)  # see-through, so the photo stays visible under the mask
FILL_CHOICES = [("automatic (original; fill when outpainting)", "auto"),
                ("original (start from the photo)", "original"), ("fill (colours around the mask)", "fill"),
                ("latent noise", "latent-noise"), ("latent nothing", "latent-nothing")]
AREA_CHOICES = [("whole picture", "whole"), ("only masked (small edits on big photos)", "masked")]
assert {value for _, value in FILL_CHOICES} == {"auto", *INPAINT_FILLS}


@dataclass
class InpaintControls:
    editor: gr.ImageEditor
    mask_from_alpha: gr.Checkbox
    invert: gr.Checkbox
    blur: gr.Slider
    fill: gr.Radio
    area: gr.Radio
    padding: gr.Slider
    outpaint: tuple[gr.Number, gr.Number, gr.Number, gr.Number]  # left, top, right, bottom

    @property
    def settings(self) -> list:
        return [self.mask_from_alpha, self.invert, self.blur, self.fill, self.area, self.padding, *self.outpaint]

    @property
    def inputs(self) -> list:
        return [self.editor, *self.settings]


def build_controls() -> InpaintControls:
    """The "Inpaint / outpaint" accordion (closed until needed)."""
    with gr.Accordion("Inpaint / outpaint: change only part of the photo, or extend it", open=False,
                      elem_id="inpaint-panel"):
        gr.Markdown("Paint over what should change (the brush size is in the editor's toolbar; the eraser takes "
                    "strokes back). Outside the mask the photo keeps its exact pixels.")
        editor = gr.ImageEditor(label="Mask", type="pil", image_mode="RGBA", sources=[], transforms=(),
                                brush=gr.Brush(colors=[BRUSH_COLOUR], default_color=BRUSH_COLOUR,
                                               color_mode="fixed"),
                                eraser=gr.Eraser(), layers=False, format="png", elem_id="mask-editor",
                                placeholder="Add an input image first")
        with gr.Row():
            invert = gr.Checkbox(label="Invert (repaint what is not painted)", elem_id="invert-mask")
            mask_from_alpha = gr.Checkbox(label="Mask = the image's transparent pixels", elem_id="mask-from-alpha")
        with gr.Row():
            blur = gr.Slider(0, 64, value=4, step=1, label="Mask blur (px)", elem_id="mask-blur")
            padding = gr.Slider(0, 256, value=32, step=4, label="Padding for 'only masked' (px)",
                                elem_id="inpaint-padding")
        fill = gr.Radio(FILL_CHOICES, value="auto", label="Masked content", elem_id="inpaint-fill")
        area = gr.Radio(AREA_CHOICES, value="whole", label="Inpaint area", elem_id="inpaint-area")
        gr.Markdown("**Outpaint**: extend the canvas by these pixels (the new area is painted; no mask needed).")
        with gr.Row():
            outpaint = tuple(gr.Number(value=0, precision=0, minimum=0, step=8, label=side,
                                       elem_id=f"outpaint-{side.lower()}")
                             for side in ("Left", "Top", "Right", "Bottom"))
    return InpaintControls(editor, mask_from_alpha, invert, blur, fill, area, padding, outpaint)


def editor_value(image_path: str | None, max_pixels: int):
    """The editor's background: the input as img2img reads it (upright, RGB), so the mask has its size."""
    from ..errors import ImageError
    from ..images import load_image

    if not image_path:
        return None
    try:
        image = load_image(image_path, max_pixels=max_pixels).image
    except ImageError:
        return None  # the Generate button reports a bad file
    return {"background": image, "layers": [], "composite": None}


def painted_mask(value) -> bytes | None:
    """The strokes of every layer as a PNG mask (white = painted), or None when nothing is painted."""
    import numpy as np
    from PIL import Image

    layers = [layer for layer in (value or {}).get("layers") or [] if layer is not None]
    if not layers:
        return None
    alpha = np.zeros((layers[0].height, layers[0].width), dtype=np.uint8)
    for layer in layers:
        alpha = np.maximum(alpha, np.asarray(layer.convert("RGBA").getchannel("A")))
    if not alpha.any():
        return None
    buffer = io.BytesIO()
    Image.fromarray(np.where(alpha > 0, 255, 0).astype(np.uint8), "L").save(buffer, "PNG")
    return buffer.getvalue()


def request_fields(mask_from_alpha, invert, blur, fill, area, padding, *outpaint) -> dict:
    """Request fields for the controls' values (the painted mask travels apart, as bytes)."""
    margins = tuple(int(value or 0) for value in outpaint)
    return {"mask_from_alpha": bool(mask_from_alpha), "invert_mask": bool(invert), "mask_blur": int(blur),
            "inpaint_fill": None if fill in (None, "auto") else fill, "inpaint_area": area,
            "inpaint_padding": int(padding), "outpaint": margins if any(margins) else None}


def settings_from_file(file) -> list:
    """The panel's settings stored in a dropped output (unchanged when it has none)."""
    from ..images import read_infotext
    from ..infotext import fields_from_infotext

    text = read_infotext(Path(file if isinstance(file, str) else file.name)) if file is not None else None
    if not text:
        return [gr.update()] * 10
    return settings_from_fields(fields_from_infotext(text))


def settings_from_fields(fields: dict) -> list:
    """The panel's settings for stored parameters (fields_from_infotext); defaults when they used no mask."""
    from ..request import Request

    request = Request(prompt="", **{name: fields[name] for name in (
        "mask_from_alpha", "invert_mask", "mask_blur", "inpaint_fill", "inpaint_area", "inpaint_padding", "outpaint")
        if name in fields}).normalized()
    if fields.get("mask_hash"):
        gr.Info("That image was inpainted with a mask: paint the mask again (masks are not stored in images).")
    blur = request.mask_blur if isinstance(request.mask_blur, int) else request.mask_blur[0]
    margins = request.outpaint or (0, 0, 0, 0)
    return [request.mask_from_alpha, request.invert_mask, blur, request.inpaint_fill or "auto", request.inpaint_area,
            request.inpaint_padding, *margins]
