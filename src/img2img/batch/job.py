"""What a batch run does, whatever engine runs it: plan (seeds, resume, skips) and process one task.

Seeds: an item's seed is its manifest `seed` when given; otherwise
    seed = (base + int.from_bytes(sha256(key)[:4], "big")) mod 2**32
where `key` is the item's output name without extension (for folders and globs: the input's path
relative to the source, without extension) and `base` is --seed, or else the base recorded in the
results log by an earlier run, or else a random base that this run records. A seed depends only on
the base and the key: not on order, worker count or engine, so resumed and Ray runs give the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Img2ImgError, Interrupted, InvalidRequest
from ..inpaint import check_repaint_options
from ..noise import batch_seeds
from ..request import MAX_SEED, Request
from .items import Item, output_names
from .log import LogState

SEED_SPACE = MAX_SEED + 1


def derive_seed(base: int, key: str) -> int:
    offset = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:4], "big")
    return (base + offset) % SEED_SPACE


def choose_base_seed(seed: int | None, state: LogState) -> int:
    if seed is not None and seed != -1:
        return seed
    if state.base_seed is not None:
        return state.base_seed
    return secrets.randbelow(SEED_SPACE)


@dataclass(frozen=True)
class BatchOptions:
    """Everything a worker needs to rebuild the engine and write outputs; plain data, so Ray can ship it."""

    output_dir: str
    fmt: str = "PNG"  # PIL format name
    ext: str = ".png"
    overwrite: bool = False
    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    safety_checker: bool = True
    allow_unsafe_checkpoint: bool = False
    max_pixels: int | None = None
    cpu_threads: int | None = None  # CPU results differ in the last bits with the thread count
    lora_dir: str | None = None  # resolved to absolute paths, so Ray workers find the same files
    embeddings_dir: str | None = None
    styles_file: str | None = None
    vae: str | None = None
    backend: str = "auto"
    compile: bool = False
    offload: str = "auto"

    def engine(self):
        from ..engine import Engine

        kwargs = {} if self.max_pixels is None else {"max_pixels": self.max_pixels}
        return Engine(self.model, device=self.device, dtype=self.dtype, safety_checker=self.safety_checker,
                      allow_unsafe_checkpoint=self.allow_unsafe_checkpoint, lora_dir=self.lora_dir,
                      embeddings_dir=self.embeddings_dir, styles_file=self.styles_file, vae=self.vae,
                      backend=self.backend, compile=self.compile, offload=self.offload,
                      cpu_threads=self.cpu_threads, **kwargs)

    def apply_threads(self) -> None:
        if self.cpu_threads:
            import torch

            torch.set_num_threads(self.cpu_threads)


@dataclass
class Plan:
    tasks: list[dict]  # to run: {"key", "input", "outputs", "seed", "request", "overwrite"}
    records: list[dict]  # to log now, without running: outputs recovered from a killed run, refusals
    skipped: int  # done by an earlier run
    failed_earlier: list[dict]  # failed in an earlier run and not retried
    base_seed: int
    total: int


def build_requests(items: list[Item], base: dict, engine) -> list[Request]:
    """The prepared Request of each item (row overrides applied, model defaults filled, validated)."""
    prepared: dict[tuple, Request] = {}
    requests = []
    for item in items:
        fields = dict(base)
        for name in ("prompt", "negative_prompt", "strength"):
            value = getattr(item, name)
            if value is not None:
                fields[name] = value
        if "prompt" not in fields:
            where = f"{item.label}: " if item.row is not None else ""
            raise InvalidRequest(f"{where}no prompt: pass --prompt/-p, or give every manifest row a prompt",
                                 "prompt")
        cache_key = (tuple(sorted(fields.items())), item.mask is not None)
        if cache_key not in prepared:
            try:
                prepared[cache_key] = engine.prepare(Request(**fields))
                check_repaint_options(prepared[cache_key], item.mask is not None)
            except InvalidRequest as exc:
                where = item.label if item.row is not None else "options"
                raise InvalidRequest(f"{where}: {exc}", exc.field) from None
        requests.append(prepared[cache_key])
    return requests


def parameters(request: dict, model: str) -> dict:
    """What the log records as an item's parameters: the full request (seed apart) and the model."""
    params = {k: v for k, v in request.items() if k != "seed"}
    params["images_per_input"] = params.pop("batch_size")
    params["model"] = model
    return params


