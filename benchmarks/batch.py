"""Batch throughput: the local engine against the Ray engine with 1 and 2 workers, on the tiny model.

Builds the tiny offline model and a folder of test photos, then runs the same batch (same items,
seeds and parameters) three times: local engine, Ray with 1 worker, Ray with 2 workers (a fresh
local Ray each time). For each it prints
  - total items/s: items / wall time from the start of the run (Ray start-up and model loading included)
  - steady items/s: (items - 1) / time between the first and the last finished item
and the ratios of each to the local engine. All three must produce the same bytes when the CPU thread
count matches (--cpu-threads 1); the script checks and says so.

    HF_HUB_OFFLINE=1 python benchmarks/batch.py [--items 24] [--steps 20] [--size 64] [--cpu-threads N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(engine: str, workers: int | None, src: Path, out: Path, model: Path, args) -> dict:
    import torch

    from img2img.batch.items import collect_items
    from img2img.batch.job import BatchOptions, build_requests, plan_batch
    from img2img.batch.local import run_local
    from img2img.batch.log import LogState
    from img2img.batch.ray_engine import run_ray

    threads = torch.get_num_threads()
    started = time.perf_counter()
    items = collect_items(src)
    options = BatchOptions(output_dir=str(out), model=str(model), device="cpu", cpu_threads=args.cpu_threads)
    generator = options.engine()
    requests = build_requests(items, {"prompt": "a watercolour harbour", "steps": args.steps}, generator)
    out.mkdir(parents=True)
    plan = plan_batch(items, requests, LogState(), options, base_seed=1, model=generator.source.name)
    if engine == "local":
        records = run_local(plan.tasks, options, engine=generator)
    else:
        records = run_ray(plan.tasks, options, workers=workers, batch_size=1)
    finished = []
    for record in records:
        assert record["status"] == "done", record
        finished.append(time.perf_counter())
    torch.set_num_threads(threads)
    total = finished[-1] - started
    steady = (finished[-1] - finished[0]) / (len(finished) - 1) if len(finished) > 1 else total
    return {"total": len(finished) / total, "steady": 1 / steady if steady else float("inf"), "out": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cpu-threads", type=int, default=None,
                        help="torch threads for the local engine and each Ray actor (default: torch's "
                             "for local, 1 per actor)")
    args = parser.parse_args()

    from img2img.testing import build_tiny_sd, make_photo

    root = Path(tempfile.mkdtemp(prefix="img2img-batch-bench-"))
    model = build_tiny_sd(root / "tiny-sd")
    src = root / "src"
    src.mkdir()
    for i in range(args.items):
        make_photo(args.size, args.size, seed=i).save(src / f"img{i:03d}.png")

    configs = [("local", "local", None), ("ray, 1 worker", "ray", 1), ("ray, 2 workers", "ray", 2)]
    results = {}
    for name, engine, workers in configs:
        results[name] = run(engine, workers, src, root / name.replace(", ", "-").replace(" ", ""), model, args)

    import torch

    print(f"{args.items} items, {args.size}x{args.size}, {args.steps} steps x strength 0.75, tiny SD model, "
          f"{os.cpu_count()} CPUs; local engine threads: {args.cpu_threads or torch.get_num_threads()}, "
          f"Ray actor threads: {args.cpu_threads or 1}")
    base = results["local"]
    print(f"{'engine':<16}{'total items/s':>15}{'ratio':>8}{'steady items/s':>16}{'ratio':>8}")
    for name, result in results.items():
        print(f"{name:<16}{result['total']:>15.2f}{result['total'] / base['total']:>8.2f}"
              f"{result['steady']:>16.2f}{result['steady'] / base['steady']:>8.2f}")
    names = sorted(p.relative_to(base["out"]) for p in base["out"].rglob("*.png"))
    same = all((r["out"] / n).read_bytes() == (base["out"] / n).read_bytes() for r in results.values() for n in names)
    print(f"outputs byte-identical across engines: {same}"
          + ("" if same or args.cpu_threads else " (expected to differ in the last bits: local and Ray used "
                                                  "different thread counts; pass --cpu-threads 1)"))


if __name__ == "__main__":
    main()
