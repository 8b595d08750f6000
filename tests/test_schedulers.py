import math

import diffusers
import numpy as np
import pytest
import torch

from img2img import InvalidRequest
from img2img.request import Request
from img2img.schedulers import (
    SAMPLERS,
    SCHEDULES,
    build_scheduler,
    find_sampler,
    find_schedule,
    parse_sampler,
    plan_sampling,
    recorded_schedule,
    resolve_schedule,
    split_sampler_name,
)
from img2img.sigmas import align_your_steps, install, kl_optimal, training_sigmas

BASE_CONFIG = diffusers.EulerDiscreteScheduler(
    beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, timestep_spacing="leading"
).config

# Every sampler name of A1111 1.10 (modules/sd_samplers_*.py), in its order.
A1111_SAMPLERS = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
                  "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
                  "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
A1111_SCHEDULES = ["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
                   "Align Your Steps", "Simple", "Normal", "DDIM", "Beta"]
# The legacy names A1111 still accepts (before v1.9 the schedule was part of the sampler name).
LEGACY = ["LMS Karras", "DPM2 Karras", "DPM2 a Karras", "DPM++ 2S a Karras", "DPM++ 2M Karras", "DPM++ SDE Karras",
          "DPM++ 2M SDE Karras", "DPM++ 2M SDE Heun Karras", "DPM++ 2M SDE Heun Exponential", "DPM++ 3M SDE Karras",
          "DPM++ 3M SDE Exponential", "DPM++ 2M SDE Exponential"]


def settings(sampler, schedule="Automatic", steps=10, **extra):
    return Request(prompt="", sampler=sampler, scheduler=schedule, steps=steps, **extra)


def test_every_a1111_name_is_known_in_order():
    assert list(SAMPLERS) == A1111_SAMPLERS
    assert list(SCHEDULES) == A1111_SCHEDULES


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_names_split(name):
    sampler, schedule = split_sampler_name(name)
    assert sampler is not None and f"{sampler} {schedule}" == name


