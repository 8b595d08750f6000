"""Inpainting and outpainting through the engine: parity with diffusers' inpainting pipelines, the input's
pixels kept outside the mask, A1111's options, and errors before any model loads."""

import numpy as np
import pytest
import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, EulerDiscreteScheduler
from PIL import Image

from img2img import Engine, ImageError, InvalidRequest
from img2img.infotext import fields_from_infotext, parse_infotext
from img2img.models import PipelineCache
from img2img.request import Request
from img2img.testing import make_photo

FAST = {"steps": 6, "strength": 0.75, "sampler": "Euler", "scheduler": "Automatic", "cfg_scale": 5.0}


def box_mask(size=(64, 64), box=(16, 12, 44, 40)):
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def bare_inpaint(folder, image, mask, seed, **kwargs):
    pipe = AutoPipelineForInpainting.from_pretrained(folder)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(image=image, mask_image=mask, generator=torch.Generator("cpu").manual_seed(seed),
               height=image.height, width=image.width, **kwargs)
    return np.asarray(out.images[0])


@pytest.mark.parametrize("fixture", ["tiny_sd", "tiny_sd_inpainting", "tiny_sdxl"])
def test_masked_run_is_diffusers_inpainting_inside_and_the_input_outside(fixture, request):
    # blur 0 and a binary mask: the overlay is exactly "generated inside, input outside"
    folder = request.getfixturevalue(fixture)
    image, mask = make_photo(64, 64), box_mask()
    expected = bare_inpaint(folder, image, mask, 11, prompt="a red door", strength=0.75, num_inference_steps=6,
                            guidance_scale=5.0)
    expected = np.where(np.asarray(mask)[:, :, None] > 0, expected, np.asarray(image))
    result = Engine(str(folder), device="cpu").transform(image, "a red door", mask=mask, seed=11, mask_blur=0,
                                                         **FAST)
    assert np.array_equal(np.asarray(result.image), expected)
    assert np.asarray(result.image)[20:32, 20:40].tobytes() != np.asarray(image)[20:32, 20:40].tobytes()


def test_latent_mask_is_what_the_generation_repaints_and_the_mask_what_is_pasted(tiny_sd):
    # A1111's latent_mask: the pipeline gets it (unblurred); the overlay still follows the mask
    image, mask, latent = make_photo(64, 64), box_mask(), box_mask(box=(24, 20, 36, 32))
    generated = bare_inpaint(tiny_sd, image, latent, 11, prompt="a red door", strength=0.75, num_inference_steps=6,
                             guidance_scale=5.0)
    expected = np.where(np.asarray(mask)[:, :, None] > 0, generated, np.asarray(image))
    result = Engine(str(tiny_sd), device="cpu").run(Request("a red door", seed=11, mask_blur=0, **FAST), image,
                                                    mask=mask, latent_mask=latent)
    assert np.array_equal(np.asarray(result.image), expected)
    with pytest.raises(InvalidRequest, match="latent_mask goes with a mask"):
        Engine(str(tiny_sd), device="cpu").run(Request("x"), image, latent_mask=latent)


def test_outside_a_blurred_mask_the_input_survives_byte_for_byte(engine, photo_path):
    image = Image.open(photo_path)  # 96x64: the generation runs at 80x56, the output is the input's size
    mask = box_mask(image.size, (60, 10, 80, 30))
    result = engine.transform(photo_path, "x", mask=mask, seed=2, inpaint_area="masked", inpaint_padding=4, **FAST)
    out, original = np.asarray(result.image).astype(int), np.asarray(image).astype(int)
    assert result.image.size == image.size
    reach = np.asarray(mask.filter(__import__("PIL.ImageFilter").ImageFilter.MaxFilter(21)))  # blur 4 reaches 10 px
    assert np.array_equal(out[reach == 0], original[reach == 0])
    assert np.abs(out[14:26, 64:76] - original[14:26, 64:76]).mean() > 5  # inside it changed


def test_whole_picture_keeps_the_resized_input_outside_the_doubled_mask(engine, square_path):
    image = Image.open(square_path)
    result = engine.transform(square_path, "x", mask=box_mask(), seed=3, **FAST)  # blur 4 (default)
    out, original = np.asarray(result.image).astype(int), np.asarray(image).astype(int)
    far = np.ones((64, 64), bool)
    far[12 - 10:40 + 10, 16 - 10:44 + 10] = False  # the box plus the blur's reach
    assert np.array_equal(out[far], original[far])
    assert np.abs(out[20:36, 20:40] - original[20:36, 20:40]).mean() > 5
    params = parse_infotext(result.infotexts[0])[2]
    assert (params["Mask blur"], params["Inpaint area"], params["Masked content"]) == ("4", "Whole picture",
                                                                                       "original")
    assert len(params["Mask hash"]) == 10 and "Masked area padding" not in params


