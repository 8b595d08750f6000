"""The `img2img` command: parse options -> Request -> Engine -> print. Errors become one line, exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from . import cli_options as opt
from .errors import ImageError, Img2ImgError, InvalidRequest, OutputError
from .images import DEFAULT_MAX_PIXELS

app = typer.Typer(
    name="img2img",
    help="Stable Diffusion image-to-image: transform photos with a text prompt.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": False}


def _console(stderr: bool = True):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show a traceback on errors.")):
    _state["debug"] = debug


# Generation options default to None so --params-from can tell "given" from "not given".
@app.command()
def run(
    images: list[Path] = typer.Argument(..., help="Input image file(s).", show_default=False),
    prompt: opt.Prompt = None,
    negative_prompt: opt.NegativePrompt = None,
    strength: opt.Strength = None,
    steps: opt.Steps = None,
    cfg_scale: opt.CfgScale = None,
    seed: int | None = typer.Option(None, help="Seed; a batch uses seed, seed+1, ... (default: random)"),
    sampler: opt.Sampler = None,
    scheduler: opt.Scheduler = None,
    model: opt.Model = None,
    model_config: opt.ModelConfig = None,
    width: opt.Width = None,
    height: opt.Height = None,
    resize_mode: opt.ResizeMode = None,
    keep_size: opt.KeepSize = False,
    mask: Path | None = typer.Option(None, "--mask", help="Repaint only where this image is white (the input's "
                                                          "size; a mask with transparency: where it is opaque)."),
    mask_from_alpha: opt.MaskFromAlpha = False,
    invert_mask: opt.InvertMask = False,
    mask_blur: opt.MaskBlur = None,
    inpaint_fill: opt.InpaintFill = None,
    inpaint_area: opt.InpaintArea = None,
    inpaint_padding: opt.InpaintPadding = None,
    outpaint: opt.Outpaint = None,
    noise_multiplier: opt.NoiseMultiplier = None,
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", help="Images per input. (default: 1)"),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output file (one input only)."),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Output folder. (default: ./outputs)"),
    fmt: opt.Format = None,
    device: opt.Device = None,
    dtype: opt.Dtype = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    params_from: Path | None = typer.Option(None, "--params-from",
                                               help="Take parameters from an earlier output; flags win."),
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
    cpu_threads: opt.CpuThreads = None,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the output paths."),
):
    """Transform IMAGE(s) with a prompt and save the results with their parameters."""
    from .engine import Engine
    from .inpaint import check_repaint_options
    from .request import Request

    err = _console()
    given = {
        "prompt": prompt, "negative_prompt": negative_prompt, "strength": strength, "steps": steps,
        "cfg_scale": cfg_scale, "seed": seed, "sampler": sampler, "scheduler": scheduler, "width": width,
        "height": height, "resize_mode": resize_mode, "batch_size": batch_size, "background": background,
        "keep_size": keep_size or None, "mask_from_alpha": mask_from_alpha or None,
        "invert_mask": invert_mask or None, "mask_blur": mask_blur, "inpaint_fill": inpaint_fill,
        "inpaint_area": inpaint_area, "inpaint_padding": inpaint_padding, "outpaint": outpaint,
        "noise_multiplier": noise_multiplier,
    }
    fields = {k: v for k, v in given.items() if v is not None}
    fields.update(opt.prompt_fields(subseed, subseed_strength, clip_skip, style, color_correction))
    stored_hash = stored_mask_hash = None
    if params_from is not None:
        stored = _stored_fields(params_from)
        stored_model, stored_hash = stored.pop("model", None), stored.pop("model_hash", None)
        stored_mask_hash = stored.pop("mask_hash", None)
        if stored_mask_hash and mask is None and not mask_from_alpha:
            raise InvalidRequest(f"{params_from} was made with a mask (Mask hash {stored_mask_hash}); masks are not "
                                 "stored in outputs: pass the same mask again with --mask FILE", "mask")
        fields = {**stored, **fields}
        model = model or _usable_model_name(stored_model)
    if "prompt" not in fields:
        raise InvalidRequest("a prompt is required: pass --prompt/-p (or --params-from an earlier output)")
    if output is not None and len(images) > 1:
        raise InvalidRequest("--output names one file; with several inputs use --output-dir")
    if output is not None and output_dir is not None:
        raise InvalidRequest("use either --output or --output-dir, not both")
    from .images import resolve_format

    resolve_format(fmt, output)  # a bad or disagreeing --format fails now, not after the generation
    request = Request(**fields)
    engine = Engine(model, device=device, dtype=dtype, safety_checker=not no_safety_checker,
                    allow_unsafe_checkpoint=allow_unsafe_checkpoint, max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
                    config=model_config, lora_dir=lora_dir, embeddings_dir=embeddings_dir, styles_file=styles_file,
                    **opt.engine_speed_kwargs(vae, backend, compile, offload, cpu_threads))
    if model_config is not None and engine.source.kind != "file":
        raise InvalidRequest("--model-config is only used with a single-file .safetensors --model")
    request = engine.prepare(request)  # fail on bad parameters before any model loads
    if check_repaint_options(request, mask is not None) and mask is not None and not mask.is_file():
        raise ImageError(f"mask {mask}: no such file")
    if not quiet:
        where = "" if engine.source.kind != "hub" or engine.source.name == engine.source.location \
            else f" ({engine.source.location})"
        err.print(f"model {engine.source.name}{where} on {engine.device}, {engine.dtype}{_speed_summary(engine)}; "
                  f"{request.steps} steps x strength {request.strength:g} = "
                  f"{request.effective_steps} denoising steps")
    inputs = {p.resolve() for p in images} | ({mask.resolve()} if mask is not None else set())
    failures = 0
    for image_path in images:
        try:
            result = _run_one(engine, request, image_path, mask, quiet, err)
            if stored_hash and result.infotexts and f"Model hash: {stored_hash}" not in result.infotexts[0]:
                err.print(f"[yellow]note:[/] the stored parameters came from a model with hash {stored_hash}; "
                          "this model differs, so the output will too")
            if stored_mask_hash and result.infotexts and f"Mask hash: {stored_mask_hash}" not in result.infotexts[0]:
                err.print(f"[yellow]note:[/] the stored parameters came from a mask with hash {stored_mask_hash}; "
                          "this mask differs, so the output will too")
            from .outputs import output_paths, save_result

            paths = output_paths(image_path.stem, result.seeds, path=output, output_dir=output_dir, fmt=fmt,
                                 overwrite=overwrite)
            clash = [p for p in paths if p.resolve() in inputs]
            if clash:
                raise OutputError(f"{clash[0]}: refusing to overwrite an input image")
            saved = save_result(result, paths, fmt=fmt, overwrite=overwrite)
        except (ImageError, OutputError) as exc:  # this input fails; the others still run
            if _state["debug"]:
                raise
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        for path, seed, image in zip(saved, result.seeds, result.images):
            if quiet:
                print(path)
            else:
                size = f"{image.width}x{image.height}"
                if (image.width, image.height) != (result.width, result.height):
                    size += f", generated at {result.width}x{result.height}"
                err.print(f"wrote {path} (seed {seed}, {size})")
                for line in result.notices:
                    err.print(f"[yellow]note:[/] {line}")
    if failures:
        raise typer.Exit(2)


def _speed_summary(engine) -> str:
    """What the user did not choose but should know: automatic bf16, threads, the autoencoder and backend."""
    parts = []
    if engine.device == "cpu":
        parts.append(f"{engine.cpu_threads} threads")
    if engine.acceleration.backend != "torch" or engine.acceleration.vae or engine.acceleration.compile:
        parts.append(engine.acceleration.describe())
    return f" ({', '.join(parts)})" if parts else ""


def _run_one(engine, request, image_path: Path, mask: Path | None, quiet: bool, err):
    if quiet or not err.is_terminal:  # a progress bar only where someone watches it
        return engine.run(request, image_path, mask=mask)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(f"{image_path.name}: loading", total=None)

        def on_step(step: int, total: int, _latents) -> None:
            progress.update(task, description=f"{image_path.name}: denoising", completed=step, total=total)

        return engine.run(request, image_path, mask=mask, on_step=on_step)


def _stored_fields(path: Path) -> dict:
    from .images import read_infotext
    from .infotext import fields_from_infotext

    text = read_infotext(path)
    if not text:
        raise InvalidRequest(f"{path}: has no stored generation parameters")
    return fields_from_infotext(text)


def _usable_model_name(name: str | None) -> str | None:
    """A stored model name is used only when it is an alias or hub id; a bare folder name is not a path."""
    from .models import _HUB_ID, ALIASES

    if name is None or name in ALIASES or _HUB_ID.match(name):
        return name
    raise InvalidRequest(f"the stored parameters name model {name!r}, which is not an alias or hub id; "
                         "pass --model with its folder or file")


@app.command()
def info(
    file: Path = typer.Argument(..., help="An image written by img2img (or A1111)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
):
    """Show the generation parameters stored in an output image."""
    from .images import read_infotext
    from .infotext import parse_infotext

    text = read_infotext(file)
    if not text:
        raise InvalidRequest(f"{file}: has no stored generation parameters")
    if as_json:
        prompt, negative, params = parse_infotext(text)
        print(json.dumps({"prompt": prompt, "negative_prompt": negative, "parameters": params,
                          "infotext": text}, indent=2, ensure_ascii=False))
    else:
        print(text)


@app.command()
def models():
    """List model aliases, what they point to, and whether each is in the local cache."""
    from .models import ALIASES, DEFAULT_MODEL, is_cached, resolve_model

    rows = [("alias", "hub id", "native", "cached", "about")]
    for alias in ALIASES.values():
        name = alias.name + (" (default)" if alias.name == DEFAULT_MODEL else "")
        cached = "yes" if is_cached(resolve_model(alias.name)) else "no"
        rows.append((name, alias.repo, f"{alias.native}px", cached, alias.description))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    print("Also accepted by --model: any hub id, a local diffusers folder, or a .safetensors file.")


@app.command()
def loras(
    lora_dir: opt.LoraDir = None,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
):
    """List the LoRA files prompts can name with <lora:name:weight>."""
    from .networks import list_files, lora_hash, pickle_files
    from .networks import lora_dir as resolve_lora_dir

    folder = resolve_lora_dir(lora_dir)
    found = list_files(folder)
    rows = [{"name": f.name, "path": str(f.path), "hash": lora_hash(f)[:12]} for f in found.values()]
    if as_json:
        print(json.dumps({"folder": str(folder), "loras": rows}, indent=2))
        return
    print(f"{folder}: {len(rows)} LoRA file(s)" + ("" if folder.is_dir() else " (folder does not exist)"))
    for row in rows:
        print(f"  <lora:{row['name']}:1>  {row['hash']}  {row['path']}")
    for path in pickle_files(folder):
        print(f"  skipped {path}: pickle files can run code; convert it to .safetensors")


@app.command()
def styles(
    styles_file: opt.StylesFile = None,
):
    """List the prompt styles --style can name (A1111's styles.csv)."""
    from .styles import load_styles
    from .styles import styles_file as resolve_styles_file

    path = resolve_styles_file(styles_file)
    found = load_styles(path)
    print(f"{path}: {len(found)} style(s)" + ("" if path.is_file() else " (file does not exist)"))
    for style in found.values():
        negative = f"  (negative: {style.negative_prompt})" if style.negative_prompt else ""
        print(f"  {style.name}: {style.prompt}{negative}")


@app.command()
def samplers():
    """List the accepted sampler and schedule names (A1111 names)."""
    from .models import STANDARD
    from .schedulers import SAMPLERS, SCHEDULES, describe

    print("Samplers (with the Automatic schedule -> the diffusers scheduler they run):")
    names = [s.name + (" (default)" if s.name == STANDARD.sampler else "") for s in SAMPLERS.values()]
    width = max(len(name) for name in names)
    for name, sampler in zip(names, SAMPLERS.values()):
        print(f"  {name.ljust(width)}  Automatic = {sampler.automatic_schedule.ljust(11)}  ->  "
              f"{describe(sampler.name)}")
    print("Schedule types: " + ", ".join(SCHEDULES))
    print('"Automatic = Uniform" keeps the model\'s own timestep spacing.')
    print('Legacy combined names such as "DPM++ 2M Karras" are accepted too. docs/server.md has the table.')


def _register_subsystem_commands() -> None:
    """`serve` and `batch` live with their subsystems; their modules import nothing heavy at import time."""
    import importlib

    for name in ("server", "batch"):
        try:
            module = importlib.import_module(f"{__package__}.{name}.command")
        except ModuleNotFoundError as exc:
            if exc.name not in (f"{__package__}.{name}", f"{__package__}.{name}.command"):
                raise
            continue
        module.register(app)


_register_subsystem_commands()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: Img2ImgError -> one line on stderr and exit code 2 (traceback with --debug)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        code = app(args=args, standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except Img2ImgError as exc:
        if "--debug" in args:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # usage errors; typer may vendor click, so match by class name
        kinds = {cls.__name__ for cls in type(exc).__mro__}
        if "ClickException" in kinds:
            exc.show()
            sys.exit(2 if "UsageError" in kinds else exc.exit_code)
        if "Abort" in kinds:
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
