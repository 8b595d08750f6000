"""Generation options shared by `run` and `batch`: one declaration, so names, help and defaults agree.

Each defaults to None ("not given"), so stored parameters (--params-from, manifest rows) can fill the gaps.
"""

from __future__ import annotations

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
ResizeMode = Annotated[str | None, typer.Option("--resize-mode", help="stretch, crop or fill. (default: crop)")]
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
