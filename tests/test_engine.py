"""The engine against bare diffusers: same inputs and seed -> the same bytes; and its properties."""

import numpy as np
import pytest
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)
from PIL import Image

from img2img import Engine, InvalidRequest, transform
from img2img.infotext import parse_infotext
from img2img.models import PipelineCache


def bare_pipeline(folder, scheduler_cls, **scheduler_kwargs):
    pipe = AutoPipelineForImage2Image.from_pretrained(folder)
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **scheduler_kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bare_image(pipe, image, seed, **kwargs):
    out = pipe(image=image, generator=torch.Generator("cpu").manual_seed(seed), **kwargs)
    return out.images[0]


def test_default_run_matches_bare_diffusers_byte_for_byte(engine, tiny_sd, square_path):
    # Our default: DPM++ 2M with its Automatic schedule (Karras), 25 steps, CFG 7, strength 0.75.
    pipe = bare_pipeline(tiny_sd, DPMSolverMultistepScheduler, use_karras_sigmas=True,
                         algorithm_type="dpmsolver++")
    expected = bare_image(pipe, Image.open(square_path), 42, prompt="a lighthouse", strength=0.75,
                          num_inference_steps=25, guidance_scale=7.0)
    result = engine.transform(square_path, "a lighthouse", seed=42)
    assert result.image.size == (64, 64)
    assert result.image.tobytes() == expected.tobytes()


def test_sdxl_matches_bare_diffusers(tiny_sdxl, square_path):
    pipe = bare_pipeline(tiny_sdxl, EulerAncestralDiscreteScheduler)
    expected = bare_image(pipe, Image.open(square_path), 7, prompt="a fox", strength=0.6, num_inference_steps=10,
                          guidance_scale=5.0)
    result = Engine(str(tiny_sdxl)).transform(square_path, "a fox", seed=7, strength=0.6, steps=10,
                                              cfg_scale=5.0, sampler="Euler a")
    assert result.image.tobytes() == expected.tobytes()


def test_negative_prompt_and_sampler_parity(engine, tiny_sd, square_path):
    pipe = bare_pipeline(tiny_sd, EulerDiscreteScheduler, use_karras_sigmas=True)
    expected = bare_image(pipe, Image.open(square_path), 3, prompt="snow", negative_prompt="rain",
                          strength=0.5, num_inference_steps=12, guidance_scale=4.0)
    result = engine.transform(square_path, "snow", negative_prompt="rain", seed=3, strength=0.5, steps=12,
                              cfg_scale=4.0, sampler="Euler", scheduler="Karras")
    assert result.image.tobytes() == expected.tobytes()


def test_input_image_matters(engine, square_path, photo_path):
    # The old notebook's bug: the input was ignored. Different inputs must give different outputs.
    a = engine.transform(square_path, "x", seed=1, steps=6)
    b = engine.transform(Image.open(photo_path).resize((64, 64)), "x", seed=1, steps=6)
    assert a.image.tobytes() != b.image.tobytes()


def test_same_seed_same_bytes_other_seed_or_strength_differs(engine, square_path):
    first = engine.transform(square_path, "x", seed=5, steps=8)
    again = engine.transform(square_path, "x", seed=5, steps=8)
    other_seed = engine.transform(square_path, "x", seed=6, steps=8)
    other_strength = engine.transform(square_path, "x", seed=5, steps=8, strength=0.5)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.image.tobytes() != other_seed.image.tobytes()
    assert first.image.tobytes() != other_strength.image.tobytes()


@pytest.mark.parametrize("steps, strength", [(10, 0.75), (8, 0.5), (5, 1.0), (3, 0.34)])
def test_unet_runs_exactly_steps_times_strength(engine, square_path, steps, strength):
    calls = []
    unet = engine.load().pipe.unet
    handle = unet.register_forward_hook(lambda *args: calls.append(1))
    seen = []
    try:
        result = engine.transform(square_path, "x", seed=1, steps=steps, strength=strength, sampler="Euler",
                                  on_step=lambda step, total, latents: seen.append((step, total)))
    finally:
        handle.remove()
    assert len(calls) == int(steps * strength) == result.effective_steps
    assert seen[-1] == (result.effective_steps, result.effective_steps)


def test_zero_effective_steps_rejected_before_model_loads(tiny_sd, square_path):
    cache = PipelineCache()
    engine = Engine(str(tiny_sd), cache=cache)
    with pytest.raises(InvalidRequest, match="gives 0 denoising steps"):
        engine.transform(square_path, "x", steps=3, strength=0.2)
    assert cache.loaded() == []


