"""A1111 infotext: the plain-text generation parameters stored with every output.

    <prompt>
    Negative prompt: <negative>
    Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512, ...
"""

from __future__ import annotations

import json
import re

# Key: value pairs; a value is either JSON-quoted or runs to the next comma.
_PARAM = re.compile(r'\s*([\w][\w \-/+.()]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_MIN_PARAMS = 3  # a last line with fewer pairs is part of the prompt, as in A1111


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ",:\n") else value


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}" if value == round(value, 6) else repr(value)
    return _quote(str(value))


def format_infotext(prompt: str, negative_prompt: str, params: dict) -> str:
    """Prompt line(s), optional negative prompt line, then the Key: value line (None values skipped)."""
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{key}: {_format_value(v)}" for key, v in params.items() if v is not None))
    return "\n".join(lines)


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """(prompt, negative prompt, params) with params as strings, JSON-quoted values unquoted."""
    lines = text.strip().split("\n")
    params: dict[str, str] = {}
    matches = _PARAM.findall(lines[-1]) if lines else []
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
        from .errors import InvalidRequest

        raise InvalidRequest(f"stored parameters: {key} is {params[key]!r}, not a {kind.__name__}", key) from None


def fields_from_infotext(text: str) -> dict:
    """Request fields (plus "model" and "model_hash") recorded in an infotext; absent keys are left out."""
    prompt, negative, params = parse_infotext(text)
    fields: dict = {"prompt": prompt, "negative_prompt": negative}
    for key, name, kind in (("Steps", "steps", int), ("CFG scale", "cfg_scale", float), ("Seed", "seed", int),
                            ("Denoising strength", "strength", float)):
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
    if "Keep size" in params:
        fields["keep_size"] = params["Keep size"].strip().lower() == "true"
    return fields
