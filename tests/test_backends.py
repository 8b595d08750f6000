"""How a pipeline runs: CPU facts, automatic dtype, other autoencoders, tiling, torch options, OpenVINO."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from img2img import Engine, InvalidRequest, ModelNotAvailable
from img2img.backends import Acceleration, cpu, sized_for
from img2img.backends.torch_backend import choose_offload
from img2img.models import PipelineCache, choose_device

GIB = 2**30


def pixels(result, index=0):
    return np.asarray(result.images[index], dtype=np.int16)


def bare_pipeline(folder, **components):
    from diffusers import AutoPipelineForImage2Image, DPMSolverMultistepScheduler

    pipe = AutoPipelineForImage2Image.from_pretrained(str(folder), **components)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------- CPU facts and the automatic dtype

@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, True),  # AMD Zen 4, Intel Cooper Lake
    ({"avx2", "avx512f", "amx_bf16", "amx_tile"}, True),  # Intel Sapphire Rapids
    ({"avx2", "avx512f", "avx512bw"}, False),  # AVX-512 without bf16: emulated, slower than float32
    ({"avx2", "fma"}, False),
])
def test_native_bf16_from_cpu_flags(flags, expected):
    assert cpu.native_bf16(flags) is expected


def test_cpuinfo_flags_are_parsed():
    text = "processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2 avx512_bf16\n"
    assert cpu._cpuinfo_flags(text) == {"fpu", "avx2", "avx512_bf16"}


def test_physical_cores_count_hyperthread_siblings_once(tmp_path, monkeypatch):
    # 4 logical CPUs: two cores with two hyper-threads each
    for index, core in enumerate((0, 1, 0, 1)):
        topology = tmp_path / f"cpu{index}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert cpu._read_topology(tmp_path) == 2
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0})  # pinned to one CPU (taskset, containers)
    assert cpu._read_topology(tmp_path) == 1


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_automatic_cpu_dtype_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.delenv("IMG2IMG_DTYPE", raising=False)
    monkeypatch.setattr(cpu, "native_bf16", lambda: native)
    assert choose_device("cpu", None) == ("cpu", expected)
    assert choose_device("cpu", "float32") == ("cpu", "float32")  # explicit wins
    monkeypatch.setenv("IMG2IMG_DTYPE", "float32")  # and the environment overrides the automatic choice
    assert choose_device("cpu", "auto") == ("cpu", "float32")


def test_cpu_threads_are_set_and_validated(tiny_sd, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        assert Engine(str(tiny_sd), device="cpu", cpu_threads=1).cpu_threads == 1
        assert torch.get_num_threads() == 1
        assert Engine(str(tiny_sd), device="cpu").cpu_threads == cpu.physical_cores() == torch.get_num_threads()
        with pytest.raises(InvalidRequest, match="cpu_threads"):
            Engine(str(tiny_sd), device="cpu", cpu_threads=0)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a launcher's share (Ray actors) is kept
        assert Engine(str(tiny_sd), device="cpu").cpu_threads == 1
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- choices refused early

@pytest.mark.parametrize("options, device, message", [
    ({"backend": "tensorrt"}, "cpu", "backend must be one of auto, torch, openvino"),
    ({"offload": "model"}, "cpu", "nothing to offload to"),
    ({"offload": "sometimes"}, "cuda", "offload must be one of"),
    ({"backend": "openvino", "compile": True}, "cpu", "OpenVINO compiles its own"),
    ({"backend": "openvino"}, "cuda", "runs on the CPU"),
    ({"backend": "openvino", "offload": "sequential"}, "cpu", "offload"),
])
def test_bad_acceleration_choices_are_refused(options, device, message):
    with pytest.raises(InvalidRequest, match=message):
        Acceleration(**options).validated(device)


def test_vae_names_are_normalised():
    assert Acceleration(vae=" TAESD ").validated("cpu").vae == "taesd"
    assert Acceleration(vae="auto").validated("cpu").vae is None


@pytest.mark.parametrize("free_gib, expected", [(40, "none"), (5.6, "none"), (5, "model"), (4.7, "model"),
                                                (4, "sequential")])
def test_offload_is_chosen_from_free_memory(free_gib, expected):
    # SD 2.1 in float16: 2.6 GiB of weights, the UNet 1.7 GiB of them; 3 GiB working memory
    assert choose_offload(int(free_gib * GIB), int(2.6 * GIB), int(1.7 * GIB)) == expected


# ---------------------------------------------------------------- other autoencoders

def test_tiny_autoencoder_matches_bare_diffusers_with_the_same_vae(tiny_sd, tiny_taesd, square_path):
    from diffusers import AutoencoderTiny

    engine = Engine(str(tiny_sd), device="cpu", vae=str(tiny_taesd))
    result = engine.transform(square_path, "a red boat", seed=5, steps=4, strength=0.5)
    assert type(engine.load().pipe.vae).__name__ == "AutoencoderTiny"
    assert "VAE: tiny-taesd" in result.infotexts[0]
    bare = bare_pipeline(tiny_sd, vae=AutoencoderTiny.from_pretrained(str(tiny_taesd)))
    expected = bare(prompt="a red boat", image=Image.open(square_path).convert("RGB"), strength=0.5,
                    num_inference_steps=4, guidance_scale=7.0, generator=torch.Generator().manual_seed(5)).images[0]
    assert result.image.tobytes() == expected.tobytes()
    plain = Engine(str(tiny_sd), device="cpu").transform(square_path, "a red boat", seed=5, steps=4, strength=0.5)
    assert plain.image.tobytes() != result.image.tobytes()  # the autoencoder really changed


def test_vae_files_load_and_the_models_own_vae_as_a_file_changes_nothing(tiny_sd, tiny_taesd, square_path,
                                                                          tmp_path):
    from safetensors.torch import load_file, save_file

    own = tmp_path / "own-vae.safetensors"
    save_file(load_file(str(tiny_sd / "vae" / "diffusion_pytorch_model.safetensors")), str(own))
    tiny = tmp_path / "tiny.safetensors"
    save_file(load_file(str(tiny_taesd / "diffusion_pytorch_model.safetensors")), str(tiny))
    args = {"seed": 3, "steps": 4}
    plain = Engine(str(tiny_sd), device="cpu").transform(square_path, "x", **args)
    same = Engine(str(tiny_sd), device="cpu", vae=str(own)).transform(square_path, "x", **args)
    assert same.image.tobytes() == plain.image.tobytes()
    assert "VAE: own-vae" in same.infotexts[0]
    from_file = Engine(str(tiny_sd), device="cpu", vae=str(tiny)).transform(square_path, "x", **args)
    from_folder = Engine(str(tiny_sd), device="cpu", vae=str(tiny_taesd)).transform(square_path, "x", **args)
    assert from_file.image.tobytes() == from_folder.image.tobytes()


def test_unusable_vae_choices_fail_clearly(tiny_sd, tiny_sdxl, square_path, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotAvailable, match="madebyollin/taesd is not in the local cache"):
        Engine(str(tiny_sd), device="cpu", vae="taesd").transform(square_path, "x", steps=2)
    with pytest.raises(ModelNotAvailable, match="madebyollin/taesdxl is not in the local cache"):
        Engine(str(tiny_sdxl), device="cpu", vae="taesd").transform(square_path, "x", steps=2)  # XL: its own
    with pytest.raises(InvalidRequest, match="taesdxl is for SDXL"):
        Engine(str(tiny_sd), device="cpu", vae="taesdxl").transform(square_path, "x", steps=2)
    pickle = tmp_path / "vae.pt"
    pickle.write_bytes(b"not really")
    with pytest.raises(ModelNotAvailable, match="must be .safetensors"):
        Engine(str(tiny_sd), device="cpu", vae=str(pickle)).transform(square_path, "x", steps=2)
    with pytest.raises(ModelNotAvailable, match="no such file or folder"):
        Engine(str(tiny_sd), device="cpu", vae="./missing-vae").transform(square_path, "x", steps=2)


# ---------------------------------------------------------------- big outputs and batches

def test_tiling_above_the_threshold_only_during_the_call(engine, square_path, monkeypatch):
    import img2img.backends as backends

    vae = engine.load().pipe.vae
    seen = []
    original = type(vae).decode

    def spy(self, *args, **kwargs):
        seen.append((self.use_tiling, self.use_slicing))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(vae), "decode", spy)
    monkeypatch.setattr(backends, "TILE_ABOVE_PIXELS", 64 * 64 - 1)
    big = engine.transform(square_path, "x", seed=1, steps=4, width=64, height=64)
    monkeypatch.setattr(backends, "TILE_ABOVE_PIXELS", 64 * 64)
    small = engine.transform(square_path, "x", seed=1, steps=4, batch_size=2)
    assert seen == [(True, False), (False, True)]
    assert any("tiles" in notice for notice in big.notices) and not any("tiles" in n for n in small.notices)
    assert (vae.use_tiling, vae.use_slicing) == (False, False)  # restored


def test_sliced_batch_decoding_equals_one_by_one(engine, square_path):
    batch = engine.transform(square_path, "x", seed=11, steps=4, batch_size=2)
    second = engine.transform(square_path, "x", seed=12, steps=4)
    assert np.abs(pixels(batch, 1) - pixels(second)).max() <= 1


def test_sized_for_leaves_a_tiling_user_alone(engine):
    pipe = engine.load().pipe
    pipe.vae.use_tiling = True
    try:
        with sized_for(pipe, 64, 64, 1, tile_above=10) as notices:
            assert pipe.vae.use_tiling is True
        assert notices == [] and pipe.vae.use_tiling is True
    finally:
        pipe.vae.use_tiling = False


# ---------------------------------------------------------------- torch options (the GPU path, run on the CPU)

def test_channels_last_and_fused_qkv_keep_the_output(tiny_sd, square_path):
    from img2img.backends.torch_backend import optimize

    plain = Engine(str(tiny_sd), device="cpu")
    reference = plain.transform(square_path, "a tree", seed=2, steps=4)
    cache = PipelineCache()
    tuned = Engine(str(tiny_sd), device="cpu", cache=cache)
    pipe = tuned.load().pipe
    optimize(pipe, "cpu", channels_last=True, fuse_qkv=True, progress=lambda message: None)
    conv = pipe.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"FusedAttnProcessor2_0"}
    result = tuned.transform(square_path, "a tree", seed=2, steps=4)
    assert np.abs(pixels(result) - pixels(reference)).max() <= 2  # float32 summation order only


def test_compile_warms_up_once_and_keeps_the_output(tiny_sd, square_path, capfd):
    reference = Engine(str(tiny_sd), device="cpu").transform(square_path, "a tree", seed=2, steps=4)
    cache = PipelineCache()
    # the "eager" torch.compile backend runs the same graph capture without inductor's C++ build (slow here)
    compiled = Engine(str(tiny_sd), device="cpu", compile="eager", cache=cache)
    first = compiled.transform(square_path, "a tree", seed=2, steps=4)
    again = compiled.transform(square_path, "a tree", seed=2, steps=4)
    log = capfd.readouterr().err
    assert log.count("warm-up took") == 1  # compiled at load, reused by the next request
    assert type(compiled.load().pipe.unet).__name__ == "OptimizedModule"
    assert np.abs(pixels(first) - pixels(reference)).max() <= 1
    assert first.image.tobytes() == again.image.tobytes()


# ---------------------------------------------------------------- OpenVINO

@pytest.fixture(scope="module")
def openvino_cache(tmp_path_factory):
    pytest.importorskip("openvino")
    return tmp_path_factory.mktemp("openvino-cache")


def test_openvino_matches_torch_and_exports_once(tiny_sd, square_path, openvino_cache, monkeypatch, capfd):
    monkeypatch.setenv("IMG2IMG_CACHE_DIR", str(openvino_cache))
    reference = Engine(str(tiny_sd), device="cpu").transform(square_path, "a tree", seed=4, steps=4)
    engine = Engine(str(tiny_sd), device="cpu", backend="openvino", cache=PipelineCache())
    result = engine.transform(square_path, "a tree", seed=4, steps=4)
    first_log = capfd.readouterr().err
    assert first_log.count("openvino: exporting") == 3  # UNet, VAE encoder, VAE decoder
    assert type(engine.load().pipe.unet).__name__ == "OpenVINOUNet"
    # float32 in both; OpenVINO fuses and orders sums differently
    assert np.abs(pixels(result) - pixels(reference)).max() <= 2
    again = Engine(str(tiny_sd), device="cpu", backend="openvino", cache=PipelineCache())
    wide = again.transform(square_path, "a tree", seed=4, steps=4, width=96, height=64, batch_size=2)
    assert "openvino: exporting" not in capfd.readouterr().err  # reused from the cache
    assert wide.images[1].size == (96, 64)  # other sizes and batches: the exported graph is dynamic
    plain_wide = Engine(str(tiny_sd), device="cpu").transform(square_path, "a tree", seed=4, steps=4, width=96,
                                                               height=64, batch_size=2)
    assert np.abs(pixels(wide, 1) - pixels(plain_wide, 1)).max() <= 2


def test_openvino_refuses_what_it_cannot_do(tiny_sd, square_path, openvino_cache, monkeypatch):
    monkeypatch.setenv("IMG2IMG_CACHE_DIR", str(openvino_cache))
    engine = Engine(str(tiny_sd), device="cpu", backend="openvino", cache=PipelineCache())
    unet = engine.load().pipe.unet
    sample = torch.zeros(1, 4, 8, 8)
    with pytest.raises(InvalidRequest, match="backend openvino cannot"):
        unet(sample, 10, torch.zeros(1, 77, 32), cross_attention_kwargs={"scale": 0.5})  # a LoRA scale
    with pytest.raises(InvalidRequest, match="OpenVINO compiles its own"):
        Engine(str(tiny_sd), device="cpu", backend="openvino", compile=True)
    with pytest.raises(InvalidRequest, match="LoRA needs --backend torch"):  # refused before anything runs
        engine.transform(square_path, "a tree <lora:anything:0.8>", steps=2)
    with pytest.raises(InvalidRequest, match="seamless tiling needs --backend torch"):  # not silently dropped
        engine.transform(square_path, "a tree", steps=2, tiling=True)


def test_automatic_openvino_hands_what_it_cannot_do_to_torch(tiny_sd, folders, square_path, openvino_cache,
                                                             monkeypatch):
    monkeypatch.setenv("IMG2IMG_CACHE_DIR", str(openvino_cache))
    monkeypatch.delenv("IMG2IMG_BACKEND")  # the automatic choice: OpenVINO on the CPU, as installed
    cache = PipelineCache()
    engine = Engine(str(tiny_sd), device="cpu", lora_dir=folders / "loras", cache=cache)
    assert (engine.acceleration.backend, engine.acceleration.automatic) == ("openvino", True)
    torch_engine = Engine(str(tiny_sd), device="cpu", backend="torch", lora_dir=folders / "loras",
                          cache=PipelineCache())
    for prompt, fields in (("a tree <lora:kohya:0.8>", {}), ("a tree", {"tiling": True})):
        result = engine.transform(square_path, prompt, seed=2, steps=2, **fields)
        assert any("ran on backend torch" in notice for notice in result.notices), result.notices
        assert type(cache.loaded()[0].pipe.unet).__name__ == "UNet2DConditionModel"
        # exactly the torch path: the LoRA or the wrapping padding took effect, nothing was dropped
        expected = torch_engine.transform(square_path, prompt, seed=2, steps=2, **fields)
        assert result.image.tobytes() == expected.image.tobytes()
    plain = engine.transform(square_path, "a tree", seed=2, steps=2)  # the next plain request: OpenVINO again
    assert not any("backend torch" in notice for notice in plain.notices)
    assert type(cache.loaded()[0].pipe.unet).__name__ == "OpenVINOUNet"


# ---------------------------------------------------------------- the flags, through the real commands

def test_run_flags_reach_the_engine(tmp_path, tiny_sd, tiny_taesd, square_path, capsys):
    from img2img.cli import main
    from img2img.images import read_infotext

    def cli(*args):
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        return exit_info.value.code, capsys.readouterr().err

    before = torch.get_num_threads()
    try:
        out = tmp_path / "fast.png"
        code, err = cli("run", square_path, "-p", "x", "-m", tiny_sd, "--steps", 2, "--vae", tiny_taesd,
                        "--backend", "torch", "--offload", "auto", "--cpu-threads", 1, "-o", out)
        assert code == 0, err
        assert "1 threads" in err and "vae tiny-taesd" not in err and f"vae {tiny_taesd}" in err
        assert "VAE: tiny-taesd" in read_infotext(out) and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for flags, message in ((("--backend", "onnx"), "backend must be one of auto, torch, openvino"),
                           (("--offload", "model"), "nothing to offload to"),
                           (("--backend", "openvino", "--compile"), "OpenVINO compiles its own"),
                           (("--cpu-threads", 0), "cpu_threads must be between 1")):
        code, err = cli("run", square_path, "-p", "x", "-m", tiny_sd, *flags, "-o", tmp_path / "no.png")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_serve_and_batch_accept_the_speed_flags():
    from img2img.server.config import ServerConfig

    config = ServerConfig(backend="openvino", vae="taesd", cpu_threads=2, offload="none").validate()
    assert (config.backend, config.vae, config.cpu_threads) == ("openvino", "taesd", 2)
    with pytest.raises(InvalidRequest, match="--cpu-threads must be 1 or more"):
        ServerConfig(cpu_threads=0).validate()
    with pytest.raises(InvalidRequest, match="--backend must be one of"):
        ServerConfig(backend="tensorrt").validate()
    from typer.testing import CliRunner

    from img2img.cli import app

    for command in ("run", "batch", "serve"):
        help_text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        for flag in ("--vae", "--backend", "--compile", "--offload", "--cpu-threads"):
            assert flag in help_text, (command, flag)


def test_automatic_backend(monkeypatch):
    import img2img.backends as backends

    monkeypatch.delenv("IMG2IMG_BACKEND", raising=False)
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    assert Acceleration().validated("cpu").backend == "openvino"
    assert Acceleration(compile=True).validated("cpu").backend == "torch"  # compiling is torch's
    assert Acceleration().validated("cuda").backend == "torch"
    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    assert Acceleration().validated("cpu").backend == "torch"
    monkeypatch.setenv("IMG2IMG_BACKEND", "openvino")
    assert Acceleration().validated("cpu").backend == "openvino"
    assert Acceleration(backend="torch").validated("cpu").backend == "torch"  # explicit wins


# ---------------------------------------------------------------- TAESD from the hub cache, and previews

def _hub_cache_with(tmp_path, repo: str, folder) -> str:
    """A Hugging Face cache holding `folder`'s files as the snapshot of `repo` (as a download would leave it)."""
    import shutil

    root = tmp_path / "hub"
    entry = root / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / ("0" * 40)
    shutil.copytree(folder, snapshot)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text("0" * 40)
    return str(root)


