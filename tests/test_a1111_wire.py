"""The A1111 wire policy, payload by payload, without HTTP: what is accepted, ignored (with a notice),
substituted or refused (422 naming the field), and what it becomes in our terms."""

import base64
import io
import json
import re

import pytest
from PIL import Image

from img2img.errors import InvalidRequest
from img2img.server.a1111.options import OPTIONS_FILE, Options
from img2img.server.a1111.payloads import Img2ImgPayload, Txt2ImgPayload
from img2img.server.a1111.routes import attach_options
from img2img.server.a1111.translate import translate
from img2img.server.config import ServerConfig
from img2img.server.service import Service
from img2img.testing import make_photo


@pytest.fixture
def service(tmp_path):
    # Translation reads the model's defaults and names but never loads it: a model alias is enough.
    running = Service(ServerConfig(models=["sd21-base"], device="cpu", ui=False, history_dir=str(tmp_path)))
    attach_options(running)
    yield running
    running.queue.shutdown(grace=0)


def encoded(fmt="PNG", size=(48, 32), prefix="") -> str:
    buffer = io.BytesIO()
    make_photo(*size).convert("RGB").save(buffer, fmt)
    return prefix + base64.b64encode(buffer.getvalue()).decode()


def img2img(service, **fields):
    payload = {"init_images": [encoded()], "prompt": "x", **fields}
    return translate(Img2ImgPayload.model_validate(payload), service)


def txt2img(service, **fields):
    return translate(Txt2ImgPayload.model_validate({"prompt": "x", **fields}), service)


def test_a1111s_own_img2img_test_payload(service):
    # test/test_img2img.py in AUTOMATIC1111/stable-diffusion-webui, verbatim apart from the image.
    payload = {"batch_size": 1, "cfg_scale": 7, "denoising_strength": 0.75, "eta": 0, "height": 64,
               "include_init_images": False, "init_images": [encoded(prefix="data:image/png;base64,")],
               "inpaint_full_res": False, "inpaint_full_res_padding": 0, "inpainting_fill": 0,
               "inpainting_mask_invert": False, "mask": None, "mask_blur": 4, "n_iter": 1, "negative_prompt": "",
               "override_settings": {}, "prompt": "example prompt", "resize_mode": 0, "restore_faces": False,
               "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0, "sampler_index": "Euler a", "seed": -1,
               "seed_resize_from_h": -1, "seed_resize_from_w": -1, "steps": 3, "styles": [], "subseed": -1,
               "subseed_strength": 0, "tiling": False, "width": 64}
    translated = translate(Img2ImgPayload.model_validate(payload), service)
    request = translated.request
    assert (request.sampler, request.scheduler, request.eta) == ("Euler a", "Automatic", 0)  # eta 0: Euler
    assert (request.steps, request.strength, request.width, request.height) == (3, 0.75, 64, 64)
    assert request.s_tmax is None and request.s_churn == 0 and request.s_noise == 1  # s_tmax 0 means no limit
    assert translated.notices == [] and translated.mode == "img2img" and len(translated.images) == 1


def test_unknown_fields_and_nulls_are_accepted_and_reported(service):
    # SillyTavern's server adds its own url/auth keys and SD.Next's clip_skip to every request.
    translated = txt2img(service, url="http://127.0.0.1:7860", auth="", clip_skip=1, prompt=None, steps=None,
                         sampler_name=None, cfg_scale=None, override_settings=None, styles=None, eta=None)
    assert translated.notices == ["ignored fields this API does not have: auth, clip_skip, url"]
    request = translated.request
    assert request.prompt == "" and request.steps == 25 and request.sampler == "DPM++ 2M"
    assert request.cfg_scale == 7.0


def test_numbers_are_read_as_pydantic_1_read_them(service):
    # The AIYA Discord bot sends hr_second_pass_steps as steps / 2, a float such as 12.5.
    payload = Txt2ImgPayload.model_validate({"prompt": 5, "seed": "7", "hr_second_pass_steps": 12.5,
                                             "enable_hr": 1, "steps": 25.0})
    assert (payload.prompt, payload.seed, payload.hr_second_pass_steps, payload.enable_hr, payload.steps) == \
        ("5", 7, 12, True, 25)
    with pytest.raises(ValueError):
        Txt2ImgPayload.model_validate({"steps": "many"})


@pytest.mark.parametrize("fmt, prefix", [("JPEG", ""), ("JPEG", "data:image/png;base64,"), ("WEBP", ""),
                                         ("PNG", "data:image/jpeg;base64,"), ("GIF", "")])
