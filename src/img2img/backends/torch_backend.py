"""The torch backend: device placement or offload, memory layout, fused attention projections, torch.compile."""

from __future__ import annotations

import time

GIB = 2**30
# Room for activations on top of the weights (512² at float16 with CFG needs ~2-3 GiB in the UNet and VAE).
WORKING_MEMORY = 3 * GIB


def choose_offload(free_bytes: int, weights_bytes: int, largest_component_bytes: int,
                   working: int = WORKING_MEMORY) -> str:
    """none when everything fits, model when one component at a time fits, else sequential (layer by layer)."""
    if weights_bytes + working <= free_bytes:
        return "none"
    if largest_component_bytes + working <= free_bytes:
        return "model"
    return "sequential"


def _component_bytes(pipe) -> dict[str, int]:
    import torch

    sizes = {}
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            sizes[name] = sum(p.numel() * p.element_size() for p in component.parameters())
    return sizes


def place(pipe, device: str, offload: str) -> list[str]:
    """Move the pipeline to `device`, or set up CPU offload on a GPU too small to hold it (auto: decided
    from free memory). Returns notices."""
    if device.split(":")[0] != "cuda":
        return []  # loaded on the CPU already; on MPS moving is enough
    import torch

    if offload == "auto":
        sizes = _component_bytes(pipe)
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        offload = choose_offload(free, sum(sizes.values()), max(sizes.values(), default=0))
        chosen = f"offload {offload} (automatic: {free / GIB:.1f} GiB free on {device}, " \
                 f"weights {sum(sizes.values()) / GIB:.1f} GiB)"
    else:
        chosen = f"offload {offload}"
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    return [chosen] if offload != "none" else []


def dummy_unet_inputs(unet, batch: int, height: int, width: int, device, dtype) -> tuple[tuple, dict]:
    """Zero inputs of the right shapes for one UNet evaluation at a pixel size (warm-ups, FLOP counts)."""
    import torch

    config = unet.config
    sample = torch.zeros(batch, config.in_channels, height // 8, width // 8, device=device, dtype=dtype)
    context = torch.zeros(batch, 77, config.cross_attention_dim, device=device, dtype=dtype)
    kwargs = {}
    if config.addition_embed_type == "text_time":  # SDXL: pooled text embedding and size/crop ids
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.zeros(batch, pooled, device=device, dtype=dtype),
                                       "time_ids": torch.zeros(batch, 6, device=device, dtype=dtype)}
    return (sample, torch.tensor(500, device=device), context), kwargs


def optimize(pipe, device: str, *, compile: bool | str = False, channels_last: bool | None = None,
             fuse_qkv: bool | None = None, progress=print) -> None:
    """Apply the layout and fusion that pay off on this device (None = automatic), and torch.compile.

    On CUDA: channels_last convolutions and fused q/k/v projections (one matmul instead of three). On the CPU
    they stay off: channels_last made the tiny autoencoder several times slower here, and neither gave the
    UNet a gain that stood out from measurement noise. Attention is torch's SDPA either way (diffusers' default
    processor).
    """
    import torch

    cuda = device.split(":")[0] == "cuda"
    if channels_last if channels_last is not None else cuda:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if (fuse_qkv if fuse_qkv is not None else cuda) and hasattr(pipe, "fuse_qkv_projections"):
        pipe.fuse_qkv_projections(unet=True, vae=type(pipe.vae).__name__ == "AutoencoderKL")
    if compile:
        progress(compile_and_warm_up(pipe, device, "inductor" if compile is True else compile, progress))


def compile_and_warm_up(pipe, device: str, backend: str, progress=print) -> str:
    """torch.compile the UNet and the VAE's encode/decode, then run each once at the native size so the
    first request does not pay for compilation. The compiled modules stay in the cached pipeline."""
    import torch

    pipe.unet = torch.compile(pipe.unet, backend=backend)
    pipe.vae.encode = torch.compile(pipe.vae.encode, backend=backend)
    pipe.vae.decode = torch.compile(pipe.vae.decode, backend=backend)
    vae_scale = getattr(pipe, "vae_scale_factor", 8)
    size = pipe.unet.config.sample_size
    side = (size if isinstance(size, int) else size[0]) * vae_scale
    dtype = pipe.unet.dtype
    progress(f"compiling the UNet and VAE ({backend}) with a warm-up at {side}x{side} ...")
    start = time.perf_counter()
    with torch.no_grad():
        args, kwargs = dummy_unet_inputs(pipe.unet, 1, side, side, device, dtype)
        pipe.unet(*args, **kwargs)
        pixels = torch.zeros(1, 3, side, side, device=device, dtype=pipe.vae.dtype)
        pipe.vae.encode(pixels)
        pipe.vae.decode(torch.zeros(1, pipe.vae.config.latent_channels, side // vae_scale, side // vae_scale,
                                    device=device, dtype=pipe.vae.dtype))
    return f"compiled the UNet and VAE ({backend}); warm-up took {time.perf_counter() - start:.1f} s"