def test_taesd_from_the_hub_cache_and_previews_use_it(tiny_sd, tiny_taesd, square_path, tmp_path, monkeypatch):
    import huggingface_hub

    from img2img.server import preview

    latents = {}
    plain = Engine(str(tiny_sd), device="cpu", cache=PipelineCache())
    plain.transform(square_path, "x", seed=1, steps=2, on_step=lambda i, n, lat: latents.setdefault("x", lat))
    # nothing cached: the linear map, at the latents' size
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    preview._TINY.clear()
    linear = Image.open(io.BytesIO(preview.preview_png(plain.load().pipe, latents["x"])))
    side = latents["x"].shape[-1]
    assert linear.size == (side, side)
    # TAESD cached: `--vae taesd` loads it offline, and previews decode with it at full size
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", _hub_cache_with(tmp_path, "madebyollin/taesd",
                                                                                 tiny_taesd))
    preview._TINY.clear()
    full = Image.open(io.BytesIO(preview.preview_png(plain.load().pipe, latents["x"])))
    assert full.size == (8 * side, 8 * side)  # TAESD upsamples 8x (the tiny test model's own VAE only 2x)
    tiny = Engine(str(tiny_sd), device="cpu", vae="taesd", cache=PipelineCache())
    by_name = tiny.transform(square_path, "x", seed=1, steps=2)
    by_folder = Engine(str(tiny_sd), device="cpu", vae=str(tiny_taesd)).transform(square_path, "x", seed=1, steps=2)
    assert by_name.image.tobytes() == by_folder.image.tobytes() and "VAE: taesd" in by_name.infotexts[0]
    # the final image of the plain engine still uses the model's own VAE
    assert type(plain.load().pipe.vae).__name__ == "AutoencoderKL"
    preview._TINY.clear()


