"""A1111 sampler and schedule names -> diffusers scheduler classes and their arguments.

Names are data here; diffusers is imported only in build_scheduler().
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from .errors import InvalidRequest


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler_class: str
    kwargs: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    automatic_schedule: str = "Uniform"  # what A1111's "Automatic" schedule means for this sampler


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"},
                ("k_dpmpp_2m",), "Karras"),
        Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"},
                ("k_dpmpp_2m_sde",), "Karras"),
        Sampler("DPM++ SDE", "DPMSolverSDEScheduler", {}, ("k_dpmpp_sde",), "Karras"),
        Sampler("Euler a", "EulerAncestralDiscreteScheduler", {}, ("k_euler_a", "k_euler_ancestral")),
        Sampler("Euler", "EulerDiscreteScheduler", {}, ("k_euler",)),
        Sampler("Heun", "HeunDiscreteScheduler", {}, ("k_heun",)),
        Sampler("LMS", "LMSDiscreteScheduler", {}, ("k_lms",)),
        Sampler("DDIM", "DDIMScheduler", {}, ("ddim",)),
        Sampler("UniPC", "UniPCMultistepScheduler", {}, ("unipc",)),
        Sampler("LCM", "LCMScheduler", {}, ("lcm",)),
    )
}

# Schedule name -> scheduler constructor arguments ("Uniform" keeps the model's own spacing).
SCHEDULES: dict[str, dict] = {
    "Automatic": {},
    "Uniform": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}


def _lookup(name: str, table: dict, aliases_of) -> str | None:
    wanted = name.strip().casefold()
    for key, value in table.items():
        if wanted == key.casefold() or wanted in (a.casefold() for a in aliases_of(value)):
            return key
    return None


def parse_sampler(sampler: str, schedule: str | None = None) -> tuple[str, str]:
    """Canonical (sampler, schedule) from A1111 names, accepting legacy names like "DPM++ 2M Karras".

    An explicit schedule other than Automatic wins over one folded into a legacy sampler name.
    Raises InvalidRequest naming the unknown value.
    """
    schedule_name = "Automatic"
    if schedule:
        found = _lookup(schedule, SCHEDULES, lambda _: ())
        if found is None:
            raise InvalidRequest(
                f"Schedule type not found: {schedule!r}; expected one of {', '.join(SCHEDULES)}", "scheduler"
            )
        schedule_name = found
    name = _lookup(sampler, SAMPLERS, lambda s: s.aliases)
    if name is None:
        # Before v1.9 A1111 folded the schedule into the sampler name: "DPM++ 2M Karras".
        for suffix in ("Karras", "Exponential"):
            if sampler.strip().casefold().endswith(" " + suffix.casefold()):
                name = _lookup(sampler.strip()[: -len(suffix) - 1], SAMPLERS, lambda s: s.aliases)
                if name is not None and schedule_name == "Automatic":
                    schedule_name = suffix
                break
    if name is None:
        raise InvalidRequest(
            f"Sampler not found: {sampler!r}; expected one of {', '.join(SAMPLERS)}", "sampler"
        )
    return name, schedule_name


def resolve_schedule(sampler: str, schedule: str) -> str:
    """Replace "Automatic" by the schedule it stands for with this sampler."""
    return SAMPLERS[sampler].automatic_schedule if schedule == "Automatic" else schedule


def scheduler_kwargs(sampler: str, schedule: str, scheduler_cls) -> dict:
    """Constructor arguments for the sampler/schedule pair; refuses a schedule the class cannot do."""
    kwargs = dict(SAMPLERS[sampler].kwargs)
    extra = SCHEDULES[resolve_schedule(sampler, schedule)]
    accepted = inspect.signature(scheduler_cls.__init__).parameters
    for key, value in extra.items():
        if key not in accepted:
            raise InvalidRequest(
                f"Schedule type {schedule!r} is not available with sampler {sampler!r}", "scheduler"
            )
        kwargs[key] = value
    # A model's config may carry sigma options for its own default scheduler; ours decides here.
    for key in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
        if key in accepted and key not in kwargs:
            kwargs[key] = False
    return kwargs


def build_scheduler(base_config, sampler: str, schedule: str):
    """A fresh scheduler (never shared between calls: schedulers keep per-call state)."""
    import diffusers

    cls = getattr(diffusers, SAMPLERS[sampler].scheduler_class)
    return cls.from_config(base_config, **scheduler_kwargs(sampler, schedule, cls))
