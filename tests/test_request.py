import numpy as np
import pytest

from img2img import InvalidRequest, Request
from img2img.request import MAX_PROMPT_CHARS, effective_steps


@pytest.mark.parametrize(
    "steps, strength, expected",
    [(25, 0.75, 18), (50, 0.75, 37), (20, 1.0, 20), (4, 0.5, 2), (2, 0.5, 1), (10, 0.05, 0), (3, 0.3, 0)],
)
def test_effective_steps(steps, strength, expected):
    assert effective_steps(steps, strength) == expected


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"strength": 0}, "strength", "strength must be in (0, 1], got 0"),
        ({"strength": 1.5}, "strength", "got 1.5"),
        ({"strength": float("nan")}, "strength", "must be a number"),
        ({"steps": 0}, "steps", "steps must be between 1 and 500, got 0"),
        ({"steps": 2.5}, "steps", "whole number"),
        ({"cfg_scale": -1}, "cfg_scale", "cfg_scale must be in [0, 50]"),
        ({"seed": 2**32}, "seed", "seed must be between 0 and 4294967295"),
        ({"width": 500}, "width", "multiple of 8"),
        ({"height": 0}, "height", "height must be between 8 and 4096"),
        ({"width": 4104}, "width", "width must be between 8 and 4096"),
        ({"resize_mode": "zoom"}, "resize_mode", "resize_mode must be one of stretch, crop, fill"),
        ({"batch_size": 0}, "batch_size", "batch_size must be between 1 and 64"),
        ({"background": "no-such-colour"}, "background", "background must be a colour"),
        ({"prompt": None}, "prompt", "prompt must be a str"),
        ({"steps": 10, "strength": 0.05}, "strength", "gives 0 denoising steps; raise steps to at least 20"),
        ({"steps": 25, "strength": 0.0021}, "strength", "raise steps to at least 477 or"),
        # a strength so small that no step count helps: answered at once, not by counting up to ~1e300
        ({"steps": 25, "strength": 1e-300}, "strength", "even 500 steps give none, so raise strength"),
        ({"steps": 25, "strength": 5e-324}, "strength", "raise strength to at least 0.002"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt", "prompt is 10,001 characters long; the limit is 10,000"),
        ({"negative_prompt": "y" * 15_000_000}, "negative_prompt", "negative_prompt is 15,000,000 characters long"),
        ({"prompt": "ok \ud800"}, "prompt", "prompt is not valid Unicode: character 4 is an unpaired surrogate"),
        ({"negative_prompt": "\udfff"}, "negative_prompt", "not valid Unicode"),
    ],
)
def test_validation_names_field_and_value(changes, field, message):
    request = Request(prompt="x").replace(**changes).normalized()
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")) as info:
        request.validate()
    assert info.value.field == field


def test_min_steps_agrees_with_counting_up():
    from img2img.request import MAX_STEPS, _min_steps

    # 1/161 and 1/187: 1/strength rounds to a whole number of steps that still gives no step (161 x 1/161 < 1)
    for strength in [i / 1000 for i in range(1, 1001)] + [1 / 3, 2 / 3, 0.0019999, 1e-300, 1 / 161, 1 / 187]:
        counted = next((n for n in range(1, MAX_STEPS + 1) if effective_steps(n, strength) >= 1), None)
        assert _min_steps(strength) == counted, strength


