import diffusers
import pytest

from img2img import InvalidRequest
from img2img.schedulers import SAMPLERS, build_scheduler, parse_sampler, resolve_schedule

BASE_CONFIG = diffusers.EulerDiscreteScheduler(
    beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1
).config


@pytest.mark.parametrize(
    "sampler, schedule, expected",
    [
        ("DPM++ 2M", None, ("DPM++ 2M", "Automatic")),
        ("dpm++ 2m", "karras", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),  # legacy combined name
        ("DPM++ 2M Karras", "Automatic", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M Karras", "Exponential", ("DPM++ 2M", "Exponential")),  # explicit schedule wins
        ("Euler a", None, ("Euler a", "Automatic")),
        ("k_euler_a", None, ("Euler a", "Automatic")),
        ("LMS Karras", None, ("LMS", "Karras")),
        ("UniPC", "SGM Uniform", ("UniPC", "SGM Uniform")),
    ],
)
def test_parse_sampler(sampler, schedule, expected):
    assert parse_sampler(sampler, schedule) == expected


def test_unknown_sampler_and_schedule():
    with pytest.raises(InvalidRequest, match=r"Sampler not found: 'DPM\+\+ 9M'"):
        parse_sampler("DPM++ 9M")
    with pytest.raises(InvalidRequest, match="Schedule type not found: 'Wobbly'"):
        parse_sampler("Euler", "Wobbly")


@pytest.mark.parametrize(
    "sampler, schedule, cls, attributes",
    [
        ("DPM++ 2M", "Automatic", "DPMSolverMultistepScheduler",
         {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++"}),
        ("DPM++ 2M SDE", "Automatic", "DPMSolverMultistepScheduler",
         {"use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"}),
        ("DPM++ SDE", "Karras", "DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
        ("Euler", "Automatic", "EulerDiscreteScheduler", {"use_karras_sigmas": False}),
        ("Euler", "Exponential", "EulerDiscreteScheduler", {"use_exponential_sigmas": True}),
        ("Euler a", "SGM Uniform", "EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
        ("Heun", "Karras", "HeunDiscreteScheduler", {"use_karras_sigmas": True}),
        ("LMS", "Uniform", "LMSDiscreteScheduler", {"use_karras_sigmas": False}),
        ("DDIM", "Automatic", "DDIMScheduler", {}),
        ("UniPC", "Beta", "UniPCMultistepScheduler", {"use_beta_sigmas": True}),
        ("LCM", "Automatic", "LCMScheduler", {}),
    ],
)
def test_build_scheduler(sampler, schedule, cls, attributes):
    scheduler = build_scheduler(BASE_CONFIG, sampler, schedule)
    assert type(scheduler).__name__ == cls
    for key, value in attributes.items():
        assert scheduler.config[key] == value
    assert scheduler.config.beta_schedule == "scaled_linear"  # the model's training schedule is kept


def test_every_sampler_builds_with_its_automatic_schedule():
    for name in SAMPLERS:
        assert build_scheduler(BASE_CONFIG, name, "Automatic") is not None


def test_schedule_the_class_cannot_do_is_refused():
    with pytest.raises(InvalidRequest, match="Schedule type 'Karras' is not available with sampler 'DDIM'"):
        build_scheduler(BASE_CONFIG, "DDIM", "Karras")


def test_resolve_automatic():
    assert resolve_schedule("DPM++ 2M", "Automatic") == "Karras"
    assert resolve_schedule("Euler a", "Automatic") == "Uniform"
    assert resolve_schedule("Euler a", "SGM Uniform") == "SGM Uniform"