@pytest.mark.parametrize(
    "sampler, schedule, expected",
    [
        ("DPM++ 2M", None, ("DPM++ 2M", "Automatic")),
        ("dpm++ 2m", "karras", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),
        ("DPM++ 2M Karras", "Automatic", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M Karras", "Exponential", ("DPM++ 2M", "Karras")),  # the name wins, as in A1111
        ("Euler a", None, ("Euler a", "Automatic")),
        ("k_euler_a", None, ("Euler a", "Automatic")),
        ("k_dpmpp_2m_ka", None, ("DPM++ 2M", "Karras")),
        ("LMS Karras", None, ("LMS", "Karras")),
        ("UniPC", "SGM Uniform", ("UniPC", "SGM Uniform")),
        ("Euler", "sgm_uniform", ("Euler", "SGM Uniform")),
        ("Euler", "SGMUniform", ("Euler", "SGM Uniform")),
        ("Euler a Align Your Steps", None, ("Euler a", "Align Your Steps")),
        ("PLMS", None, ("PLMS", "Automatic")),
    ],
)
def test_parse_sampler(sampler, schedule, expected):
    assert parse_sampler(sampler, schedule) == expected


def test_unknown_sampler_and_schedule():
    with pytest.raises(InvalidRequest, match=r"Sampler not found: 'DPM\+\+ 9M'"):
        parse_sampler("DPM++ 9M")
    with pytest.raises(InvalidRequest, match="Schedule type not found: 'Wobbly'"):
        parse_sampler("Euler", "Wobbly")
    assert find_sampler("Warp 9") is None and find_sampler(None) is None


@pytest.mark.parametrize(
    "sampler, schedule, cls, attributes",
    [
        ("DPM++ 2M", "Automatic", "DPMSolverMultistepScheduler",
         {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++"}),
        # A1111 1.9+: DPM++ 2M SDE's Automatic schedule is Exponential (sd_samplers_kdiffusion.py)
        ("DPM++ 2M SDE", "Automatic", "DPMSolverMultistepScheduler",
         {"use_exponential_sigmas": True, "use_karras_sigmas": False, "algorithm_type": "sde-dpmsolver++"}),
        ("DPM++ 2M SDE", "Karras", "DPMSolverMultistepScheduler",
         {"use_karras_sigmas": True, "use_exponential_sigmas": False}),
        ("DPM++ 2M SDE Heun", "Automatic", "DPMSolverMultistepScheduler", {"solver_type": "heun"}),
        ("DPM++ 3M SDE", "Karras", "DPMSolverMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True}),
        ("DPM++ SDE", "Automatic", "DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
        ("DPM++ SDE", "Karras", "DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
        ("Euler", "Automatic", "EulerDiscreteScheduler", {"use_karras_sigmas": False, "timestep_spacing": "leading"}),
        ("Euler", "Exponential", "EulerDiscreteScheduler", {"use_exponential_sigmas": True}),
        ("Euler", "Uniform", "EulerDiscreteScheduler", {"timestep_spacing": "linspace"}),
        ("Euler a", "SGM Uniform", "EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
        ("Heun", "Karras", "HeunDiscreteScheduler", {"use_karras_sigmas": True}),
        ("LMS", "Beta", "LMSDiscreteScheduler", {"use_beta_sigmas": True}),
        ("DPM2 a", "Automatic", "KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
        ("DDIM", "Automatic", "DDIMScheduler", {}),
        ("PLMS", "Automatic", "PNDMScheduler", {"skip_prk_steps": True}),
        ("UniPC", "Beta", "UniPCMultistepScheduler", {"use_beta_sigmas": True, "solver_order": 3}),
        ("LCM", "Automatic", "LCMScheduler", {}),
    ],
)
def test_build_scheduler(sampler, schedule, cls, attributes):
    scheduler = build_scheduler(BASE_CONFIG, sampler, schedule)
    assert type(scheduler).__name__ == cls
    for key, value in attributes.items():
        assert scheduler.config[key] == value
    assert scheduler.config.beta_schedule == "scaled_linear"  # the model's training schedule is kept


@pytest.mark.parametrize("sampler", A1111_SAMPLERS)
@pytest.mark.parametrize("schedule", A1111_SCHEDULES)
def test_every_pair_builds_and_steps(sampler, schedule):
    setup = plan_sampling(BASE_CONFIG, settings(sampler, schedule, steps=6))
    setup.scheduler.set_timesteps(6)
    assert len(setup.scheduler.timesteps) >= 6
    exact = not SAMPLERS[sampler].substitute
    assert exact == (not any(sampler + ":" in n for n in setup.notices))


def test_substitutions_and_ignored_schedules_are_said():
    notices = plan_sampling(BASE_CONFIG, settings("DPM fast")).notices
    assert any("DPM-Solver single-step" in n for n in notices)
    notices = plan_sampling(BASE_CONFIG, settings("DDIM", "Karras")).notices
    assert notices == ["Schedule type Karras does not apply to DDIM (A1111 ignores it there too)"]
    notices = plan_sampling(BASE_CONFIG, settings("DPM++ SDE", "KL Optimal")).notices
    assert notices == ["Schedule type KL Optimal is not available with DPM++ SDE; used Karras"]
    assert plan_sampling(BASE_CONFIG, settings("Euler a", "Karras")).notices == []  # installed sigma list


@pytest.mark.parametrize("cls", ["EulerDiscreteScheduler", "LMSDiscreteScheduler", "DPMSolverMultistepScheduler",
                                 "UniPCMultistepScheduler"])
@pytest.mark.parametrize("schedule", ["Karras", "Exponential"])
def test_installed_sigma_lists_equal_diffusers_own_switch(cls, schedule):
    # Installing our list into a scheduler gives exactly what diffusers' own switch gives: the installer is
    # faithful, so schedules diffusers has no switch for (and Euler a's) go through a tested path.
    scheduler_cls = getattr(diffusers, cls)
    switch = {"Karras": "use_karras_sigmas", "Exponential": "use_exponential_sigmas"}[schedule]
    native = scheduler_cls.from_config(BASE_CONFIG, **{switch: True})
    ours = scheduler_cls.from_config(BASE_CONFIG)
    install(ours, schedule)
    for steps in (5, 12):
        native.set_timesteps(steps)
        ours.set_timesteps(steps)
        assert torch.allclose(native.sigmas, ours.sigmas, rtol=1e-5, atol=1e-6)
        # Fractional timesteps agree to float32 rounding; where diffusers truncates whole-number timesteps
        # (its exponential switch) and we round, they are at most one apart.
        difference = (native.timesteps.float() - ours.timesteps.float()).abs().max()
        assert difference < 1e-3 if schedule == "Karras" else difference <= 1


def test_euler_a_takes_a_karras_list():
    setup = plan_sampling(BASE_CONFIG, settings("Euler a", "Karras", steps=8))
    setup.scheduler.set_timesteps(8)
    sigmas = setup.scheduler.sigmas.numpy()
    train = training_sigmas(setup.scheduler.alphas_cumprod)
    assert sigmas[0] == pytest.approx(train[-1], rel=1e-5) and sigmas[-2] == pytest.approx(train[0], rel=1e-5)
    assert sigmas[-1] == 0 and len(sigmas) == 9  # A1111's range with Karras spacing, then zero
    assert np.all(np.diff(sigmas) < 0)


def test_a1111_sigma_formulas():
    assert list(align_your_steps(11, xl=False)) == pytest.approx([14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963,
                                                                  0.652, 0.399, 0.152, 0.029])
    ten = align_your_steps(10, xl=True)
    assert len(ten) == 10 and ten[0] == pytest.approx(14.615) and ten[-1] == pytest.approx(0.029)
    assert np.all(np.diff(ten) < 0)
    kl = kl_optimal(4, 0.03, 14.6)
    assert len(kl) == 5 and kl[0] == pytest.approx(14.6) and kl[-1] == pytest.approx(0.03)
    train = training_sigmas(diffusers.EulerDiscreteScheduler.from_config(BASE_CONFIG).alphas_cumprod)
    setup = plan_sampling(BASE_CONFIG, settings("Euler", "KL Optimal", steps=4))
    setup.scheduler.set_timesteps(4)
    assert setup.scheduler.sigmas[0].item() == pytest.approx(train[-1], rel=1e-5)  # A1111: the model's whole range
    assert setup.scheduler.sigmas[-1].item() == pytest.approx(train[0], rel=1e-5)  # ends at sigma_min, not 0


def test_eta_and_churn_settings():
    ddim = plan_sampling(BASE_CONFIG, settings("DDIM", eta=0.5))
    assert ddim.call_kwargs == {"eta": 0.5} and ddim.params == {"Eta DDIM": 0.5} and not ddim.notices
    euler_a = plan_sampling(BASE_CONFIG, settings("Euler a", eta=0))  # eta 0 makes it exactly Euler
    assert type(euler_a.scheduler).__name__ == "EulerDiscreteScheduler" and euler_a.params == {"Eta": 0}
    assert not euler_a.notices
    half = plan_sampling(BASE_CONFIG, settings("Euler a", eta=0.5))
    assert half.notices == ["eta 0.5 is not available with Euler a; ran eta 1"]
    churn = plan_sampling(BASE_CONFIG, settings("Euler", s_churn=0.5, s_tmax=10.0, s_noise=1.003))
    assert churn.scheduler.step.keywords == {"s_churn": 0.5, "s_tmax": 10.0, "s_noise": 1.003}
    assert churn.params == {"Sigma churn": 0.5, "Sigma tmax": 10.0, "Sigma noise": 1.003}
    heun = plan_sampling(BASE_CONFIG, settings("Heun", s_churn=0.5))
    assert heun.notices == ["s_churn 0.5 is not available with Heun; ran 0"]
    lms = plan_sampling(BASE_CONFIG, settings("LMS", s_noise=0.9))
    assert lms.notices == ["s_noise has no effect with LMS (as in A1111)"]
    sde = plan_sampling(BASE_CONFIG, settings("DPM++ SDE", s_noise=0.9))
    assert sde.scheduler.step.keywords == {"s_noise": 0.9} and not sde.notices


def test_churn_changes_the_euler_step():
    sample, output = torch.ones(1, 4, 8, 8), torch.zeros(1, 4, 8, 8)
    results = []
    for extra in ({}, {"s_churn": 1.0}):
        scheduler = plan_sampling(BASE_CONFIG, settings("Euler", **extra)).scheduler
        scheduler.set_timesteps(10)
        generator = torch.Generator().manual_seed(0)
        results.append(scheduler.step(output, scheduler.timesteps[0], sample, generator=generator).prev_sample)
    assert not torch.equal(*results)


def test_resolve_automatic():
    assert resolve_schedule("DPM++ 2M", "Automatic") == "Karras"
    assert resolve_schedule("DPM++ SDE", "Automatic") == "Karras"
    assert resolve_schedule("DPM++ 2M SDE", "Automatic") == "Exponential"  # A1111 1.9+
    assert resolve_schedule("Euler a", "Automatic") == "Uniform"
    assert resolve_schedule("Euler a", "SGM Uniform") == "SGM Uniform"
    # Euler a's Automatic keeps the model's own spacing, which only "Automatic" reproduces from an infotext
    assert recorded_schedule("Euler a", "Automatic") == "Automatic"
    assert recorded_schedule("DPM++ 2M", "Automatic") == "Karras"


def test_one_uniform_step_starts_at_the_top():
    scheduler = build_scheduler(BASE_CONFIG, "Euler", "Uniform", steps=1)
    scheduler.set_timesteps(1)
    assert scheduler.timesteps[0].item() > 900 and math.isclose(scheduler.sigmas[-1].item(), 0.0)


def test_name_lookups_fold_case_spaces_and_underscores():
    assert find_sampler("dpm++_2m") == find_sampler("  DPM++   2M ") == "DPM++ 2M"
    assert find_sampler("K_EULER_A") == "Euler a" and find_sampler("") is None and find_sampler(5) is None
    assert find_schedule("polyexponential") == "Polyexponential" and find_schedule("SGMUNIFORM") == "SGM Uniform"
    assert find_schedule("align_your_steps") == "Align Your Steps"
    assert find_schedule("") is None and find_schedule(5) is None and find_schedule("Karras2") is None
    assert split_sampler_name("k_dpmpp_2m_exp") == ("DPM++ 2M", "Exponential")
    assert split_sampler_name("k_dpmpp_2m_KA") == ("DPM++ 2M", "Karras")
    assert split_sampler_name("  DPM++ 2M  karras ") == ("DPM++ 2M", "Karras")
    assert split_sampler_name("Euler Karras Foo") == (None, None) and split_sampler_name("Warp_ka") == (None, None)
    assert split_sampler_name("Euler sgm_uniform") == ("Euler", "SGM Uniform")


def test_unknown_names_list_the_known_ones():
    with pytest.raises(InvalidRequest, match=r"^Sampler not found: 5; expected one of DPM\+\+ 2M, DPM\+\+ SDE, ") \
            as info:
        parse_sampler(5)
    assert info.value.field == "sampler" and str(info.value).endswith("UniPC, LCM")
    with pytest.raises(InvalidRequest, match=r"^Schedule type not found: 'x'; expected one of Automatic, Uniform, ") \
            as info:
        parse_sampler("Euler", "x")
    assert info.value.field == "scheduler" and str(info.value).endswith("DDIM, Beta")
    assert parse_sampler("Euler", "") == ("Euler", "Automatic")


def test_sampler_settings_notices_and_params():
    """Which settings run, which are said to have no effect, and which infotext keys are written."""
    cases = {
        ("LMS", (("eta", 0.5),)): ([], ["eta has no effect with LMS (as in A1111)"], {}),
        ("LMS", (("eta", 1.0),)): ([], [], {}),  # 0 and 1 are what clients send by default
        ("LMS", (("eta", 0.0),)): ([], [], {}),
        ("DDIM", (("eta", 0.0),)): ([], [], {}),  # DDIM's default eta is 0: nothing to record
        ("Euler a", (("eta", 1.0),)): ([], [], {}),
        ("Euler", (("s_tmin", 0.5),)): ([], [], {"Sigma tmin": 0.5}),
        ("Euler", (("s_tmax", math.inf), ("s_noise", 1.0))): ([], [], {}),  # the defaults
        ("DPM adaptive", (("eta", 0.3),)): (
            [], ["DPM adaptive: diffusers has no exact equivalent; ran DPM-Solver single-step, order 3, with the "
                 "requested steps (no adaptive step size)", "eta 0.3 is not available with DPM adaptive; ran eta 1"],
            {"Eta": 0.3}),
        ("LMS", (("s_churn", 0.2), ("s_tmin", 0.1))): (
            [], ["s_churn has no effect with LMS (as in A1111)", "s_tmin has no effect with LMS (as in A1111)"], {}),
    }
    for (sampler, extra), (call, notices, params) in cases.items():
        setup = plan_sampling(BASE_CONFIG, settings(sampler, **dict(extra)))
        assert (list(setup.call_kwargs), setup.notices, setup.params) == (call, notices, params), (sampler, extra)
    assert not hasattr(plan_sampling(BASE_CONFIG, settings("Euler")).scheduler.step, "keywords")  # nothing bound


def test_eta_zero_runs_the_deterministic_twin():
    setup = plan_sampling(BASE_CONFIG, settings("DPM++ 2M SDE", eta=0))
    assert setup.scheduler.config.algorithm_type == "dpmsolver++" and setup.params == {"Eta": 0}
    assert setup.notices == []
    dpm2 = plan_sampling(BASE_CONFIG, settings("DPM2 a", eta=0))
    assert type(dpm2.scheduler).__name__ == "KDPM2DiscreteScheduler"
    assert dpm2.notices == ["DPM2 a: diffusers has no exact equivalent; ran DPM2 keeping the next-to-last sigma, "
                            "which A1111 drops"]  # named as asked, the twin's substitute said
    assert type(plan_sampling(BASE_CONFIG, settings("DDIM", eta=0)).scheduler).__name__ == "DDIMScheduler"


def test_brownian_noise_is_seeded_per_image():
    setup = plan_sampling(BASE_CONFIG, settings("DPM++ SDE", "Karras"), seeds=[5, 6])
    assert setup.scheduler.noise_sampler_seed == [5, 6]
    assert plan_sampling(BASE_CONFIG, settings("DPM++ SDE", "Karras")).scheduler.noise_sampler_seed is None
    assert not hasattr(plan_sampling(BASE_CONFIG, settings("Euler"), seeds=[5]).scheduler, "noise_sampler_seed")


def test_schedules_without_a_switch_or_a_list():
    lcm = plan_sampling(BASE_CONFIG, settings("LCM", "Karras"))
    assert lcm.notices == ["Schedule type Karras is not available with LCM; used the model's own schedule"]
    restart = plan_sampling(BASE_CONFIG, settings("Restart", "Align Your Steps"))
    assert restart.notices[-1] == "Schedule type Align Your Steps is not available with Restart; used Karras"
    assert restart.scheduler.config.use_karras_sigmas is True
    assert plan_sampling(BASE_CONFIG, settings("UniPC", "KL Optimal")).notices == []  # installed list


def test_scheduler_kwargs_and_descriptions():
    from img2img.schedulers import describe, scheduler_kwargs

    assert scheduler_kwargs("Euler", "Karras", diffusers.EulerDiscreteScheduler) == {
        "use_karras_sigmas": True, "use_exponential_sigmas": False, "use_beta_sigmas": False}
    assert scheduler_kwargs("DDIM", "Karras", diffusers.DDIMScheduler) == {}
    assert scheduler_kwargs("PLMS", "Automatic", diffusers.PNDMScheduler) == {"skip_prk_steps": True}
    assert describe("DPM++ 2M") == ("DPMSolverMultistepScheduler(use_karras_sigmas=True, algorithm_type='dpmsolver++', "
                                    "solver_order=2)")
    assert describe("Euler a", "Karras") == "EulerAncestralDiscreteScheduler() with Karras sigmas"
    assert describe("DDIM CFG++") == "DDIMScheduler()  [closest: DDIM with plain CFG (no CFG++)]"
    assert describe("Euler") == "EulerDiscreteScheduler()"


def test_steps_reach_the_one_step_rule():
    two = build_scheduler(BASE_CONFIG, "Euler", "Uniform", steps=2)
    assert two.config.timestep_spacing == "linspace"
    assert build_scheduler(BASE_CONFIG, "Euler", "Uniform", steps=1).config.timestep_spacing == "trailing"
    one = plan_sampling(BASE_CONFIG, settings("Euler", "Normal", steps=1)).scheduler
    assert one.config.timestep_spacing == "trailing"
    assert plan_sampling(BASE_CONFIG, settings("Euler", "Uniform", steps=None)).scheduler.config.timestep_spacing \
        == "trailing"  # no steps given: planned as one


def test_sdxl_align_your_steps_list_is_used_only_for_sdxl():
    sd = build_scheduler(BASE_CONFIG, "Euler", "Align Your Steps", steps=6)
    xl = build_scheduler(BASE_CONFIG, "Euler", "Align Your Steps", steps=6, xl=True)
    planned = plan_sampling(BASE_CONFIG, settings("Euler", "Align Your Steps", steps=6)).scheduler
    for scheduler in (sd, xl, planned):
        scheduler.set_timesteps(6)
    assert sd.sigmas[:3].tolist() == pytest.approx([14.615, 3.861, 1.886], rel=1e-6)  # SD 1.5's list
    assert xl.sigmas[:3].tolist() == pytest.approx([14.615, 3.771, 1.342], rel=1e-6)  # SDXL's
    assert torch.equal(planned.sigmas, sd.sigmas)  # plan_sampling's default is not SDXL


def test_build_scheduler_passes_the_seeds_on():
    assert build_scheduler(BASE_CONFIG, "DPM++ SDE", "Karras", [3, 4]).noise_sampler_seed == [3, 4]


def test_a_sigma_list_without_an_installer_or_a_usable_fallback():
    assert plan_sampling(BASE_CONFIG, settings("LCM", "KL Optimal")).notices == [
        "Schedule type KL Optimal is not available with LCM; used the model's own schedule"]
    from img2img.schedulers import describe

    assert describe("DDIM", "Karras") == "DDIMScheduler()"  # the notice it says is not part of the description