def test_prompts_at_the_limit_pass():
    long = "a cat, " * (MAX_PROMPT_CHARS // 7) + "x" * (MAX_PROMPT_CHARS % 7)
    assert len(long) == MAX_PROMPT_CHARS
    assert Request(prompt=long, negative_prompt=long, steps=4).validate().prompt == long


def test_valid_request_passes():
    request = Request(prompt="a cat", steps=20, strength=0.5, width=512, height=768, seed=0, batch_size=4)
    assert request.validate() is request
    assert request.effective_steps == 10


@pytest.mark.parametrize("mode, expected", [(0, "stretch"), (1, "crop"), (2, "fill"), ("1", "crop"),
                                            ("Fill", "fill")])
def test_a1111_resize_modes_normalize(mode, expected):
    assert Request(prompt="", resize_mode=mode).normalized().resize_mode == expected


def test_seed_minus_one_means_random():
    assert Request(prompt="", seed=-1).normalized().seed is None
    assert Request(prompt="", seed=7).normalized().seed == 7


def test_numpy_scalars_are_taken_as_the_numbers_they_stand_for():
    request = Request(prompt="x", seed=np.int64(5), strength=np.float32(0.3), steps=np.int32(10),
                      cfg_scale=np.float64(7.5), batch_size=np.uint8(2), width=np.int64(64), height=np.int16(48),
                      keep_size=np.bool_(True), resize_mode=np.int64(2)).normalized().validate()
    assert (request.seed, request.strength, request.steps, request.cfg_scale) == (5, 0.3, 10, 7.5)
    assert (request.batch_size, request.width, request.height, request.keep_size) == (2, 64, 48, True)
    assert request.resize_mode == "fill"
    inpainting = Request(prompt="x", inpaint_fill=np.int64(1), noise_multiplier=np.float32(1.5),
                         inpaint_padding=np.int32(8)).normalized().validate()
    assert (inpainting.inpaint_fill, inpainting.noise_multiplier, inpainting.inpaint_padding) == ("original", 1.5, 8)
    assert [type(v) for v in (request.seed, request.strength, request.cfg_scale, request.keep_size)] == \
        [int, float, float, bool]
    with pytest.raises(InvalidRequest, match="steps must be a whole number"):
        Request(prompt="x", steps=np.float32(2.5)).normalized().validate()


def test_other_zero_dimensional_values_are_refused_by_name_not_taken_for_numpy_scalars():
    import torch  # a torch scalar has an empty shape too, but no numpy dtype

    with pytest.raises(InvalidRequest, match=r"^strength must be a number, got tensor\(0.5000\)$") as info:
        Request(prompt="x", strength=torch.tensor(0.5)).normalized().validate()
    assert info.value.field == "strength"


def test_every_limit_is_inclusive():
    """The documented ranges include both ends: a `<` for `<=` (or a limit off by one) refuses a valid value."""
    from img2img.request import MAX_SEED

    lowest = Request(prompt="", strength=1.0, steps=1, cfg_scale=0, seed=0, subseed=0, subseed_strength=0.0,
                     clip_skip=1, width=8, height=8, batch_size=1, eta=0.0, s_churn=0.0, s_tmin=0.0, s_tmax=0.0,
                     s_noise=0.0)
    highest = Request(prompt="", strength=1.0, steps=500, cfg_scale=50, seed=MAX_SEED, subseed=MAX_SEED,
                      subseed_strength=1.0, clip_skip=12, width=4096, height=4096, batch_size=64, eta=1e9)
    assert lowest.validate() is lowest and highest.validate() is highest
    assert lowest.effective_steps == 1 and highest.effective_steps == 500


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"steps": 501}, "steps", "steps must be between 1 and 500, got 501"),
        ({"steps": True}, "steps", "steps must be a whole number, got True"),
        ({"cfg_scale": 50.5}, "cfg_scale", r"cfg_scale must be in \[0, 50\], got 50.5"),
        ({"cfg_scale": "7"}, "cfg_scale", "cfg_scale must be a number, got '7'"),
        ({"strength": True}, "strength", "strength must be a number, got True"),
        ({"seed": -2}, "seed", r"seed must be between 0 and 4294967295 \(or -1/None for a random seed\), got -2"),
        ({"seed": True}, "seed", "seed must be a whole number"),
        ({"subseed": 2**32}, "subseed", r"subseed must be between 0 and 4294967295 \(or -1/None for a random one\)"),
        ({"subseed_strength": 1.01}, "subseed_strength", r"subseed_strength must be in \[0, 1\], got 1.01"),
        ({"subseed_strength": -0.5}, "subseed_strength", "got -0.5"),
        ({"clip_skip": 0}, "clip_skip", "clip_skip must be between 1 and 12, got 0"),
        ({"clip_skip": 13}, "clip_skip", "clip_skip must be between 1 and 12, got 13"),
        ({"styles": [1]}, "styles", r"styles must be a list of style names, got \(1,\)"),
        ({"styles": {"a"}}, "styles", "styles must be a list of style names"),
        ({"color_correction": 1}, "color_correction", "color_correction must be a bool, got 1"),
        ({"keep_size": "yes"}, "keep_size", "keep_size must be a bool, got 'yes'"),
        ({"tiling": None}, "tiling", "tiling must be a bool, got None"),
        ({"height": 4097}, "height", "height must be between 8 and 4096, got 4097"),
        ({"height": 12}, "height", "height must be a multiple of 8, got 12"),
        ({"width": 7}, "width", "width must be between 8 and 4096, got 7"),
        ({"batch_size": 65}, "batch_size", "batch_size must be between 1 and 64, got 65"),
        ({"resize_mode": 4}, "resize_mode", "resize_mode must be one of stretch, crop, fill, latent"),
        ({"resize_mode": True}, "resize_mode", "got True"),
        ({"background": None}, "background", "background must be a colour name or #rrggbb, got None"),
        ({"background": 7}, "background", "got 7"),
        ({"negative_prompt": None}, "negative_prompt", "negative_prompt must be a str, got None"),
    ]
    + [({name: -0.1}, name, rf"{name} must be in \[0, inf\], got -0.1") for name in
       ("eta", "s_churn", "s_tmin", "s_tmax", "s_noise")],
)
def test_each_field_is_checked_by_name(changes, field, message):
    assert_refused_by_name(changes, field, message)