def test_inverted_mask_is_the_same_as_the_inverted_file(engine, square_path):
    inverted = Image.eval(box_mask(), lambda v: 255 - v)
    a = engine.transform(square_path, "x", mask=box_mask(), invert_mask=True, seed=4, **FAST)
    b = engine.transform(square_path, "x", mask=inverted, seed=4, **FAST)
    plain = engine.transform(square_path, "x", mask=box_mask(), seed=4, **FAST)
    assert a.image.tobytes() == b.image.tobytes() != plain.image.tobytes()
    assert "Mask mode: Inpaint not masked" in a.infotexts[0]
    centre = np.asarray(a.image)[26, 30].tolist() == np.asarray(Image.open(square_path))[26, 30].tolist()
    assert centre  # the masked box is kept now


def test_only_masked_works_at_the_native_size_and_answers_at_the_input_size(engine, tmp_path):
    image = make_photo(240, 160)
    mask = box_mask(image.size, (200, 120, 216, 136))  # small, near a corner
    calls = []
    result = engine.transform(image, "x", mask=mask, seed=5, inpaint_area="masked", inpaint_padding=8, mask_blur=2,
                              on_step=lambda step, total, latents: calls.append(latents.shape), **FAST)
    assert result.image.size == (240, 160)
    assert (result.width, result.height) == (64, 64)  # the padded box is square: the model's native 64x64
    assert calls[0][-2:] == (32, 32)  # latents of the 64x64 crop (the tiny VAE halves), not of the 240x160 picture
    params = parse_infotext(result.infotexts[0])[2]
    assert params["Inpaint area"] == "Only masked" and params["Masked area padding"] == "8"
    assert params["Size"] == "64x64"


def test_masked_content_modes_start_differently_and_repeat_exactly(engine, square_path):
    runs = {fill: engine.transform(square_path, "x", mask=box_mask(), seed=6, inpaint_fill=fill, **FAST)
            for fill in ("original", "fill", "latent-noise", "latent-nothing")}
    assert len({r.image.tobytes() for r in runs.values()}) == 4
    again = engine.transform(square_path, "x", mask=box_mask(), seed=6, inpaint_fill="latent-noise", **FAST)
    assert again.image.tobytes() == runs["latent-noise"].image.tobytes()
    assert "Masked content: latent noise" in runs["latent-noise"].infotexts[0]
    assert "Masked content: fill" in runs["fill"].infotexts[0]


def test_latent_fill_on_an_inpainting_model_and_in_a_batch(tiny_sd_inpainting, square_path):
    result = Engine(str(tiny_sd_inpainting), device="cpu").transform(
        square_path, "x", mask=box_mask(), seed=7, inpaint_fill=3, batch_size=2, **FAST)  # A1111's 3 = nothing
    assert len(result.images) == 2 and result.images[0].tobytes() != result.images[1].tobytes()
    assert result.request.inpaint_fill == "latent-nothing"


def test_an_inpainting_model_without_a_mask_repaints_everything(tiny_sd_inpainting, square_path):
    engine = Engine(str(tiny_sd_inpainting), device="cpu")
    result = engine.transform(square_path, "x", seed=8, **FAST)
    assert result.image.size == (64, 64) and "Mask" not in result.infotexts[0]


def test_one_mask_over_several_inputs_is_each_input_with_its_batch_seed(engine, square_path):
    other = make_photo(64, 64, seed=4)
    both = engine.run(Request("x", seed=20, batch_size=2, **FAST), [square_path, other], mask=box_mask())
    assert both.seeds == [20, 21] and len(both.images) == len(both.infotexts) == 2
    for image, seed, output in ((square_path, 20, both.images[0]), (other, 21, both.images[1])):
        alone = engine.run(Request("x", seed=seed, **FAST), image, mask=box_mask())
        assert output.tobytes() == alone.image.tobytes()
    with pytest.raises(InvalidRequest, match="64x64 does not match the image's 48x48"):
        engine.run(Request("x", batch_size=2, **FAST), [square_path, make_photo(48, 48)], mask=box_mask())