def test_any_image_format_whatever_the_prefix_says(service, fmt, prefix):
    text = encoded(fmt, prefix=prefix)
    if fmt == "JPEG":
        assert text.removeprefix(prefix).startswith("/9j/")  # was taken for a file path
    image = Image.open(io.BytesIO(img2img(service, init_images=[text]).images[0]))
    assert image.format == fmt and image.size == (48, 32)


def test_base64_spellings(service):
    text = encoded()
    wrapped = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))  # MIME line breaks
    urlsafe = text.replace("+", "-").replace("/", "_").rstrip("=")
    for variant in (wrapped, urlsafe, " " + text + " "):
        assert img2img(service, init_images=[variant]).images[0] == base64.b64decode(text)


@pytest.mark.parametrize("value, words", [
    ("https://example.com/cat.png", "--allow-image-urls"),
    ("file:///etc/passwd", "file URLs are not accepted"),
    ("!!not base64!!", "not valid base64"),
    ("", "expected a base64-encoded image"),
])
def test_images_that_are_not_base64(service, value, words):
    with pytest.raises(InvalidRequest, match="init_images\\[0\\]") as error:
        img2img(service, init_images=[value])
    assert words in str(error.value)


def test_several_init_images_are_one_batch(service):
    translated = img2img(service, init_images=[encoded(size=(48, 32)), encoded("JPEG", size=(32, 48))])
    assert len(translated.images) == 2 and translated.request.batch_size == 2
    assert translated.notices == ["2 init images: batch_size 2 (one output per image)"]
    assert img2img(service, init_images=[encoded()] * 3, batch_size=3).notices == []


def test_fewer_steps_than_one_run_one_step(service):
    translated = img2img(service, steps=3, denoising_strength=0.2)
    request = translated.request
    assert request.steps == 3 and request.effective_steps == 1
    assert "ran one denoising step" in translated.notices[0]
    request.normalized().validate()  # a request the strict core accepts


def test_img2img_fix_steps_runs_exactly_the_steps_asked_for(service):
    service.a1111_options.update({"img2img_fix_steps": True})
    request = img2img(service, steps=10, denoising_strength=0.5).request
    assert (request.steps, request.effective_steps) == (20, 10)


def test_sizes_that_are_not_multiples_of_8(service):
    # Editor plugins send the canvas or selection size as it is.
    translated = img2img(service, width=333, height=257)
    assert (translated.request.width, translated.request.height) == (336, 256)
    assert translated.output_size == (333, 257)
    assert "width 333 is not a multiple of 8: generated at 336" in translated.notices


@pytest.mark.parametrize("fields, sampler, schedule, notice", [
    ({"sampler_name": "Euler a Karras"}, "Euler a", "Karras", None),
    ({"sampler_name": "DPM++ 2M Karras", "scheduler": "Exponential"}, "DPM++ 2M", "Karras", None),
    ({"sampler_index": "k_dpmpp_2m_sde_ka"}, "DPM++ 2M SDE", "Karras", None),
    ({"sampler_name": "", "sampler_index": "PLMS"}, "PLMS", "Automatic", None),
    ({"sampler_name": "DPM++ 2M", "sampler_index": "Euler"}, "DPM++ 2M", "Automatic", None),
    ({"sampler_name": "Magic"}, "DPM++ 2M", "Automatic", "sampler_name 'Magic' is not a sampler"),
    ({"sampler_name": "Euler", "scheduler": "wobbly"}, "Euler", "Automatic", "scheduler 'wobbly' is not"),
    ({"sampler_name": "DDIM", "scheduler": "normal"}, "DDIM", "Normal", None),
])
def test_sampler_names_as_a1111_reads_them(service, fields, sampler, schedule, notice):
    translated = txt2img(service, **fields)
    assert (translated.request.sampler, translated.request.scheduler) == (sampler, schedule)
    assert any(notice in n for n in translated.notices) if notice else translated.notices == []


