"""The `img2img batch` command. Imports nothing heavy at module level: `img2img --help` stays instant."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from .. import cli_options as opt

ENGINES = ("local", "ray")


def _path(value: Path | None) -> str | None:
    return None if value is None else str(value.expanduser().resolve())


def register(app: typer.Typer) -> None:
    app.command(name="batch")(batch)


# Generation options match `img2img run` (names, meaning, defaults); None means "not given".
def batch(
    source: str = typer.Argument(..., help="A folder of images, a glob pattern (quote it), or a manifest "
                                           "(.csv or .jsonl) with columns image, prompt, negative_prompt, "
                                           "strength, seed, output, mask.", show_default=False),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Output folder; results.jsonl goes here.",
                                    show_default=False),
    prompt: opt.Prompt = None,  # a manifest's prompt column wins
    negative_prompt: opt.NegativePrompt = None,
    strength: opt.Strength = None,
    steps: opt.Steps = None,
    cfg_scale: opt.CfgScale = None,
    seed: int | None = typer.Option(None, help="Base seed; each item's seed is derived from it and the item's "
                                                  "name (see docs/batch.md). (default: random, kept in the log)"),
    sampler: opt.Sampler = None,
    scheduler: opt.Scheduler = None,
    model: opt.Model = None,
    width: opt.Width = None,
    height: opt.Height = None,
    resize_mode: opt.ResizeMode = None,
    keep_size: opt.KeepSize = False,
    mask_dir: Path | None = typer.Option(None, "--mask-dir", help="Inpainting: a folder of masks matched to inputs "
                                         "by name (photos/cats/tom.jpg -> DIR/cats/tom.png, else DIR/tom.png; "
                                         "any image extension). A manifest's mask column wins."),
    mask_from_alpha: opt.MaskFromAlpha = False,
    invert_mask: opt.InvertMask = False,
    mask_blur: opt.MaskBlur = None,
    inpaint_fill: opt.InpaintFill = None,
    inpaint_area: opt.InpaintArea = None,
    inpaint_padding: opt.InpaintPadding = None,
    outpaint: opt.Outpaint = None,
    noise_multiplier: opt.NoiseMultiplier = None,
    images_per_input: int | None = typer.Option(None, "--images-per-input",
                                                   help="Images generated per input. (default: 1)"),
    fmt: opt.Format = None,
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    background: opt.Background = None,
    max_pixels: opt.MaxPixels = None,
    no_safety_checker: opt.NoSafetyChecker = False,
    allow_unsafe_checkpoint: opt.AllowUnsafeCheckpoint = False,
    subseed: opt.Subseed = None,
    subseed_strength: opt.SubseedStrength = None,
    clip_skip: opt.ClipSkip = None,
    style: opt.Style = None,
    color_correction: opt.ColorCorrection = False,
    lora_dir: opt.LoraDir = None,
    embeddings_dir: opt.EmbeddingsDir = None,
    styles_file: opt.StylesFile = None,
    vae: opt.Vae = None,
    backend: opt.Backend = None,
    compile: opt.Compile = False,
    offload: opt.Offload = None,
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Include images in subfolders of SOURCE."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace output files that exist but are not "
                                                              "logged as done (done items are always skipped)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run items again that failed in an "
                                                                    "earlier run."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (a Ray Data pipeline)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster address, e.g. "
                                              "ray://host:10001 or auto. (default: start a local Ray)"),
    workers: int | None = typer.Option(None, "--workers", help="Ray actors, each loading the model once; one "
                                          "GPU each when the cluster has GPUs. (default: GPU count, else 1)"),
    batch_size: int = typer.Option(1, "--batch-size", help="Ray engine: items handed to an actor per "
                                   "map_batches call (not images per input; see --images-per-input)."),
    cpu_threads: int | None = typer.Option(None, "--cpu-threads", help="Torch CPU threads per process or "
                                              "actor. CPU results vary in the last bits with the thread count: fix "
                                              "it to get identical bytes from both engines. (default: torch's; "
                                              "1 per Ray actor)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar; print failures and the summary."),
):
    """Transform many images: a folder, glob or manifest. Resumable; a bad file fails alone; local or Ray."""
    from ..errors import InvalidRequest, OutputError
    from ..images import EXTENSIONS, resolve_format
    from .items import attach_masks, check_unique_outputs, collect_items
    from .job import BatchOptions, build_requests, choose_base_seed, plan_batch, remove_stale_temp_files
    from .log import LOG_NAME, ResultsLog, read_log

    if engine not in ENGINES:
        raise InvalidRequest(f"--engine must be local or ray, got {engine!r}", "engine")
    if engine == "local":
        given = [flag for flag, value in (("--ray-address", ray_address), ("--workers", workers),
                                          ("--batch-size", batch_size if batch_size != 1 else None)) if value]
        if given:
            raise InvalidRequest(f"{given[0]} applies to --engine ray only", "engine")
    for flag, value in (("--workers", workers), ("--batch-size", batch_size), ("--cpu-threads", cpu_threads)):
        if value is not None and value < 1:
            raise InvalidRequest(f"{flag} must be at least 1, got {value}", flag.lstrip("-"))
    if engine == "ray":
        from .ray_engine import _import_ray

        _import_ray()  # say how to install Ray before any work is done
    err = _console()
    fmt_name = resolve_format(fmt)
    ext = EXTENSIONS[fmt_name]
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"{output_dir}: exists and is not a folder")

    # 1. the items, their output names (unique) and their requests (validated: bad options fail here)
    items = collect_items(source, recursive=recursive, ext=ext, exclude=[output_dir, mask_dir])
    if mask_dir is not None:
        items = attach_masks(items, mask_dir)
    count = images_per_input or 1
    check_unique_outputs(items, count, ext)
    options = BatchOptions(output_dir=str(output_dir), fmt=fmt_name, ext=ext, overwrite=overwrite, model=model,
                           device=device, dtype=dtype, safety_checker=not no_safety_checker,
                           allow_unsafe_checkpoint=allow_unsafe_checkpoint, max_pixels=max_pixels,
                           cpu_threads=cpu_threads, lora_dir=_path(lora_dir),
                           embeddings_dir=_path(embeddings_dir), styles_file=_path(styles_file), vae=vae,
                           backend=backend or "auto", compile=compile, offload=offload or "auto")
    generator = options.engine()
    given_fields = {
        "prompt": prompt, "negative_prompt": negative_prompt, "strength": strength, "steps": steps,
        "cfg_scale": cfg_scale, "sampler": sampler, "scheduler": scheduler, "width": width, "height": height,
        "resize_mode": resize_mode, "batch_size": images_per_input, "background": background,
        "keep_size": keep_size or None, "mask_from_alpha": mask_from_alpha or None,
        "invert_mask": invert_mask or None, "mask_blur": mask_blur, "inpaint_fill": inpaint_fill,
        "inpaint_area": inpaint_area, "inpaint_padding": inpaint_padding, "outpaint": outpaint,
        "noise_multiplier": noise_multiplier,
    }
    given_fields = {k: v for k, v in given_fields.items() if v is not None}
    given_fields.update(opt.prompt_fields(subseed, subseed_strength, clip_skip, style, color_correction))
    requests = build_requests(items, given_fields, generator)

    # 2. the output folder: leftovers of a killed run go, the log says what is done already
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{output_dir}: cannot create the output folder ({exc.strerror or exc})") from None
    removed = remove_stale_temp_files(output_dir)
    log_path = output_dir / LOG_NAME
    try:
        state = read_log(log_path)
    except ValueError as exc:
        raise OutputError(str(exc)) from None
    base_seed = choose_base_seed(seed, state)
    if seed is not None and state.base_seed is not None and seed != state.base_seed and state.latest:
        err.print(f"[yellow]note:[/] the log's earlier runs used base seed {state.base_seed}; items they "
                  f"finished are kept, the rest use {seed}")
    plan = plan_batch(items, requests, state, options, base_seed=base_seed, model=generator.source.name,
                      retry_failed=retry_failed)

    # 3. run, logging every item as it finishes
    summary = _Summary(skipped=plan.skipped, failed_earlier=len(plan.failed_earlier))
    if not quiet:
        err.print(f"{len(items)} items from {source}: {plan.skipped} done earlier, {len(plan.failed_earlier)} "
                  f"failed earlier{' (pass --retry-failed to retry)' if plan.failed_earlier else ''}, "
                  f"{len(plan.tasks)} to run on the {engine} engine; model {generator.source.name} "
                  f"on {generator.device}, base seed {base_seed}")
        if removed:
            err.print(f"removed {len(removed)} partial file(s) left by an interrupted run")
    with ResultsLog(log_path) as log:
        log.append({"event": "start", "base_seed": base_seed, "source": str(source), "engine": engine,
                    "model": generator.source.name, "items": len(items), "to_run": len(plan.tasks),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        for record in plan.records:
            log.append(record)
            summary.add(record, err)
        if engine == "local":
            from .local import run_local

            records = run_local(plan.tasks, options, engine=generator)
        else:
            from .ray_engine import run_ray

            records = run_ray(plan.tasks, options, address=ray_address, workers=workers, batch_size=batch_size)
        with _progress(err, len(plan.tasks), quiet) as advance:
            for record in records:
                log.append(record)
                summary.add(record, err)
                advance()
    print(summary.line(log_path))
    if summary.failed or summary.failed_earlier:
        raise typer.Exit(1)


class _Summary:
    def __init__(self, skipped: int, failed_earlier: int):
        self.done = 0
        self.failed = 0
        self.skipped = skipped
        self.failed_earlier = failed_earlier

    def add(self, record: dict, err) -> None:
        if record["status"] == "done":
            self.done += 1
        else:
            self.failed += 1
            error = str(record["error"])
            where = "" if error.startswith(record["input"]) else f"{record['input']}: "
            from rich.markup import escape

            err.print(f"[red]failed:[/] {escape(where + error)}")

    def line(self, log_path: Path) -> str:
        failed = f"failed {self.failed + self.failed_earlier}"
        if self.failed_earlier:
            failed += f" ({self.failed_earlier} in an earlier run; --retry-failed runs them again)"
        return f"done {self.done}, skipped {self.skipped}, {failed}; log: {log_path}"


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


class _progress:
    """A progress bar with items done, rate and ETA; a no-op when quiet or when nothing runs."""

    def __init__(self, console, total: int, quiet: bool):
        self.console, self.total, self.quiet = console, total, quiet
        self.progress = None

    def __enter__(self):
        if self.quiet or not self.total:
            return lambda: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class RateColumn(ProgressColumn):
            def render(self, task):
                return Text(f"{task.speed:.2f} items/s" if task.speed else "- items/s")

        self.progress = Progress(TextColumn("batch"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=self.console)
        self.progress.start()
        task = self.progress.add_task("batch", total=self.total)
        return lambda: self.progress.advance(task)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        sys.stderr.flush()
