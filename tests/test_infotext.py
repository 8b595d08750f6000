from img2img.infotext import fields_from_infotext, format_infotext, parse_infotext

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