@pytest.mark.parametrize("fields, name", [
    ({"seed_resize_from_w": 512, "width": 64}, "seed_resize_from_w"),
    ({"restore_faces": True}, "restore_faces"),
    ({"script_name": "sd upscale", "script_args": ["", 8, "Lanczos", 2.0]}, "script_name"),
    ({"alwayson_scripts": {"controlnet": {"args": []}}}, "alwayson_scripts"),
    ({"refiner_checkpoint": "sdxl-refiner"}, "refiner_checkpoint"),
    ({"s_min_uncond": 0.5}, "s_min_uncond"),
    ({"override_settings": {"CLIP_stop_at_last_layers": 13}}, "override_settings.CLIP_stop_at_last_layers"),
    ({"override_settings": {"sd_vae": "vae-ft-mse.safetensors"}}, "override_settings.sd_vae"),
    ({"override_settings": {"samples_format": "tiff"}}, "override_settings.samples_format"),
    ({"override_settings": {"sd_model_checkpoint": "sdxl"}}, "override_settings.sd_model_checkpoint"),
])
def test_what_cannot_be_done_yet_is_refused_naming_the_field(service, fields, name):
    with pytest.raises(InvalidRequest) as error:
        img2img(service, **fields)
    assert error.value.field == name and str(error.value).startswith(name)


def test_defaults_a1111_clients_send_are_accepted(service):
    translated = img2img(service, script_name="None", styles=["None"], refiner_checkpoint="None",
                         override_settings={"CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic",
                                            "eta_noise_seed_delta": 0}, seed_resize_from_h=64, height=64,
                         restore_faces=False, alwayson_scripts={})
    assert translated.notices == []


def test_override_settings_take_effect_for_one_request(service):
    translated = img2img(service, sampler_name="Euler a",
                         override_settings={"eta_ancestral": 0.5, "samples_format": "jpg", "bogus": 1})
    assert translated.request.eta == 0.5 and translated.image_format == "JPEG"
    assert translated.notices == ["override_settings.bogus: not a setting of this server; ignored"]
    ddim = img2img(service, sampler_name="DDIM", override_settings={"eta_ddim": 0.3})
    assert ddim.request.eta == 0.3
    assert img2img(service).image_format == "PNG"  # only for that request
    corrected = img2img(service, override_settings={"img2img_color_correction": True,
                                                   "CLIP_stop_at_last_layers": 2}).request
    assert corrected.color_correction and corrected.clip_skip == 2
    service.a1111_options.update({"CLIP_stop_at_last_layers": 2})  # the server's setting, for every request
    assert txt2img(service).request.clip_skip == 2 and not txt2img(service).request.color_correction


def test_initial_noise_multiplier_from_the_payload_else_the_setting(service):
    assert img2img(service, initial_noise_multiplier=0.9).request.noise_multiplier == 0.9
    assert img2img(service).request.noise_multiplier == 1.0
    service.a1111_options.update({"initial_noise_multiplier": 1.2})  # A1111's img2img setting
    assert img2img(service).request.noise_multiplier == 1.2
    assert img2img(service, initial_noise_multiplier=0.5).request.noise_multiplier == 0.5
    stored = "x\nSteps: 4, Sampler: Euler, Seed: 5, Noise multiplier: 0.7"
    assert img2img(service, infotext=stored).request.noise_multiplier == 0.7
    assert txt2img(service).request.noise_multiplier == 1.0  # text-to-image adds no noise to an input


def test_latent_mask_goes_with_a_mask_and_is_ignored_without_one(service):
    alone = img2img(service, latent_mask=encoded())
    assert alone.latent_mask is None and alone.mask is None
    assert alone.notices == ["latent_mask was ignored: it applies with a mask"]
    both = img2img(service, mask=encoded(), latent_mask=encoded(size=(24, 16)))
    assert both.mask is not None and Image.open(io.BytesIO(both.latent_mask)).size == (24, 16)


def test_resize_mode_3_is_the_latent_upscale(service):
    assert img2img(service, resize_mode=3).request.normalized().resize_mode == "latent"
    stored = "x\nSteps: 4, Sampler: Euler, Seed: 5, Resize mode: latent"
    assert img2img(service, infotext=stored).request.normalized().resize_mode == "latent"


def test_styles_and_variation_seeds_reach_the_request(service):
    request = txt2img(service, styles=["None", "", "Cinematic"], subseed=5, subseed_strength=0.3).request
    assert request.styles == ("Cinematic",)  # "None" is what clients send for no style
    assert (request.subseed, request.subseed_strength) == (5, 0.3)


def test_infotext_fills_unset_fields(service):
    text = "a red boat\nNegative prompt: fog\nSteps: 7, Sampler: Euler, Schedule type: Karras, CFG scale: 4, " \
           "Seed: 99, Size: 64x48, Denoising strength: 0.5, Eta: 0.2, Tiling: True"
    translated = img2img(service, infotext=text, steps=9)
    request = translated.request
    assert (request.prompt, request.negative_prompt, request.steps, request.sampler, request.scheduler) == \
        ("x", "fog", 9, "Euler", "Karras")  # prompt and steps were given, so they stay
    assert (request.seed, request.width, request.height, request.strength, request.eta, request.tiling) == \
        (99, 64, 48, 0.5, 0.2, True)


