import random
import re

import pytest

from img2img.errors import InvalidRequest
from img2img.infotext import (
    MAX_INFOTEXT_CHARS,
    _param_pairs,
    fields_from_infotext,
    format_infotext,
    parse_infotext,
    shorten_infotext,
)

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


# Shortening for JPEG's EXIF, which holds a limited number of UTF-16 code units: the parameters line stays whole,
# the prompts share what room is left, and each cut prompt ends in "…".
PARAMS_LINE = "Steps: 20, Seed: 1, Size: 8x8"  # 29 units
NEGATIVE_MARKER = "\nNegative prompt: "  # 18 units


def _utf16_units(text):
    return len(text.encode("utf-16-le")) // 2


def test_an_infotext_that_fits_is_kept_as_it_is():
    text = format_infotext("a" * 40, "b" * 40, {"Steps": 20, "Seed": 1, "Size": "8x8"})
    assert _utf16_units(text) == 40 + 18 + 40 + 1 + 29
    assert shorten_infotext(text, 128) == text  # exactly at the limit
    assert shorten_infotext(text, 1000) == text
    shorter = shorten_infotext(text, 127)  # one unit over: both prompts give way, the parameters do not
    assert _utf16_units(shorter) == 127 and shorter.endswith("\n" + PARAMS_LINE)


def test_two_long_prompts_share_the_room_equally():
    text = format_infotext("a" * 100, "b" * 100, {"Steps": 20, "Seed": 1, "Size": "8x8"})
    # 20 units left for the prompts: 10 each, the ellipsis included
    assert shorten_infotext(text, 29 + 1 + 18 + 20) == "a" * 9 + "…" + NEGATIVE_MARKER + "b" * 9 + "…\n" + PARAMS_LINE
    # an odd unit goes to the prompt
    assert shorten_infotext(text, 29 + 1 + 18 + 21) == "a" * 10 + "…" + NEGATIVE_MARKER + "b" * 9 + "…\n" + PARAMS_LINE


def test_a_short_prompt_is_kept_whole_and_the_other_gets_the_rest():
    params = {"Steps": 20, "Seed": 1, "Size": "8x8"}
    # a short negative prompt: the prompt gets the 20 units it leaves
    text = format_infotext("a" * 100, "bb", params)
    assert shorten_infotext(text, 29 + 1 + 18 + 20) == "a" * 17 + "…" + NEGATIVE_MARKER + "bb\n" + PARAMS_LINE
    # a short prompt: the negative prompt gets the rest
    text = format_infotext("aaa", "b" * 100, params)
    assert shorten_infotext(text, 29 + 1 + 18 + 20) == "aaa" + NEGATIVE_MARKER + "b" * 16 + "…\n" + PARAMS_LINE
    # a negative prompt of exactly half the room is kept whole
    text = format_infotext("a" * 100, "b" * 10, params)
    assert shorten_infotext(text, 29 + 1 + 18 + 20) == "a" * 9 + "…" + NEGATIVE_MARKER + "b" * 10 + "\n" + PARAMS_LINE
    # without a negative prompt the prompt has all the room (no marker to pay for)
    text = format_infotext("a" * 100, "", params)
    assert shorten_infotext(text, 29 + 1 + 20) == "a" * 19 + "…\n" + PARAMS_LINE


def test_shortening_counts_utf16_units_and_never_splits_a_character():
    params = {"Steps": 20, "Seed": 1, "Size": "8x8"}
    text = format_infotext("😀" * 50, "", params)  # each emoji is two UTF-16 units (a surrogate pair)
    assert shorten_infotext(text, 29 + 1 + 9) == "😀" * 4 + "…\n" + PARAMS_LINE  # 8 + 1 units
    assert shorten_infotext(text, 29 + 1 + 10) == "😀" * 4 + "…\n" + PARAMS_LINE  # a fifth would need 11
    assert shorten_infotext(text, 29 + 1 + 11) == "😀" * 5 + "…\n" + PARAMS_LINE
    mixed = format_infotext("é" * 30 + "😀" * 30, "", params)  # é is one unit
    assert shorten_infotext(mixed, 29 + 1 + 34) == "é" * 30 + "😀" + "…\n" + PARAMS_LINE  # 30 + 2 + 1 of 34
    # a text that fits in units but not in UTF-8 bytes is not touched
    assert shorten_infotext("é" * 20, 20) == "é" * 20
    # the edges of the Basic Multilingual Plane: U+FFFF is the last one-unit character, U+10000 the first pair
    for char, kept in (("\uffff", 4), ("\U00010000", 2)):
        assert shorten_infotext(format_infotext(char * 10, "", params), 29 + 1 + 5) == char * kept + "…\n" + PARAMS_LINE


def test_a_text_without_a_parameters_line_is_cut_at_the_limit():
    assert shorten_infotext("x" * 10, 10) == "x" * 10
    assert shorten_infotext("x" * 10, 9) == "x" * 8 + "…"
    assert shorten_infotext("x" * 10, 5) == "xxxx…"
    assert shorten_infotext("😀" * 10, 5) == "😀😀…"


def test_without_room_for_the_prompts_the_parameters_line_is_kept():
    text = format_infotext("a" * 100, "b" * 100, {"Steps": 20, "Seed": 1, "Size": "8x8"})
    # the parameters, the newline, the marker and one unit: not enough to show anything of a prompt
    assert shorten_infotext(text, 29 + 1 + 18 + 1) == PARAMS_LINE
    # two units are: an ellipsis for each prompt
    assert shorten_infotext(text, 29 + 1 + 18 + 2) == "…" + NEGATIVE_MARKER + "…\n" + PARAMS_LINE
    # a parameters line longer than the limit is cut too (the limit always holds)
    assert shorten_infotext(text, 20) == PARAMS_LINE[:19] + "…"
    # but a short prompt that fits exactly is kept
    assert shorten_infotext("a\n" + PARAMS_LINE, 29 + 1 + 1) == "a\n" + PARAMS_LINE


def test_shortening_cuts_the_negative_prompt_where_parsing_finds_it():
    # a negative prompt with a "Negative prompt:" line of its own: the first marker starts it, as when parsing
    text = format_infotext("a" * 100, "b" * 50 + "\nNegative prompt: " + "c" * 50, {"Steps": 20, "Seed": 1,
                                                                                    "Size": "8x8"})
    assert parse_infotext(text)[1].startswith("b" * 50)
    shorter = shorten_infotext(text, 29 + 1 + 18 + 20)
    assert shorter == "a" * 9 + "…" + NEGATIVE_MARKER + "b" * 9 + "…\n" + PARAMS_LINE
    assert parse_infotext(shorter)[:2] == ("a" * 9 + "…", "b" * 9 + "…")


@pytest.mark.parametrize("limit", range(84, 300, 7))  # from the parameters, marker and two units up
def test_a_shortened_infotext_keeps_every_parameter(limit):
    params = {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7.5, "Seed": 1, "Size": "8x8"}
    text = format_infotext("a castle 😀 " * 30, "blurry, " * 30, params)
    shorter = shorten_infotext(text, limit)
    assert _utf16_units(shorter) <= limit
    prompt, negative, parsed = parse_infotext(shorter)
    assert parsed == {k: str(v) for k, v in params.items()}
    assert ("a castle 😀 " * 30).startswith(prompt.removesuffix("…"))
    assert ("blurry, " * 30).startswith(negative.removesuffix("…"))
