"""What the README promises Python users: the names exported, the error classes, Result.save's naming and
its refusal to overwrite, the infotext's keys in A1111's order, and inputs of every documented kind."""

import hashlib

import numpy as np
import pytest
from PIL import Image

import img2img
from img2img import Img2ImgError
from img2img.images import read_infotext
from img2img.infotext import parse_infotext


def test_public_names_and_error_classes():
    for name in ("transform", "Engine", "Request", "Result", "InvalidRequest", "ImageError", "ModelNotAvailable",
                 "OutputError", "Interrupted", "Img2ImgError", "__version__"):
        assert name in img2img.__all__ and hasattr(img2img, name)
    for name in ("InvalidRequest", "ImageError", "ModelNotAvailable", "OutputError", "Interrupted"):
        assert issubclass(getattr(img2img, name), Img2ImgError)
    assert issubclass(img2img.InvalidRequest, ValueError)  # a bad parameter is a ValueError too


@pytest.fixture(scope="module")
def result(engine, square_path):
    return engine.transform(square_path, "a harbour", seed=31, steps=4, batch_size=2)


def test_save_names_by_seed_and_never_overwrites(result, tmp_path):
    paths = result.save(output_dir=tmp_path)
    assert [p.name for p in paths] == ["img2img-31.png", "img2img-32.png"]
    assert [read_infotext(p) for p in paths] == result.infotexts
    again = result.save(output_dir=tmp_path, stem="harbour", fmt="webp")
    assert [p.name for p in again] == ["harbour-31.webp", "harbour-32.webp"]
    taken = result.save(output_dir=tmp_path)  # names taken: new names, the old files stay
    assert [p.name for p in taken] == ["img2img-31-2.png", "img2img-32-2.png"]

    single = tmp_path / "one.png"
    single.write_bytes(b"precious")
    numbered = result.save(single)  # a batch: numbered after the given name, the name itself untouched
    assert [p.name for p in numbered] == ["one-1.png", "one-2.png"] and single.read_bytes() == b"precious"
    numbered[0].write_bytes(b"earlier")
    with pytest.raises(img2img.OutputError, match="already exists"):
        result.save(single)
    assert numbered[0].read_bytes() == b"earlier"
    assert result.save(single, overwrite=True) == numbered and read_infotext(numbered[0]) == result.infotexts[0]

    first = img2img.Result(**{**vars(result), "images": result.images[:1], "seeds": result.seeds[:1],
                              "infotexts": result.infotexts[:1]})
    with pytest.raises(img2img.OutputError, match="already exists"):
        first.save(single)
    assert single.read_bytes() == b"precious"
    assert first.save(single, overwrite=True) == [single] and read_infotext(single) == result.infotexts[0]


def test_infotext_keys_follow_the_readme_sample(engine, photo_path):
    """README: Steps, Sampler, Schedule type, CFG scale, Seed, Size, Model hash, Model, Denoising strength,
    Resize mode, Init image hash, Version; in that order, for a default run."""
    result = engine.transform(photo_path, "oil painting", seed=1, steps=4)
    prompt, negative, params = parse_infotext(result.infotexts[0])
    assert (prompt, negative) == ("oil painting", "")
    assert list(params) == ["Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
                            "Denoising strength", "Resize mode", "Init image hash", "Version"]
    assert [params[k] for k in ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model",
                                "Denoising strength", "Resize mode")] == [
        "4", "DPM++ 2M", "Karras", "7", "1", "80x56", "tiny-sd", "0.75", "crop"]
    assert params["Version"] == f"img2img {img2img.__version__}"
    assert result.infotexts[0].splitlines()[-1].startswith("Steps: 4, Sampler: DPM++ 2M, Schedule type: Karras, ")


def test_every_documented_input_kind_gives_the_same_image(engine, square_path):
    """A path, bytes, a PIL image, and numpy arrays: HxWx3 and HxWx4 uint8, uint16, float in 0..1. Every kind
    reaches the same pixels through the loader; two of them go all the way through transform()."""
    from img2img.images import load_image

    pixels = np.asarray(Image.open(square_path).convert("RGB"))
    opaque = np.dstack([pixels, np.full(pixels.shape[:2], 255, np.uint8)])
    kinds = {"path": square_path, "str": str(square_path), "bytes": square_path.read_bytes(),
             "pil": Image.open(square_path), "uint8": pixels, "rgba": opaque,
             "uint16": pixels.astype(np.uint16) * 257, "float": pixels / 255.0}
    digest = hashlib.sha256(pixels.tobytes()).hexdigest()
    for name, value in kinds.items():
        loaded = load_image(value)
        assert np.asarray(loaded.image).tobytes() == pixels.tobytes() and loaded.digest == digest, name
    from_path, from_float = (engine.transform(kinds[k], "x", seed=3, steps=2, strength=0.5) for k in ("path", "float"))
    assert from_path.image.tobytes() == from_float.image.tobytes()
    assert parse_infotext(from_float.infotexts[0])[2]["Init image hash"] == digest[:10]


def test_on_step_reports_every_denoising_step_with_latents(engine, square_path):
    seen = []
    result = engine.transform(square_path, "x", seed=1, steps=8, strength=0.5,
                              on_step=lambda step, total, latents: seen.append((step, total, tuple(latents.shape))))
    assert [(s, t) for s, t, _ in seen] == [(i, 4) for i in range(1, 5)] and result.effective_steps == 4
    assert seen[0][2] == (1, 4, 32, 32)  # one image, 4 latent channels, 64 px / the tiny VAE's factor 2


def test_history_dir_comes_from_the_environment(tmp_path, monkeypatch, result):
    from img2img.history import History

    monkeypatch.setenv("IMG2IMG_HISTORY_DIR", str(tmp_path / "from-env"))
    history = History()
    assert history.folder == tmp_path / "from-env"
    history.add(result, origin="cli")
    assert (tmp_path / "from-env" / "history.sqlite3").is_file() and history.count() == 2