def test_hires_fix_plans(service):
    hires = txt2img(service, enable_hr=True, hr_scale=2, hr_second_pass_steps=5, denoising_strength=0.5,
                    width=64, height=48).hires
    assert hires.size(64, 48) == (128, 96)
    assert hires.request.steps == 10 and hires.request.effective_steps == 5  # exactly hr_second_pass_steps
    assert hires.params == {"Hires upscale": 2.0, "Hires steps": 5, "Hires upscaler": "Latent"}
    resized = txt2img(service, enable_hr=True, hr_resize_x=100, denoising_strength=0.5).hires
    assert resized.size(64, 48) == (104, 72)  # height from the ratio, both to multiples of 8
    old = txt2img(service, enable_hr=True, width=128, height=128, firstphase_width=64, firstphase_height=64)
    assert (old.request.width, old.request.height) == (64, 64) and old.hires.size(64, 64) == (128, 128)
    other = txt2img(service, enable_hr=True, hr_upscaler="R-ESRGAN 4x+", hr_sampler_name="Euler",
                    denoising_strength=0.6)
    assert other.hires.upscaler == "Lanczos" and other.hires.request.sampler == "Euler"
    assert any("R-ESRGAN 4x+" in n for n in other.notices)
    only_upscale = txt2img(service, enable_hr=True, denoising_strength=0)  # A1111's own test payload
    assert only_upscale.hires.request is None


def test_options_are_checked_kept_and_read_back(tmp_path):
    options = Options(tmp_path)
    assert options.get("send_seed") is True and options.get("samples_format") == "png"
    notices = options.update({"send_seed": False, "samples_format": "webp", "eta_ddim": 0.2, "made_up": 1})
    assert notices == ["made_up: not a setting of this server; ignored"]
    again = Options(tmp_path)  # a restarted server
    assert again.get("send_seed") is False and again.get("samples_format") == "webp" and again.get("eta_ddim") == 0.2
    stored = json.loads((tmp_path / OPTIONS_FILE).read_text())
    assert "made_up" not in stored
    for change, name in (({"send_seed": "yes"}, "send_seed"), ({"CLIP_stop_at_last_layers": 0}, "CLIP_stop"),
                         ({"randn_source": "GPU"}, "randn_source"), ({"jpeg_quality": float("nan")}, "jpeg")):
        with pytest.raises(InvalidRequest, match=name):
            again.update(change)
    assert Options(tmp_path).get("send_seed") is False  # a refused write changes nothing
    (tmp_path / OPTIONS_FILE).write_text("{not json")
    assert Options(tmp_path).get("send_seed") is True  # unreadable: A1111's defaults, not a crash


def test_sizes_zero_and_one_sided(service):
    automatic = img2img(service, width=0, height=-1)
    assert (automatic.request.width, automatic.request.height, automatic.output_size) == (None, None, None)
    assert automatic.notices == []
    one_side = img2img(service, width=100)
    assert (one_side.request.width, one_side.request.height, one_side.output_size) == (104, None, None)
    assert one_side.notices == ["width 100 is not a multiple of 8: generated at 104"]
    both = img2img(service, width=333, height=256)
    assert both.output_size == (333, 256) and both.notices == [
        "width 333 is not a multiple of 8: generated at 336", "the images were resized to the requested 333x256"]
    assert img2img(service, width=4, height=8).request.width == 8  # at least one multiple


@pytest.mark.parametrize("fields, name, message", [
    ({"batch_size": 0}, "batch_size", "batch_size must be at least 1, got 0"),
    ({"n_iter": 0}, "n_iter", "n_iter must be at least 1, got 0"),
    ({"denoising_strength": 0}, "denoising_strength", r"denoising_strength must be in \(0, 1\], got 0"),
    ({"denoising_strength": 1.5}, "denoising_strength", r"denoising_strength must be in \(0, 1\], got 1.5"),
    ({"init_images": []}, "init_images", "init_images: an init image is required"),
    ({"seed_resize_from_h": 32, "height": 64}, "seed_resize_from_h",
     r"seed_resize_from_h: resizing the seed \(seed_resize_from_h\) is not supported"),
    ({"firstpass_image": "abc"}, "firstpass_image", "firstpass_image: a given first-pass image is not supported"),
    ({"override_settings": {"sd_model_checkpoint": 3}}, "override_settings.sd_model_checkpoint",
     "override_settings.sd_model_checkpoint: expected a model title"),
    ({"override_settings": {"face_restoration": True}}, "override_settings.face_restoration",
     r"override_settings.face_restoration: face restoration is not available \(got True\)"),
])
def test_img2img_values_refused_by_name(service, fields, name, message):
    with pytest.raises(InvalidRequest, match=f"^{message}$") as error:
        img2img(service, **fields)
    assert error.value.field == name