def test_bad_image_rejected_before_model_loads(tiny_sd, tmp_path):
    from img2img import ImageError

    cache = PipelineCache()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="bad.png: not an image"):
        Engine(str(tiny_sd), cache=cache).transform(tmp_path / "bad.png", "x")
    assert cache.loaded() == []


def test_batch_gets_consecutive_seeds_recorded_in_infotexts(engine, square_path):
    result = engine.transform(square_path, "x", seed=100, batch_size=3, steps=4, strength=0.5)
    assert result.seeds == [100, 101, 102]
    assert len(result.images) == 3
    assert [parse_infotext(t)[2]["Seed"] for t in result.infotexts] == ["100", "101", "102"]
    assert len({im.tobytes() for im in result.images}) == 3


def test_random_seed_is_recorded_and_reproduces(engine, square_path):
    first = engine.transform(square_path, "x", steps=4)
    assert first.request.seed == first.seeds[0]
    again = engine.transform(square_path, "x", steps=4, seed=first.seeds[0])
    assert again.image.tobytes() == first.image.tobytes()


@pytest.mark.parametrize(
    "size, kwargs, expected",
    [
        ((96, 64), {}, (80, 56)),  # aspect kept, area near native 64x64
        ((64, 96), {}, (56, 80)),
        ((96, 64), {"width": 64, "height": 64, "resize_mode": "stretch"}, (64, 64)),
        ((96, 64), {"width": 64, "height": 64, "resize_mode": "crop"}, (64, 64)),
        ((96, 64), {"width": 64, "height": 96, "resize_mode": "fill"}, (64, 96)),
        ((96, 64), {"width": 128}, (128, 88)),
        ((96, 64), {"keep_size": True}, (96, 64)),
        ((96, 64), {"width": 64, "height": 64, "resize_mode": 2}, (64, 64)),
    ],
)
def test_output_sizes(engine, size, kwargs, expected):
    image = Image.new("RGB", size, "purple")
    result = engine.transform(image, "x", seed=1, steps=2, strength=0.5, **kwargs)
    assert result.image.size == expected


def test_resize_modes_give_different_pictures(engine, photo_path):
    outputs = {
        mode: engine.transform(photo_path, "x", seed=1, steps=2, strength=0.5, width=64, height=64,
                               resize_mode=mode).image.tobytes()
        for mode in ("stretch", "crop", "fill")
    }
    assert len(set(outputs.values())) == 3


def test_input_kinds_give_identical_results(engine, square_path):
    as_path = engine.transform(square_path, "x", seed=9, steps=4)
    as_bytes = engine.transform(square_path.read_bytes(), "x", seed=9, steps=4)
    as_array = engine.transform(np.asarray(Image.open(square_path)), "x", seed=9, steps=4)
    assert as_path.image.tobytes() == as_bytes.image.tobytes() == as_array.image.tobytes()


def test_infotext_records_what_ran(engine, photo_path):
    result = engine.transform(photo_path, "a boat", negative_prompt="fog", seed=11, strength=0.6)
    prompt, negative, params = parse_infotext(result.infotexts[0])
    assert (prompt, negative) == ("a boat", "fog")
    assert params["Steps"] == "25" and params["Sampler"] == "DPM++ 2M" and params["Schedule type"] == "Karras"
    assert params["CFG scale"] == "7" and params["Seed"] == "11" and params["Denoising strength"] == "0.6"
    assert params["Size"] == "80x56" and params["Model"] == "tiny-sd"
    assert len(params["Model hash"]) == 10 and len(params["Init image hash"]) == 10


def test_transform_function_reuses_cached_pipeline(tiny_sd, square_path):
    first = transform(square_path, "x", model=str(tiny_sd), seed=2, steps=4)
    second = transform(square_path, "x", model=str(tiny_sd), seed=2, steps=4)
    assert first.image.tobytes() == second.image.tobytes()
    assert first.model == "tiny-sd" and first.device == "cpu" and first.dtype == "float32"


def test_interrupt_stops_the_run(engine, square_path):
    from img2img import Interrupted

    def stop_after_two(step, total, latents):
        if step == 2:
            engine.interrupt()

    with pytest.raises(Interrupted):
        engine.transform(square_path, "x", seed=1, steps=10, on_step=stop_after_two)
    # the next run is not affected
    assert engine.transform(square_path, "x", seed=1, steps=2, strength=0.5).images


