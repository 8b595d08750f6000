"""How a loaded pipeline runs: which backend (torch or OpenVINO), autoencoder, compilation, offload, tiling.

One interface for the engine and the model cache:
- `Acceleration`: the choices that change how a model is loaded (part of the cache key), validated early;
- `apply(pipe, acceleration, device, dtype)`: at load time, once; returns notices for the user;
- `sized_for(pipe, width, height, batch)`: per call, VAE tiling and batch slicing for big work, undone after.

No torch import at module level: `import img2img` stays light.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from ..errors import InvalidRequest

BACKENDS = ("auto", "torch", "openvino")
OFFLOAD_MODES = ("auto", "none", "model", "sequential")
# Above this many output pixels the VAE decodes (and encodes) in overlapping tiles: its memory grows with the
# image area (a 2048x1536 decode needs >20 GB in one piece) while tiles keep it flat.
TILE_ABOVE_PIXELS = 1_500_000
# Request features the OpenVINO backend cannot do, and why (it runs exported, fixed networks).
OPENVINO_CANNOT = {
    "lora": "LoRA needs --backend torch: backend openvino runs an exported UNet, and fusing LoRAs into it is not "
            "supported yet",
    "tiling": "seamless tiling needs --backend torch: backend openvino runs exported convolutions, whose padding "
              "cannot be switched to wrap around",
}


@dataclass(frozen=True)
class Acceleration:
    """Load-time speed choices. None/"auto" values are decided for the device when the model loads."""

    backend: str = "auto"  # openvino on the CPU when its extra is installed (IMG2IMG_BACKEND overrides), else torch
    vae: str | None = None  # None: the model's own; "taesd" (the family's tiny one), a hub id, folder or file
    compile: bool | str = False  # True: torch.compile with inductor; a string names another torch backend
    offload: str = "auto"  # CUDA only: none, model (one component at a time), sequential (layer by layer)
    # True when the backend was chosen here rather than asked for: then a request it cannot do runs on torch
    # instead of failing. Not part of equality, so it does not split the model cache.
    automatic: bool = field(default=False, compare=False)

    def validated(self, device: str) -> Acceleration:
        backend = (self.backend or "auto").lower()
        if backend not in BACKENDS:
            raise InvalidRequest(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}", "backend")
        offload = (self.offload or "auto").lower()
        if offload not in OFFLOAD_MODES:
            raise InvalidRequest(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {self.offload!r}",
                                 "offload")
        kind = device.split(":")[0]
        automatic = self.automatic or (backend == "auto" and not _backend_from_environment())
        if backend == "auto":
            backend = automatic_backend(kind, compile=bool(self.compile))
        if offload in ("model", "sequential") and kind != "cuda":
            raise InvalidRequest(f"offload {offload} moves weights between CPU and a CUDA GPU; "
                                 f"device {device} has nothing to offload to", "offload")
        vae = (self.vae or "").strip() or None
        if vae and vae.lower() in ("taesd", "taesdxl"):
            vae = vae.lower()
        elif vae and vae.lower() in ("auto", "default", "full"):
            vae = None  # the model's own
        if backend == "openvino":
            if kind != "cpu":
                raise InvalidRequest(f"backend openvino runs on the CPU; device {device} is not supported", "backend")
            if self.compile:
                raise InvalidRequest("compile is a torch backend option; OpenVINO compiles its own models",
                                     "compile")
            if offload in ("model", "sequential"):
                raise InvalidRequest("offload is not supported with backend openvino", "offload")
        return Acceleration(backend, vae, self.compile, offload, automatic)

    def for_features(self, features: list[str]) -> tuple[Acceleration, list[str]]:
        """How a request that needs `features` runs: with this acceleration, or, when this backend cannot do one
        of them, on torch if the backend was chosen automatically (with a notice), else refused with the way
        out (rather than dropped)."""
        missing = [f for f in features if f in OPENVINO_CANNOT] if self.backend == "openvino" else []
        if not missing:
            return self, []
        if not self.automatic:
            raise InvalidRequest(OPENVINO_CANNOT[missing[0]], "backend")
        return replace(self, backend="torch"), [
            f"ran on backend torch: backend openvino (chosen automatically) cannot do {' or '.join(missing)}"]

    def describe(self) -> str:
        parts = [f"backend {self.backend}"]
        if self.vae:
            parts.append(f"vae {self.vae}")
        if self.compile:
            parts.append("compiled" if self.compile is True else f"compiled ({self.compile})")
        return ", ".join(parts)


def openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def automatic_backend(device_kind: str, *, compile: bool = False) -> str:
    """OpenVINO where it is faster and was installed on purpose (the openvino extra): CPU runs that do not ask
    for torch.compile. A UNet step at 512² in bf16 measured 2.07 s there against ~3.5 s in torch."""
    chosen = _backend_from_environment()
    if chosen:
        return chosen
    return "openvino" if device_kind == "cpu" and not compile and openvino_installed() else "torch"


def _backend_from_environment() -> str | None:
    import os

    chosen = os.environ.get("IMG2IMG_BACKEND", "").strip().lower()
    return chosen if chosen in ("torch", "openvino") else None


def apply(pipe, acceleration: Acceleration, device: str, dtype: str, *, is_xl: bool,
          model_hash: str | None = None, progress=print) -> list[str]:
    """Put a freshly loaded pipeline (on the CPU) into its running shape on `device`.

    Returns what it chose (also passed to `progress` as it goes, as long steps like exports report there).
    """
    from . import torch_backend

    said: list[str] = []

    def say(message: str) -> None:
        said.append(message)
        progress(message)

    if acceleration.vae:
        from .autoencoders import load_vae

        pipe.vae = load_vae(acceleration.vae, is_xl=is_xl, dtype=dtype, reference_config=pipe.vae.config)
        say(f"autoencoder: {acceleration.vae} ({type(pipe.vae).__name__})")
    if acceleration.backend == "openvino":
        from . import openvino

        openvino.apply(pipe, dtype, model_hash=model_hash, progress=say)
        return said
    for message in torch_backend.place(pipe, device, acceleration.offload):
        say(message)
    torch_backend.optimize(pipe, device, compile=acceleration.compile, progress=say)
    return said


@contextmanager
def sized_for(pipe, width: int, height: int, batch_size: int, *,
              tile_above: int | None = None) -> Iterator[list[str]]:
    """During one call: VAE tiling for outputs over `tile_above` pixels, one image at a time for batches.

    The flags live on the shared VAE module, so they are restored afterwards (calls are serialized).
    Yields notices for the result.
    """
    tile_above = TILE_ABOVE_PIXELS if tile_above is None else tile_above
    vae = pipe.vae
    saved = (getattr(vae, "use_tiling", None), getattr(vae, "use_slicing", None))
    notices = []
    if saved[0] is not None and width * height > tile_above and not saved[0]:
        vae.use_tiling = True
        notices.append(f"the VAE works in tiles at {width}x{height} (over {tile_above / 1e6:g} MP) to bound memory")
    if saved[1] is not None and batch_size > 1:
        vae.use_slicing = True
    try:
        yield notices
    finally:
        if saved[0] is not None:
            vae.use_tiling = saved[0]
        if saved[1] is not None:
            vae.use_slicing = saved[1]
