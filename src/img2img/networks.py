"""LoRA and textual-inversion files: find them by name, hash them as A1111 does, use them for one request.

- LoRA: `<lora:name:weight>` in a prompt names `name.safetensors` in the LoRA folder (kohya/A1111 keys as
  Civitai files have them, or diffusers/PEFT keys). Loaded weights are kept in memory; the adapters are
  added to the pipeline for one request and removed after it, so the next request sees the plain model.
- Embeddings: every `.safetensors` embedding in the embeddings folder whose vectors fit the model's text
  encoder(s) is usable by its file name in a prompt (A1111's layouts, incl. SDXL's clip_l/clip_g).
Pickle files (.pt, .ckpt, .bin) can run code when loaded and are never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .datadir import folder_setting
from .errors import InvalidRequest
from .prompts import NetworkTag

LORA_DIR_VARIABLE = "IMG2IMG_LORA_DIR"
EMBEDDINGS_DIR_VARIABLE = "IMG2IMG_EMBEDDINGS_DIR"
PICKLE_SUFFIXES = (".pt", ".ckpt", ".bin", ".pth")
SHORT_HASH = 12  # A1111's short hash for LoRAs and embeddings in infotexts


def lora_dir(explicit=None) -> Path:
    return folder_setting(explicit, LORA_DIR_VARIABLE, "loras")


def embeddings_dir(explicit=None) -> Path:
    return folder_setting(explicit, EMBEDDINGS_DIR_VARIABLE, "embeddings")


class NetworkError(InvalidRequest):
    """A network named in a prompt cannot be used; `tag` is the text that named it."""

    def __init__(self, message: str, tag: str = ""):
        super().__init__(message, "prompt")
        self.tag = tag


@dataclass(frozen=True)
class NetworkFile:
    name: str  # the file name without its suffix: what prompts use
    path: Path
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple:
        return (str(self.path), self.size, self.mtime_ns)

    def metadata(self) -> dict[str, str]:
        return _safetensors_header(self.path).get("__metadata__") or {}


def list_files(folder: Path) -> dict[str, NetworkFile]:
    """name -> file for the .safetensors files under a folder (subfolders too; the first path wins a name)."""
    found: dict[str, NetworkFile] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.rglob("*"), key=lambda p: str(p).lower()):
        if path.suffix.lower() == ".safetensors" and path.is_file():
            stat = path.stat()
            found.setdefault(path.stem, NetworkFile(path.stem, path, stat.st_size, stat.st_mtime_ns))
    return found


def pickle_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES) if folder.is_dir() else []


def _safetensors_header(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            length = struct.unpack("<Q", handle.read(8))[0]
            if length > 100 * 1024 * 1024:
                raise ValueError("header too large")
            return json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise NetworkError(f"{path}: not a readable .safetensors file ({exc})") from None


_HASHES: dict[tuple, str] = {}
_HASH_LOCK = threading.Lock()


def _sha256(file: NetworkFile, skip_header: bool) -> str:
    key = (*file.key, skip_header)
    with _HASH_LOCK:
        if key not in _HASHES:
            digest = hashlib.sha256()
            with open(file.path, "rb") as handle:
                if skip_header:
                    handle.seek(8 + struct.unpack("<Q", handle.read(8))[0])
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            _HASHES[key] = digest.hexdigest()
        return _HASHES[key]


def lora_hash(file: NetworkFile) -> str:
    """A1111's LoRA hash: the trainer's recorded one, else sha256 of the tensor data (header excluded)."""
    return file.metadata().get("sshs_model_hash") or _sha256(file, skip_header=True)


def embedding_hash(file: NetworkFile) -> str:
    """A1111's embedding hash: sha256 of the whole file."""
    return _sha256(file, skip_header=False)