def test_text_to_image_on_an_inpainting_model_masks_a_blank_picture(tiny_sd_inpainting):
    # as A1111: the whole picture is masked; bare diffusers' inpainting pipeline with a white mask, strength 1
    pipe = AutoPipelineForInpainting.from_pretrained(tiny_sd_inpainting)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(prompt="a red boat", image=Image.new("RGB", (64, 48)), mask_image=Image.new("L", (64, 48), 255),
                    strength=1.0, num_inference_steps=4, guidance_scale=5.0, width=64, height=48,
                    generator=torch.Generator("cpu").manual_seed(16)).images[0]
    engine = Engine(str(tiny_sd_inpainting), device="cpu")
    result = engine.text_to_image("a red boat", seed=16, steps=4, cfg_scale=5.0, sampler="Euler", width=64, height=48)
    assert result.image.size == (64, 48) and result.image.tobytes() == expected.tobytes()
    varied = engine.text_to_image("a red boat", seed=16, steps=4, subseed=3, subseed_strength=0.5, width=64, height=48)
    assert varied.image.size == (64, 48) and varied.image.tobytes() != result.image.tobytes()


def test_mask_round_off_keeps_the_blur_in_the_latent_mask(engine, square_path):
    soft = engine.transform(square_path, "x", mask=box_mask(), seed=9, mask_blur=8, mask_round=False, **FAST)
    hard = engine.transform(square_path, "x", mask=box_mask(), seed=9, mask_blur=8, **FAST)
    assert soft.image.tobytes() != hard.image.tobytes()
    assert "Mask round: False" in soft.infotexts[0]


def test_mask_from_alpha_equals_the_same_mask_as_a_file(engine, tmp_path):
    photo = make_photo(64, 64).convert("RGBA")
    photo.paste((255, 255, 255, 0), (16, 12, 44, 40))  # erased in an editor
    photo.save(tmp_path / "erased.png")
    from_alpha = engine.transform(tmp_path / "erased.png", "x", mask_from_alpha=True, seed=10, **FAST)
    from_file = engine.transform(tmp_path / "erased.png", "x", mask=box_mask(), seed=10, **FAST)
    assert from_alpha.image.tobytes() == from_file.image.tobytes()
    assert "Mask from alpha: True" in from_alpha.infotexts[0]


@pytest.mark.parametrize("margins, fields, size", [
    ((16, 0, 16, 0), {}, (88, 48)),  # 96x48 canvas at the native 64x64 area
    ((16, 0, 16, 0), {"keep_size": True}, (96, 48)),  # back to the canvas size
    ((0, 8, 0, 8), {"width": 64, "height": 64}, (64, 64)),
    ((8, 4, 24, 12), {"inpaint_area": "masked"}, (96, 64)),  # only masked: the canvas, full size
])
def test_outpaint_sizes(engine, margins, fields, size):
    image = make_photo(64, 48)
    result = engine.transform(image, "x", outpaint=margins, seed=12, **FAST, **fields)
    assert result.image.size == size
    params = parse_infotext(result.infotexts[0])[2]
    assert params["Outpaint"] == ",".join(map(str, margins)) and params["Masked content"] == "fill"
    assert "Mask hash" not in params


def test_outpaint_keeps_the_input_away_from_the_seam(engine):
    image = make_photo(64, 48)
    result = engine.transform(image, "x", outpaint=(32, 0, 0, 0), width=96, height=48, seed=13, **FAST)
    out = np.asarray(result.image).astype(int)
    assert np.array_equal(out[:, 32 + 10:], np.asarray(image).astype(int)[:, 10:])  # beyond the blur's reach
    assert np.abs(out[:, :24] - np.asarray(image).astype(int)[:, :1]).mean() > 5  # the new area is painted


def test_infotext_round_trips_the_inpainting_fields(engine, square_path):
    result = engine.transform(square_path, "x", mask=box_mask(), seed=14, mask_blur=(2, 6), invert_mask=True,
                              inpaint_fill="latent-nothing", inpaint_area="masked", inpaint_padding=12, **FAST)
    fields = fields_from_infotext(result.infotexts[0])
    assert fields["mask_blur"] == (2, 6) and fields["invert_mask"] is True and fields["inpaint_padding"] == 12
    assert fields["mask_hash"] == parse_infotext(result.infotexts[0])[2]["Mask hash"]
    fields.pop("mask_hash"), fields.pop("model"), fields.pop("model_hash")
    again = Engine(engine.source.location, device="cpu").transform(square_path, mask=box_mask(), **fields)
    assert again.image.tobytes() == result.image.tobytes()


