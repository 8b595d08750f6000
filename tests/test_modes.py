"""Pipeline modes: text-to-image runs on the loaded image-to-image weights (one copy), matching bare diffusers."""

import pytest
import torch
from diffusers import AutoPipelineForText2Image, EulerDiscreteScheduler

from img2img import Engine, InvalidRequest
from img2img.engine import choose_mode
from img2img.infotext import parse_infotext
from img2img.request import Request


def bare_text_to_image(folder, seed, **kwargs):
    pipe = AutoPipelineForText2Image.from_pretrained(folder)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images[0]


def test_text_to_image_matches_bare_diffusers(engine, tiny_sd):
    # Non-square, so swapped width and height would show.
    expected = bare_text_to_image(tiny_sd, 11, prompt="a red boat", negative_prompt="fog", num_inference_steps=5,
                                  guidance_scale=6.0, width=64, height=48)
    result = engine.text_to_image("a red boat", negative_prompt="fog", seed=11, steps=5, cfg_scale=6.0,
                                  sampler="Euler", width=64, height=48)
    assert result.image.size == (64, 48)
    assert result.image.tobytes() == expected.tobytes()
    assert result.effective_steps == 5 and result.request.strength == 1.0


def test_text_to_image_shares_the_loaded_weights(engine):
    loaded = engine.load()
    view = loaded.pipeline("txt2img")
    assert view is loaded.pipeline("txt2img")  # made once per loaded model
    assert "Img2Img" not in type(view).__name__ and "Img2Img" in type(loaded.pipe).__name__
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(view, name) is getattr(loaded.pipe, name), name
    assert loaded.pipeline("img2img") is loaded.pipe


def test_text_to_image_infotext_has_no_image_keys(engine):
    result = engine.text_to_image("a lighthouse", seed=4, steps=3)
    prompt, _, params = parse_infotext(result.infotexts[0])
    assert prompt == "a lighthouse" and params["Seed"] == "4" and params["Size"] == "64x64"
    for key in ("Denoising strength", "Resize mode", "Init image hash"):
        assert key not in params


def test_modes_do_not_disturb_each_other(engine, square_path):
    before = engine.transform(square_path, "x", seed=2, steps=4, strength=0.5)
    engine.text_to_image("y", seed=2, steps=4)
    after = engine.transform(square_path, "x", seed=2, steps=4, strength=0.5)
    assert before.image.tobytes() == after.image.tobytes()


def test_sdxl_text_to_image(tiny_sdxl):
    engine = Engine(str(tiny_sdxl))
    result = engine.text_to_image("a fox", seed=1, steps=3, width=64, height=32)
    assert result.image.size == (64, 32)
    assert "XL" in type(engine.load().pipeline("txt2img")).__name__


def test_choose_mode_and_errors(engine):
    assert choose_mode(Request(prompt="x"), None) == "txt2img"
    assert choose_mode(Request(prompt="x"), b"png bytes") == "img2img"
    with pytest.raises(InvalidRequest, match="text_to_image"):
        engine.transform(None, "x")


def test_text_to_image_variation_seeds(engine):
    # strength 0 is the seed's image, strength 1 the subseed's (A1111's slerp of the two starting noises)
    settings = {"steps": 3, "width": 64, "height": 64}
    seed_image = engine.text_to_image("x", seed=5, **settings).image.tobytes()
    subseed_image = engine.text_to_image("x", seed=6, **settings).image.tobytes()
    varied = engine.text_to_image("x", seed=5, subseed=6, subseed_strength=1.0, **settings)
    assert varied.image.tobytes() == subseed_image and "Variation seed: 6" in varied.infotexts[0]
    halfway = engine.text_to_image("x", seed=5, subseed=6, subseed_strength=0.5, **settings).image.tobytes()
    assert halfway not in (seed_image, subseed_image)