def test_safety_checker_report(tiny_sd_flagging, square_path):
    flagged = Engine(str(tiny_sd_flagging)).transform(square_path, "x", seed=1, steps=2, strength=0.5)
    assert flagged.nsfw == [True]
    assert np.asarray(flagged.image).max() == 0  # blacked out, and...
    assert any("blacked out by the model's safety checker" in n for n in flagged.notices)  # ...said so
    free = Engine(str(tiny_sd_flagging), safety_checker=False).transform(square_path, "x", seed=1, steps=2,
                                                                         strength=0.5)
    assert free.nsfw == [False] and np.asarray(free.image).max() > 0
    assert "safety checker disabled" in free.notices


def test_half_precision_vae_overflow_is_decoded_again_in_float32(tmp_path, square_path):
    from img2img.testing import build_tiny_sd

    folder = build_tiny_sd(tmp_path / "overflowing")
    # Weights at the edge of float16 (max 65504): any sum of them overflows in half precision only.
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder / "vae")
    vae.decoder.conv_in.weight.data.fill_(6e4)
    vae.save_pretrained(folder / "vae")
    result = Engine(str(folder), dtype="float16").transform(square_path, "x", seed=1, steps=2, strength=0.5)
    assert "the VAE overflowed in half precision; decoded again in float32" in result.notices
    pixels = np.asarray(result.image)
    assert pixels.std() > 0  # a real picture, not the black frame NaNs would give


def test_extreme_aspect_ratio_is_clamped_with_a_notice(engine):
    # 75:1 at the tiny model's native area would be 552x8; automatic sizes keep at least 32 px (64 on real models)
    result = engine.transform(Image.new("RGB", (900, 12), "purple"), "x", seed=1, steps=2, strength=0.5)
    assert result.image.size == (128, 32)
    assert any("aspect ratio 75:1" in n and "128x32" in n and "cropped" in n for n in result.notices)


def test_extreme_aspect_ratio_with_a_mask_is_clamped_with_a_notice(engine):
    # the whole picture is repainted at the clamped size, so the crop that brings it there must be said too
    mask = Image.new("L", (900, 12), 0)
    mask.paste(255, (400, 0, 500, 12))
    result = engine.transform(Image.new("RGB", (900, 12), "purple"), "x", mask=mask, seed=1, steps=2, strength=0.5)
    assert result.image.size == (128, 32)
    assert any("aspect ratio 75:1" in n and "128x32" in n and "cropped" in n for n in result.notices)
    # the masked area alone is generated at its own aspect: nothing of the picture is cut, no notice
    only_masked = engine.transform(Image.new("RGB", (900, 12), "purple"), "x", mask=mask, seed=1, steps=2,
                                   strength=0.5, inpaint_area="masked")
    assert only_masked.image.size == (900, 12)
    assert not any("side limits" in n for n in only_masked.notices)


def test_keep_size_with_automatic_size_stretches_so_the_result_lines_up(engine, photo_path):
    # 96x64 generates at 80x56 (aspect 1.43, not 1.5): a crop would cut 5 columns that keep_size stretched back.
    result = engine.transform(photo_path, "x", seed=1, steps=2, strength=0.5, keep_size=True)
    assert result.image.size == (96, 64)
    assert result.request.resize_mode == "stretch"
    assert "Resize mode: stretch" in result.infotexts[0] and "Keep size: True" in result.infotexts[0]


def test_keep_size_with_a_cropping_explicit_size_is_refused_before_loading(tiny_sd, photo_path):
    cache = PipelineCache()
    engine = Engine(str(tiny_sd), cache=cache)
    with pytest.raises(InvalidRequest, match="keep_size.*crop would cut 32 of the input's 96 columns"):
        engine.transform(photo_path, "x", width=64, height=64, keep_size=True, resize_mode="crop")
    assert cache.loaded() == []
    filled = engine.transform(photo_path, "x", seed=1, steps=2, strength=0.5, width=64, height=64,
                              keep_size=True, resize_mode="fill")
    assert filled.image.size == (96, 64) and filled.request.resize_mode == "fill"


def _run_in_thread(target):
    import threading

    outcome = {}

    def run():
        try:
            outcome["result"] = target()
        except Exception as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_interrupt_while_the_input_is_prepared_is_not_lost(engine, square_path, monkeypatch):
    import threading

    from img2img import Interrupted
    from img2img import job as job_module

    reading, go_on = threading.Event(), threading.Event()
    real_load_image = job_module.load_image  # each job reads its input (img2img.job)

    def slow_load_image(*args, **kwargs):
        reading.set()
        go_on.wait(30)
        return real_load_image(*args, **kwargs)

    monkeypatch.setattr(job_module, "load_image", slow_load_image)
    steps = []
    thread, outcome = _run_in_thread(lambda: engine.transform(square_path, "x", seed=1, steps=4,
                                                              on_step=lambda *a: steps.append(a)))
    assert reading.wait(30)
    engine.interrupt()
    go_on.set()
    thread.join(60)
    assert isinstance(outcome.get("error"), Interrupted) and steps == []


def test_interrupt_while_waiting_for_the_lock_is_not_lost(engine, square_path, monkeypatch):
    import threading

    from img2img import Interrupted
    from img2img import engine as engine_module
    from img2img import job as job_module

    read = threading.Event()
    real_load_image = job_module.load_image  # each job reads its input (img2img.job)

    def load_image_then_signal(*args, **kwargs):
        loaded = real_load_image(*args, **kwargs)
        read.set()
        return loaded

    monkeypatch.setattr(job_module, "load_image", load_image_then_signal)
    with engine_module.GPU_LOCK:  # another generation is running
        thread, outcome = _run_in_thread(lambda: engine.transform(square_path, "x", seed=1, steps=4))
        assert read.wait(30)  # past its input, now waiting for the lock
        engine.interrupt()
    thread.join(60)
    assert isinstance(outcome.get("error"), Interrupted)


def test_an_interrupt_with_nothing_running_does_not_stop_the_next_run(engine, square_path):
    engine.interrupt()
    assert engine.transform(square_path, "x", seed=1, steps=2, strength=0.5).images


def test_numpy_scalars_run_like_python_numbers(engine, square_path):
    plain = engine.transform(square_path, "x", seed=5, strength=0.5, steps=4)
    numpy = engine.transform(square_path, "x", seed=np.int64(5), strength=np.float32(0.5), steps=np.int32(4))
    assert numpy.image.tobytes() == plain.image.tobytes() and numpy.infotexts == plain.infotexts


def test_batch_seeds_wrap_past_the_largest_seed(engine, square_path):
    # 4294967295 with a batch of 2: the second image's seed is 0 (not 4294967296, which no door accepts back)
    batch = engine.transform(square_path, "x", seed=4294967295, batch_size=2, steps=4, strength=0.5)
    assert batch.seeds == [4294967295, 0]
    assert [parse_infotext(t)[2]["Seed"] for t in batch.infotexts] == ["4294967295", "0"]
    single = engine.transform(square_path, "x", seed=0, steps=4, strength=0.5)
    assert np.abs(np.asarray(single.image, float) - np.asarray(batch.images[1], float)).max() <= 1


def test_saving_keeps_the_image_when_the_infotext_is_too_long_for_jpeg(engine, square_path, tmp_path):
    # Prompts of 2 x 10,000 characters outside the Basic Multilingual Plane make a 40,000-unit infotext, over
    # the 64 KB a JPEG EXIF segment holds. (Set on the result: encoding such prompts on the tiny model is slow.)
    from img2img.images import read_infotext
    from img2img.infotext import format_infotext

    result = engine.transform(square_path, "x", seed=4, steps=2, strength=0.5)
    params = parse_infotext(result.infotexts[0])[2]
    prompt, negative = "\N{SUNFLOWER}" * 10_000, "\N{FOG}" * 10_000
    result.infotexts = [format_infotext(prompt, negative, params)]
    [path] = result.save(tmp_path / "long.jpg")
    assert Image.open(path).format == "JPEG" and Image.open(path).size == result.image.size
    assert any("the infotext is too long for JPEG metadata" in n for n in result.notices)
    stored_prompt, stored_negative, stored_params = parse_infotext(read_infotext(path))
    assert stored_params == params  # every parameter, whole
    assert stored_prompt.endswith("\N{HORIZONTAL ELLIPSIS}") and prompt.startswith(stored_prompt[:-1])
    assert stored_negative.endswith("\N{HORIZONTAL ELLIPSIS}") and negative.startswith(stored_negative[:-1])


def test_keep_size_with_latent_resize_maps_back_onto_the_input(engine, photo_path):
    # latent resizes the encoded input (a stretch): keep_size stretches the result back over the whole input
    result = engine.transform(photo_path, "x", seed=1, steps=2, strength=0.5, width=64, height=64,
                              resize_mode="latent", keep_size=True)
    assert result.image.size == (96, 64) and result.width == result.height == 64