def assert_refused_by_name(changes: dict, field: str, message: str) -> None:
    request = Request(prompt="x", steps=20).replace(**changes).normalized()
    with pytest.raises(InvalidRequest, match=message) as info:
        request.validate()
    assert info.value.field == field


def test_normalized_spellings():
    request = Request(prompt="", seed=-1, subseed=-1, styles="one", resize_mode=" Stretch ").normalized()
    assert (request.seed, request.subseed, request.styles, request.resize_mode) == (None, None, ("one",), "stretch")
    assert Request(prompt="", styles=["a", "b"]).normalized().styles == ("a", "b")
    assert Request(prompt="", resize_mode=" 2 ").normalized().resize_mode == "fill"
    assert Request(prompt="", resize_mode="7").normalized().resize_mode == "7"  # left for validate to refuse
    assert Request(prompt="", resize_mode=True).normalized().resize_mode is True  # a bool is not mode 1
    assert Request(prompt="", seed=True).normalized().seed is True  # nor is it -1
    assert Request(prompt="", seed=0, subseed=5).normalized().subseed == 5
    unchanged = Request(prompt="", resize_mode=5).normalized()
    assert unchanged.normalized() is unchanged  # nothing left to normalize: the same object


def test_effective_steps_without_steps_is_zero():
    assert Request(prompt="", strength=0.5).effective_steps == 0
    assert Request(prompt="", strength=0.5, steps=9).effective_steps == 4


def test_result_save_names_formats_and_infotexts(tmp_path):
    from PIL import Image

    from img2img import OutputError, Result
    from img2img.images import read_infotext

    texts = ["a\nSteps: 1, Seed: 5, Size: 8x8", "b\nSteps: 1, Seed: 9, Size: 8x8"]
    result = Result(images=[Image.new("RGB", (8, 8), c) for c in ("red", "blue")], seeds=[5, 9], infotexts=texts,
                    request=Request(prompt=""), model="m", device="cpu", dtype="float32", width=8, height=8,
                    effective_steps=1)
    paths = result.save(output_dir=tmp_path, stem="s", fmt="jpeg")
    assert paths == [tmp_path / "s-5.jpg", tmp_path / "s-9.jpg"]
    assert [read_infotext(p) for p in paths] == texts and Image.open(paths[1]).format == "JPEG"
    assert [p.name for p in result.save(output_dir=tmp_path, stem="s", fmt="jpeg")] == ["s-5-2.jpg", "s-9-2.jpg"]
    assert [p.name for p in result.save(output_dir=tmp_path, stem="s", fmt="jpeg", overwrite=True)] == [
        "s-5.jpg", "s-9.jpg"]
    named = result.save(tmp_path / "pair.webp")
    assert [p.name for p in named] == ["pair-1.webp", "pair-2.webp"] and Image.open(named[0]).format == "WEBP"
    with pytest.raises(OutputError, match="already exists"):
        result.save(tmp_path / "pair.webp")
    assert result.save(tmp_path / "pair.webp", overwrite=True) == named
    assert result.image is result.images[0]
    assert [p.name for p in result.save(output_dir=tmp_path)] == ["img2img-5.png", "img2img-9.png"]
    assert [p.name for p in result.save(tmp_path / "noext", fmt="png")] == ["noext-1.png", "noext-2.png"]
    with pytest.raises(OutputError, match="the file name says .png but the format is jpeg"):
        result.save(tmp_path / "asked.png", fmt="jpeg")  # a name and a format that disagree
    asked = result.save(tmp_path / "asked", fmt="jpeg")
    assert [p.name for p in asked] == ["asked-1.jpg", "asked-2.jpg"] and Image.open(asked[0]).format == "JPEG"


