"""Prompt texts -> text-encoder embeddings, built the way A1111 builds them.

- A prompt is tokenized fragment by fragment (weights from `prompts.parse_attention`) and cut into
  chunks of 75 tokens (77 with the start and end tokens); a chunk that fills up moves the words after
  a recent comma to the next chunk; `BREAK` starts a new chunk. Each chunk is encoded on its own and
  the chunks are concatenated, so nothing is ever cut off.
- Emphasis: the encoder's output vectors are multiplied by their token's weight, then the whole
  chunk is rescaled so its mean is what it was before (A1111's "Original" emphasis).
- Textual-inversion embeddings replace the tokens of their name with their own vectors.
- SDXL: both encoders, concatenated per token; the pooled vector comes from the first chunk.
A short prompt with no weights gives exactly the tensors diffusers' own `encode_prompt` gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .prompts import BREAK, entry_for_step, parse_attention, prompt_schedule

CHUNK = 75  # tokens per chunk, without the start and end tokens
COMMA_BACKTRACK = 20  # A1111's "prompt word wrap length limit"


@dataclass
class Chunk:
    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    fixes: list[tuple[int, Any]] = field(default_factory=list)  # (offset, embedding vectors)


@dataclass(frozen=True)
class TextEncoder:
    """One tokenizer + text encoder of a pipeline, and which layer's output the UNet gets."""

    tokenizer: Any
    model: Any
    xl: bool  # SDXL-style: a hidden layer without the final norm (diffusers' choice for both SDXL encoders)
    pooled: bool  # this encoder also gives the pooled vector (SDXL's second encoder)
    index: int  # position among the pipeline's encoders (0: CLIP-L, 1: OpenCLIP-G)


