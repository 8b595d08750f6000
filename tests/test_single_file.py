"""Single-file checkpoints in the original LDM/A1111 layout (what model sites offer), loaded fully offline.

The checkpoint is the tiny test model rewritten by tests/ldm_checkpoint.py; diffusers converts it back
when loading, with the diffusers folder of the same family supplying the configs (`config=`).
"""

import hashlib
import json
import socket
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from img2img import Engine, ModelNotAvailable
from img2img.cli import main
from img2img.images import read_infotext
from img2img.infotext import parse_infotext
from img2img.models import PipelineCache

sys.path.insert(0, str(Path(__file__).parent))
from ldm_checkpoint import write_ldm_checkpoint  # noqa: E402

ARGS = {"seed": 1, "steps": 4, "strength": 0.5}


@pytest.fixture(scope="module")
def no_network():
    """Any attempt to open a connection fails the test: "offline" must not merely mean "the hub was down"."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(scope="module")
def ckpt_path(tiny_sd, tmp_path_factory):
    return write_ldm_checkpoint(tiny_sd, tmp_path_factory.mktemp("checkpoints") / "tiny-sd-ldm.safetensors")


@pytest.fixture(scope="module")
def folder_result(tiny_sd, square_path):
    return Engine(str(tiny_sd), cache=PipelineCache()).transform(square_path, "x", **ARGS)


@pytest.fixture(scope="module")
def file_engine(ckpt_path, tiny_sd, no_network):
    engine = Engine(str(ckpt_path), config=str(tiny_sd), cache=PipelineCache())
    engine.load()
    return engine


def _weights(folder):
    return load_file(str(next(folder.glob("*.safetensors"))))


def _assert_same_tensors(got, expected):
    assert sorted(got) == sorted(expected)
    different = [k for k in expected if got[k].shape != expected[k].shape or not torch.equal(got[k], expected[k])]
    assert not different, different[:5]


def test_checkpoint_round_trips_through_diffusers_own_converters(ckpt_path, tiny_sd):
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )

    checkpoint = load_file(str(ckpt_path))
    prefixes = {k.split(".")[0] for k in checkpoint}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."))
               for k in checkpoint)
    assert infer_diffusers_model_type(checkpoint) == "v1"  # an SD 1.x checkpoint with a CLIP text encoder
    # diffusers' converter also accepts some non-standard placements (an upsampler at output_blocks.N.1.conv
    # after an attention), so pin the places real SD 1.x files use for what the round trip cannot tell apart.
    for key in ("model.diffusion_model.input_blocks.3.0.op.weight",  # downsampler after level 0's 2 resnets
                "model.diffusion_model.output_blocks.2.2.conv.weight",  # upsampler after resnet + attention
                "model.diffusion_model.middle_block.1.proj_in.weight",
                "first_stage_model.decoder.up.1.upsample.conv.weight",  # LDM numbers decoder levels upward
                "cond_stage_model.transformer.text_model.final_layer_norm.weight"):
        assert key in checkpoint, key
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" not in checkpoint
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in checkpoint
    assert checkpoint["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)  # a 1x1 conv

    unet_config = json.loads((tiny_sd / "unet" / "config.json").read_text())
    vae_config = json.loads((tiny_sd / "vae" / "config.json").read_text())
    _assert_same_tensors(convert_ldm_unet_checkpoint(checkpoint, unet_config), _weights(tiny_sd / "unet"))
    _assert_same_tensors(convert_ldm_vae_checkpoint(checkpoint, vae_config), _weights(tiny_sd / "vae"))
    # transformers >= 5.6 names CLIPTextModel's weights without `text_model.`; diffusers strips it the same way.
    text = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(checkpoint).items()}
    expected_text = {k.removeprefix("text_model."): v for k, v in _weights(tiny_sd / "text_encoder").items()}
    _assert_same_tensors(text, expected_text)
    assert len(checkpoint) == len(_weights(tiny_sd / "unet")) + len(_weights(tiny_sd / "vae")) + len(text)


def test_checkpoint_loads_offline_and_matches_the_folder_byte_for_byte(file_engine, folder_result, square_path):
    from diffusers import StableDiffusionImg2ImgPipeline

    loaded = file_engine.load()
    assert loaded.source.kind == "file" and type(loaded.pipe) is StableDiffusionImg2ImgPipeline
    assert loaded.native == 64
    result = file_engine.transform(square_path, "x", **ARGS)
    assert result.image.size == (64, 64)
    assert result.image.tobytes() == folder_result.image.tobytes()


def test_infotext_names_the_file_and_its_sha256(file_engine, ckpt_path, square_path):
    result = file_engine.transform(square_path, "x", **ARGS)
    _, _, params = parse_infotext(result.infotexts[0])
    assert params["Model hash"] == hashlib.sha256(ckpt_path.read_bytes()).hexdigest()[:10]
    assert params["Model"] == "tiny-sd-ldm" == result.model


def test_without_config_offline_fails_with_advice(ckpt_path, tmp_path, monkeypatch, no_network):
    import huggingface_hub.constants

    # An empty hub cache: the config diffusers looks for (SD 1.5's) is certainly not there.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotAvailable, match=r"tiny-sd-ldm.safetensors: cannot load this checkpoint") as error:
        Engine(str(ckpt_path), cache=PipelineCache()).load()
    assert "connect once so they are cached, or pass a diffusers folder of the same family" in str(error.value)


def test_config_of_another_family_fails_with_advice(ckpt_path, tiny_sdxl, no_network):
    # diffusers raises a bare KeyError when an SDXL config meets an SD 1.x checkpoint.
    with pytest.raises(ModelNotAvailable, match="cannot load this checkpoint.*of the same family"):
        Engine(str(ckpt_path), config=str(tiny_sdxl), cache=PipelineCache()).load()


def cli(*args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_cli_model_config(ckpt_path, tiny_sd, square_path, folder_result, tmp_path, capsys, no_network):
    out = tmp_path / "out.png"
    code, _, err = cli("run", square_path, "-p", "x", "--seed", 1, "--steps", 4, "--strength", 0.5,
                       "-m", ckpt_path, "--model-config", tiny_sd, "-o", out, capsys=capsys)
    assert code == 0, err
    assert "model tiny-sd-ldm on cpu" in err
    assert Image.open(out).tobytes() == folder_result.image.tobytes()
    assert "Model: tiny-sd-ldm," in read_infotext(out)

    code, _, err = cli("run", square_path, "-p", "x", "-m", tiny_sd, "--model-config", tiny_sd,
                       "-o", tmp_path / "x.png", capsys=capsys)
    assert code == 2 and "error: --model-config is only used with a single-file .safetensors --model" in err
