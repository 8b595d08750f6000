"""Other autoencoders for a pipeline: the tiny ones (TAESD, TAESDXL) and any VAE folder or file.

At one denoising step the full VAE is most of a call's work (~3.6 TFLOP at 512² against ~0.8 for a UNet
step); TAESD does the same job for a few percent of that, with slightly softer detail.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidRequest, ModelNotAvailable

# The tiny autoencoders by family: SD 1/2 latents and SDXL latents differ, so each has its own.
TINY_REPOS = {"taesd": "madebyollin/taesd", "taesdxl": "madebyollin/taesdxl"}


def vae_name(spec: str | None) -> str | None:
    """What infotexts call the autoencoder: taesd, a hub id, or a folder's or file's name (never a full path)."""
    if not spec or spec in TINY_REPOS:
        return spec
    path = Path(spec).expanduser()
    return path.stem if path.is_file() else path.name if path.is_dir() else spec


def tiny_repo(spec: str, is_xl: bool) -> str:
    """`taesd` means the tiny autoencoder of the model's family; `taesdxl` on a non-XL model is a mistake."""
    if spec == "taesdxl" and not is_xl:
        raise InvalidRequest("vae taesdxl is for SDXL models; this model is SD 1/2-family: use taesd", "vae")
    return TINY_REPOS["taesdxl" if is_xl else "taesd"]


def _class_for_config(config: dict):
    import diffusers

    name = config.get("_class_name", "AutoencoderKL")
    if name not in ("AutoencoderKL", "AutoencoderTiny"):
        raise ModelNotAvailable(f"VAE class {name} is not supported (use an AutoencoderKL or AutoencoderTiny)")
    return getattr(diffusers, name)


def _from_folder(folder: Path, dtype):
    import json

    from ..models import dtype_kwargs

    config_file = folder / "config.json"
    if not config_file.is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"  # a whole pipeline folder: take its VAE
        config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelNotAvailable(f"{folder}: no config.json; is it a diffusers VAE folder?")
    cls = _class_for_config(json.loads(config_file.read_text()))
    return cls.from_pretrained(str(folder), **dtype_kwargs(dtype), local_files_only=True)


def _from_file(path: Path, dtype, reference_config):
    """A .safetensors VAE: diffusers-format tiny or KL weights, or an original (LDM/A1111) KL VAE file."""
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny
    from safetensors.torch import load_file

    if path.suffix.lower() != ".safetensors":
        raise ModelNotAvailable(f"{path}: VAE files must be .safetensors (pickle files can run code when loaded)")
    try:
        weights = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ModelNotAvailable(f"{path}: not a readable .safetensors file ({exc})") from None
    if "encoder.layers.0.weight" in weights:  # a tiny autoencoder; its width is in its first layer
        width = weights["encoder.layers.0.weight"].shape[0]
        vae = AutoencoderTiny(encoder_block_out_channels=(width,) * 4, decoder_block_out_channels=(width,) * 4)
    else:
        vae = AutoencoderKL.from_config(reference_config)
        if any(k.startswith("encoder.down.") for k in weights):  # original layout, as A1111 loads it
            from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

            weights = convert_ldm_vae_checkpoint(weights, dict(vae.config))
    missing, unexpected = vae.load_state_dict(weights, strict=False)
    if missing:
        raise ModelNotAvailable(f"{path}: not a VAE for this model ({len(missing)} weights missing, "
                                f"e.g. {missing[0]})")
    return vae.to(getattr(torch, dtype)).eval()


def _from_hub(repo: str, dtype):
    from diffusers import AutoencoderKL, AutoencoderTiny
    from huggingface_hub import try_to_load_from_cache

    from ..models import dtype_kwargs, hub_offline, hub_reachable

    cls = AutoencoderTiny if repo in TINY_REPOS.values() else AutoencoderKL
    if isinstance(try_to_load_from_cache(repo, "config.json"), str):
        try:
            return cls.from_pretrained(repo, **dtype_kwargs(dtype), local_files_only=True)
        except (OSError, ValueError):
            pass  # incomplete cache: download below if possible
    if hub_offline() or not hub_reachable():
        raise ModelNotAvailable(
            f"VAE {repo} is not in the local cache and cannot be downloaded now; connect once so it is cached, "
            "or pass a local VAE folder or .safetensors file with --vae")
    try:
        return cls.from_pretrained(repo, **dtype_kwargs(dtype))
    except (OSError, ValueError) as exc:
        raise ModelNotAvailable(f"VAE {repo}: download failed ({exc})") from None


def load_vae(spec: str, *, is_xl: bool, dtype: str, reference_config):
    """The autoencoder `spec` names: taesd/taesdxl, a hub id, a local folder or a .safetensors file."""
    path = Path(spec).expanduser()
    if spec in TINY_REPOS:
        return _from_hub(tiny_repo(spec, is_xl), dtype)
    if path.is_dir():
        return _from_folder(path, dtype)
    if path.is_file():
        return _from_file(path, dtype, reference_config)
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return _from_hub(spec, dtype)
    raise ModelNotAvailable(f"vae {spec}: no such file or folder, and not taesd, taesdxl or a hub id")


def is_tiny(vae) -> bool:
    return type(vae).__name__ == "AutoencoderTiny"


def cached_tiny(is_xl: bool, dtype: str, device: str):
    """The family's tiny autoencoder when it is already in the local cache (for previews); never downloads."""
    from huggingface_hub import try_to_load_from_cache

    repo = TINY_REPOS["taesdxl" if is_xl else "taesd"]
    if not isinstance(try_to_load_from_cache(repo, "config.json"), str):
        return None
    from diffusers import AutoencoderTiny

    from ..models import dtype_kwargs

    try:
        return AutoencoderTiny.from_pretrained(repo, **dtype_kwargs(dtype), local_files_only=True).to(device)
    except (OSError, ValueError):
        return None
