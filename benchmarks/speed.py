"""Speed of img2img against bare diffusers on full-size architectures, stage by stage, in one process.

Builds a full-size Stable Diffusion model with random weights offline (speed does not depend on weight values):
SD 2.1-base-shaped by default (UNet 866M, VAE 84M, OpenCLIP-H text encoder 340M parameters), `--family sd15`
or `--family sdxl` for the other shapes, plus a random tiny autoencoder of TAESD's shape. It is built once
into a cache folder and loaded from disk like a real model. Then bare diffusers (image-to-image pipeline,
float32 on CPU, float16 on CUDA, full VAE) and one or more img2img configurations run alternately, after one
warm-up each, with the same image, prompt, seed, size, steps, strength, CFG and sampler. Per call it records
text encoding, VAE encode, every UNet step, VAE decode (by timing the components' calls), peak memory (RSS on
CPU, allocated memory on CUDA) and the total, and prints medians and the ratio ours/bare, by wall time and by
the process's CPU time (which other work on a shared machine distorts less).

    # the CPU target: 512², one UNet step (2 steps x strength 0.5), no CFG, tiny autoencoder, automatic settings
    python benchmarks/speed.py --ours "vae=taesd"
    # several img2img configurations in the same run
    python benchmarks/speed.py --ours "dtype=float32,backend=torch" --ours "vae=taesd,backend=torch" --ours "vae=taesd"
    # a GPU: SD 2.1 base, 512², 25 steps x 0.75, CFG 7, against bare diffusers float16 eager
    python benchmarks/speed.py --device cuda --steps 25 --strength 0.75 --cfg 7 --ours "" --ours "compile=true"
    # a big photo at an explicit size, memory only (no bare run)
    python benchmarks/speed.py --photo 4000x3000 --size 2048x1536 --runs 1 --no-bare --no-warm-up --no-flops --ours ""

Each --ours is a comma-separated list of Engine arguments (dtype, vae, backend, compile, offload, cpu_threads);
"" means all automatic (on a CPU: bfloat16 where it is native, OpenVINO when installed, physical cores).
`vae=taesd` uses the random TAESD-shaped autoencoder built here, not a download.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CACHE = Path(os.environ.get("IMG2IMG_BENCH_CACHE", Path.home() / ".cache" / "img2img-bench"))
PROMPT = "a watercolour painting of a harbour at dawn, soft light"


# ---------------------------------------------------------------- full-size shapes, random weights

def _text_config(hidden: int, layers: int, heads: int, act: str, projection: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                          num_attention_heads=heads, hidden_act=act, projection_dim=projection,
                          vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                          pad_token_id=1)


def _vae(sample_size: int, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                         block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, sample_size=sample_size, **extra)


def build_full_size(family: str, folder: Path) -> Path:
    """A diffusers folder with the architecture of SD 1.5, SD 2.1 base or SDXL base and random weights."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from img2img.testing import _scheduler, write_clip_tokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(folder / "_tokenizer")), model_max_length=77)
    sd_blocks = {"down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "sample_size": 64}
    if family == "sd15":
        unet = UNet2DConditionModel(**sd_blocks, attention_head_dim=8, cross_attention_dim=768)
        text = CLIPTextModel(_text_config(768, 12, 12, "quick_gelu", 768))
        pipe = StableDiffusionPipeline(unet=unet, vae=_vae(512), text_encoder=text, tokenizer=tokenizer,
                                       scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    elif family == "sd21-base":
        unet = UNet2DConditionModel(**sd_blocks, attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
                                    use_linear_projection=True)
        text = CLIPTextModel(_text_config(1024, 23, 16, "gelu", 512))
        pipe = StableDiffusionPipeline(unet=unet, vae=_vae(512), text_encoder=text, tokenizer=tokenizer,
                                       scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    elif family == "tiny":  # for trying the script out in seconds
        from img2img.testing import build_tiny_sd

        return build_tiny_sd(folder)
    elif family == "sdxl":
        unet = UNet2DConditionModel(
            sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
        pipe = StableDiffusionXLPipeline(
            unet=unet, vae=_vae(1024, scaling_factor=0.13025, force_upcast=True),
            text_encoder=CLIPTextModel(_text_config(768, 12, 12, "quick_gelu", 768)),
            text_encoder_2=CLIPTextModelWithProjection(_text_config(1280, 32, 20, "gelu", 1280)),
            tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=_scheduler())
    else:
        raise SystemExit(f"unknown family {family!r}")
    pipe.to(torch.float16).save_pretrained(str(folder), safe_serialization=True)  # half the disk; loads as asked
    return folder


def build_tiny_autoencoder_shape(folder: Path) -> Path:
    """A random AutoencoderTiny with TAESD's (and TAESDXL's) architecture."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny().save_pretrained(str(folder))
    return folder


def cached_build(name: str, builder) -> Path:
    folder = CACHE / name
    if not (folder / ".complete").exists():
        print(f"building {name} with random weights into {folder} (once) ...", flush=True)
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        builder(folder)
        (folder / ".complete").write_text("ok")
    return folder


# ---------------------------------------------------------------- measuring

class PeakMemory:
    """Peak resident memory of this process during a block (sampled), or peak CUDA allocation."""

    def __init__(self, device: str):
        self.device = device
        self.peak_mb = 0.0

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    @contextmanager
    def watch(self):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            yield
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        stop = threading.Event()
        self.peak_mb = self.rss_mb()

        def sample():
            while not stop.wait(0.005):
                self.peak_mb = max(self.peak_mb, self.rss_mb())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.peak_mb = max(self.peak_mb, self.rss_mb())


class StageClock:
    """Times the calls a pipeline makes to its components by wrapping their methods on the instances."""

    def __init__(self, device: str):
        self.device = device
        self.events: list[tuple[str, float]] = []
        self._wrapped: set[int] = set()

    def _sync(self):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def wrap(self, obj, method: str, stage: str) -> None:
        if obj is None or (id(obj), method) in self._wrapped or not hasattr(obj, method):
            return
        original = getattr(obj, method)

        def timed(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            out = original(*args, **kwargs)
            self._sync()
            self.events.append((stage, time.perf_counter() - start))
            return out

        setattr(obj, method, timed)
        self._wrapped.add((id(obj), method))

    def attach(self, pipe) -> None:
        for name in ("text_encoder", "text_encoder_2"):
            self.wrap(getattr(pipe, name, None), "forward", "text")
        self.wrap(pipe.unet, "forward", "unet")
        self.wrap(pipe.vae, "encode", "vae encode")
        self.wrap(pipe.vae, "decode", "vae decode")

    def measure(self, call):
        self.events = []
        self._sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        call()
        self._sync()
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        stages = {"text": 0.0, "vae encode": 0.0, "vae decode": 0.0, "cpu": cpu}
        unet = []
        for stage, seconds in self.events:
            if stage == "unet":
                unet.append(seconds)
            else:
                stages[stage] += seconds
        return {"total": total, **stages, "unet": unet}


# ---------------------------------------------------------------- the two sides

def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height or width)


def parse_ours(text: str, taesd: Path) -> dict:
    options = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        value = value.strip()
        if key == "vae" and value in ("taesd", "taesdxl"):
            value = str(taesd)  # the random TAESD-shaped model, never a download
        elif key in ("compile",):
            value = value.lower() in ("1", "true", "yes", "on")
        elif key == "cpu_threads":
            value = int(value)
        options[key.strip()] = value
    return options


def bare_pipeline(folder: Path, device: str, dtype: str, scheduler_config):
    from diffusers import AutoPipelineForImage2Image, DPMSolverMultistepScheduler

    from img2img.models import dtype_kwargs

    pipe = AutoPipelineForImage2Image.from_pretrained(str(folder), **dtype_kwargs(dtype)).to(device)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(scheduler_config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def machine_summary(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name()} , torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{model}, {os.cpu_count()} logical CPUs{load}, torch {torch.__version__}"


def unet_tflop(pipe, width: int, height: int, cfg: float, device: str) -> float | None:
    """Floating-point operations of one UNet evaluation at this size (2 x multiply-adds), in TFLOP."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        unet = pipe.unet
        batch = 2 if cfg > 1 else 1
        latent = torch.zeros(batch, unet.config.in_channels, height // 8, width // 8, device=device, dtype=unet.dtype)
        cross = unet.config.cross_attention_dim
        context = torch.zeros(batch, 77, cross, device=device, dtype=unet.dtype)
        extra = {}
        if unet.config.addition_embed_type == "text_time":
            extra["added_cond_kwargs"] = {
                "text_embeds": torch.zeros(batch, 1280, device=device, dtype=unet.dtype),
                "time_ids": torch.zeros(batch, 6, device=device, dtype=unet.dtype)}
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            unet(latent, torch.tensor(500, device=device), context, **extra)
        return counter.get_total_flops() / 1e12
    except Exception as exc:  # counting is informative only
        print(f"(could not count UNet FLOPs: {exc})")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--family", default="sd21-base", choices=("sd15", "sd21-base", "sdxl", "tiny"),
                        help="architecture to build (tiny: a few MB, to try the script out)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default=None, help="WxH output size (default: the family's native)")
    parser.add_argument("--photo", default=None, help="WxH of the synthetic input photo (default: --size)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--cfg", type=float, default=1.0, help="CFG scale; <= 1 means no CFG (one UNet batch)")
    parser.add_argument("--runs", type=int, default=3, help="timed calls of each side, alternating")
    parser.add_argument("--ours", action="append", default=None,
                        help='img2img Engine arguments, e.g. "vae=taesd,backend=openvino"; repeatable')
    parser.add_argument("--bare-dtype", default=None, help="bare diffusers dtype (default float32 on CPU, "
                                                           "float16 on CUDA)")
    parser.add_argument("--no-bare", action="store_true", help="skip bare diffusers (big sizes, memory only)")
    parser.add_argument("--warm-up", action=argparse.BooleanOptionalAction, default=True,
                        help="one untimed call per side first (--no-warm-up: load only; for long big-image runs)")
    parser.add_argument("--flops", action=argparse.BooleanOptionalAction, default=True,
                        help="count the UNet's FLOPs with one extra evaluation")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak dense TFLOP/s in the compute dtype, to print the share reached")
    options = parser.parse_args()

    import torch

    from img2img import Engine, models
    from img2img.models import quiet_libraries
    from img2img.testing import make_photo

    quiet_libraries()
    device = options.device
    ours_specs = options.ours if options.ours is not None else ["vae=taesd"]
    models.CACHE.capacity = max(1, len(ours_specs))  # every configuration stays loaded
    folder = cached_build(f"{options.family}-shaped", lambda f: build_full_size(options.family, f))
    taesd = cached_build("taesd-shaped", build_tiny_autoencoder_shape)
    native = {"sdxl": 1024, "tiny": 64}.get(options.family, 512)
    width, height = parse_size(options.size) if options.size else (native, native)
    photo = make_photo(*(parse_size(options.photo) if options.photo else (width, height)))
    print(f"machine: {machine_summary(device)}")
    print(f"model: {options.family}-shaped, random weights; {width}x{height}, {options.steps} steps x strength "
          f"{options.strength:g}, CFG {options.cfg:g}, {options.runs} timed runs each")

    clock = StageClock(device)
    memory = PeakMemory(device)
    sides: dict[str, object] = {}
    engines = {}
    for spec in ours_specs:
        engine = Engine(str(folder), device=device, **parse_ours(spec, taesd))
        label = f"img2img [{spec or 'automatic'}]"
        engines[label] = engine

        def call(engine=engine):
            return engine.transform(photo, PROMPT, seed=1, steps=options.steps, strength=options.strength,
                                    cfg_scale=options.cfg, width=width, height=height)
        sides[label] = call
    results: dict[str, list[dict]] = {}
    peaks: dict[str, tuple[float, float]] = {}  # (process peak, peak above the level before the call)
    flops = None
    for label, call in sides.items():  # warm-up: loads the model and runs once (compiles, if asked)
        start = time.perf_counter()
        engine = engines[label]
        result = call() if options.warm_up else None
        pipe = engine.load().pipe
        clock.attach(pipe)
        notes = f"; notes: {'; '.join(result.notices)}" if result and result.notices else ""
        print(f"{label}: {'warm-up' if result else 'loading'} {time.perf_counter() - start:.1f} s on {engine.device}, "
              f"{engine.dtype}, {engine.acceleration.describe()}, {engine.cpu_threads} CPU threads{notes}", flush=True)
        if options.flops:
            flops = flops or unet_tflop(pipe, width, height, options.cfg, device)
    bare_label = None
    if not options.no_bare:
        bare_dtype = options.bare_dtype or ("float16" if device.startswith("cuda") else "float32")
        bare_label = f"bare diffusers [{bare_dtype}, full VAE]"
        start = time.perf_counter()
        bare = bare_pipeline(folder, device, bare_dtype, next(iter(engines.values())).load().pipe.scheduler.config)

        def call_bare():
            return bare(prompt=PROMPT, image=photo.resize((width, height)), strength=options.strength,
                        num_inference_steps=options.steps, guidance_scale=options.cfg, width=width, height=height,
                        generator=torch.Generator("cpu").manual_seed(1)).images[0]
        call_bare()
        clock.attach(bare)
        sides = {bare_label: call_bare, **sides}
        print(f"{bare_label}: warm-up (incl. loading) {time.perf_counter() - start:.1f} s", flush=True)

    labels = list(sides)
    for run in range(options.runs):
        order = labels if run % 2 == 0 else labels[::-1]
        for label in order:
            before = memory.rss_mb() if not device.startswith("cuda") else 0.0
            with memory.watch():
                measured = clock.measure(sides[label])
            old = peaks.get(label, (0.0, 0.0))
            peaks[label] = (max(old[0], memory.peak_mb), max(old[1], memory.peak_mb - before))
            results.setdefault(label, []).append(measured)
            unet = ", ".join(f"{s:.2f}" for s in measured["unet"])
            print(f"  run {run + 1} {label}: {measured['total']:.2f} s, {measured['cpu']:.1f} CPU s "
                  f"(UNet steps {unet})", flush=True)

    print()
    header = (f"| {'path':<46} | total s | ratio | CPU s | CPU ratio | text s | VAE enc s | UNet s/step | VAE dec s "
              "| peak MiB | +MiB in call |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    bare_total = statistics.median(r["total"] for r in results[bare_label]) if bare_label else None
    bare_cpu = statistics.median(r["cpu"] for r in results[bare_label]) if bare_label else None
    for label in labels:
        runs = results[label]
        total, cpu = statistics.median(r["total"] for r in runs), statistics.median(r["cpu"] for r in runs)
        steps = [s for r in runs for s in r["unet"]]
        per_step = statistics.median(steps) if steps else 0.0
        ratio = f"{total / bare_total:.3f}" if bare_total else "-"
        cpu_ratio = f"{cpu / bare_cpu:.3f}" if bare_cpu else "-"
        print(f"| {label:<46} | {total:7.2f} | {ratio:>5} | {cpu:5.1f} | {cpu_ratio:>9} | "
              f"{statistics.median(r['text'] for r in runs):6.2f} | "
              f"{statistics.median(r['vae encode'] for r in runs):9.2f} | {per_step:11.2f} | "
              f"{statistics.median(r['vae decode'] for r in runs):9.2f} | {peaks[label][0]:8.0f} | "
              f"{peaks[label][1]:12.0f} |")
    if flops:
        print(f"\nUNet: {flops:.3g} TFLOP per evaluation at {width}x{height}")
        for label in labels:
            steps = [s for r in results[label] for s in r["unet"]]
            if steps:
                achieved = flops / statistics.median(steps)
                share = f" = {100 * achieved / options.peak_tflops:.0f}% of {options.peak_tflops:g} peak" \
                    if options.peak_tflops else ""
                print(f"  {label}: {achieved:.2f} TFLOP/s in the UNet{share}")
    if bare_total:
        for label in labels:
            if label != bare_label:
                total = statistics.median(r["total"] for r in results[label])
                cpu = statistics.median(r["cpu"] for r in results[label])
                print(f"{label}: {total / bare_total:.3f}x the time of {bare_label} ({bare_total / total:.1f}x "
                      f"faster); {cpu / bare_cpu:.3f}x its CPU time")
    if hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine slows both sides)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