def plan_batch(items: list[Item], requests: list[Request], state: LogState, options: BatchOptions, *,
               base_seed: int, model: str, retry_failed: bool = False) -> Plan:
    plan = Plan([], [], 0, [], base_seed, len(items))
    folder = Path(options.output_dir)
    for item, request in zip(items, requests):
        seed = item.seed if item.seed is not None else derive_seed(base_seed, item.key)
        request = request.replace(seed=seed)
        outputs = output_names(item.key, request.batch_size, options.ext)
        task = {"key": item.key, "input": item.input, "outputs": outputs, "seed": seed,
                "request": dataclasses.asdict(request), "model": model, "overwrite": options.overwrite,
                "mask": item.mask}
        paths = [folder / name for name in outputs]
        previous = state.latest.get(item.key)
        if previous and previous.get("status") == "done" and all(p.exists() for p in paths):
            plan.skipped += 1
            continue
        if previous and previous.get("status") == "failed" and not retry_failed:
            plan.failed_earlier.append(previous)
            continue
        existing = [p for p in paths if p.exists()]
        if existing:
            seeds = batch_seeds(seed, request.batch_size, request.subseed, request.subseed_strength)[0]
            ours = all(_written_by(p, seeds[paths.index(p)], request) for p in existing)
            if ours and len(existing) == len(paths):
                # Written by a run killed before it logged the item: keep the file, log it once.
                plan.records.append(record(task, "done", None, 0.0, recovered=True))
                continue
            if not ours and not options.overwrite:
                plan.records.append(record(task, "failed", f"{existing[0]}: already exists (pass --overwrite "
                                           "to replace it)", 0.0))
                continue
            task["overwrite"] = True  # our own partial set of outputs, or --overwrite
        plan.tasks.append(task)
    return plan


def _written_by(path: Path, seed: int, request: Request) -> bool:
    """Whether an output file carries exactly this item's parameters (prompt, seed, strength, steps)."""
    from ..images import read_infotext
    from ..infotext import parse_infotext

    try:
        text = read_infotext(path)
        if not text:
            return False
        prompt, negative, params = parse_infotext(text)
        return (prompt == request.prompt and negative == request.negative_prompt
                and params.get("Seed") == str(seed) and float(params.get("Denoising strength", "nan")) ==
                float(request.strength) and params.get("Steps") == str(request.steps))
    except (Img2ImgError, OSError, ValueError):
        return False


def record(task: dict, status: str, error: str | None, seconds: float, **extra) -> dict:
    line = {"key": task["key"], "input": task["input"], "output": task["outputs"][0], "outputs": task["outputs"],
            "seed": task["seed"], "parameters": parameters(task["request"], task["model"]), "status": status,
            "error": error, "seconds": round(seconds, 3), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    line.update(extra)
    return line


def process_task(engine, task: dict, options: BatchOptions) -> dict:
    """Generate one item and write its outputs atomically; a bad item becomes a failed record, never raises."""
    from ..images import encode_image, write_atomically

    started = time.perf_counter()
    try:
        result = engine.run(Request(**task["request"]), task["input"], mask=task.get("mask"))
        folder = Path(options.output_dir)
        for image, infotext, name in zip(result.images, result.infotexts, task["outputs"]):
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(encode_image(image, options.fmt, infotext, notices=result.notices), path,
                             overwrite=task["overwrite"])
    except (Interrupted, KeyboardInterrupt):
        raise
    except Img2ImgError as exc:
        return record(task, "failed", str(exc), time.perf_counter() - started)
    except Exception as exc:  # an unexpected failure of one item must not end the batch
        return record(task, "failed", f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
    extra = {"notices": result.notices} if result.notices else {}
    return record(task, "done", None, time.perf_counter() - started, **extra)


# write_atomically's temporary names: "." + output name + "." + mkstemp's 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.(png|jpg|webp)\.[A-Za-z0-9_]{8}\.tmp$")


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that write_atomically leaves when a process is killed mid-write."""
    removed = []
    for path in Path(folder).rglob(".*.tmp"):
        if _TEMP_NAME.match(path.name) and path.is_file():
            path.unlink()
            removed.append(path)
    return removed


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failed_earlier: int = 0
    failures: list[dict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.failed_earlier else 0
