"""What a LoRA costs per request: adding and removing its adapters around a generation.

img2img adds the LoRA named in a prompt for one request and removes it after, so the cached pipeline is
unchanged; bare diffusers users typically load it once and keep it. This compares, in one process:
  engine, prompt without LoRA | engine, prompt with <lora:x:0.8> | bare diffusers with the LoRA kept loaded
and times the add+remove step alone. --full builds the SD 1.5 UNet and text encoder (random weights, no
download) and a rank-16 LoRA on every attention projection (~25 MB, like a typical Civitai LoRA) and
times only add+remove there (a full-size generation takes ~25 s per step on a CPU; compare with that).

    HF_HUB_OFFLINE=1 python benchmarks/lora.py [--runs 10] [--steps 8] [--full]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def tiny(runs: int, steps: int) -> None:
    import torch
    from diffusers import AutoPipelineForImage2Image, DPMSolverMultistepScheduler

    from img2img import Engine
    from img2img.networks import applied_loras
    from img2img.prompts import NetworkTag
    from img2img.testing import build_lora_kohya, build_tiny_sd, make_photo

    root = Path(tempfile.mkdtemp())
    folder = build_tiny_sd(root / "tiny-sd")
    build_lora_kohya(folder, root / "loras" / "x.safetensors")
    image = make_photo(64, 64)
    engine = Engine(str(folder), device="cpu", dtype="float32", lora_dir=root / "loras")
    bare = AutoPipelineForImage2Image.from_pretrained(folder)
    bare.scheduler = DPMSolverMultistepScheduler.from_config(bare.scheduler.config, use_karras_sigmas=True)
    bare.set_progress_bar_config(disable=True)
    bare.load_lora_weights(str(root / "loras" / "x.safetensors"), adapter_name="x")
    bare.set_adapters(["x"], [0.8])

    def plain():
        engine.transform(image, "a watercolour landscape", seed=1, steps=steps)

    def with_lora():
        engine.transform(image, "a watercolour landscape <lora:x:0.8>", seed=1, steps=steps)

    def bare_lora():
        bare(prompt="a watercolour landscape", image=image, num_inference_steps=steps, guidance_scale=7.0,
             generator=torch.Generator("cpu").manual_seed(1))

    pipe = engine.load().pipe

    def add_remove():
        with applied_loras(pipe, [NetworkTag("lora", "x", 0.8, 0.8)], root / "loras"):
            pass

    cases = [("engine, no LoRA", plain), ("engine, <lora:x:0.8>", with_lora),
             ("bare diffusers, LoRA kept loaded", bare_lora), ("add + remove adapters", add_remove)]
    for _, fn in cases:  # warm up (reads the LoRA file into the cache)
        fn()
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for i in range(runs):  # interleaved, rotating the order, so a busy machine affects all cases alike
        for name, fn in cases[i % len(cases):] + cases[:i % len(cases)]:
            times[name] += timed(fn, 1)
    print(f"tiny model, {steps} steps, median of {runs} interleaved runs:")
    for name, values in times.items():
        print(f"  {name:34s} {statistics.median(values) * 1000:8.1f} ms")


def full(runs: int) -> None:
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from img2img.networks import applied_loras
    from img2img.prompts import NetworkTag
    from img2img.testing import write_clip_tokenizer, write_lora_kohya

    root = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)  # SD 1.x, 860M
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, vocab_size=49408,
                                        projection_dim=768))
    tokenizer = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(root / "tok")), model_max_length=77)
    vae = AutoencoderKL(block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                          scheduler=EulerDiscreteScheduler(steps_offset=1), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    path = write_lora_kohya(pipe, root / "loras" / "x.safetensors", rank=16, alpha=8.0, scale=0.01)
    print(f"full-size SD 1.x UNet + text encoder; LoRA file {path.stat().st_size / 1e6:.1f} MB")

    def add_remove():
        with applied_loras(pipe, [NetworkTag("lora", "x", 0.8, 0.8)], root / "loras"):
            pass

    cold = timed(add_remove, 1)[0]  # reads the file into the cache too
    warm = timed(add_remove, runs)
    print(f"  add + remove adapters: first {cold:.2f} s (file read), then median {statistics.median(warm):.2f} s "
          f"(min {min(warm):.2f}, max {max(warm):.2f}) over {runs} runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--full", action="store_true", help="time add+remove on the full-size SD 1.x models")
    args = parser.parse_args()
    if args.full:
        full(args.runs)
    else:
        tiny(args.runs, args.steps)


if __name__ == "__main__":
    main()