def test_openvino_big_outputs_decode_in_torch_tiles(tiny_sd, square_path, openvino_cache, monkeypatch):
    import img2img.backends as backends

    monkeypatch.setenv("IMG2IMG_CACHE_DIR", str(openvino_cache))
    engine = Engine(str(tiny_sd), device="cpu", backend="openvino", cache=PipelineCache())
    vae = engine.load().pipe.vae
    calls = []
    original = type(vae.torch_vae[0]).decode
    monkeypatch.setattr(type(vae.torch_vae[0]), "decode",
                        lambda self, *a, **k: calls.append(self.use_tiling) or original(self, *a, **k))
    monkeypatch.setattr(backends, "TILE_ABOVE_PIXELS", 64 * 64 - 1)
    result = engine.transform(square_path, "x", seed=1, steps=2)
    assert calls == [True] and any("tiles" in notice for notice in result.notices)
    assert vae.use_tiling is False  # back to the compiled decoder for the next call


def test_without_cfg_the_text_encoder_runs_once_and_the_output_is_unchanged(engine, tiny_sd, square_path):
    from diffusers import EulerAncestralDiscreteScheduler

    pipe = engine.load().pipe
    calls = []
    handle = pipe.text_encoder.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        result = engine.transform(square_path, "a tree", negative_prompt="blur", seed=3, steps=4, cfg_scale=1.0,
                                  sampler="Euler a")
    finally:
        handle.remove()
    assert len(calls) == 1  # the negative prompt is not encoded: without CFG nothing reads it
    bare = bare_pipeline(tiny_sd)
    bare.scheduler = EulerAncestralDiscreteScheduler.from_config(bare.scheduler.config)
    expected = bare(prompt="a tree", negative_prompt="blur", image=Image.open(square_path).convert("RGB"),
                    strength=0.75, num_inference_steps=4, guidance_scale=1.0,
                    generator=torch.Generator().manual_seed(3)).images[0]
    assert result.image.tobytes() == expected.tobytes()
