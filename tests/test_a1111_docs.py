"""docs/server.md keeps up with the code: every A1111 field, setting, sampler and schedule type is in its tables."""

import re
from pathlib import Path

from img2img.schedulers import SAMPLERS, SCHEDULES
from img2img.server.a1111.options import EFFECTIVE, FIXED
from img2img.server.a1111.payloads import Img2ImgPayload, Txt2ImgPayload

DOCS = (Path(__file__).parent.parent / "docs" / "server.md").read_text()


def section(title: str) -> str:
    start = DOCS.index(title)
    end = DOCS.find("\n#### ", start + len(title))
    return DOCS[start:end if end > 0 else None]


def test_every_payload_field_is_in_the_field_table():
    table = set(re.findall(r"`([a-z_0-9]+)`", section("#### Field by field")))
    fields = set(Img2ImgPayload.model_fields) | set(Txt2ImgPayload.model_fields)
    assert fields - table == set()


def test_every_setting_with_an_effect_is_in_the_settings_table():
    table = set(re.findall(r"`([A-Za-z_0-9]+)`", section("#### Settings")))
    assert (set(EFFECTIVE) | set(FIXED)) - table == set()


def test_every_sampler_and_schedule_type_is_in_the_sampler_tables():
    tables = section("#### Samplers and schedule types")
    rows = {line.split("|")[1].strip() for line in tables.splitlines() if line.startswith("| ")}
    assert set(SAMPLERS) - rows == set()
    named = " ".join(rows)
    assert [name for name in SCHEDULES if name != "Automatic" and name not in named] == []
