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
    with pytest.raises(InvalidRequest, match="infotext is 65,537 characters long; the limit is 65,536") as info:
        parse_infotext("x" * (MAX_INFOTEXT_CHARS + 1))
    assert info.value.field == "infotext"
