"""Write a diffusers SD 1/2-style model folder as one original-layout (LDM / A1111) .safetensors checkpoint.

This is the format users download from model sites: one file with the UNet under `model.diffusion_model.`,
the VAE under `first_stage_model.` and the CLIP text encoder under `cond_stage_model.transformer.`.
diffusers only converts in the other direction (LDM -> diffusers, when loading a single file), so tests
that need such a file build it here from a tiny diffusers model, never by downloading one.

The key layout is derived from the UNet and VAE configs, so any depth of model works, not only SD's
four-level one. Tokenizer and scheduler are not stored: single-file checkpoints never contain them.
"""

from __future__ import annotations

import json
from pathlib import Path

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer.text_model."  # the HF CLIPTextModel, kept whole under a prefix

# Layers inside one UNet ResBlock: LDM names its sub-layers by position in nn.Sequential containers
# (in_layers = [GroupNorm, SiLU, Conv], out_layers = [GroupNorm, SiLU, Dropout, Conv], emb_layers = [SiLU, Linear]).
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
# Layers outside the blocks. time_embed and out are Sequentials too ([Linear, SiLU, Linear], [GroupNorm, SiLU, Conv]).
UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
# The UNet's SpatialTransformer uses the same sub-layer names in both layouts (norm, proj_in, transformer_blocks...).
SAME_NAMES: dict[str, str] = {}

VAE_RESNET = {"conv_shortcut": "nin_shortcut"}  # norm1/conv1/norm2/conv2 are named alike
# The VAE's mid-block attention: diffusers uses Linear layers, LDM 1x1 convolutions (see _vae_attention_weight).
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
VAE_TOP = {
    "encoder.conv_in": "encoder.conv_in",
    "encoder.conv_norm_out": "encoder.norm_out",
    "encoder.conv_out": "encoder.conv_out",
    "decoder.conv_in": "decoder.conv_in",
    "decoder.conv_norm_out": "decoder.norm_out",
    "decoder.conv_out": "decoder.conv_out",
    "quant_conv": "quant_conv",
    "post_quant_conv": "post_quant_conv",
}


def unet_module_map(config: dict) -> dict[str, tuple[str, dict[str, str]]]:
    """diffusers UNet module path -> (LDM module path, renames of the layers inside it).

    LDM numbers its blocks in one flat sequence: input_blocks are [conv_in, (resnet[+attention]) x layers,
    downsampler] per level (no downsampler on the last level); output_blocks are (resnet[+attention]) x
    (layers + 1) per level, the upsampler riding along in the last block of every level but the lowest.
    """
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise ValueError("per-level layers_per_block has no standard LDM layout")
    levels = len(config["block_out_channels"])
    modules = {name: (ldm, SAME_NAMES) for name, ldm in UNET_TOP.items()}

    index = 1  # input_blocks.0 is conv_in
    for level, kind in enumerate(config["down_block_types"]):
        for layer in range(layers):
            modules[f"down_blocks.{level}.resnets.{layer}"] = (f"input_blocks.{index}.0", UNET_RESNET)
            if "CrossAttn" in kind:
                modules[f"down_blocks.{level}.attentions.{layer}"] = (f"input_blocks.{index}.1", SAME_NAMES)
            index += 1
        if level < levels - 1:
            modules[f"down_blocks.{level}.downsamplers.0.conv"] = (f"input_blocks.{index}.0.op", SAME_NAMES)
            index += 1

    # The middle block is [resnet, attention, resnet].
    modules["mid_block.resnets.0"] = ("middle_block.0", UNET_RESNET)
    modules["mid_block.attentions.0"] = ("middle_block.1", SAME_NAMES)
    modules["mid_block.resnets.1"] = ("middle_block.2", UNET_RESNET)

    index = 0
    for level, kind in enumerate(config["up_block_types"]):
        attention = "CrossAttn" in kind
        for layer in range(layers + 1):
            modules[f"up_blocks.{level}.resnets.{layer}"] = (f"output_blocks.{index}.0", UNET_RESNET)
            if attention:
                modules[f"up_blocks.{level}.attentions.{layer}"] = (f"output_blocks.{index}.1", SAME_NAMES)
            if layer == layers and level < levels - 1:
                slot = 2 if attention else 1  # the upsampler follows the resnet (and the attention, if any)
                modules[f"up_blocks.{level}.upsamplers.0.conv"] = (f"output_blocks.{index}.{slot}.conv", SAME_NAMES)
            index += 1
    return modules


