"""`run` and `batch` options end to end, and metadata values pinned to what they must be: each option with an
input where a dropped or swapped value shows in the pixels or the stored parameters."""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from img2img.batch.job import derive_seed
from img2img.batch.log import item_records
from img2img.cli import main
from img2img.images import read_infotext
from img2img.infotext import parse_infotext
from img2img.testing import make_photo


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()  # batch --cpu-threads changes this process's torch setting
    yield
    torch.set_num_threads(threads)


def cli(*args) -> int:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    return done.value.code


def params(path) -> dict:
    return parse_infotext(read_infotext(path))[2]


def rgb_sha(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:10]


@pytest.fixture(scope="module")
def half_transparent(tmp_path_factory):
    """96x64, the left half fully transparent: the background shows there, and only there."""
    rgba = np.asarray(make_photo(96, 64, seed=3).convert("RGBA")).copy()
    rgba[:, :48, 3] = 0
    path = tmp_path_factory.mktemp("inputs") / "half.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return path, rgba


def test_cfg_scale_and_scheduler_reach_the_engine(tmp_path, tiny_sd, square_path, engine, capsys):
    out = tmp_path / "a.png"
    assert cli("run", square_path, "-p", "a fox", "-m", tiny_sd, "--steps", 4, "--seed", 2, "--cfg-scale", 3.5,
               "--sampler", "Euler", "--scheduler", "Exponential", "-o", out, "-q") == 0
    stored = params(out)
    assert (stored["CFG scale"], stored["Sampler"], stored["Schedule type"]) == ("3.5", "Euler", "Exponential")
    expected = engine.transform(square_path, "a fox", steps=4, seed=2, cfg_scale=3.5, sampler="Euler",
                                scheduler="Exponential")
    assert Image.open(out).tobytes() == expected.image.tobytes()
    default = engine.transform(square_path, "a fox", steps=4, seed=2, sampler="Euler", scheduler="Exponential")
    karras = engine.transform(square_path, "a fox", steps=4, seed=2, cfg_scale=3.5, sampler="Euler",
                              scheduler="Karras")
    assert expected.image.tobytes() not in (default.image.tobytes(), karras.image.tobytes())


def test_background_is_composited_hashed_and_recorded(tmp_path, tiny_sd, half_transparent, capsys):
    path, rgba = half_transparent
    out = tmp_path / "green.png"
    assert cli("run", path, "-p", "x", "-m", tiny_sd, "--steps", 2, "--strength", 0.5, "--seed", 1,
               "--background", "#00ff00", "-o", out, "-q") == 0
    white = tmp_path / "white.png"
    assert cli("run", path, "-p", "x", "-m", tiny_sd, "--steps", 2, "--strength", 0.5, "--seed", 1, "-o", white,
               "-q") == 0
    expected = rgba[:, :, :3].copy()
    expected[:, :48] = (0, 255, 0)
    assert params(out)["Background"] == "#00ff00" and "Background" not in params(white)
    assert params(out)["Init image hash"] == rgb_sha(expected)  # sha256 of the RGB pixels after compositing
    expected[:, :48] = 255
    assert params(white)["Init image hash"] == rgb_sha(expected)
    assert Image.open(out).tobytes() != Image.open(white).tobytes()


def test_model_and_init_image_hashes_are_pinned(tmp_path, tiny_sd, photo_path, capsys):
    """Model hash: A1111's short hash of the weights loaded (the UNet file of a diffusers folder); Init image
    hash: sha256 of the input's RGB pixels, the same from a PNG and from a lossless WebP of that picture."""
    webp = tmp_path / "photo.webp"
    Image.open(photo_path).save(webp, lossless=True)
    unet = tiny_sd / "unet" / "diffusion_pytorch_model.safetensors"
    pixels = np.asarray(Image.open(photo_path).convert("RGB"))
    for source in (photo_path, webp):
        out = tmp_path / f"{source.suffix[1:]}.png"
        assert cli("run", source, "-p", "x", "-m", tiny_sd, "--steps", 2, "--strength", 0.5, "-o", out, "-q") == 0
        stored = params(out)
        assert stored["Model hash"] == hashlib.sha256(unet.read_bytes()).hexdigest()[:10]
        assert stored["Init image hash"] == rgb_sha(pixels)
        assert stored["Model"] == "tiny-sd" and stored["Version"].startswith("img2img ")


def test_resize_mode_keep_size_and_background_survive_a_params_from_round_trip(tmp_path, tiny_sd, half_transparent,
                                                                               capsys):
    path, _ = half_transparent
    first = tmp_path / "first.png"
    assert cli("run", path, "-p", "a kite", "-m", tiny_sd, "--steps", 4, "--seed", 9, "--width", 48, "--height", 64,
               "--resize-mode", "fill", "--keep-size", "--background", "#00ff00", "-o", first, "-q") == 0
    assert Image.open(first).size == (96, 64)  # kept: the input's size, not the 48x64 generated
    capsys.readouterr()
    assert cli("info", first, "--json") == 0
    stored = json.loads(capsys.readouterr().out)["parameters"]
    assert (stored["Size"], stored["Resize mode"], stored["Keep size"], stored["Background"]) == (
        "48x64", "fill", "True", "#00ff00")
    again = tmp_path / "again.png"
    assert cli("run", path, "--params-from", first, "-m", tiny_sd, "-o", again, "-q") == 0
    assert again.read_bytes() == first.read_bytes()
    # each of the three matters: change one and the image changes
    for flag in (("--resize-mode", "stretch"), ("--background", "white")):
        other = tmp_path / f"other{flag[1]}.png"
        assert cli("run", path, "--params-from", first, "-m", tiny_sd, *flag, "-o", other, "-q") == 0
        assert Image.open(other).tobytes() != Image.open(first).tobytes()