def test_refusal_messages_name_what_was_sent(service):
    with pytest.raises(InvalidRequest, match=r"^script_name: scripts are not available \(got 'x/y/z plot'\)$"):
        img2img(service, script_name="x/y/z plot")
    with pytest.raises(InvalidRequest, match=r"^alwayson_scripts: extensions are not available \(got a, b\)$"):
        img2img(service, alwayson_scripts={"a": {}, "b": {}})
    with pytest.raises(InvalidRequest, match="^hr_checkpoint_name: a separate hires-fix checkpoint"):
        txt2img(service, enable_hr=True, hr_checkpoint_name="other.safetensors", denoising_strength=0.5)
    with pytest.raises(InvalidRequest, match=r"^denoising_strength must be in \[0, 1\] for the hires fix, got 1.5"):
        txt2img(service, enable_hr=True, denoising_strength=1.5)
    accepted = [img2img(service, script_args=[1, 2]), img2img(service, initial_noise_multiplier=1.0),
                img2img(service, seed_resize_from_w=-1, seed_resize_from_h=0),
                txt2img(service, hr_checkpoint_name="other"),  # without enable_hr it does nothing
                txt2img(service, enable_hr=True, hr_checkpoint_name="Use same checkpoint", denoising_strength=0.5),
                txt2img(service, s_min_uncond=0)]
    assert all(t.request is not None for t in accepted)


def test_one_step_strength_is_the_smallest_that_runs_a_step(service):
    translated = img2img(service, steps=3, denoising_strength=0.2)
    assert translated.request.strength == 1 / 3 and translated.request.effective_steps == 1
    assert translated.notices == ["steps x denoising_strength = 3 x 0.2 is below one step: ran one denoising step "
                                  "(strength 0.333333), as A1111 does"]
    odd = img2img(service, steps=7, denoising_strength=0.1).request
    assert odd.effective_steps == 1 and 1 / 7 <= odd.strength < 1 / 7 + 1e-15
    assert img2img(service, steps=1, denoising_strength=0.5).request.strength == 1.0
    assert img2img(service, steps=4, denoising_strength=0.25).request.strength == 0.25  # one step: unchanged


def test_fix_steps_caps_strength_near_one(service):
    service.a1111_options.update({"img2img_fix_steps": True})
    assert img2img(service, steps=10, denoising_strength=1.0).request.steps == 10  # 10 / 0.999 -> 10
    assert img2img(service, steps=9, denoising_strength=0.3).request.steps == 30


def test_server_settings_reach_the_request(service):
    assert img2img(service).request.background == "white"
    service.a1111_options.update({"img2img_background_color": "#FFF"})
    assert img2img(service).request.background == "white"
    service.a1111_options.update({"img2img_background_color": "#102030", "tiling": True, "s_churn": 0.5,
                                  "s_tmax": 0.0, "s_noise": 0.9, "s_tmin": 0.1, "img2img_color_correction": True})
    request = img2img(service, sampler_name="Euler").request
    assert (request.background, request.tiling, request.s_churn, request.s_tmax, request.s_noise, request.s_tmin,
            request.color_correction) == ("#102030", True, 0.5, None, 0.9, 0.1, True)
    assert img2img(service, tiling=False, s_churn=0.25, s_tmax=3.0).request.tiling is False
    given = img2img(service, s_churn=0.25, s_tmax=3.0).request
    assert (given.s_churn, given.s_tmax) == (0.25, 3.0)
    assert txt2img(service).request.color_correction is False  # colour correction needs an input image
    assert img2img(service).request.eta is None  # A1111's default eta is not passed on


def test_eta_comes_from_the_setting_of_its_sampler_family(service):
    service.a1111_options.update({"eta_ddim": 0.4, "eta_ancestral": 1.0})
    assert img2img(service, sampler_name="DDIM").request.eta == 0.4
    assert img2img(service, sampler_name="Euler a").request.eta is None  # eta_ancestral at its default
    service.a1111_options.update({"eta_ddim": 0.0, "eta_ancestral": 0.7})
    assert img2img(service, sampler_name="DDIM").request.eta is None
    assert img2img(service, sampler_name="Euler a").request.eta == 0.7
    assert img2img(service, sampler_name="Euler a", eta=0.2).request.eta == 0.2


