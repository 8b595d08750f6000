"""Noise schedules as sigma lists, and putting such a list into a diffusers scheduler.

A1111's schedule types that diffusers has no switch for (KL Optimal, Align Your Steps), and the sigma
schedules of samplers whose diffusers class has no switch at all (Euler a), are computed here and
installed into the scheduler: after the scheduler's own `set_timesteps(n)`, its `sigmas` and `timesteps`
are replaced by ours. Pure numpy; torch only where the scheduler's tensors are replaced.
"""

from __future__ import annotations

import math

import numpy as np

# Sigma lists published with "Align Your Steps" (NVIDIA), as A1111 uses them: 10 steps, SD 1.x/2.x and SDXL.
AYS_SD = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)

# Scheduler classes whose step reads `sigmas[step_index]` and `sigmas[step_index + 1]` only, so a sigma list
# can replace theirs: (rounds its timesteps to whole numbers, spans the model's whole sigma range). Each
# does what diffusers' own Karras switch does for that class; Euler a, which has no switch, takes A1111's
# whole range.
INSTALLABLE = {"EulerDiscreteScheduler": (False, False), "EulerAncestralDiscreteScheduler": (False, True),
               "LMSDiscreteScheduler": (False, False), "DPMSolverMultistepScheduler": (True, True),
               "UniPCMultistepScheduler": (True, True)}


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
    ramp = np.linspace(0, 1, n)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (high + ramp * (low - high)) ** rho


def exponential(n: int, sigma_min: float, sigma_max: float) -> np.ndarray:
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n))


def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> np.ndarray:
    ramp = np.linspace(1, 0, n) ** rho
    return np.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))


def beta(n: int, sigma_min: float, sigma_max: float, alpha: float = 0.6, beta_: float = 0.6) -> np.ndarray:
    from scipy import stats

    quantiles = stats.beta.ppf(1 - np.linspace(0, 1, n), alpha, beta_)
    return sigma_min + quantiles * (sigma_max - sigma_min)


def kl_optimal(n: int, sigma_min: float, sigma_max: float) -> np.ndarray:
    """n + 1 values ending at sigma_min (not zero), as A1111 computes it."""
    share = np.arange(n + 1) / n
    return np.tan(share * math.atan(sigma_min) + (1 - share) * math.atan(sigma_max))


def align_your_steps(n: int, xl: bool) -> np.ndarray:
    table = np.array(AYS_SDXL if xl else AYS_SD)
    if n == len(table):
        return table
    # Log-linear interpolation of the published list to n points.
    positions = np.linspace(0, 1, len(table))
    logs = np.log(table[::-1])
    return np.exp(np.interp(np.linspace(0, 1, n), positions, logs))[::-1].copy()


def training_sigmas(alphas_cumprod) -> np.ndarray:
    """The model's sigma at each training timestep (increasing with t), in float32 as diffusers has them."""
    if hasattr(alphas_cumprod, "numpy"):
        alphas_cumprod = alphas_cumprod.detach().cpu().numpy()
    alphas = np.asarray(alphas_cumprod, dtype=np.float32)
    return np.sqrt((1 - alphas) / alphas)


def sigma_to_timestep(sigmas: np.ndarray, train_sigmas: np.ndarray) -> np.ndarray:
    """Fractional training timesteps for sigmas: linear interpolation in log sigma between the two nearest
    training timesteps (the rule of diffusers and k-diffusion)."""
    log_train = np.log(train_sigmas)
    logs = np.log(np.maximum(np.asarray(sigmas), 1e-10))
    distances = logs - log_train[:, np.newaxis]
    low = np.cumsum(distances >= 0, axis=0).argmax(axis=0).clip(max=len(log_train) - 2)
    weight = np.clip((log_train[low] - logs) / (log_train[low] - log_train[low + 1]), 0, 1)
    return (1 - weight) * low + weight * (low + 1)


def schedule(name: str, n: int, sigma_min: float, sigma_max: float, *, xl: bool = False) -> np.ndarray:
    """Sigmas for n steps: n values, plus a last one when the schedule ends above zero (KL Optimal)."""
    if name == "Karras":
        return karras(n, sigma_min, sigma_max)
    if name in ("Exponential", "Polyexponential"):  # A1111's polyexponential default (rho 1) is exponential
        return exponential(n, sigma_min, sigma_max)
    if name == "Beta":
        return beta(n, sigma_min, sigma_max)
    if name == "KL Optimal":
        return kl_optimal(n, sigma_min, sigma_max)
    if name == "Align Your Steps":
        return align_your_steps(n, xl)
    raise ValueError(f"no sigma list for schedule {name!r}")


def install(scheduler, name: str, *, xl: bool = False, full_range: bool | None = None) -> None:
    """Make `scheduler` (a private instance) use the schedule `name` each time its timesteps are set.

    The range is the model's whole training range, or the scheduler's own first and last sigma for that
    step count; by default whichever the class's own Karras switch uses (see INSTALLABLE).
    """
    import torch

    rounds, whole = INSTALLABLE[type(scheduler).__name__]
    full_range = whole if full_range is None else full_range
    original = scheduler.set_timesteps
    train = training_sigmas(scheduler.alphas_cumprod)

    def set_timesteps(num_inference_steps=None, device=None, **kwargs):
        original(num_inference_steps, device=device, **kwargs)
        own = scheduler.sigmas.detach().cpu().numpy()
        low, high = (float(train[0]), float(train[-1])) if full_range else (float(own[-2]), float(own[0]))
        sigmas = schedule(name, num_inference_steps, low, high, xl=xl)
        steps = sigma_to_timestep(sigmas[:num_inference_steps], train)
        if rounds:
            steps = steps.round()
        if len(sigmas) == num_inference_steps:  # the last step goes to 0, or where the scheduler's config says
            final = train[0] if getattr(scheduler.config, "final_sigmas_type", "zero") == "sigma_min" else 0.0
            sigmas = np.append(sigmas, final)
        scheduler.sigmas = torch.from_numpy(sigmas.astype(np.float32)).to(scheduler.sigmas.device)
        scheduler.timesteps = torch.from_numpy(steps.astype(np.float32 if not rounds else np.int64)).to(
            scheduler.timesteps.device)
        scheduler._step_index = None
        scheduler._begin_index = None

    scheduler.set_timesteps = set_timesteps