def text_encoders(pipe) -> list[TextEncoder]:
    xl = getattr(pipe, "text_encoder_2", None) is not None
    found = []
    for index, (tok, enc) in enumerate((("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))):
        tokenizer, model = getattr(pipe, tok, None), getattr(pipe, enc, None)
        if tokenizer is not None and model is not None:
            found.append(TextEncoder(tokenizer, model, xl, pooled=index == 1, index=index))
    return found


class _Embeddings:
    """Textual-inversion names as token sequences of one tokenizer, longest first (as A1111 matches them)."""

    def __init__(self, tokenizer, vectors_by_name: dict[str, Any]):
        self.by_first: dict[int, list[tuple[list[int], str, Any]]] = {}
        for name, vectors in vectors_by_name.items():
            ids = tokenizer([name], truncation=False, add_special_tokens=False)["input_ids"][0]
            if ids and vectors is not None:
                self.by_first.setdefault(ids[0], []).append((ids, name, vectors))
        for matches in self.by_first.values():
            matches.sort(key=lambda m: len(m[0]), reverse=True)

    def at(self, tokens: list[int], position: int):
        for ids, name, vectors in self.by_first.get(tokens[position], ()):
            if tokens[position:position + len(ids)] == ids:
                return ids, name, vectors
        return None


def build_chunks(text: str, tokenizer, embeddings: _Embeddings | None = None,
                 used: set[str] | None = None) -> list[Chunk]:
    """A1111's chunking of one prompt text for one tokenizer (token ids without start/end tokens)."""
    fragments = parse_attention(text)
    tokenized = tokenizer([t for t, _ in fragments], truncation=False, add_special_tokens=False)["input_ids"]
    comma = tokenizer.get_vocab().get(",</w>")
    chunks: list[Chunk] = []
    chunk = Chunk()
    last_comma = -1

    def close() -> None:
        nonlocal chunk, last_comma
        chunks.append(chunk)
        chunk, last_comma = Chunk(), -1

    for tokens, (fragment, weight) in zip(tokenized, fragments):
        if fragment == BREAK and weight == -1:
            close()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma:
                last_comma = len(chunk.tokens)
            elif (len(chunk.tokens) == CHUNK and last_comma != -1
                  and len(chunk.tokens) - last_comma <= COMMA_BACKTRACK):
                # the chunk is full: carry the words after its last comma over to the next chunk
                keep = last_comma + 1
                carried = Chunk(chunk.tokens[keep:], chunk.weights[keep:])
                chunk.tokens, chunk.weights = chunk.tokens[:keep], chunk.weights[:keep]
                close()
                chunk = carried
            if len(chunk.tokens) == CHUNK:
                close()
            found = embeddings.at(tokens, position) if embeddings else None
            if found is None:
                chunk.tokens.append(token)
                chunk.weights.append(weight)
                position += 1
                continue
            ids, name, vectors = found
            if len(chunk.tokens) + len(vectors) > CHUNK:
                close()
            chunk.fixes.append((len(chunk.tokens), vectors))
            chunk.tokens += [0] * len(vectors)  # placeholders; their vectors are replaced
            chunk.weights += [weight] * len(vectors)
            position += len(ids)
            if used is not None:
                used.add(name)
    if chunk.tokens or not chunks:
        close()
    return chunks


@dataclass
class Encoded:
    hidden: Any  # (1, 77 x chunks, channels)
    pooled: Any = None  # (1, projection) for SDXL


class PromptEncoder:
    """Encodes prompt texts with a pipeline's text encoder(s); results are cached per text."""

    def __init__(self, pipe, *, clip_skip: int = 1, embeddings: dict[str, list] | None = None):
        self.encoders = text_encoders(pipe)
        self.clip_skip = clip_skip
        self.device = pipe._execution_device
        self.dtype = self.encoders[-1].model.dtype  # diffusers casts to the last encoder's dtype
        self.used_embeddings: set[str] = set()
        self._lookups = [
            _Embeddings(e.tokenizer, {name: vectors[e.index] for name, vectors in (embeddings or {}).items()})
            if embeddings else None
            for e in self.encoders
        ]
        self._cache: dict[str, Encoded] = {}

    def encode(self, text: str) -> Encoded:
        if text not in self._cache:
            self._cache[text] = self._encode(text)
        return self._cache[text]

    def empty(self) -> Encoded:
        return self.encode("")

    def _encode(self, text: str) -> Encoded:
        import torch

        per_encoder, pooled = [], None
        for encoder, lookup in zip(self.encoders, self._lookups):
            chunks = build_chunks(text, encoder.tokenizer, lookup, self.used_embeddings)
            outputs = []
            for index, chunk in enumerate(chunks):
                hidden, chunk_pooled = self._encode_chunk(encoder, chunk)
                outputs.append(hidden)
                if encoder.pooled and index == 0:
                    pooled = chunk_pooled
            per_encoder.append(outputs)
        count = max(len(outputs) for outputs in per_encoder)
        for encoder, outputs in zip(self.encoders, per_encoder):  # embeddings of unequal length per encoder
            while len(outputs) < count:
                outputs.append(self._encode_chunk(encoder, Chunk())[0])
        hidden = torch.cat([torch.cat(outputs, dim=-1) for outputs in zip(*per_encoder)], dim=1)
        return Encoded(hidden.to(self.dtype), pooled)

    def _encode_chunk(self, encoder: TextEncoder, chunk: Chunk):
        import torch

        tokenizer, model = encoder.tokenizer, encoder.model
        start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
        filler = CHUNK - len(chunk.tokens)
        ids = [start, *chunk.tokens, end] + [pad] * filler
        weights = [1.0, *chunk.weights, 1.0] + [1.0] * filler
        input_ids = torch.tensor([ids], device=self.device)
        kwargs: dict[str, Any] = {}
        if getattr(model.config, "use_attention_mask", False):
            kwargs["attention_mask"] = torch.tensor([[1] * (len(chunk.tokens) + 2) + [0] * filler],
                                                    device=self.device)
        hook = _replace_vectors(model, chunk.fixes) if chunk.fixes else None
        try:
            with torch.no_grad():
                if encoder.xl:
                    out = model(input_ids, output_hidden_states=True, **kwargs)
                    hidden = out.hidden_states[-(self.clip_skip + 1)]
                    pooled = out[0] if encoder.pooled else None
                elif self.clip_skip <= 1:
                    hidden, pooled = model(input_ids, **kwargs)[0], None
                else:
                    out = model(input_ids, output_hidden_states=True, **kwargs)
                    hidden = getattr(model, "text_model", model).final_layer_norm(out.hidden_states[-self.clip_skip])
                    pooled = None
        finally:
            if hook is not None:
                hook.remove()
        if any(w != 1.0 for w in weights):
            hidden = _emphasize(hidden, weights)
        return hidden, pooled


def _replace_vectors(model, fixes):
    """A forward hook on the token-embedding layer that puts embedding vectors at their offsets (one call)."""
    layer = model.get_input_embeddings()

    def hook(_module, _inputs, output):
        output = output.clone()
        for offset, vectors in fixes:
            vectors = vectors.to(device=output.device, dtype=output.dtype)
            output[0, 1 + offset:1 + offset + vectors.shape[0]] = vectors  # +1: after the start token
        return output

    return layer.register_forward_hook(hook)


def _emphasize(hidden, weights: list[float]):
    """A1111's "Original" emphasis: scale each token's vector by its weight, then restore the mean."""
    import torch

    z = hidden.float()
    original_mean = z.mean()
    z = z * torch.tensor(weights, device=z.device, dtype=z.dtype).reshape(1, -1, 1)
    z = z * (original_mean / z.mean())
    return z.to(hidden.dtype)


# ---------------------------------------------------------------- per-step conditioning for a request


class Conditioning:
    """Prompt and negative prompt embeddings for every denoising step of one request.

    Schedules (`[a:b:when]`, `[a|b]`) give several texts; all are encoded up front and padded to one
    length with empty chunks, so the pipeline can switch between them at a step's end.
    """

    def __init__(self, encoder: PromptEncoder, prompt: str, negative_prompt: str, steps: int, *,
                 zero_negative: bool = False, unguided: bool = False):
        self.encoder = encoder
        self.positive = prompt_schedule(prompt, steps)
        self.negative = prompt_schedule(negative_prompt, steps)
        # Without classifier-free guidance (CFG <= 1) the pipeline never reads the negative side: zeros of the
        # right shape stand in, and the text encoder runs once instead of twice.
        self.zero_negative = unguided or (zero_negative and not negative_prompt)
        texts = [t for _, t in self.positive] + ([] if self.zero_negative else [t for _, t in self.negative])
        encoded = [encoder.encode(t) for t in texts]
        self.length = max(e.hidden.shape[1] for e in encoded)

    @property
    def scheduled(self) -> bool:
        return len(self.positive) > 1 or len(self.negative) > 1

    @property
    def xl(self) -> bool:
        return any(e.pooled for e in self.encoder.encoders)

    def _padded(self, text: str):
        import torch

        hidden = self.encoder.encode(text).hidden
        missing = self.length - hidden.shape[1]
        if missing:
            empty = self.encoder.empty().hidden
            hidden = torch.cat([hidden] + [empty] * (missing // empty.shape[1]), dim=1)
        return hidden

    @property
    def step_tensor_names(self) -> list[str]:
        """What the pipeline must hand to the step-end callback so a schedule can switch."""
        if not self.scheduled:
            return []
        return ["prompt_embeds", "add_text_embeds"] if self.xl else ["prompt_embeds"]

    def key(self, step: int) -> tuple[int, int]:
        return entry_for_step(self.positive, step), entry_for_step(self.negative, step)

    def pipeline_kwargs(self, step: int = 0) -> dict:
        """prompt_embeds & co. for the pipeline call, for the given denoising step."""
        import torch

        positive_text = self.positive[entry_for_step(self.positive, step)][1]
        positive = self._padded(positive_text)
        if self.zero_negative:
            negative = torch.zeros_like(positive)
        else:
            negative = self._padded(self.negative[entry_for_step(self.negative, step)][1])
        kwargs = {"prompt_embeds": positive, "negative_prompt_embeds": negative}
        if self.xl:
            pooled = self.encoder.encode(positive_text).pooled
            if self.zero_negative:
                negative_pooled = torch.zeros_like(pooled)
            else:
                negative_pooled = self.encoder.encode(self.negative[entry_for_step(self.negative, step)][1]).pooled
            kwargs.update(pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=negative_pooled)
        return kwargs

    def step_tensors(self, step: int, batch: int, guidance: bool) -> dict:
        """The tensors the pipeline holds during denoising (batch repeated, negative first under CFG)."""
        import torch

        kwargs = self.pipeline_kwargs(step)

        def combine(negative, positive):
            positive = positive.repeat(batch, *([1] * (positive.dim() - 1)))
            if not guidance:
                return positive
            negative = negative.repeat(batch, *([1] * (negative.dim() - 1)))
            return torch.cat([negative, positive])

        tensors = {"prompt_embeds": combine(kwargs["negative_prompt_embeds"], kwargs["prompt_embeds"])}
        if self.xl:
            tensors["add_text_embeds"] = combine(kwargs["negative_pooled_prompt_embeds"],
                                                 kwargs["pooled_prompt_embeds"])
        return tensors


class StackedConditioning:
    """The conditioning of several requests run as one batch: each member's embeddings, repeated for its
    images, stacked in batch order (all negatives before all positives under CFG, as the pipeline orders
    them). The members' embeddings must have one length (Conditioning.length)."""

    def __init__(self, members: list[tuple[Conditioning, int]]):
        self.members = members  # (conditioning, images it conditions)

    @property
    def xl(self) -> bool:
        return self.members[0][0].xl

    @property
    def step_tensor_names(self) -> list[str]:
        if not any(c.scheduled for c, _ in self.members):
            return []
        return ["prompt_embeds", "add_text_embeds"] if self.xl else ["prompt_embeds"]

    def key(self, step: int) -> tuple:
        return tuple(c.key(step) for c, _ in self.members)

    def pipeline_kwargs(self, step: int = 0) -> dict:
        import torch

        parts = [(c.pipeline_kwargs(step), count) for c, count in self.members]
        return {name: torch.cat([kwargs[name].repeat(count, *([1] * (kwargs[name].dim() - 1)))
                                 for kwargs, count in parts]) for name in parts[0][0]}

    def step_tensors(self, step: int, batch: int, guidance: bool) -> dict:
        """As Conditioning.step_tensors for the whole batch (`batch` is per member, so it is not used)."""
        import torch

        parts = [(c.step_tensors(step, count, guidance), count) for c, count in self.members]
        if not guidance:
            return {name: torch.cat([t[name] for t, _ in parts]) for name in parts[0][0]}
        # under CFG each member's tensors are [its negatives, its positives]; the batch wants all negatives first
        return {name: torch.cat([t[name][:count] for t, count in parts] + [t[name][count:] for t, count in parts])
                for name in parts[0][0]}