def test_model_choice_and_whether_it_sticks(service):
    plain = img2img(service)
    assert (plain.model, plain.sticky_model, plain.parts) == (None, False, 1)
    once = img2img(service, override_settings={"sd_model_checkpoint": "sd21-base"}, n_iter=3)
    assert (once.model, once.sticky_model, once.parts) == ("sd21-base", False, 3)
    kept = img2img(service, override_settings={"sd_model_checkpoint": "sd21-base"},
                   override_settings_restore_afterwards=False)
    assert (kept.model, kept.sticky_model) == ("sd21-base", True)
    assert kept.notices == [] and once.notices == []


def test_infotext_names_a_model_and_a_resize_mode(service):
    offered = img2img(service, infotext="p\nSteps: 5, Seed: 1, Model: sd21-base, Resize mode: fill")
    assert (offered.model, offered.request.resize_mode, offered.notices) == ("sd21-base", 2, [])  # A1111's number
    other = img2img(service, infotext="p\nSteps: 5, Seed: 1, Model: elsewhere, Resize mode: stretch")
    assert (other.model, other.request.resize_mode) == (None, 0)
    assert other.notices == ["the infotext names model 'elsewhere', which this server does not offer; the current "
                             "model was used"]
    assert img2img(service, infotext="p\nSteps: 5, Seed: 1, Resize mode: crop", resize_mode=2).request.resize_mode \
        == 2  # a given field wins over the infotext
    assert img2img(service, infotext="Steps: 5, Seed: 1, Size: 64x64", prompt="").request.prompt == ""


def test_extra_networks_can_be_removed_from_the_prompts(service):
    translated = txt2img(service, prompt="a cat <lora:ink:0.5>", negative_prompt="blur <lora:bad:1>",
                         disable_extra_networks=True)
    assert (translated.request.prompt.strip(), translated.request.negative_prompt.strip()) == ("a cat", "blur")
    assert translated.notices == ["disable_extra_networks: removed <lora:ink:0.5>, <lora:bad:1>"]
    kept = txt2img(service, prompt="a cat <lora:ink:0.5>")
    assert kept.request.prompt == "a cat <lora:ink:0.5>" and kept.notices == []
    assert txt2img(service, prompt="plain", disable_extra_networks=True).notices == []


def test_hires_second_pass_request(service):
    hires = txt2img(service, enable_hr=True, hr_scale=1.5, denoising_strength=0.4, steps=6, width=64, height=48,
                    hr_prompt="sharp", hr_negative_prompt="soft", hr_sampler_name="Euler", hr_scheduler="Karras",
                    prompt="first", negative_prompt="neg", sampler_name="DDIM")
    second = hires.hires.request
    assert (second.prompt, second.negative_prompt, second.sampler, second.scheduler) == ("sharp", "soft", "Euler",
                                                                                         "Karras")
    assert (second.steps, second.effective_steps, second.strength, second.resize_mode) == (15, 6, 0.4, "stretch")
    assert (second.width, second.height) == (None, None) and hires.output_size is None
    assert hires.hires.size(64, 48) == (96, 72)
    assert hires.hires.params == {"Hires upscale": 1.5, "Hires upscaler": "Latent", "Hires sampler": "Euler",
                                  "Hires prompt": "sharp", "Hires negative prompt": "soft"}
    assert hires.request.prompt == "first" and hires.request.sampler == "DDIM"
    assert "hr_upscaler Latent: upscaled in pixel space (bicubic), not in latent space" in hires.notices
    same = txt2img(service, enable_hr=True, denoising_strength=0.5, sampler_name="Euler a", scheduler="Karras",
                   hr_sampler_name="Use same sampler", hr_scheduler="Use same scheduler", hr_upscaler="Lanczos")
    assert (same.hires.request.sampler, same.hires.request.scheduler) == ("Euler a", "Karras")
    assert same.hires.request.prompt == "x" and same.notices == []
    assert "Hires sampler" not in same.hires.params
    only_schedule = txt2img(service, enable_hr=True, denoising_strength=0.5, sampler_name="Euler",
                            hr_scheduler="Exponential").hires.request
    assert (only_schedule.sampler, only_schedule.scheduler) == ("Euler", "Exponential")


