"""Tiny random-weight Stable Diffusion models, built offline, for tests, benchmarks and demos.

They are saved with save_pretrained and loaded back through the same code path as a real model, so the
whole stack runs in a fraction of a second per image without any download. Their output is noise:
they test plumbing, not quality.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _byte_characters() -> list[str]:
    """The 256 printable characters byte-level BPE uses to stand for raw bytes (GPT-2/CLIP scheme)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_clip_tokenizer(folder: Path) -> Path:
    """A CLIP tokenizer with single-byte tokens only (plus a few merges), written as vocab/merges files."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_characters()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in chars:
        vocab.setdefault(char, len(vocab))
    for char in chars:
        vocab.setdefault(char + "</w>", len(vocab))
    merges = ["#version: 0.2", "t h", "th e</w>", "a n", "i n"]
    for merge in merges[1:]:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)
    tokenizer.save_pretrained(str(folder))
    return folder


def _text_config(hidden: int = 32, projection: int | None = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden,
                          intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4,
                          num_hidden_layers=5, vocab_size=1000, hidden_act="gelu",
                          projection_dim=projection or hidden)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                         up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
                         sample_size=64)


def _scheduler(turbo: bool = False):
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  steps_offset=1, timestep_spacing="trailing" if turbo else "leading")


def build_tiny_sd(folder: str | Path, *, seed: int = 0, safety_checker: bool = False,
                  flag_everything: bool = False, inpainting: bool = False) -> Path:
    """A tiny SD 1/2-family model folder (native size 64 px), loadable with --model FOLDER.

    safety_checker adds a (random) checker like SD 1.5's; flag_everything makes it flag every image.
    inpainting makes a dedicated inpainting model, as SD 1.5 inpainting is: a UNet with 9 input channels
    (latents, mask, masked-image latents), saved as a StableDiffusionInpaintPipeline.
    """
    import torch
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32,
                                in_channels=9 if inpainting else 4, out_channels=4, cross_attention_dim=32,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=32)
    vae = _vae()
    text_encoder = CLIPTextModel(_text_config())
    tokenizer_dir = write_clip_tokenizer(folder / "_tokenizer_src")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=77)
    checker, extractor = (None, None)
    if safety_checker:
        checker, extractor = _safety_checker()
        if flag_everything:  # a concept "fires" when cosine similarity exceeds its threshold; -2 < any cosine
            checker.concept_embeds_weights.data.fill_(-2.0)
    pipeline_class = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    pipe = pipeline_class(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                          scheduler=_scheduler(), safety_checker=checker, feature_extractor=extractor,
                          requires_safety_checker=safety_checker)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    _remove_tree(tokenizer_dir)
    return folder


def _safety_checker():
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                     "num_hidden_layers": 2, "vocab_size": 1000, "projection_dim": 32,
                     "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                       "num_hidden_layers": 2, "image_size": 32, "patch_size": 4, "projection_dim": 32},
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config)
    extractor = CLIPImageProcessor(crop_size=32, size=32)
    return checker, extractor


def build_tiny_sdxl(folder: str | Path, *, seed: int = 0) -> Path:
    """A tiny SDXL-family model folder (two text encoders, text_time conditioning, native 64 px)."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32,
                                in_channels=4, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                attention_head_dim=(2, 4), use_linear_projection=True,
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                transformer_layers_per_block=(1, 2),
                                projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + 32 pooled
                                cross_attention_dim=64, norm_num_groups=32)
    vae = _vae()
    text_encoder = CLIPTextModel(_text_config())
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(projection=32))
    tokenizer_dir = write_clip_tokenizer(folder / "_tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=77)
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=77)
    pipe = StableDiffusionXLPipeline(unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=_scheduler())
    pipe.save_pretrained(str(folder), safe_serialization=True)
    _remove_tree(tokenizer_dir)
    return folder


def build_tiny_autoencoder(folder: str | Path, *, seed: int = 0) -> Path:
    """A tiny AutoencoderTiny folder (TAESD's layout with 8 channels), usable as --vae FOLDER."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    vae = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8))
    vae.save_pretrained(str(folder))
    return Path(folder)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def make_photo(width: int = 96, height: int = 64, seed: int = 0):
    """A small structured RGB test picture (gradients and a disc), so crops and rotations are visible."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    red = (x / max(width - 1, 1) * 255).astype(np.uint8)
    green = (y / max(height - 1, 1) * 255).astype(np.uint8)
    blue = np.where((x - width * 0.3) ** 2 + (y - height * 0.4) ** 2 < (min(width, height) * 0.25) ** 2,
                    230, 40).astype(np.uint8)
    noise = rng.integers(0, 12, size=(height, width), dtype=np.uint8)
    return Image.fromarray(np.stack([red, green, blue + noise], axis=-1), "RGB")


# ---------------------------------------------------------------- tiny LoRAs and embeddings

_LORA_UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
_LORA_TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _lora_pairs(model, targets, rank: int, generator, scale: float):
    """(module name, down, up) for every targeted Linear of a model, with random weights."""
    import torch

    for name, module in model.named_modules():
        if name.endswith(targets) and isinstance(module, torch.nn.Linear):
            down = torch.randn(rank, module.in_features, generator=generator) * scale
            up = torch.randn(module.out_features, rank, generator=generator) * scale
            yield name, down, up


def build_lora_kohya(model_folder: str | Path, path: str | Path, *, rank: int = 4, alpha: float = 2.0,
                     seed: int = 0, scale: float = 0.3, text_encoder: bool = True) -> Path:
    """A LoRA file in the kohya/A1111 layout Civitai files use (lora_unet_*/lora_te*_*, lora_down/up, alpha)."""
    from diffusers import AutoPipelineForImage2Image

    pipe = AutoPipelineForImage2Image.from_pretrained(str(model_folder))
    return write_lora_kohya(pipe, path, rank=rank, alpha=alpha, seed=seed, scale=scale, text_encoder=text_encoder)


