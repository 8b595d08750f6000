"""A1111 infotext: the plain-text generation parameters stored with every output.

    <prompt>
    Negative prompt: <negative>
    Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, ...
"""

from __future__ import annotations

import json

from .errors import InvalidRequest

_MIN_PARAMS = 3  # a last line with fewer pairs is part of the prompt, as in A1111
# Two prompts at their limit (request.MAX_PROMPT_CHARS) plus a long parameter line fit with room to spare;
# anything longer is no infotext this program or A1111 writes.
MAX_INFOTEXT_CHARS = 65_536
_KEY_EXTRA = frozenset(" -/+.()")  # besides letters, digits and "_", what a key may contain


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ",:\n") else value


def _format_value(value) -> str:
    if isinstance(value, float):
        short = f"{value:g}"  # "7" for 7.0; but :g keeps 6 digits, so 12.345678 needs repr
        return short if float(short) == value else repr(value)
    return _quote(str(value))


def format_infotext(prompt: str, negative_prompt: str, params: dict) -> str:
    """Prompt line(s), optional negative prompt line, then the Key: value line (None values skipped)."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{key}: {_format_value(v)}" for key, v in params.items() if v is not None))
    return "\n".join(lines)


def shorten_infotext(text: str, max_units: int) -> str:
    """The infotext cut to at most `max_units` UTF-16 code units (what EXIF stores), keeping its structure:
    the prompt and the negative prompt share the room (each cut ends in "…"), the parameters line stays whole."""
    if _units(text) <= max_units:
        return text
    head, newline, params = text.rpartition("\n")
    if not newline:
        return _cut(text, max_units)
    prompt, marker, negative = head.partition(_NEGATIVE_LINE)
    room = max_units - _units(params) - _units(newline) - _units(marker)
    if room < 2:
        return _cut(params, max_units)
    prompt_room = room - min(_units(negative), room // 2)
    negative_room = room - min(_units(prompt), prompt_room)
    return _cut(prompt, prompt_room) + marker + _cut(negative, negative_room) + newline + params


_NEGATIVE_LINE = "\nNegative prompt: "


def _units(text: str) -> int:
    return len(text.encode("utf-16-be")) // 2


def _cut(text: str, max_units: int) -> str:
    """At most max_units UTF-16 units, ending in "…" when something was cut (never half a character)."""
    if _units(text) <= max_units:
        return text
    kept, used = [], 1  # the ellipsis
    for char in text:
        size = 2 if ord(char) > 0xFFFF else 1
        if used + size > max_units:
            break
        kept.append(char)
        used += size
    return "".join(kept) + "…"


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _closing_quote(line: str, start: int) -> int:
    """Index of the quote that ends the JSON string opening at `start` (backslash escapes skipped), or -1."""
    i = start + 1
    while i < len(line):
        if line[i] == "\\":
            i += 2
        elif line[i] == '"':
            return i
        else:
            i += 1
    return -1


def _param_pairs(line: str) -> list[tuple[str, str]]:
    """The `Key: value` pairs of a parameter line, left to right, in one pass (linear time on any input).

    A key is a word character followed by letters, digits, spaces and -/+.(); text before it that cannot be
    part of a key is skipped. A value is a JSON string when it is quoted and the quote closes right before a
    comma or the end of the line; otherwise it runs to the next comma.
    """
    pairs: list[tuple[str, str]] = []
    i, end = 0, len(line)
    while i < end:
        colon = line.find(":", i)
        if colon < 0:
            break
        key_start = colon  # walk back over key characters, then forward to the first word character
        while key_start > i and (_is_word(line[key_start - 1]) or line[key_start - 1] in _KEY_EXTRA):
            key_start -= 1
        while key_start < colon and not _is_word(line[key_start]):
            key_start += 1
        if key_start == colon:  # no key before this colon: look for one before the next
            i = colon + 1
            continue
        value_start = colon + 1
        while value_start < end and line[value_start].isspace():
            value_start += 1
        if value_start < end and line[value_start] == '"':
            close = _closing_quote(line, value_start)
            if close >= 0 and (close + 1 == end or line[close + 1] == ","):
                pairs.append((line[key_start:colon], line[value_start:close + 1]))
                i = close + 2
                continue
        comma = line.find(",", value_start)
        value_end = end if comma < 0 else comma
        pairs.append((line[key_start:colon], line[value_start:value_end]))
        i = value_end + 1
    return pairs


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, params) with params as strings, JSON-quoted values unquoted.

    Raises InvalidRequest for a text over MAX_INFOTEXT_CHARS characters.
    """
    if len(text) > MAX_INFOTEXT_CHARS:
        raise InvalidRequest(f"infotext is {len(text):,} characters long; the limit is {MAX_INFOTEXT_CHARS:,} "
                             "characters", "infotext")
    lines = text.strip().split("\n")
    params: dict[str, str] = {}
    matches = _param_pairs(lines[-1]) if lines else []
    if len(matches) >= _MIN_PARAMS:
        lines = lines[:-1]
        for key, value in matches:
            value = value.strip()
            if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            params[key.strip()] = value
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if line.startswith("Negative prompt:") and not negative_lines:
            negative_lines.append(line[len("Negative prompt:"):].strip())
        elif negative_lines:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)
    return "\n".join(prompt_lines), "\n".join(negative_lines), params