def test_hires_sizes(service):
    by_y = txt2img(service, enable_hr=True, hr_resize_y=100, denoising_strength=0.5).hires
    assert by_y.size(64, 48) == (136, 104)  # width from the ratio: 133.3 -> 136
    both = txt2img(service, enable_hr=True, hr_resize_x=90, hr_resize_y=70, denoising_strength=0.5).hires
    assert both.size(64, 48) == (88, 72) and both.params.get("Hires upscale") is None
    scaled = txt2img(service, enable_hr=True, hr_scale=1.25, denoising_strength=0.5).hires
    assert scaled.size(60, 44) == (72, 56)  # 75 -> 72, 55 -> 56
    only_width = txt2img(service, enable_hr=True, width=128, height=96, firstphase_width=64,
                         denoising_strength=0.5)
    assert (only_width.request.width, only_width.request.height) == (64, 96)
    assert only_width.hires.resize == (128, 96)


@pytest.mark.parametrize("endpoint, fields, name, message", [
    (img2img, {"seed_resize_from_w": 1, "width": 64}, "seed_resize_from_w",
     r"resizing the seed \(seed_resize_from_w\) is not supported"),
    (img2img, {"seed_resize_from_h": 1, "height": 64}, "seed_resize_from_h",
     r"resizing the seed \(seed_resize_from_h\) is not supported"),
    (img2img, {"restore_faces": True}, "restore_faces",
     r"face restoration is not available \(it needs face-restoration model files\)"),
    (txt2img, {"restore_faces": True}, "restore_faces", r"face restoration is not available \(.*\)"),
    (img2img, {"refiner_checkpoint": "r"}, "refiner_checkpoint", "a refiner checkpoint is not supported"),
    (img2img, {"s_min_uncond": 0.2}, "s_min_uncond",
     r"skipping the negative prompt at low noise \(s_min_uncond\) is not supported"),
    (txt2img, {"enable_hr": True, "denoising_strength": -0.5}, "denoising_strength",
     r"denoising_strength must be in \[0, 1\] for the hires fix, got -0.5"),
])
def test_refusal_messages_in_full(service, endpoint, fields, name, message):
    with pytest.raises(InvalidRequest) as error:
        endpoint(service, **fields)
    assert error.value.field == name
    assert re.fullmatch(message if name == "denoising_strength" else f"{name}: {message}", str(error.value))


def test_what_is_accepted_at_the_edges(service):
    assert img2img(service, seed_resize_from_w=0, seed_resize_from_h=0, width=64, height=64).notices == []
    assert txt2img(service, script_name="", refiner_checkpoint="").notices == []
    assert txt2img(service, enable_hr=True, denoising_strength=1.0).hires.request.strength == 1.0
    one = img2img(service, batch_size=2)  # one init image and batch_size 2: two outputs of it
    assert one.request.batch_size == 2 and one.notices == []
    assert img2img(service, width=1).request.width == 8


def test_fields_reach_the_request_in_both_modes(service):
    text = txt2img(service)
    assert (text.request.strength, text.request.resize_mode, text.request.negative_prompt, text.hires) == (
        1.0, 0, "", None)
    assert img2img(service, cfg_scale=4.5).request.cfg_scale == 4.5
    assert txt2img(service, cfg_scale=3).request.cfg_scale == 3
    assert img2img(service, height=100).notices == ["height 100 is not a multiple of 8: generated at 104"]
    service.a1111_options.update({"img2img_background_color": "White"})
    assert img2img(service).request.background == "white"


def test_one_step_rule_details(service):
    exact = img2img(service, steps=4, denoising_strength=0.25)
    assert exact.request.strength == 0.25 and exact.notices == []  # exactly one step: nothing to adjust
    # 161 x (1/161) rounds below 1 in floating point: the strength is nudged up until one step runs
    tiny = img2img(service, steps=161, denoising_strength=0.001).request
    assert tiny.effective_steps == 1 and 1 / 161 < tiny.strength < 1 / 161 + 1e-15


def test_unknown_names_are_said_in_full(service):
    assert txt2img(service, scheduler="wobbly").notices == [
        "scheduler 'wobbly' is not a schedule type this server knows; used Automatic"]
    hires = txt2img(service, enable_hr=True, denoising_strength=0.5, sampler_name="DDIM", hr_sampler_name="Magic")
    assert "hr_sampler_name 'Magic' is not a sampler this server knows; used DDIM" in hires.notices
    assert hires.hires.request.sampler == "DDIM"
    # sampler_index names the first pass only; the second pass keeps the first pass's sampler
    both = txt2img(service, enable_hr=True, denoising_strength=0.5, sampler_name="DDIM", sampler_index="Euler")
    assert (both.request.sampler, both.hires.request.sampler) == ("DDIM", "DDIM")


