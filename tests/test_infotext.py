import random
import re

import pytest

from img2img.errors import InvalidRequest
from img2img.infotext import MAX_INFOTEXT_CHARS, _param_pairs, fields_from_infotext, format_infotext, parse_infotext

A1111_SAMPLE = (
    "a castle, (masterpiece:1.2)\nNegative prompt: blurry, lowres\n"
    'Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3141, Size: 512x768, '
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.75, '
    'Lora hashes: "a: 123, b: 456", Version: v1.10.1'
)


def test_parse_a1111_sample():
    prompt, negative, params = parse_infotext(A1111_SAMPLE)
    assert prompt == "a castle, (masterpiece:1.2)"
    assert negative == "blurry, lowres"
    assert params["Seed"] == "3141"
    assert params["Size"] == "512x768"
    assert params["Lora hashes"] == "a: 123, b: 456"  # JSON-quoted value unquoted
    assert params["Version"] == "v1.10.1"


def test_round_trip_with_quoting_and_multiline_prompt():
    params = {"Steps": 25, "Sampler": "DPM++ 2M", "CFG scale": 7.5, "Seed": 1, "Model": "my, model: v2",
              "Skipped": None}
    text = format_infotext("line one\nline two", "ugly", params)
    assert "Skipped" not in text
    assert 'Model: "my, model: v2"' in text
    prompt, negative, parsed = parse_infotext(text)
    assert (prompt, negative) == ("line one\nline two", "ugly")
    assert parsed == {"Steps": "25", "Sampler": "DPM++ 2M", "CFG scale": "7.5", "Seed": "1",
                      "Model": "my, model: v2"}


def test_prompt_only_text_is_not_taken_for_parameters():
    prompt, negative, params = parse_infotext("a photo: sharp")
    assert (prompt, negative, params) == ("a photo: sharp", "", {})


def test_fields_from_infotext():
    fields = fields_from_infotext(A1111_SAMPLE)
    assert fields["steps"] == 20 and fields["seed"] == 3141 and fields["cfg_scale"] == 7.0
    assert (fields["width"], fields["height"]) == (512, 768)
    assert fields["strength"] == 0.75 and fields["sampler"] == "DPM++ 2M" and fields["scheduler"] == "Karras"
    assert fields["model"] == "v1-5-pruned-emaonly" and fields["model_hash"] == "6ce0161689"


