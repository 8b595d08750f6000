"""The OpenVINO backend (CPU): the UNet and the autoencoder run as OpenVINO models, the rest stays in torch.

Each network is converted from the loaded torch module with OpenVINO's own converter, once, into a cache
folder keyed by a fingerprint of its weights (the model's hash for the UNet), and reused afterwards. The
pipeline keeps its diffusers scheduler, text encoders and callbacks: only the heavy networks are swapped
for small torch modules that call the compiled OpenVINO models, so every sampler and option of the torch
path works unless it needs to change the UNet's weights (LoRA), which is refused clearly.

With bfloat16 the models compile with OpenVINO's bf16 inference precision (on CPUs with AVX-512 BF16 or
AMX a UNet step runs near the CPU's bf16 peak); with float32, in float32.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from ..errors import Img2ImgError, InvalidRequest

EXPORT_FORMAT = 1  # bump when the exported graphs' inputs or outputs change


def cache_root() -> Path:
    from ..datadir import cache_dir

    return cache_dir() / "openvino"


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise Img2ImgError("backend openvino needs its extra: pip install 'img2img[openvino]'") from None
    return openvino


def weights_fingerprint(module) -> str:
    """sha256 over a module's parameter names, shapes and bytes: the cache key of its export."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _cache_key(kind: str, fingerprint: str, config) -> str:
    import openvino

    payload = json.dumps({"kind": kind, "weights": fingerprint, "config": dict(config), "format": EXPORT_FORMAT,
                          "openvino": openvino.__version__.split("-")[0]}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def _export(folder: Path, convert, progress, what: str) -> Path:
    """Convert once into folder/model.xml (written under a temporary name, then renamed)."""
    import openvino as ov

    target = folder / "model.xml"
    if target.is_file():
        return target
    folder.parent.mkdir(parents=True, exist_ok=True)
    progress(f"openvino: exporting {what} (once; cached in {folder}) ...")
    start = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        ov.save_model(convert(), str(scratch / "model.xml"), compress_to_fp16=True)
        try:
            scratch.rename(folder)
        except OSError:  # another process finished the same export first
            if not target.is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    progress(f"openvino: exported {what} in {time.perf_counter() - start:.0f} s")
    return target


class _Compiled:
    """One OpenVINO model compiled for the CPU; the exported graph has dynamic batch and spatial sizes."""

    def __init__(self, path: Path, precision: str):
        import openvino as ov
        import torch

        core = ov.Core()
        core.set_property({"CACHE_DIR": str(path.parent / "compiled")})
        self.model = core.compile_model(str(path), "CPU", {
            "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads()})
        self.request = self.model.create_infer_request()

    def __call__(self, *inputs):
        import numpy as np
        import torch

        arrays = [np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy()) for t in inputs]
        result = self.request.infer(arrays, share_inputs=True)
        return torch.from_numpy(np.array(result[self.model.output(0)]))


def _module_base():
    import torch

    class OpenVINOModule(torch.nn.Module):
        """A torch module that stands in for a converted network; weights live in OpenVINO."""

        def __init__(self, config, dtype):
            super().__init__()
            self.config = config
            self._dtype = dtype

        @property
        def dtype(self):
            return self._dtype

        @property
        def device(self):
            return torch.device("cpu")

    return OpenVINOModule


def _unet_class():
    import torch
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    class OpenVINOUNet(_module_base()):
        def __init__(self, compiled: _Compiled, config, dtype, has_text_time: bool):
            super().__init__(config, dtype)
            self.compiled = compiled
            self.has_text_time = has_text_time

        def forward(self, sample, timestep, encoder_hidden_states, timestep_cond=None, attention_mask=None,
                    cross_attention_kwargs=None, added_cond_kwargs=None, return_dict=True, **unsupported):
            if cross_attention_kwargs or timestep_cond is not None or attention_mask is not None or \
                    any(v is not None for v in unsupported.values()):
                raise InvalidRequest("this feature changes the UNet at run time, which backend openvino cannot do "
                                     "(it runs an exported UNet); use backend torch", "backend")
            timesteps = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(sample.shape[0])
            inputs = [sample, timesteps, encoder_hidden_states]
            if self.has_text_time:
                inputs += [added_cond_kwargs["text_embeds"], added_cond_kwargs["time_ids"]]
            out = self.compiled(*inputs).to(sample.dtype)
            return UNet2DConditionOutput(sample=out) if return_dict else (out,)

    return OpenVINOUNet


def _autoencoder_class():
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
    from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTinyOutput
    from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution

    class OpenVINOAutoencoder(_module_base()):
        """Encodes and decodes with the compiled models; big outputs (use_tiling, set per call by
        backends.sized_for) go through the torch VAE in tiles, which bounds memory."""

        def __init__(self, encoder: _Compiled, decoder: _Compiled, torch_vae, dtype, tiny: bool):
            super().__init__(torch_vae.config, dtype)
            self.encoder_model, self.decoder_model, self.tiny = encoder, decoder, tiny
            self.torch_vae = [torch_vae]  # in a list: not a submodule, so pipeline.to() and hooks skip it
            self.use_tiling = False
            self.use_slicing = False

        def _tiled(self):
            vae = self.torch_vae[0]
            vae.use_tiling, vae.use_slicing = True, self.use_slicing
            return vae

        def encode(self, x, return_dict=True):
            if self.use_tiling:
                vae = self._tiled()
                return vae.encode(x.to(vae.dtype), return_dict=return_dict)
            out = self.encoder_model(x).to(x.dtype)
            if self.tiny:
                return AutoencoderTinyOutput(latents=out) if return_dict else (out,)
            posterior = DiagonalGaussianDistribution(out)
            return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

        def decode(self, z, return_dict=True, generator=None):
            if self.use_tiling:
                vae = self._tiled()
                return vae.decode(z.to(vae.dtype), return_dict=return_dict)
            out = self.decoder_model(z).to(z.dtype)
            return DecoderOutput(sample=out) if return_dict else (out,)

    return OpenVINOAutoencoder


def _convert_unet(unet):
    import torch

    from .torch_backend import dummy_unet_inputs

    text_time = unet.config.addition_embed_type == "text_time"

    class Exported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
            added = {"text_embeds": text_embeds, "time_ids": time_ids} if text_time else None
            return self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False)[0]

    def convert():
        args, kwargs = dummy_unet_inputs(unet, 2, 64 * 8, 64 * 8, "cpu", torch.float32)
        sample, _, context = args
        example = [sample, torch.full((2,), 500.0), context]
        if text_time:
            example += [kwargs["added_cond_kwargs"]["text_embeds"], kwargs["added_cond_kwargs"]["time_ids"]]
        return _trace_and_convert(Exported().eval(), unet, tuple(example))

    return convert


def _convert_autoencoder(vae, part: str):
    import torch

    tiny = type(vae).__name__ == "AutoencoderTiny"

    class Exported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = vae

        def forward(self, x):
            if part == "encoder":
                return vae.encoder(x) if tiny else vae._encode(x)
            return vae.decoder(x) if tiny else vae._decode(x).sample

    def convert():
        channels = vae.config.latent_channels
        example = torch.zeros(1, 3, 256, 256) if part == "encoder" else torch.zeros(1, channels, 32, 32)
        return _trace_and_convert(Exported().eval(), vae, (example,))

    return convert


def _trace_and_convert(wrapper, module, example: tuple):
    """Trace in float32 (the compiled precision is chosen at load) and convert; input sizes stay dynamic.

    Tracing here without the trace check that the converter would run saves most of the export time.
    """
    import warnings

    import openvino as ov
    import torch

    original = module.dtype
    module.to(torch.float32)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python branches on static config values
            traced = torch.jit.trace(wrapper, example, check_trace=False, strict=False)
            return ov.convert_model(traced, example_input=example)
    finally:
        module.to(original)


def apply(pipe, dtype: str, *, model_hash: str | None = None, progress=print) -> None:
    """Swap the pipeline's UNet and autoencoder for OpenVINO-compiled ones (exported on first use)."""
    _import_openvino()
    import torch

    precision = "bf16" if dtype == "bfloat16" else "f32"
    if dtype == "float16":
        precision = "f16"
    root = cache_root()
    unet, vae = pipe.unet, pipe.vae
    unet_key = _cache_key("unet", model_hash or weights_fingerprint(unet), unet.config)
    vae_key = weights_fingerprint(vae)
    unet_path = _export(root / unet_key, _convert_unet(unet), progress, "the UNet")
    encoder_path = _export(root / _cache_key("vae-encoder", vae_key, vae.config),
                           _convert_autoencoder(vae, "encoder"), progress, "the VAE encoder")
    decoder_path = _export(root / _cache_key("vae-decoder", vae_key, vae.config),
                           _convert_autoencoder(vae, "decoder"), progress, "the VAE decoder")
    start = time.perf_counter()
    torch_dtype = getattr(torch, dtype)  # what the torch side (text encoders) computes in; I/O is converted
    pipe.unet = _unet_class()(_Compiled(unet_path, precision), unet.config, torch_dtype,
                              unet.config.addition_embed_type == "text_time")
    pipe.vae = _autoencoder_class()(_Compiled(encoder_path, precision), _Compiled(decoder_path, precision),
                                    vae, torch_dtype, type(vae).__name__ == "AutoencoderTiny")
    progress(f"openvino: UNet and VAE compiled for the CPU ({precision}) in {time.perf_counter() - start:.1f} s")