def hashes_param(pairs: list[tuple[str, str]]) -> str | None:
    """The infotext value of `Lora hashes` / `TI hashes`: "name: shorthash, ..." (":" and "," dropped from names)."""
    if not pairs:
        return None
    return ", ".join(f"{name.replace(':', '').replace(',', '')}: {digest[:SHORT_HASH]}" for name, digest in pairs)


class _WeightCache:
    """Tensors of recently used files, so a LoRA or embedding named again is not read from disk again."""

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, dict] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, file: NetworkFile) -> dict:
        with self._lock:
            if file.key in self._items:
                self._items.move_to_end(file.key)
                return self._items[file.key]
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(file.path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise NetworkError(f"{file.path}: cannot read it ({exc})") from None
        with self._lock:
            self._items[file.key] = tensors
            while len(self._items) > 1 and sum(size for _, size, _ in self._items) > self.max_bytes:
                self._items.popitem(last=False)
        return tensors

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


WEIGHTS = _WeightCache()


# ---------------------------------------------------------------- LoRA


@dataclass
class AppliedLoras:
    used: list[tuple[NetworkTag, NetworkFile]] = field(default_factory=list)

    def hashes(self) -> str | None:
        return hashes_param([(tag.name, lora_hash(file)) for tag, file in self.used])


def find_lora(tag: NetworkTag, available: dict[str, NetworkFile], folder: Path) -> NetworkFile:
    if tag.name in available:
        return available[tag.name]
    names = ", ".join(sorted(available)) or "none"
    raise NetworkError(f"LoRA {tag.name!r} not found in {folder} (available: {names})", tag.tag)


@contextlib.contextmanager
def applied_loras(pipe, tags: list[NetworkTag], folder: Path):
    """Add the LoRAs named by `tags` to the pipeline's models for the duration of the block."""
    loras = [t for t in tags if t.kind == "lora"]
    for tag in tags:
        if tag.kind != "lora":
            raise NetworkError(f"<{tag.kind}:...> networks are not supported (only <lora:name:weight>)", tag.tag)
    applied = AppliedLoras()
    if not loras:
        yield applied
        return
    available = list_files(folder)
    chosen: dict[str, NetworkTag] = {}
    for tag in loras:  # a name given twice: the first tag counts, as one adapter
        chosen.setdefault(tag.name, tag)
    files = {name: find_lora(tag, available, folder) for name, tag in chosen.items()}
    names = []
    try:
        for index, (name, tag) in enumerate(chosen.items()):
            names.append(f"img2img_{index}")
            _load_lora(pipe, files[name], names[-1], tag)
            applied.used.append((tag, files[name]))
        _set_weights(pipe, names, list(chosen.values()))
        yield applied
    finally:
        pipe.unload_lora_weights()  # also after a failed load: nothing of this request stays in the models


def _load_lora(pipe, file: NetworkFile, adapter: str, tag: NetworkTag) -> None:
    import logging
    import warnings

    before = {c: set(a) for c, a in pipe.get_list_adapters().items()}
    state = dict(WEIGHTS.get(file))  # diffusers pops keys from the dict it is given
    logging.getLogger("diffusers").disabled = True
    try:
        with warnings.catch_warnings():  # peft warns about a second adapter in one model: that is the point
            warnings.simplefilter("ignore", UserWarning)
            pipe.load_lora_weights(state, adapter_name=adapter)
    except (ValueError, RuntimeError, KeyError, IndexError, TypeError) as exc:
        raise NetworkError(f"LoRA {tag.name!r} does not fit this model ({_first_line(exc)})", tag.tag) from None
    finally:
        logging.getLogger("diffusers").disabled = False
    after = pipe.get_list_adapters()
    if not any(adapter in names and adapter not in before.get(c, ()) for c, names in after.items()):
        raise NetworkError(f"LoRA {tag.name!r} does not fit this model (none of its weights match)", tag.tag)


def _set_weights(pipe, adapters: list[str], tags: list[NetworkTag]) -> None:
    from diffusers.loaders.lora_base import set_adapters_for_text_encoder

    listing = pipe.get_list_adapters()
    for component, present in listing.items():
        model = getattr(pipe, component)
        pairs = [(a, t.unet if component == "unet" else t.text_encoder) for a, t in zip(adapters, tags) if a in present]
        if not pairs:
            continue
        names, weights = [a for a, _ in pairs], [w for _, w in pairs]
        if component == "unet":
            model.set_adapters(names, weights)
        else:
            set_adapters_for_text_encoder(names, model, weights)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# ---------------------------------------------------------------- textual-inversion embeddings


@dataclass
class Embedding:
    name: str
    file: NetworkFile
    vectors: list  # per text encoder index (0: CLIP-L / SD 1-2 encoder, 1: SDXL's OpenCLIP-G); None: absent
    count: int  # vectors per use (tokens it stands for)
    shape: int  # channels (both encoders' summed for SDXL), as A1111 reports

    def describe(self) -> dict:
        return {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": self.shape,
                "vectors": self.count}


@dataclass
class EmbeddingSet:
    loaded: dict[str, Embedding] = field(default_factory=dict)
    skipped: dict[str, Embedding] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # name -> why it is not an embedding

    def vectors(self) -> dict[str, list]:
        return {name: e.vectors for name, e in self.loaded.items()}

    def hashes(self, used: set[str]) -> str | None:
        return hashes_param([(name, embedding_hash(self.loaded[name].file)) for name in sorted(used)])


def encoder_widths(pipe) -> list[int | None]:
    """Token-embedding width of each text encoder slot (None where the pipeline has no such encoder)."""
    widths = []
    for attribute in ("text_encoder", "text_encoder_2"):
        model = getattr(pipe, attribute, None)
        widths.append(model.get_input_embeddings().weight.shape[1] if model is not None else None)
    return widths


def _read_embedding(file: NetworkFile, widths: list[int | None]) -> tuple[Embedding | None, str]:
    tensors = WEIGHTS.get(file)
    if "clip_l" in tensors and "clip_g" in tensors:  # SDXL
        vectors = [tensors["clip_l"], tensors["clip_g"]]
    elif len(tensors) == 1:  # emb_params, string_to_param.*, or a diffusers concept {token: vector}
        vector = next(iter(tensors.values()))
        vectors = [vector.unsqueeze(0) if vector.dim() == 1 else vector]
    else:
        return None, f"not an embedding (tensors: {', '.join(sorted(tensors))[:120]})"
    if any(v.dim() != 2 for v in vectors) or len({v.shape[0] for v in vectors}) != 1:
        return None, "not an embedding (unexpected tensor shapes)"
    embedding = Embedding(file.name, file, vectors, vectors[0].shape[0], sum(v.shape[1] for v in vectors))
    fits = [w for w in widths if w is not None] == [v.shape[1] for v in vectors]
    if fits:
        embedding.vectors = [vectors.pop(0) if w is not None else None for w in widths]
    return embedding, "" if fits else "skipped"


def load_embeddings(pipe, folder: Path) -> EmbeddingSet:
    """Every embedding file in `folder`, sorted into those that fit this pipeline's encoders and the others."""
    found = EmbeddingSet()
    widths = encoder_widths(pipe)
    for name, file in list_files(folder).items():
        try:
            embedding, status = _read_embedding(file, widths)
        except NetworkError as exc:
            found.problems[name] = str(exc)
            continue
        if embedding is None:
            found.problems[name] = status
        elif status:
            found.skipped[name] = embedding
        else:
            found.loaded[name] = embedding
    return found


def describe_embeddings(found: EmbeddingSet) -> dict[str, Any]:
    """A1111's /sdapi/v1/embeddings answer."""
    return {"loaded": {n: e.describe() for n, e in sorted(found.loaded.items())},
            "skipped": {n: e.describe() for n, e in sorted(found.skipped.items())}}