@pytest.mark.parametrize("fill, expected", [
    (0, "fill"), (1, "original"), (2, "latent-noise"), (3, "latent-nothing"),  # A1111's numbers
    ("2", "latent-noise"), (" 3 ", "latent-nothing"),  # as form fields send them
    ("latent noise", "latent-noise"), ("Latent_Nothing", "latent-nothing"), (" ORIGINAL ", "original"),  # its labels
    ("fill", "fill"), (None, None),
])
def test_a1111_inpaint_fills_normalize(fill, expected):
    request = Request(prompt="", inpaint_fill=fill).normalized()
    assert request.inpaint_fill == expected and request.validate() is request


@pytest.mark.parametrize("fill, shown", [(4, "4"), ("4", "'4'"), ("12", "'12'"), (-1, "-1"), (True, "True"),
                                         ("blur", "'blur'"), (1.0, "1.0")])
def test_unknown_inpaint_fills_are_refused_by_name(fill, shown):
    request = Request(prompt="", inpaint_fill=fill).normalized()
    with pytest.raises(InvalidRequest, match=rf"^inpaint_fill must be one of fill, original, latent-noise, "
                                             rf"latent-nothing \(or A1111's 0-3\), got {shown}$") as info:
        request.validate()
    assert info.value.field == "inpaint_fill"


@pytest.mark.parametrize("area, expected", [("Only masked", "masked"), ("Whole picture", "whole"),
                                            (" MASKED ", "masked"), ("whole", "whole")])
def test_a1111_inpaint_areas_normalize(area, expected):
    request = Request(prompt="", inpaint_area=area).normalized()
    assert request.inpaint_area == expected and request.validate() is request


def test_mask_blur_and_outpaint_normalize_to_tuples():
    request = Request(prompt="", mask_blur=6, outpaint="64, 0,0 ,32").normalized()
    assert (request.mask_blur, request.outpaint) == ((6, 6), (64, 0, 0, 32))
    request = Request(prompt="", mask_blur="3, 5", outpaint=[0, 8, 0, 0]).normalized()
    assert (request.mask_blur, request.outpaint) == ((3, 5), (0, 8, 0, 0))
    assert Request(prompt="").normalized().outpaint is None
    # a value that does not parse is left as it was, for validate() to name
    assert Request(prompt="", mask_blur="soft").normalized().mask_blur == "soft"
    assert Request(prompt="", outpaint="left").normalized().outpaint == "left"


@pytest.mark.parametrize("changes, field, message", [
    ({"inpaint_area": "edges"}, "inpaint_area", "inpaint_area must be whole or masked, got 'edges'"),
    ({"inpaint_area": None}, "inpaint_area", "inpaint_area must be whole or masked, got None"),
    ({"inpaint_padding": -1}, "inpaint_padding", "inpaint_padding must be between 0 and 4096, got -1"),
    ({"inpaint_padding": 4097}, "inpaint_padding", "inpaint_padding must be between 0 and 4096, got 4097"),
    ({"inpaint_padding": 8.5}, "inpaint_padding", "inpaint_padding must be a whole number, got 8.5"),
    ({"invert_mask": 1}, "invert_mask", "invert_mask must be a bool, got 1"),
    ({"mask_round": "yes"}, "mask_round", "mask_round must be a bool, got 'yes'"),
    ({"mask_from_alpha": None}, "mask_from_alpha", "mask_from_alpha must be a bool, got None"),
    ({"mask_blur": "soft"}, "mask_blur", "mask_blur must be a whole number of pixels"),
    ({"mask_blur": -1}, "mask_blur", "mask_blur must be a whole number of pixels"),
    ({"outpaint": "left"}, "outpaint", "outpaint must be four whole numbers LEFT,TOP,RIGHT,BOTTOM"),
    ({"outpaint": (0, 0, 0, 0)}, "outpaint", "not all 0"),
    ({"noise_multiplier": -0.5}, "noise_multiplier", r"^noise_multiplier must be in \[0, 10\], got -0.5$"),
    ({"noise_multiplier": 10.5}, "noise_multiplier", r"^noise_multiplier must be in \[0, 10\], got 10.5$"),
    ({"noise_multiplier": "1"}, "noise_multiplier", "noise_multiplier must be a number, got '1'"),
])
def test_inpainting_fields_are_checked_by_name(changes, field, message):
    assert_refused_by_name(changes, field, message)


def test_inpainting_limits_are_inclusive():
    for padding, multiplier in ((0, 0.0), (4096, 10.0), (32, 0.5)):
        request = Request(prompt="", inpaint_padding=padding, noise_multiplier=multiplier, mask_blur=(0, 64),
                          outpaint=(1, 0, 0, 0), invert_mask=True, mask_round=False, mask_from_alpha=True)
        assert request.normalized().validate().inpaint_padding == padding
