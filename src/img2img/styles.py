"""A1111's prompt styles: a CSV file of `name,prompt,negative_prompt` rows applied to prompts by name.

A style's text replaces a `{prompt}` placeholder with the prompt; without one it is appended after ", ".
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .datadir import folder_setting
from .errors import InvalidRequest

STYLES_FILE_VARIABLE = "IMG2IMG_STYLES_FILE"
PLACEHOLDER = "{prompt}"


def styles_file(explicit=None) -> Path:
    return folder_setting(explicit, STYLES_FILE_VARIABLE, "styles.csv")


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def load_styles(path: Path) -> dict[str, Style]:
    """name -> Style, in file order; a missing file has no styles."""
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle, skipinitialspace=True))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidRequest(f"styles file {path}: cannot read it ({exc})", "styles") from None
    styles: dict[str, Style] = {}
    for row in rows:
        name = (row.get("name") or "").strip()
        if name:
            styles.setdefault(name, Style(name, row.get("prompt") or "", row.get("negative_prompt") or ""))
    return styles


def merge(style_text: str, prompt: str) -> str:
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


class UnknownStyle(InvalidRequest):
    def __init__(self, name: str, path: Path, available: list[str]):
        names = ", ".join(available) or "none"
        super().__init__(f"style {name!r} not found in {path} (available: {names})", "styles")
        self.name = name


def apply_styles(prompt: str, negative_prompt: str, names, path: Path) -> tuple[str, str]:
    """The prompts with the named styles applied in order; an unknown name raises UnknownStyle."""
    if not names:
        return prompt, negative_prompt
    styles = load_styles(path)
    for name in names:
        style = styles.get(name)
        if style is None:
            raise UnknownStyle(name, path, list(styles))
        prompt = merge(style.prompt, prompt)
        negative_prompt = merge(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt
