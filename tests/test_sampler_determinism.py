"""For every A1111 sampler: the same seed gives the same bytes, and another seed another image."""

import pytest

from img2img.schedulers import SAMPLERS


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_same_seed_same_bytes(engine, sampler):
    settings = {"steps": 3, "sampler": sampler, "cfg_scale": 5.0, "width": 32, "height": 32}
    first = engine.text_to_image("a red boat", seed=21, **settings)
    again = engine.text_to_image("a red boat", seed=21, **settings)
    other = engine.text_to_image("a red boat", seed=22, **settings)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.image.tobytes() != other.image.tobytes()
    assert f"Sampler: {sampler}," in first.infotexts[0]
