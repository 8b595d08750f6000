"""A1111 sampler and schedule names -> diffusers scheduler classes and their arguments.

Every sampler and schedule type of A1111 1.10 is known here. Where diffusers has the same method, it is
used as is; schedules diffusers has no switch for are sigma lists put into the scheduler (sigmas.py);
the rest run the closest diffusers method and say so in a notice. docs/samplers.md has the table.
Names are data here; diffusers is imported only when a scheduler is built.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, field

from .errors import InvalidRequest

ETA_PARAMS = ("eta",)
CHURN_PARAMS = ("s_churn", "s_tmin", "s_tmax", "s_noise")


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler_class: str
    kwargs: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    automatic_schedule: str = "Uniform"  # what A1111's "Automatic" schedule means for this sampler
    substitute: str = ""  # empty: diffusers' exact method; else what runs instead (said in a notice)
    a1111_params: tuple[str, ...] = ()  # which of eta, s_churn, s_tmin, s_tmax, s_noise A1111 passes
    eta_default: float | None = None  # A1111's eta when none is given (eta_ancestral 1, eta_ddim 0)
    eta_zero: str = ""  # the sampler this one is, exactly, with eta 0 (Euler a with eta 0 is Euler)
    timestep_sampler: bool = False  # A1111 ignores the schedule type for these (DDIM, PLMS)
    options: tuple[tuple[str, str], ...] = ()  # A1111's sampler options, as /sdapi/v1/samplers lists them


_ANCESTRAL = ("eta", "s_noise")
_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")

# A1111 1.10's samplers in its own order (the /sdapi/v1/samplers listing keeps it).
SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                ("k_dpmpp_2m",), "Karras", options=(("scheduler", "karras"),)),
        Sampler("DPM++ SDE", "DPMSolverSDEScheduler", {}, ("k_dpmpp_sde",), "Karras",
                a1111_params=_ANCESTRAL, eta_default=1.0,
                options=(("scheduler", "karras"), ("second_order", "True"), ("brownian_noise", "True"))),
        Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "midpoint"},
                ("k_dpmpp_2m_sde",), "Exponential", a1111_params=_ANCESTRAL, eta_default=1.0,
                eta_zero="DPM++ 2M", options=(("scheduler", "exponential"), ("brownian_noise", "True"))),
        Sampler("DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
                ("k_dpmpp_2m_sde_heun",), "Exponential", a1111_params=_ANCESTRAL, eta_default=1.0,
                options=(("scheduler", "exponential"), ("brownian_noise", "True"), ("solver_type", "heun"))),
        Sampler("DPM++ 2S a", "DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                ("k_dpmpp_2s_a",), "Karras", "DPM++ 2S (DPM-Solver++ single-step, order 2) without ancestral noise",
                _ANCESTRAL, 1.0,
                options=(("scheduler", "karras"), ("uses_ensd", "True"), ("second_order", "True"))),
        Sampler("DPM++ 3M SDE", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, ("k_dpmpp_3m_sde",), "Exponential",
                a1111_params=_ANCESTRAL, eta_default=1.0,
                options=(("scheduler", "exponential"), ("discard_next_to_last_sigma", "True"),
                         ("brownian_noise", "True"))),
        Sampler("Euler a", "EulerAncestralDiscreteScheduler", {}, ("k_euler_a", "k_euler_ancestral"),
                a1111_params=("eta",), eta_default=1.0, eta_zero="Euler", options=(("uses_ensd", "True"),)),
        Sampler("Euler", "EulerDiscreteScheduler", {}, ("k_euler",), a1111_params=_CHURN),
        Sampler("LMS", "LMSDiscreteScheduler", {}, ("k_lms",)),
        Sampler("Heun", "HeunDiscreteScheduler", {}, ("k_heun",), a1111_params=_CHURN,
                options=(("second_order", "True"),)),
        Sampler("DPM2", "KDPM2DiscreteScheduler", {}, ("k_dpm_2",), "Karras",
                "DPM2 keeping the next-to-last sigma, which A1111 drops", _CHURN,
                options=(("scheduler", "karras"), ("discard_next_to_last_sigma", "True"), ("second_order", "True"))),
        Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, ("k_dpm_2_a",), "Karras",
                "DPM2 a keeping the next-to-last sigma, which A1111 drops", _ANCESTRAL, 1.0, "DPM2",
                options=(("scheduler", "karras"), ("discard_next_to_last_sigma", "True"), ("uses_ensd", "True"),
                         ("second_order", "True"))),
        Sampler("DPM fast", "DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3},
                ("k_dpm_fast",), "Uniform", "DPM-Solver single-step, order 3, without ancestral noise",
                _ANCESTRAL, 1.0, options=(("uses_ensd", "True"),)),
        Sampler("DPM adaptive", "DPMSolverSinglestepScheduler",
                {"algorithm_type": "dpmsolver++", "solver_order": 3}, ("k_dpm_ad",), "Uniform",
                "DPM-Solver single-step, order 3, with the requested steps (no adaptive step size)",
                ("eta",), 1.0, options=(("uses_ensd", "True"),)),
        Sampler("Restart", "HeunDiscreteScheduler", {}, ("restart",), "Karras", "Heun without restart passes",
                options=(("scheduler", "karras"), ("second_order", "True"))),
        Sampler("DDIM", "DDIMScheduler", {}, ("ddim",), a1111_params=("eta",), eta_default=0.0,
                timestep_sampler=True),
        Sampler("DDIM CFG++", "DDIMScheduler", {}, ("ddim_cfgpp",), substitute="DDIM with plain CFG (no CFG++)",
                a1111_params=("eta",), eta_default=0.0, timestep_sampler=True),
        Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, ("plms",), timestep_sampler=True),
        # A1111's UniPC defaults (bh1, order 3), ending at the smallest noise level as A1111's does: diffusers'
        # bh1 update cannot take the last step to sigma 0.
        Sampler("UniPC", "UniPCMultistepScheduler",
                {"solver_order": 3, "solver_type": "bh1", "final_sigmas_type": "sigma_min"}, ("unipc",)),
        Sampler("LCM", "LCMScheduler", {}, ("k_lcm", "lcm")),
    )
}


@dataclass(frozen=True)
class Schedule:
    label: str
    name: str  # A1111's id, as /sdapi/v1/schedulers lists it
    kwargs: dict = field(default_factory=dict)  # diffusers' own switch for it, when there is one
    sigmas: bool = False  # computed in sigmas.py and installed where the scheduler allows
    aliases: tuple[str, ...] = ()
    default_rho: float = -1
    need_inner_model: bool = False
    closest: str = ""  # for sigma lists a scheduler cannot take: the schedule that runs instead


SCHEDULES: dict[str, Schedule] = {
    s.label: s
    for s in (
        Schedule("Automatic", "automatic"),
        Schedule("Uniform", "uniform", {"timestep_spacing": "linspace"}, need_inner_model=True),
        Schedule("Karras", "karras", {"use_karras_sigmas": True}, True, default_rho=7.0),
        Schedule("Exponential", "exponential", {"use_exponential_sigmas": True}, True),
        Schedule("Polyexponential", "polyexponential", {"use_exponential_sigmas": True}, True, default_rho=1.0),
        Schedule("SGM Uniform", "sgm_uniform", {"timestep_spacing": "trailing"}, aliases=("SGMUniform",),
                 need_inner_model=True),
        Schedule("KL Optimal", "kl_optimal", sigmas=True, closest="Karras"),
        Schedule("Align Your Steps", "align_your_steps", sigmas=True, closest="Karras"),
        Schedule("Simple", "simple", {"timestep_spacing": "trailing"}, need_inner_model=True),
        Schedule("Normal", "normal", {"timestep_spacing": "linspace"}, need_inner_model=True),
        Schedule("DDIM", "ddim", {"timestep_spacing": "leading"}, need_inner_model=True),
        Schedule("Beta", "beta", {"use_beta_sigmas": True}, True, need_inner_model=True),
    )
}

_SIGMA_SWITCHES = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def _casefold(text: str) -> str:
    return " ".join(text.replace("_", " ").split()).casefold()


def find_sampler(name: str | None) -> str | None:
    """Canonical sampler name for a name or alias (case, spaces and underscores ignored), or None."""
    if not name or not isinstance(name, str):
        return None
    wanted = _casefold(name)
    for sampler in SAMPLERS.values():
        if wanted == _casefold(sampler.name) or wanted in (_casefold(a) for a in sampler.aliases):
            return sampler.name
    return None


def find_schedule(name: str | None) -> str | None:
    """Canonical schedule label for a label, A1111 id or alias, or None."""
    if not name or not isinstance(name, str):
        return None
    wanted = _casefold(name)
    for schedule in SCHEDULES.values():
        if wanted in {_casefold(schedule.label), _casefold(schedule.name), *(_casefold(a) for a in schedule.aliases)}:
            return schedule.label
    return None


def split_sampler_name(name: str) -> tuple[str | None, str | None]:
    """(sampler, schedule) from a name that may carry a schedule: "DPM++ 2M Karras", "k_dpmpp_2m_ka".

    A1111 (v1.9+) splits such legacy names the same way; the schedule in the name wins over a separate one.
    """
    found = find_sampler(name)
    if found is not None:
        return found, None
    text = name.strip()
    for suffix, schedule in (("_ka", "Karras"), ("_exp", "Exponential")):
        if text.casefold().endswith(suffix) and find_sampler(text[: -len(suffix)]):
            return find_sampler(text[: -len(suffix)]), schedule
    for schedule in SCHEDULES.values():
        for spelling in (schedule.label, schedule.name, *schedule.aliases):
            if _casefold(text).endswith(" " + _casefold(spelling)):
                head = text[: len(text) - len(spelling)].strip()
                if find_sampler(head):
                    return find_sampler(head), schedule.label
    return None, None


def parse_sampler(sampler: str, schedule: str | None = None) -> tuple[str, str]:
    """Canonical (sampler, schedule) from A1111 names, accepting legacy names like "DPM++ 2M Karras".

    Raises InvalidRequest naming the unknown value (the A1111 API falls back instead; see server/a1111).
    """
    schedule_name = "Automatic"
    if schedule:
        schedule_name = find_schedule(schedule)
        if schedule_name is None:
            raise InvalidRequest(
                f"Schedule type not found: {schedule!r}; expected one of {', '.join(SCHEDULES)}", "scheduler")
    name, folded = split_sampler_name(sampler) if isinstance(sampler, str) else (None, None)
    if name is None:
        raise InvalidRequest(f"Sampler not found: {sampler!r}; expected one of {', '.join(SAMPLERS)}", "sampler")
    return name, folded or schedule_name


def resolve_schedule(sampler: str, schedule: str) -> str:
    """Replace "Automatic" by the schedule it stands for with this sampler."""
    return SAMPLERS[sampler].automatic_schedule if schedule == "Automatic" else schedule


def recorded_schedule(sampler: str, schedule: str) -> str:
    """The schedule type an infotext records: the one "Automatic" stands for, except where that is the model's
    own spacing (samplers whose A1111 default is Uniform), which only "Automatic" reproduces."""
    if schedule == "Automatic" and SAMPLERS[sampler].automatic_schedule == "Uniform":
        return "Automatic"
    return resolve_schedule(sampler, schedule)


# ------------------------------------------------------------------------------------------ building


@dataclass
class SamplingSetup:
    """A fresh scheduler for one run, what the pipeline call needs besides it, and what was substituted."""

    scheduler: object
    call_kwargs: dict
    notices: list[str]
    params: dict  # infotext keys of the sampler settings that differ from A1111's defaults


def _accepts(function, name: str) -> bool:
    return name in inspect.signature(function).parameters


def _schedule_kwargs(sampler: Sampler, schedule_label: str, cls, steps: int, notices: list[str]):
    """Constructor arguments and, for sigma lists, the schedule to install. Automatic keeps the model's
    own spacing for samplers whose A1111 default is Uniform (the model's trained schedule)."""
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {key: False for key in _SIGMA_SWITCHES if key in accepted}  # ours decide, not the model's config
    if schedule_label == "Automatic" and sampler.automatic_schedule == "Uniform":
        return kwargs, None
    label = resolve_schedule(sampler.name, schedule_label)
    if sampler.timestep_sampler:
        if schedule_label != "Automatic":
            notices.append(f"Schedule type {label} does not apply to {sampler.name} (A1111 ignores it there too)")
        return kwargs, None
    schedule = SCHEDULES[label]
    if schedule.kwargs and all(key in accepted for key in schedule.kwargs):
        kwargs.update(schedule.kwargs)
        if kwargs.get("timestep_spacing") == "linspace" and steps == 1:
            kwargs["timestep_spacing"] = "trailing"  # one linspace step would start at t=0; A1111 starts at the top
        return kwargs, None
    if schedule.sigmas and cls.__name__ in _installable():
        return kwargs, label
    fallback = schedule.closest if schedule.closest and all(
        key in accepted for key in SCHEDULES[schedule.closest].kwargs) else None
    if fallback:
        kwargs.update(SCHEDULES[fallback].kwargs)
        notices.append(f"Schedule type {label} is not available with {sampler.name}; used {fallback}")
    else:
        notices.append(f"Schedule type {label} is not available with {sampler.name}; used the model's own schedule")
    return kwargs, None


def _installable():
    from .sigmas import INSTALLABLE

    return INSTALLABLE


def _number(value, default):
    return default if value is None else value


def plan_sampling(base_config, request, *, xl: bool = False, seeds: list[int] | None = None) -> SamplingSetup:
    """Scheduler and pipeline arguments for request.sampler/.scheduler/.steps and its sampler settings
    (eta, s_churn, s_tmin, s_tmax, s_noise; None or absent = A1111's default).

    seeds: one per image of the batch. Samplers that draw noise outside the pipeline's generators (DPM++
    SDE's Brownian tree) take it from them, one tree per image as in A1111, so a seed means one image.
    """
    import diffusers

    notices: list[str] = []
    params: dict = {}
    sampler = SAMPLERS[request.sampler]
    eta = getattr(request, "eta", None)
    if eta is not None and sampler.eta_zero and eta == 0:
        sampler = SAMPLERS[sampler.eta_zero]  # exactly the same method
    if sampler.substitute:
        notices.append(f"{request.sampler}: diffusers has no exact equivalent; ran {sampler.substitute}")
    cls = getattr(diffusers, sampler.scheduler_class)
    kwargs, install = _schedule_kwargs(sampler, request.scheduler, cls, request.steps or 1, notices)
    kwargs = {**kwargs, **sampler.kwargs}
    scheduler = cls.from_config(base_config, **kwargs)
    if seeds is not None and hasattr(scheduler, "noise_sampler_seed"):
        scheduler.noise_sampler_seed = list(seeds)
    if install:
        from .sigmas import install as install_sigmas

        install_sigmas(scheduler, install, xl=xl, full_range=True if install == "KL Optimal" else None)
    call_kwargs: dict = {}
    step_kwargs: dict = {}
    original = SAMPLERS[request.sampler]
    if eta is not None and "eta" in original.a1111_params and eta != original.eta_default:
        params["Eta DDIM" if original.timestep_sampler else "Eta"] = eta
        if _accepts(scheduler.step, "eta"):
            call_kwargs["eta"] = eta
        elif sampler is original:
            notices.append(f"eta {eta:g} is not available with {original.name}; ran eta {original.eta_default:g}")
    elif eta is not None and "eta" not in original.a1111_params and eta not in (0, 1):
        notices.append(f"eta has no effect with {original.name} (as in A1111)")
    defaults = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}
    names = {"s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax", "s_noise": "Sigma noise"}
    for key, default in defaults.items():
        value = _number(getattr(request, key, None), default)
        if value == default:
            continue
        if key not in original.a1111_params:
            notices.append(f"{key} has no effect with {original.name} (as in A1111)")
        elif _accepts(scheduler.step, key):
            step_kwargs[key] = value
            params[names[key]] = value
        else:
            notices.append(f"{key} {value:g} is not available with {original.name}; ran {default:g}")
    if step_kwargs:  # the pipelines pass only eta and generator to step(); bind the rest on this private copy
        scheduler.step = functools.partial(scheduler.step, **step_kwargs)
    return SamplingSetup(scheduler, call_kwargs, notices, params)


def scheduler_kwargs(sampler: str, schedule: str, scheduler_cls) -> dict:
    """Constructor arguments for a sampler/schedule pair (without sigma lists); for checks and tests."""
    kwargs, _ = _schedule_kwargs(SAMPLERS[sampler], schedule, scheduler_cls, 2, [])
    return {**kwargs, **SAMPLERS[sampler].kwargs}


def build_scheduler(base_config, sampler: str, schedule: str, seeds: list[int] | None = None, *, steps: int = 2,
                    xl: bool = False):
    """A fresh scheduler (never shared between calls: schedulers keep per-call state)."""
    from .request import Request

    settings = Request(prompt="", sampler=sampler, scheduler=schedule, steps=steps)
    return plan_sampling(base_config, settings, xl=xl, seeds=seeds).scheduler


def describe(sampler: str, schedule: str = "Automatic") -> str:
    """The scheduler construction a sampler/schedule pair stands for, e.g. for `img2img samplers`."""
    import diffusers

    entry = SAMPLERS[sampler]
    notices: list[str] = []
    kwargs, install = _schedule_kwargs(entry, schedule, getattr(diffusers, entry.scheduler_class), 2, notices)
    kwargs = {k: v for k, v in {**kwargs, **entry.kwargs}.items() if v is not False}
    arguments = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    text = f"{entry.scheduler_class}({arguments})"
    if install:
        text += f" with {install} sigmas"
    if entry.substitute:
        text += f"  [closest: {entry.substitute}]"
    return text
