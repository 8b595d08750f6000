"""Inpainting costs: the engine against bare diffusers, and the mask work around the pipeline on a big photo.

1. The img2img Engine with a mask and diffusers' inpainting pipeline (same tiny model folder, image, mask,
   prompt, seed, steps, strength, CFG and scheduler; mask blur 0, whole picture) run alternately in one
   process: median time ratio engine/bare, and whether the masked area has the same bytes.
2. What masks.py adds around the pipeline for a large photo with a small mask: blur, crop or resize, fill,
   and pasting the result back, for "whole picture" and "only masked", timed on their own.

    HF_HUB_OFFLINE=1 python benchmarks/inpaint.py [--runs 20] [--steps 20] [--photo 4000x3000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def engine_vs_bare(runs: int, steps: int) -> tuple[list[float], list[float], bool]:
    import numpy as np
    import torch
    from diffusers import AutoPipelineForInpainting, EulerDiscreteScheduler
    from PIL import Image

    from img2img import Engine
    from img2img.testing import build_tiny_sd, make_photo

    folder = build_tiny_sd(Path(tempfile.mkdtemp()) / "tiny-sd")
    image, mask = make_photo(64, 64), Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 12, 44, 40))
    # torch, as bare diffusers: the automatic backend would pick OpenVINO where its extra is installed
    engine = Engine(str(folder), device="cpu", dtype="float32", backend="torch")
    bare = AutoPipelineForInpainting.from_pretrained(folder)
    bare.scheduler = EulerDiscreteScheduler.from_config(bare.scheduler.config)
    bare.set_progress_bar_config(disable=True)

    def run_engine():
        return engine.transform(image, "a red door", mask=mask, mask_blur=0, seed=1, steps=steps, strength=0.75,
                                cfg_scale=7.0, sampler="Euler", scheduler="Automatic").image

    def run_bare():
        return bare(prompt="a red door", image=image, mask_image=mask, strength=0.75, num_inference_steps=steps,
                    guidance_scale=7.0, height=64, width=64, generator=torch.Generator("cpu").manual_seed(1)).images[0]

    inside = np.asarray(mask) > 0
    same = np.array_equal(np.asarray(run_engine())[inside], np.asarray(run_bare())[inside])  # also warms up
    engine_times, bare_times = [], []
    for i in range(runs):
        for fn in (run_engine, run_bare) if i % 2 == 0 else (run_bare, run_engine):
            start = time.perf_counter()
            fn()
            (engine_times if fn is run_engine else bare_times).append(time.perf_counter() - start)
    return engine_times, bare_times, same


def mask_work(width: int, height: int, native: int, repeats: int = 3) -> list[tuple[str, float, str]]:
    from PIL import Image

    from img2img import masks
    from img2img.testing import make_photo

    photo = make_photo(width, height)
    mask = Image.new("L", photo.size, 0)
    side = min(width, height) // 10
    mask.paste(255, (width // 2, height // 3, width // 2 + side, height // 3 + side))
    rows = []
    for area in ("whole", "masked"):
        for fill in ("original", "fill"):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                inputs = masks.prepare_inpaint(photo, mask, blur_xy=(4, 4), fill_mode=fill, area=area, padding=32,
                                               resize_mode="crop", native=native, width=None, height=None)
                masks.paste_back(Image.new("RGB", inputs.size), inputs)
                times.append(time.perf_counter() - start)
            out = photo.size if area == "masked" else inputs.size
            rows.append((f"{area:6} {fill:8}", statistics.median(times),
                         f"generated at {inputs.size[0]}x{inputs.size[1]}, output {out[0]}x{out[1]}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each (alternating)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--photo", default="4000x3000", help="size of the photo for the mask work")
    parser.add_argument("--native", type=int, default=512, help="the model's native size for the mask work")
    options = parser.parse_args()

    engine_times, bare_times, same = engine_vs_bare(options.runs, options.steps)
    engine_median, bare_median = statistics.median(engine_times), statistics.median(bare_times)
    print(f"masked area has the same bytes as diffusers' inpainting pipeline: {same}")
    print(f"bare diffusers inpainting  median {bare_median * 1000:8.1f} ms over {len(bare_times)} runs")
    print(f"img2img engine with mask   median {engine_median * 1000:8.1f} ms over {len(engine_times)} runs")
    print(f"ratio engine/bare {engine_median / bare_median:.3f}")

    width, height = (int(v) for v in options.photo.lower().split("x"))
    print(f"\nmask work around the pipeline, {width}x{height} photo, small square mask, native {options.native}:")
    for label, seconds, note in mask_work(width, height, options.native):
        print(f"  {label} {seconds * 1000:8.1f} ms  ({note})")


if __name__ == "__main__":
    main()