def vae_module_map(config: dict) -> dict[str, tuple[str, dict[str, str]]]:
    """diffusers AutoencoderKL module path -> (LDM module path, renames inside it).

    LDM numbers the decoder's up levels from the lowest resolution *last* (up.0 is the full-resolution
    level), while diffusers' up_blocks run in decoding order; and the decoder has one resnet more per level.
    """
    layers = config["layers_per_block"]
    levels = len(config["block_out_channels"])
    modules = {name: (ldm, SAME_NAMES) for name, ldm in VAE_TOP.items()}
    for level in range(levels):
        for layer in range(layers):
            modules[f"encoder.down_blocks.{level}.resnets.{layer}"] = (f"encoder.down.{level}.block.{layer}",
                                                                       VAE_RESNET)
        if level < levels - 1:
            modules[f"encoder.down_blocks.{level}.downsamplers.0.conv"] = (f"encoder.down.{level}.downsample.conv",
                                                                           SAME_NAMES)
    for level in range(levels):
        ldm_level = levels - 1 - level
        for layer in range(layers + 1):
            modules[f"decoder.up_blocks.{level}.resnets.{layer}"] = (f"decoder.up.{ldm_level}.block.{layer}",
                                                                     VAE_RESNET)
        if level < levels - 1:
            modules[f"decoder.up_blocks.{level}.upsamplers.0.conv"] = (f"decoder.up.{ldm_level}.upsample.conv",
                                                                       SAME_NAMES)
    for part in ("encoder", "decoder"):
        modules[f"{part}.mid_block.resnets.0"] = (f"{part}.mid.block_1", VAE_RESNET)
        modules[f"{part}.mid_block.resnets.1"] = (f"{part}.mid.block_2", VAE_RESNET)
        modules[f"{part}.mid_block.attentions.0"] = (f"{part}.mid.attn_1", VAE_ATTENTION)
    return modules


def rename(key: str, modules: dict[str, tuple[str, dict[str, str]]]) -> str:
    """The LDM name of a diffusers parameter: swap its module path, then the layer name inside the module."""
    module = max((m for m in modules if key.startswith(m + ".")), key=len, default=None)
    if module is None:
        raise KeyError(f"{key}: no LDM counterpart known")
    ldm_module, inner = modules[module]
    rest = key[len(module) + 1:]
    for name, ldm_name in inner.items():
        if rest.startswith(name + "."):
            rest = ldm_name + rest[len(name):]
            break
    return f"{ldm_module}.{rest}"


def _vae_attention_weight(ldm_key: str, tensor):
    """LDM's VAE attention projections are 1x1 Conv2d layers: weights [out, in, 1, 1], not Linear [out, in]."""
    if ".mid.attn_1." in ldm_key and ldm_key.endswith("weight") and tensor.ndim == 2:
        return tensor[:, :, None, None].contiguous()
    return tensor


def _read_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors weights")
    weights = {}
    for file in files:
        weights.update(load_file(str(file)))
    return weights


def ldm_state_dict(diffusers_folder: str | Path) -> dict:
    """The whole model (UNet, VAE, text encoder) under original LDM names."""
    folder = Path(diffusers_folder)
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    checkpoint = {}

    unet_modules = unet_module_map(unet_config)
    for key, tensor in _read_weights(folder / "unet").items():
        checkpoint[UNET_PREFIX + rename(key, unet_modules)] = tensor

    vae_modules = vae_module_map(vae_config)
    for key, tensor in _read_weights(folder / "vae").items():
        ldm_key = rename(key, vae_modules)
        checkpoint[VAE_PREFIX + ldm_key] = _vae_attention_weight(ldm_key, tensor)

    # transformers >= 5.6 saves CLIPTextModel without its `text_model.` level; older versions keep it.
    for key, tensor in _read_weights(folder / "text_encoder").items():
        checkpoint[TEXT_PREFIX + key.removeprefix("text_model.")] = tensor
    return checkpoint


def write_ldm_checkpoint(diffusers_folder: str | Path, out_path: str | Path) -> Path:
    """Save the diffusers model in `diffusers_folder` as one LDM-layout .safetensors file at `out_path`."""
    from safetensors.torch import save_file

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(diffusers_folder), str(out_path), metadata={"format": "pt"})
    return out_path