def _number(params: dict, key: str, kind):
    try:
        return kind(params[key])
    except (TypeError, ValueError):
        raise InvalidRequest(f"stored parameters: {key} is {params[key]!r}, not a {kind.__name__}", key) from None


def fields_from_infotext(text: str) -> dict:
    """Request fields (plus "model", "model_hash" and "mask_hash") recorded in an infotext; absent keys are
    left out."""
    prompt, negative, params = parse_infotext(text)
    fields: dict = {"prompt": prompt, "negative_prompt": negative}
    for key, name, kind in (("Steps", "steps", int), ("CFG scale", "cfg_scale", float), ("Seed", "seed", int),
                            ("Denoising strength", "strength", float), ("Variation seed", "subseed", int),
                            ("Variation seed strength", "subseed_strength", float), ("Clip skip", "clip_skip", int),
                            ("Eta", "eta", float), ("Eta DDIM", "eta", float), ("Sigma churn", "s_churn", float),
                            ("Sigma tmin", "s_tmin", float), ("Sigma tmax", "s_tmax", float),
                            ("Sigma noise", "s_noise", float), ("Noise multiplier", "noise_multiplier", float)):
        if key in params:
            fields[name] = _number(params, key, kind)
    for key, name in (("Sampler", "sampler"), ("Schedule type", "scheduler"), ("Resize mode", "resize_mode"),
                      ("Background", "background"), ("Model", "model"), ("Model hash", "model_hash")):
        if key in params:
            fields[name] = params[key]
    if "Size" in params:
        width, _, height = params["Size"].partition("x")
        fields["width"] = _number({"Size": width}, "Size", int)
        fields["height"] = _number({"Size": height}, "Size", int)
    for key, name in (("Keep size", "keep_size"), ("Color correction", "color_correction"), ("Tiling", "tiling")):
        if key in params:
            fields[name] = params[key].strip().lower() == "true"
    fields.update(_inpainting_fields(params))
    return fields


def _inpainting_fields(params: dict) -> dict:
    """A1111's inpainting keys (labels as it writes them; Request.normalized() reads them), plus ours."""
    fields: dict = {}
    if "Mask blur" in params:
        fields["mask_blur"] = _number(params, "Mask blur", int)
    if "Mask blur x" in params and "Mask blur y" in params:
        fields["mask_blur"] = (_number(params, "Mask blur x", int), _number(params, "Mask blur y", int))
    if "Mask mode" in params:
        fields["invert_mask"] = params["Mask mode"].strip().lower() == "inpaint not masked"
    for key, name in (("Masked content", "inpaint_fill"), ("Inpaint area", "inpaint_area"), ("Outpaint", "outpaint"),
                      ("Mask hash", "mask_hash")):
        if key in params:
            fields[name] = params[key]
    if "Masked area padding" in params:
        fields["inpaint_padding"] = _number(params, "Masked area padding", int)
    for key, name in (("Mask round", "mask_round"), ("Mask from alpha", "mask_from_alpha")):
        if key in params:
            fields[name] = params[key].strip().lower() == "true"
    return fields