def test_noise_multiplier_scales_the_noise_added_to_the_input(engine, tiny_sd, square_path):
    # A1111's initial_noise_multiplier: bare diffusers whose scheduler adds 0.6 x its noise gives the same bytes
    pipe = AutoPipelineForImage2Image.from_pretrained(tiny_sd)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    add_noise = pipe.scheduler.add_noise
    pipe.scheduler.add_noise = lambda original, noise, timesteps: add_noise(original, noise * 0.6, timesteps)
    image = Image.open(square_path)
    expected = pipe(prompt="x", image=image, strength=0.75, num_inference_steps=6, guidance_scale=5.0,
                    generator=torch.Generator("cpu").manual_seed(12)).images[0]
    result = engine.transform(square_path, "x", seed=12, noise_multiplier=0.6, **FAST)
    assert result.image.tobytes() == expected.tobytes()
    assert "Noise multiplier: 0.6" in result.infotexts[0]
    assert fields_from_infotext(result.infotexts[0])["noise_multiplier"] == 0.6
    assert "Noise multiplier" not in engine.transform(square_path, "x", seed=12, **FAST).infotexts[0]
    # inpainting at strength 1 starts from pure noise: scaled too
    full = {**FAST, "strength": 1.0}
    plain = engine.transform(square_path, "x", mask=box_mask(), seed=12, **full)
    scaled = engine.transform(square_path, "x", mask=box_mask(), seed=12, noise_multiplier=0.6, **full)
    assert plain.image.tobytes() != scaled.image.tobytes()
    with pytest.raises(InvalidRequest, match="text-to-image has none"):
        engine.text_to_image("x", noise_multiplier=0.6)


@pytest.mark.parametrize("mask, fields, error, message", [
    (Image.new("L", (64, 64), 0), {}, InvalidRequest, "nothing to repaint: the mask is all black"),
    (Image.new("L", (64, 64), 255), {"invert_mask": True}, InvalidRequest, "inverted it selects no pixel"),
    (Image.new("L", (32, 32), 255), {}, InvalidRequest, "32x32 does not match the image's 64x64"),
    (b"not an image", {}, ImageError, "mask: not an image"),
    (None, {"invert_mask": True}, InvalidRequest, "invert_mask applies to a mask"),
    (None, {"inpaint_area": "masked"}, InvalidRequest, "inpaint_area applies to a mask"),
    (box_mask(), {"outpaint": (8, 0, 0, 0)}, InvalidRequest, "a mask and outpaint both set the area"),
    (None, {"mask_from_alpha": True}, InvalidRequest, "has no transparent pixels"),
    (None, {"outpaint": (4096, 0, 0, 0)}, InvalidRequest, "the canvas would be 4160x64"),
    (box_mask(), {"inpaint_fill": "noise"}, InvalidRequest, "inpaint_fill must be one of"),
    (None, {"noise_multiplier": -0.5}, InvalidRequest, r"noise_multiplier must be in \[0, 10\], got -0.5"),
])
def test_bad_masks_fail_before_the_model_loads(tiny_sd, square_path, mask, fields, error, message):
    cache = PipelineCache()
    with pytest.raises(error, match=message):
        Engine(str(tiny_sd), cache=cache).transform(square_path, "x", mask=mask, **fields)
    assert cache.loaded() == []


def test_single_file_inpainting_checkpoint_is_detected_from_its_unet(tiny_sd_inpainting, tiny_sd, tmp_path,
                                                                      square_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from ldm_checkpoint import write_ldm_checkpoint

    checkpoint = write_ldm_checkpoint(tiny_sd_inpainting, tmp_path / "inpainting.safetensors")
    engine = Engine(str(checkpoint), config=str(tiny_sd_inpainting), device="cpu", cache=PipelineCache())
    assert engine.load().is_inpainting
    from_file = engine.transform(square_path, "x", mask=box_mask(), seed=15, **FAST)
    from_folder = Engine(str(tiny_sd_inpainting), device="cpu").transform(square_path, "x", mask=box_mask(), seed=15,
                                                                           **FAST)
    assert from_file.image.tobytes() == from_folder.image.tobytes()
    from img2img import ModelNotAvailable

    with pytest.raises(ModelNotAvailable, match=r"is an inpainting model \(9-channel UNet\), but the config folder"):
        Engine(str(checkpoint), config=str(tiny_sd), device="cpu", cache=PipelineCache()).load()