# The parameter line's grammar, as a regular expression: clear, but quadratic on hostile lines, so the
# parser is a one-pass scanner instead. They must agree.
PARAM_GRAMMAR = re.compile(r'\s*([\w][\w \-/+.()]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def test_scanner_agrees_with_the_grammar_on_random_lines():
    rng = random.Random(7)
    alphabet = 'ab :,"\\ -(é_1\t'
    for _ in range(30_000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        assert _param_pairs(line) == PARAM_GRAMMAR.findall(line), repr(line)
    assert _param_pairs(A1111_SAMPLE.split("\n")[-1]) == PARAM_GRAMMAR.findall(A1111_SAMPLE.split("\n")[-1])


@pytest.mark.timeout(10)
@pytest.mark.parametrize("line", ["a" * 65_000, "a " * 32_000, 'k:"a, ' * 10_000, "k: v, " * 10_000,
                                  "key" + ' x' * 30_000 + ": 1"])
def test_hostile_lines_parse_in_one_pass(line):
    """Lines on which a backtracking regular expression takes quadratic time (20 KB: seconds, 64 KB: ~20 s)."""
    prompt, _, params = parse_infotext(line)
    assert params or prompt == line.strip()


def test_infotext_over_the_limit_is_refused():
    parse_infotext("x" * MAX_INFOTEXT_CHARS)
    with pytest.raises(InvalidRequest, match="^infotext is 65,537 characters long; the limit is 65,536 characters$") \
            as info:
        parse_infotext("x" * (MAX_INFOTEXT_CHARS + 1))
    assert info.value.field == "infotext"


def test_every_recorded_field_comes_back_with_its_type():
    params = {"Steps": 30, "Sampler": "Euler a", "Schedule type": "Uniform", "CFG scale": 4.5, "Seed": 9,
              "Size": "640x384", "Model hash": "0123456789", "Model": "m", "Denoising strength": 0.4,
              "Variation seed": 77, "Variation seed strength": 0.25, "Clip skip": 2, "Eta": 0.5,
              "Sigma churn": 0.1, "Sigma tmin": 0.2, "Sigma tmax": 9.5, "Sigma noise": 1.003,
              "Resize mode": "fill", "Keep size": True, "Background": "#102030", "Color correction": True,
              "Tiling": False}
    fields = fields_from_infotext(format_infotext("p", "n", params))
    assert fields == {
        "prompt": "p", "negative_prompt": "n", "steps": 30, "cfg_scale": 4.5, "seed": 9, "strength": 0.4,
        "subseed": 77, "subseed_strength": 0.25, "clip_skip": 2, "eta": 0.5, "s_churn": 0.1, "s_tmin": 0.2,
        "s_tmax": 9.5, "s_noise": 1.003, "sampler": "Euler a", "scheduler": "Uniform", "resize_mode": "fill",
        "background": "#102030", "model": "m", "model_hash": "0123456789", "width": 640, "height": 384,
        "keep_size": True, "color_correction": True, "tiling": False}
    assert [type(fields[k]) for k in ("steps", "seed", "subseed", "clip_skip", "width", "cfg_scale", "eta")] == [
        int, int, int, int, int, float, float]
    assert fields_from_infotext("p\nSteps: 5, Seed: 1, Eta DDIM: 0.3")["eta"] == 0.3  # A1111's DDIM spelling
    assert fields_from_infotext("p\nSteps: 5, Seed: 1, Tiling:  TRUE ")["tiling"] is True
    assert fields_from_infotext("p\nSteps: 5, Seed: 1, Model: m") == {
        "prompt": "p", "negative_prompt": "", "steps": 5, "seed": 1, "model": "m"}  # absent keys left out


@pytest.mark.parametrize("line, key, message", [
    ("Steps: many, Seed: 1, Model: m", "Steps", "stored parameters: Steps is 'many', not a int"),
    ("Steps: 5, CFG scale: high, Model: m", "CFG scale", "CFG scale is 'high', not a float"),
    ("Steps: 5, Seed: 1, Size: 512", "Size", "Size is '', not a int"),
    ("Steps: 5, Seed: 1, Size: wide x 512", "Size", "Size is 'wide ', not a int"),
    ("Steps: 5, Seed: 1, Size: 64x48x2", "Size", "Size is '48x2', not a int"),
])
def test_unreadable_numbers_name_the_key(line, key, message):
    with pytest.raises(InvalidRequest, match=message) as info:
        fields_from_infotext("p\n" + line)
    assert info.value.field == key


def test_values_are_written_as_a1111_writes_them():
    text = format_infotext("p", "", {"A": 7.0, "B": 0.1 + 0.2, "C": 1e-7, "D": "x\ny", "E": "k: v", "F": 3,
                                     "G": True, "H": 2.5})
    assert text == 'p\nA: 7, B: 0.30000000000000004, C: 1e-07, D: "x\\ny", E: "k: v", F: 3, G: True, H: 2.5'
    assert parse_infotext(text)[2]["D"] == "x\ny"
    # every digit survives: :g alone would write 12.3457 and 1.23457e+06
    assert format_infotext("p", "", {"A": 12.345678, "B": 1234567.0, "C": 0.5, "D": float("inf")}) == \
        "p\nA: 12.345678, B: 1234567.0, C: 0.5, D: inf"
    # quoted only when needed, and non-ASCII text stays as it is
    assert format_infotext("p", "", {"Model": "café, v2", "Other": "XL model", "Emoji": "ünï"}) == \
        'p\nModel: "café, v2", Other: XL model, Emoji: ünï'


def test_prompt_and_negative_lines():
    assert parse_infotext("a\nb\nNegative prompt:  c\nd\nSteps: 1, Seed: 2, Size: 8x8") == (
        "a\nb", "c\nd", {"Steps": "1", "Seed": "2", "Size": "8x8"})
    # a second "Negative prompt:" line belongs to the negative prompt, not a new one
    assert parse_infotext("a\nNegative prompt: b\nNegative prompt: c")[:2] == ("a", "b\nNegative prompt: c")
    # two pairs are not enough for a parameter line: it stays part of the prompt (as in A1111)
    assert parse_infotext("a\nStyle: x, Mood: y") == ("a\nStyle: x, Mood: y", "", {})
    assert parse_infotext("\n  a\nSteps: 1, Seed: 2, Size: 8x8  \n")[0] == "a"
    # a quoted value that is not valid JSON is kept as written
    assert parse_infotext('a\nSteps: 1, Seed: 2, Note: "\\q"')[2]["Note"] == '"\\q"'
    assert parse_infotext('a\nSteps: 1, Seed: 2, Note: " x "')[2]["Note"] == " x "
    assert parse_infotext('a\nSteps: 1, Seed: 2, Note: "')[2]["Note"] == '"'
    assert parse_infotext('a\nSteps: 1, Seed: 2, Note: ""')[2]["Note"] == ""  # an empty JSON string


@pytest.mark.parametrize("line", [
    'k: "",x"',  # an empty quoted value, then a stray quote
    'k: "\\a",x"',  # an escape right before the closing quote
    'k: "a:", b: 1',  # a colon inside a quoted value
    'k: "v",b: 1, c: 2',  # no space after the comma that ends a quoted value
    'k: "a\\"b", c: 1',
])
def test_scanner_agrees_with_the_grammar_on_quoting_corners(line):
    assert _param_pairs(line) == PARAM_GRAMMAR.findall(line)


def test_inpainting_fields_come_back():
    text = ("p\nSteps: 5, Seed: 1, Mask blur: 6, Mask mode: Inpaint not masked, Masked content: latent noise, "
            "Inpaint area: Only masked, Masked area padding: 24, Outpaint: left 64, Mask hash: abc123, "
            "Mask round: False, Mask from alpha:  TRUE , Noise multiplier: 0.9")
    fields = fields_from_infotext(text)
    assert {k: v for k, v in fields.items() if k not in ("prompt", "negative_prompt", "steps", "seed")} == {
        "mask_blur": 6, "invert_mask": True, "inpaint_fill": "latent noise", "inpaint_area": "Only masked",
        "inpaint_padding": 24, "outpaint": "left 64", "mask_hash": "abc123", "mask_round": False,
        "mask_from_alpha": True, "noise_multiplier": 0.9}
    both = fields_from_infotext("p\nSteps: 5, Mask blur: 4, Mask blur x: 3, Mask blur y: 5, Mask mode: Inpaint masked")
    assert (both["mask_blur"], both["invert_mask"]) == ((3, 5), False)  # x and y win over the single value
    assert "mask_blur" not in fields_from_infotext("p\nSteps: 5, Seed: 1, Mask blur x: 3")  # x without y
    assert fields_from_infotext("p\nSteps: 5, Seed: 1, Size: 8x8") == {
        "prompt": "p", "negative_prompt": "", "steps": 5, "seed": 1, "width": 8, "height": 8}


@pytest.mark.parametrize("line, key", [("Mask blur: soft", "Mask blur"),
                                       ("Mask blur x: 1, Mask blur y: y", "Mask blur y"),
                                       ("Mask blur x: x, Mask blur y: 1", "Mask blur x"),
                                       ("Masked area padding: wide", "Masked area padding")])
def test_unreadable_inpainting_numbers_name_the_key(line, key):
    with pytest.raises(InvalidRequest, match=f"^stored parameters: {key} is '[a-z]+', not a int$") as info:
        fields_from_infotext("p\nSteps: 5, Seed: 1, " + line)
    assert info.value.field == key