def test_max_pixels_refuses_a_larger_input(tmp_path, tiny_sd, photo_path, capsys):
    code = cli("run", photo_path, "-p", "x", "-m", tiny_sd, "--max-pixels", 6000, "-o", tmp_path / "x.png")
    err = capsys.readouterr().err
    assert code == 2 and "96x64 is 6,144 pixels, over the limit of 6,000" in err
    assert not (tmp_path / "x.png").exists()
    assert cli("run", photo_path, "-p", "x", "-m", tiny_sd, "--steps", 2, "--strength", 0.5, "--max-pixels", 6144,
               "-o", tmp_path / "x.png", "-q") == 0


# ----------------------------------------------------------------------------------------------------- batch


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    src = tmp_path_factory.mktemp("batch-src")
    (src / "sub").mkdir()
    for i, name in enumerate(("a.png", "b.png", "c.jpg", "sub/d.png")):
        make_photo(64, 64, seed=i).convert("RGB").save(src / name)
    return src


FAST = ("--steps", 2, "--strength", 0.5, "--cpu-threads", 1, "-q")


def keys(out) -> list[str]:
    return sorted(record["key"] for record in item_records(out / "results.jsonl") if record["status"] == "done")


@pytest.mark.parametrize("pattern, expected", [("*.png", ["a", "b"]), ("**/*.png", ["a", "b", "sub/d"]),
                                               ("*.jpg", ["c"])])
def test_batch_glob_sources(tmp_path, tiny_sd, pictures, pattern, expected, capsys):
    out = tmp_path / "out"
    assert cli("batch", f"{pictures}/{pattern}", "-o", out, "-p", "x", "-m", tiny_sd, "--seed", 1, *FAST) == 0
    assert keys(out) == expected
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [f"{k}.png" for k in expected]


def test_batch_of_a_single_file_with_every_generation_option(tmp_path, tiny_sd, half_transparent, capsys):
    path, _ = half_transparent
    out = tmp_path / "out"
    assert cli("batch", path, "-o", out, "-p", "a kite", "-n", "rain", "-m", tiny_sd, "--seed", 42, "--steps", 4,
               "--strength", 0.5, "--cfg-scale", 3, "--sampler", "Euler", "--scheduler", "Exponential", "--width", 48,
               "--height", 64, "--resize-mode", "fill", "--keep-size", "--background", "#00ff00", "--format",
               "webp", "--cpu-threads", 1, "-q") == 0
    (output,) = out.glob("*.webp")
    assert output.name == "half.webp" and Image.open(output).format == "WEBP"
    assert Image.open(output).size == (96, 64)
    text = read_infotext(output)  # in the WebP's EXIF
    prompt, negative, stored = parse_infotext(text)
    assert (prompt, negative) == ("a kite", "rain")
    assert {k: stored[k] for k in ("Steps", "CFG scale", "Sampler", "Schedule type", "Size", "Resize mode",
                                   "Keep size", "Background", "Denoising strength", "Seed")} == {
        "Steps": "4", "CFG scale": "3", "Sampler": "Euler", "Schedule type": "Exponential", "Size": "48x64",
        "Resize mode": "fill", "Keep size": "True", "Background": "#00ff00", "Denoising strength": "0.5",
        "Seed": str(derive_seed(42, "half"))}
    (record,) = item_records(out / "results.jsonl")
    assert record["output"] == "half.webp" and record["parameters"]["cfg_scale"] == 3.0


def test_batch_format_jpeg_names_and_encodes_jpeg(tmp_path, tiny_sd, pictures, capsys):
    out = tmp_path / "out"
    assert cli("batch", pictures, "-o", out, "-p", "x", "-m", tiny_sd, "--seed", 1, "--format", "jpeg", *FAST) == 0
    names = sorted(p.name for p in out.iterdir() if p.name != "results.jsonl")
    assert names == ["a.jpg", "b.jpg", "c.jpg"]
    assert all(Image.open(out / name).format == "JPEG" and "Seed: " in read_infotext(out / name) for name in names)


@pytest.mark.parametrize("base, key, seed", [
    (0, "cats/tom", 1205522319), (42, "a", 3398926652), (123, "sub/c", 3529837288),
    (2**32 - 1, "a", 3398926609),  # wraps around modulo 2**32
    (7, "ü/ñ", 3661402218),  # UTF-8 bytes of the name
])
def test_batch_seed_formula_pinned(base, key, seed):
    """seed = (base + first 4 bytes of sha256(name), big-endian) mod 2**32, values fixed here once."""
    assert derive_seed(base, key) == seed
