"""Engine overhead against bare diffusers, and how fast the CLI starts.

Runs the img2img Engine and a bare diffusers image-to-image pipeline (same tiny model folder, same image,
prompt, seed, steps, strength, CFG and scheduler) alternately in one process, and prints the median
time ratio engine/bare (target <= 1.02). Then times a cold `img2img --help` in fresh processes.

    HF_HUB_OFFLINE=1 python benchmarks/overhead.py [--runs 30] [--steps 20] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def time_engine_vs_bare(runs: int, steps: int, size: int) -> tuple[list[float], list[float], bool]:
    import torch
    from diffusers import AutoPipelineForImage2Image, DPMSolverMultistepScheduler

    from img2img import Engine
    from img2img.testing import build_tiny_sd, make_photo

    folder = build_tiny_sd(Path(tempfile.mkdtemp()) / "tiny-sd")
    image = make_photo(size, size)
    engine = Engine(str(folder), device="cpu", dtype="float32")
    bare = AutoPipelineForImage2Image.from_pretrained(folder)
    bare.scheduler = DPMSolverMultistepScheduler.from_config(bare.scheduler.config, use_karras_sigmas=True)
    bare.set_progress_bar_config(disable=True)
    args = {"prompt": "a watercolour landscape", "strength": 0.75, "num_inference_steps": steps,
            "guidance_scale": 7.0}

    def run_engine():
        return engine.transform(image, args["prompt"], seed=1, steps=steps, strength=0.75, cfg_scale=7.0).image

    def run_bare():
        return bare(image=image, generator=torch.Generator("cpu").manual_seed(1), **args).images[0]

    same = run_engine().tobytes() == run_bare().tobytes()  # also warms both up
    engine_times, bare_times = [], []
    for i in range(runs):
        order = (run_engine, run_bare) if i % 2 == 0 else (run_bare, run_engine)
        for fn in order:
            start = time.perf_counter()
            fn()
            (engine_times if fn is run_engine else bare_times).append(time.perf_counter() - start)
    return engine_times, bare_times, same


def time_help(repeats: int = 5) -> float:
    exe = Path(sys.executable).parent / "img2img"
    command = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "img2img.cli", "--help"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each (alternating)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64, help="square image side in pixels")
    options = parser.parse_args()

    engine_times, bare_times, same = time_engine_vs_bare(options.runs, options.steps, options.size)
    engine_median, bare_median = statistics.median(engine_times), statistics.median(bare_times)
    pair_ratios = [e / b for e, b in zip(engine_times, bare_times)]
    print(f"same output bytes: {same}")
    print(f"bare diffusers  median {bare_median * 1000:8.1f} ms over {len(bare_times)} runs")
    print(f"img2img engine  median {engine_median * 1000:8.1f} ms over {len(engine_times)} runs")
    print(f"ratio engine/bare: median of medians {engine_median / bare_median:.3f}, "
          f"median of paired ratios {statistics.median(pair_ratios):.3f} (target <= 1.02)")
    print(f"cold `img2img --help`: {time_help() * 1000:.0f} ms (median of 5 fresh processes)")


if __name__ == "__main__":
    main()