def write_lora_kohya(pipe, path: str | Path, *, rank: int = 4, alpha: float = 2.0, seed: int = 0,
                     scale: float = 0.3, text_encoder: bool = True) -> Path:
    """build_lora_kohya for a pipeline object already in memory."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    parts = [("lora_unet", pipe.unet, _LORA_UNET_TARGETS)]
    if text_encoder:
        xl = getattr(pipe, "text_encoder_2", None) is not None
        parts.append(("lora_te1_text_model" if xl else "lora_te_text_model", pipe.text_encoder, _LORA_TEXT_TARGETS))
        if xl:
            parts.append(("lora_te2_text_model", pipe.text_encoder_2.text_model, _LORA_TEXT_TARGETS))
    for prefix, model, targets in parts:
        for name, down, up in _lora_pairs(model, targets, rank, generator, scale):
            key = f"{prefix}_{name.replace('.', '_')}"
            tensors[f"{key}.lora_down.weight"] = down
            tensors[f"{key}.lora_up.weight"] = up
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank)})
    return path


def build_lora_peft(model_folder: str | Path, path: str | Path, *, rank: int = 4, seed: int = 1,
                    scale: float = 0.3) -> Path:
    """A LoRA file in the diffusers/PEFT layout, written by diffusers' own save_lora_weights."""
    import torch
    from diffusers import AutoPipelineForImage2Image
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = AutoPipelineForImage2Image.from_pretrained(str(model_folder))
    generator = torch.Generator().manual_seed(seed)
    pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(_LORA_UNET_TARGETS)))
    # peft's own injection (transformers' add_adapter wants a newer peft than some platforms offer)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(_LORA_TEXT_TARGETS)),
                            pipe.text_encoder)
    for model in (pipe.unet, pipe.text_encoder):
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.data = torch.randn(parameter.shape, generator=generator) * scale
    path = Path(path)
    # files in the wild name text-encoder modules as transformers 4 did ("text_model." first)
    text_layers = {f"text_model.{k}" if not k.startswith("text_model.") else k: v
                   for k, v in get_peft_model_state_dict(pipe.text_encoder).items()}
    type(pipe).save_lora_weights(str(path.parent), weight_name=path.name, safe_serialization=True,
                                 unet_lora_layers=get_peft_model_state_dict(pipe.unet),
                                 text_encoder_lora_layers=text_layers)
    return path


def build_embedding(model_folder: str | Path, path: str | Path, *, vectors: int = 2, seed: int = 0,
                    layout: str = "emb_params") -> Path:
    """A textual-inversion embedding in one of A1111's layouts: "emb_params", "string_to_param" or "sdxl"."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((Path(model_folder) / "text_encoder" / "config.json").read_text())
    generator = torch.Generator().manual_seed(seed)
    if layout == "sdxl":
        config_2 = json.loads((Path(model_folder) / "text_encoder_2" / "config.json").read_text())
        tensors = {"clip_l": torch.randn(vectors, config["hidden_size"], generator=generator),
                   "clip_g": torch.randn(vectors, config_2["hidden_size"], generator=generator)}
    else:
        key = "emb_params" if layout == "emb_params" else "string_to_param.*"
        tensors = {key: torch.randn(vectors, config["hidden_size"], generator=generator)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def display_p3_profile(description: str = "Display P3") -> bytes:
    """An ICC (v2) display profile for Display P3: its primaries, the D65 white and the sRGB tone curve.

    Built from the published colour-space definition, as any matrix/curve display profile is, so tests can
    tag images the way phones do without shipping a profile file.
    """
    import struct

    import numpy as np

    def rgb_to_xyz(primaries, white):
        m = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T
        return m * np.linalg.solve(m, white)

    d65, d50 = np.array([0.95047, 1.0, 1.08883]), np.array([0.96422, 1.0, 0.82521])
    bradford = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    adapt = np.linalg.inv(bradford) @ np.diag((bradford @ d50) / (bradford @ d65)) @ bradford
    colorants = adapt @ rgb_to_xyz([(0.680, 0.320), (0.265, 0.690), (0.150, 0.060)], d65)  # ICC's D50 frame

    def fixed(*values):  # s15Fixed16Number
        return b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    def xyz(values):
        return b"XYZ \0\0\0\0" + fixed(*values)

    ascii_text = description.encode("ascii") + b"\0"
    tags = [
        (b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + bytes(4 + 4 + 2 + 1 + 67)),
        (b"cprt", b"text\0\0\0\0" + b"No copyright, use freely\0"),
        (b"wtpt", xyz(d50)),
        (b"rXYZ", xyz(colorants[:, 0])), (b"gXYZ", xyz(colorants[:, 1])), (b"bXYZ", xyz(colorants[:, 2])),
        # parametric curve type 3: the sRGB transfer function
        (b"rTRC", b"para\0\0\0\0" + struct.pack(">HH", 3, 0) + fixed(2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92,
                                                                     0.04045)),
    ]
    tags += [(b"gTRC", tags[-1][1]), (b"bTRC", tags[-1][1])]
    offset = 128 + 4 + 12 * len(tags)
    table, data = [], b""
    for signature, body in tags:
        table.append(signature + struct.pack(">II", offset + len(data), len(body)))
        data += body + bytes(-len(body) % 4)
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8)
              + struct.pack(">I", 0) + fixed(*d50) + bytes(4 + 16 + 28))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(table) + data
