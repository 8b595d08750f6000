"""Generation options shared by `run` and `batch`: one declaration, so names, help and defaults agree.

Each defaults to None ("not given"), so stored parameters (--params-from, manifest rows) can fill the gaps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Prompt = Annotated[str | None, typer.Option("--prompt", "-p", help="What the result should show.")]
NegativePrompt = Annotated[str | None, typer.Option("--negative-prompt", "-n", help="What to avoid.")]
Strength = Annotated[float | None, typer.Option(help="How far from the input, 0-1. (default: 0.75)")]
Steps = Annotated[int | None, typer.Option(help="Sampling steps; steps x strength are run. (default: model's)")]
CfgScale = Annotated[float | None, typer.Option("--cfg-scale", help="Prompt adherence. (default: model's)")]
Sampler = Annotated[str | None, typer.Option(help="A1111 sampler name, see `img2img samplers`.")]
Scheduler = Annotated[str | None, typer.Option(help="Schedule type: Automatic, Karras, Exponential, ...")]
Model = Annotated[str | None, typer.Option("--model", "-m", help="Alias, hub id, folder or .safetensors.")]
ModelConfig = Annotated[str | None, typer.Option(
    "--model-config", metavar="FOLDER",
    help="Diffusers folder of the same family as a .safetensors --model, for its configs "
         "(needed offline until they are cached).")]
Width = Annotated[int | None, typer.Option(help="Output width (multiple of 8). (default: from input)")]
Height = Annotated[int | None, typer.Option(help="Output height (multiple of 8). (default: from input)")]
ResizeMode = Annotated[str | None, typer.Option(
    "--resize-mode", help="stretch, crop, fill or latent (the input encoded at its own size, its latents resized: "
                          "A1111's latent upscale). (default: crop)")]
KeepSize = Annotated[bool, typer.Option("--keep-size", help="Resize each result back to its input's size.")]
Format = Annotated[str | None, typer.Option("--format", help="png, jpeg or webp. (default: png)")]
Device = Annotated[str | None, typer.Option(help="auto, cuda, cuda:N, mps or cpu. (default: auto)")]
Dtype = Annotated[str | None, typer.Option(help="auto, float16, bfloat16 or float32. (default: auto)")]
Background = Annotated[str | None, typer.Option(help="Colour behind transparent pixels. (default: white)")]
MaxPixels = Annotated[int | None, typer.Option("--max-pixels",
                                               help="Refuse larger input images. (default: 100,000,000)")]
NoSafetyChecker = Annotated[bool, typer.Option("--no-safety-checker", help="Disable the model's safety checker.")]
AllowUnsafeCheckpoint = Annotated[bool, typer.Option(
    "--allow-unsafe-checkpoint", help="Allow pickle .ckpt/.bin checkpoints (they can run code).")]
Subseed = Annotated[int | None, typer.Option(
    "--subseed", help="Variation seed, mixed into the seed's noise by --subseed-strength. (default: random)")]
SubseedStrength = Annotated[float | None, typer.Option(
    "--subseed-strength", help="0: the seed's image, 1: the subseed's image. (default: 0)")]
ClipSkip = Annotated[int | None, typer.Option(
    "--clip-skip", help="Use the text encoder's Nth layer from the end (A1111's CLIP skip). (default: 1)")]
Style = Annotated[list[str] | None, typer.Option(
    "--style", help="A style from the styles file, applied to the prompts; repeatable. See `img2img styles`.")]
ColorCorrection = Annotated[bool, typer.Option(
    "--color-correction", help="Match the result's colours to the input's (A1111's colour correction).")]
LoraDir = Annotated[Path | None, typer.Option(
    "--lora-dir", help="Folder of <lora:name> files. (default: $IMG2IMG_LORA_DIR, else loras/ in the user "
                       "data folder)")]
EmbeddingsDir = Annotated[Path | None, typer.Option(
    "--embeddings-dir", help="Folder of textual-inversion embeddings. (default: $IMG2IMG_EMBEDDINGS_DIR, else "
                             "embeddings/ in the user data folder)")]
StylesFile = Annotated[Path | None, typer.Option(
    "--styles-file", help="A1111 styles.csv. (default: $IMG2IMG_STYLES_FILE, else styles.csv in the user data "
                          "folder)")]


def prompt_fields(subseed, subseed_strength, clip_skip, style, color_correction) -> dict:
    """The Request fields of the prompt options above that were given."""
    given = {"subseed": subseed, "subseed_strength": subseed_strength, "clip_skip": clip_skip,
             "styles": tuple(style) if style else None, "color_correction": color_correction or None}
    return {k: v for k, v in given.items() if v is not None}

# How the model runs (run, batch and serve): see backends/.
Vae = Annotated[str | None, typer.Option(
    "--vae", help="Autoencoder: taesd (tiny and fast, from the hub), a hub id, a VAE folder or .safetensors. "
                  "(default: the model's own)")]
Backend = Annotated[str | None, typer.Option(
    "--backend", help="torch or openvino (CPU; the openvino extra; exports each model once). (default: auto: "
                      "openvino on the CPU when installed, else torch)")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the UNet and VAE (slow first start).")]
Offload = Annotated[str | None, typer.Option(
    "--offload", help="CUDA: none, model or sequential CPU offload for small GPUs. (default: auto, from free "
                      "memory)")]
CpuThreads = Annotated[int | None, typer.Option(
    "--cpu-threads", help="Torch CPU threads. (default: the number of physical cores)")]


def engine_speed_kwargs(vae: str | None, backend: str | None, compile: bool, offload: str | None,
                        cpu_threads: int | None) -> dict:
    """The Engine arguments of the options above (None: the Engine's default)."""
    given = {"vae": vae, "backend": backend, "compile": compile or None, "offload": offload,
             "cpu_threads": cpu_threads}
    return {key: value for key, value in given.items() if value is not None}
# Inpainting and outpainting (A1111's names and defaults).
MaskFromAlpha = Annotated[bool, typer.Option(
    "--mask-from-alpha", help="Repaint the input's transparent pixels (PNG/WebP from an editor's eraser).")]
InvertMask = Annotated[bool, typer.Option("--invert-mask", help="Repaint what the mask leaves black instead.")]
MaskBlur = Annotated[str | None, typer.Option(
    "--mask-blur", metavar="N|X,Y", help="Soften the mask's edge: Gaussian sigma in pixels. (default: 4)")]
InpaintFill = Annotated[str | None, typer.Option(
    "--inpaint-fill", help="What the masked area starts from: original, fill (colours around it), latent-noise or "
                           "latent-nothing. (default: original; fill when outpainting)")]
InpaintArea = Annotated[str | None, typer.Option(
    "--inpaint-area", help="whole (the picture at the generation size) or masked (only the area around the mask, "
                           "at the model's native size, pasted back into the full-size input). (default: whole)")]
InpaintPadding = Annotated[int | None, typer.Option(
    "--inpaint-padding", metavar="PX", help="With --inpaint-area masked: context around the mask. (default: 32)")]
Outpaint = Annotated[str | None, typer.Option(
    "--outpaint", metavar="LEFT,TOP,RIGHT,BOTTOM", help="Extend the canvas by these pixels and paint the new area.")]
NoiseMultiplier = Annotated[float | None, typer.Option(
    "--noise-multiplier", help="Scale the noise added to the input (A1111's initial noise multiplier; below 1 "
                               "keeps more of the input, above 1 less). (default: 1)")]
