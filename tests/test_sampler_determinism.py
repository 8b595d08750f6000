"""For every A1111 sampler: the same seed gives the same bytes, and another seed another image."""

import numpy as np
import pytest
import torch

from img2img.schedulers import SAMPLERS


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_same_seed_same_bytes(engine, sampler):
    # Noise drawn from torch's global random state (DPM++ SDE's Brownian tree, unless seeded) would differ.
    settings = {"steps": 3, "sampler": sampler, "cfg_scale": 5.0, "width": 32, "height": 32}
    torch.manual_seed(1)
    first = engine.text_to_image("a red boat", seed=21, **settings)
    torch.manual_seed(2)
    again = engine.text_to_image("a red boat", seed=21, **settings)
    other = engine.text_to_image("a red boat", seed=22, **settings)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.image.tobytes() != other.image.tobytes()
    assert f"Sampler: {sampler}," in first.infotexts[0]


def test_sde_noise_of_a_batch_image_follows_its_own_seed(engine, square_path):
    # DPM++ SDE draws its Brownian noise from one tree per image, seeded with that image's seed, as A1111 does:
    # the second image of a batch starting at 30 is the image of seed 31, whatever ran before it.
    torch.manual_seed(3)
    batch = engine.transform(square_path, "x", seed=30, batch_size=2, steps=4, strength=0.5, sampler="DPM++ SDE")
    torch.manual_seed(4)
    again = engine.transform(square_path, "x", seed=30, batch_size=2, steps=4, strength=0.5, sampler="DPM++ SDE")
    assert [im.tobytes() for im in batch.images] == [im.tobytes() for im in again.images]
    single = engine.transform(square_path, "x", seed=31, steps=4, strength=0.5, sampler="DPM++ SDE")
    assert np.abs(np.asarray(single.image, float) - np.asarray(batch.images[1], float)).max() <= 1
