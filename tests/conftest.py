"""Shared fixtures: tiny random-weight models built offline once per session, and test pictures."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never touch the network, whatever the caller's environment says
# Automatic dtype is bfloat16 on CPUs with native bf16; tests compare bytes with bare float32 diffusers, so
# they pin float32 (tests of the automatic choice remove this).
os.environ["IMG2IMG_DTYPE"] = "float32"
# Likewise the automatic backend is OpenVINO where it is installed (the test extra installs it); tests of it
# ask for it by name.
os.environ["IMG2IMG_BACKEND"] = "torch"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# Servers and UIs started by tests keep their history here, never in the user's data folder.
os.environ["IMG2IMG_HISTORY_DIR"] = tempfile.mkdtemp(prefix="img2img-test-history-")
# ...and remember model hashes here, never in the user's cache folder.
os.environ["IMG2IMG_CACHE_DIR"] = tempfile.mkdtemp(prefix="img2img-test-cache-")

from img2img import models  # noqa: E402
from img2img.testing import (  # noqa: E402
    build_embedding,
    build_lora_kohya,
    build_lora_peft,
    build_tiny_sd,
    build_tiny_sdxl,
    make_photo,
)

# Tests switch between several tiny models; users keep the default capacity of one.
models.CACHE.capacity = 4


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_sd_b(tmp_path_factory):
    """A second tiny SD model with other random weights: a switch between models shows in the pixels."""
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd-b", seed=1)


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    return build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_sd_inpainting(tmp_path_factory):
    """A tiny dedicated inpainting model: 9-channel UNet."""
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd-inpainting", inpainting=True)


@pytest.fixture(scope="session")
def tiny_taesd(tmp_path_factory):
    """A tiny AutoencoderTiny (TAESD's architecture with 8 channels), saved as a diffusers folder."""
    from img2img.testing import build_tiny_autoencoder

    return build_tiny_autoencoder(tmp_path_factory.mktemp("models") / "tiny-taesd")


@pytest.fixture(scope="session")
def tiny_sd_flagging(tmp_path_factory):
    """A tiny model whose safety checker flags every image."""
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd-checker", safety_checker=True,
                         flag_everything=True)


@pytest.fixture(scope="session")
def photo_path(tmp_path_factory):
    """A 96x64 picture: aspect 3:2, smaller than the tiny models' native 64x64 area."""
    path = tmp_path_factory.mktemp("inputs") / "photo.png"
    make_photo(96, 64).save(path)
    return path


@pytest.fixture(scope="session")
def square_path(tmp_path_factory):
    """A 64x64 picture: exactly the tiny models' native size, so it reaches the pipeline unresized."""
    path = tmp_path_factory.mktemp("inputs") / "square.png"
    make_photo(64, 64, seed=1).save(path)
    return path


@pytest.fixture(scope="session")
def engine(tiny_sd):
    from img2img import Engine

    return Engine(str(tiny_sd), device="cpu")


@pytest.fixture(scope="session")
def folders(tiny_sd, tiny_sdxl, tmp_path_factory):
    """loras/ (kohya, PEFT in a subfolder, an SDXL-only one, a pickle), embeddings/ (SD x2, SDXL), styles.csv."""
    root = tmp_path_factory.mktemp("networks")
    build_lora_kohya(tiny_sd, root / "loras" / "kohya.safetensors")
    build_lora_peft(tiny_sd, root / "loras" / "styles" / "peft.safetensors")
    build_lora_kohya(tiny_sdxl, root / "loras" / "xl-only.safetensors", seed=3)
    (root / "loras" / "old.pt").write_bytes(b"not read")
    build_embedding(tiny_sd, root / "embeddings" / "fuzzy.safetensors", vectors=3)
    build_embedding(tiny_sd, root / "embeddings" / "legacy.safetensors", layout="string_to_param", seed=2)
    build_embedding(tiny_sdxl, root / "embeddings" / "xlemb.safetensors", layout="sdxl", seed=4)
    (root / "styles.csv").write_text('name,prompt,negative_prompt\nfilm,"{prompt}, film grain",blurry\n'
                                     'warm,"warm light",\n')
    return root


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Playwright (never `playwright install`: the system's chromium)."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it with apt-get)")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