def test_infotext_resize_mode_that_is_not_a_mode_is_kept_for_validation(service):
    assert img2img(service, infotext="p\nSteps: 5, Seed: 1, Resize mode: zoom").request.resize_mode == "zoom"


def test_extra_networks_removed_from_the_prompt_alone(service):
    translated = txt2img(service, prompt="a <lora:ink:0.5>", disable_extra_networks=True)
    assert translated.notices == ["disable_extra_networks: removed <lora:ink:0.5>"]


def test_hires_first_pass_sizes_and_upscale_only(service):
    old = txt2img(service, enable_hr=True, denoising_strength=0.5, height=128, firstphase_width=60,
                  firstphase_height=44)
    assert old.hires.resize == (0, 128) and (old.request.width, old.request.height) == (64, 48)
    assert "firstphase_width 60 is not a multiple of 8: generated at 64" in old.notices
    assert "firstphase_height 44 is not a multiple of 8: generated at 48" in old.notices
    assert txt2img(service, enable_hr=True, denoising_strength=0.5, width=96, firstphase_width=64).hires.resize == (
        96, 0)
    only = txt2img(service, enable_hr=True, denoising_strength=0, hr_scale=1.5, hr_upscaler="Lanczos")
    assert (only.hires.scale, only.hires.resize, only.hires.upscaler, only.hires.request) == (1.5, None, "Lanczos",
                                                                                            None)
    assert only.hires.params == {"Hires upscale": 1.5, "Hires upscaler": "Lanczos"}
    assert only.notices == ["hires fix with denoising_strength 0: the first pass was only upscaled"]
    sized = txt2img(service, enable_hr=True, denoising_strength=0, hr_resize_x=128, hr_resize_y=96).hires
    assert (sized.resize, sized.size(64, 48), sized.params.get("Hires upscale")) == ((128, 96), (128, 96), None)
    short = txt2img(service, enable_hr=True, denoising_strength=0.4, hr_second_pass_steps=1)
    assert short.hires.request.effective_steps == 1
    assert any(n.startswith("steps x denoising_strength = 2 x 0.4 is below one step") for n in short.notices)


def test_image_urls_go_to_the_fetcher(service):
    fetched = []

    def fetch(url, field):
        fetched.append((url, field))
        return b"image bytes"

    payload = Img2ImgPayload.model_validate({"init_images": ["https://example.com/a.png"], "prompt": "x"})
    assert translate(payload, service, fetch=fetch).images == [b"image bytes"]
    assert fetched == [("https://example.com/a.png", "init_images[0]")]


def test_inpainting_fields_reach_the_request_with_a_mask(service):
    fields = {"mask_blur": 6, "inpainting_fill": 2, "inpaint_full_res": True, "inpaint_full_res_padding": 24,
              "inpainting_mask_invert": 1, "mask_round": False}
    request = img2img(service, mask=encoded(), **fields).request.normalized()
    assert (request.mask_blur, request.inpaint_fill, request.inpaint_area, request.inpaint_padding) == (
        (6, 6), "latent-noise", "masked", 24)
    assert (request.invert_mask, request.mask_round) == (True, False)
    # mask_blur_x/y apart, when mask_blur is not given; "whole picture" when inpaint_full_res is off
    apart = img2img(service, mask=encoded(), mask_blur=None, mask_blur_x=2, mask_blur_y=9,
                    inpaint_full_res=False).request.normalized()
    assert (apart.mask_blur, apart.inpaint_area) == ((2, 9), "whole")
    # without a mask they are ignored, as A1111 ignores them: our defaults stay
    plain = img2img(service, **fields).request
    defaults = type(plain)(prompt="x")
    assert (plain.mask_blur, plain.inpaint_fill, plain.inpaint_area, plain.inpaint_padding, plain.invert_mask,
            plain.mask_round) == (defaults.mask_blur, defaults.inpaint_fill, defaults.inpaint_area,
                                  defaults.inpaint_padding, defaults.invert_mask, defaults.mask_round)


def test_mask_urls_go_to_the_fetcher(service):
    fetched = []

    def fetch(url, field):
        fetched.append((url, field))
        return url.encode()

    payload = Img2ImgPayload.model_validate({"init_images": [encoded()], "prompt": "x",
                                             "mask": "https://example.com/m.png",
                                             "latent_mask": "https://example.com/l.png"})
    translated = translate(payload, service, fetch=fetch)
    assert (translated.mask, translated.latent_mask) == (b"https://example.com/m.png", b"https://example.com/l.png")
    assert fetched == [("https://example.com/m.png", "mask"), ("https://example.com/l.png", "latent_mask")]
