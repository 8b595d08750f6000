"""Micro-batching: several jobs as one batched pipeline call (Engine.run_together, serve --max-batch).

Tolerance: batched float32 convolutions and matmuls may round differently from a batch of one, so a job run
together may differ from the same job alone by at most 2 levels (of 255) per pixel; seeds, prompts, sizes and
metadata are exactly the job's own.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import hold_worker

from img2img import InvalidRequest
from img2img.request import Request
from img2img.testing import make_photo

TOLERANCE = 2  # per pixel, of 255


def png(width: int, height: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    make_photo(width, height, seed=seed).save(buffer, "PNG")
    return buffer.getvalue()


def diff(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def test_jobs_run_together_equal_each_job_alone(engine):
    # CFG on (negatives must pair with their own positives), different prompts, images and seeds, a batch of two
    # in the middle, a prompt schedule that switches at half time, a non-square size
    common = {"steps": 4, "strength": 0.75, "cfg_scale": 5.0, "sampler": "Euler a"}
    jobs = [(Request("a red barn", negative_prompt="fog", seed=7, **common), png(96, 64, 1)),
            (Request("[a cat:a dog:0.5] on grass", seed=100, batch_size=2, **common), png(96, 64, 2)),
            (Request("a blue lake", negative_prompt="people, boats", seed=3, **common), png(96, 64, 3))]
    together = engine.run_together(jobs)
    for (request, image), result in zip(jobs, together):
        alone = engine.run(request, image)
        assert result.seeds == alone.seeds and result.infotexts == alone.infotexts
        assert [im.size for im in result.images] == [alone.images[0].size] * request.batch_size
        for mine, reference in zip(result.images, alone.images):
            assert diff(mine, reference) <= TOLERANCE
    # and the jobs really differ from each other (a swapped prompt or image would show)
    assert diff(together[0].images[0], together[2].images[0]) > 20
    assert diff(together[1].images[0], together[1].images[1]) > 0  # seeds 100 and 101


def test_variation_seeds_and_per_job_settings_together_equal_each_job_alone(engine):
    # shared: variation strength (each job its own subseed); per job: keep_size, colour correction, background
    common = {"steps": 3, "strength": 0.6, "subseed_strength": 0.4}
    jobs = [(Request("a mill", seed=21, subseed=5, keep_size=True, **common), png(96, 64, 4)),
            (Request("a bridge", seed=22, subseed=9, color_correction=True, **common), png(96, 64, 5))]
    together = engine.run_together(jobs)
    for (request, image), result in zip(jobs, together):
        alone = engine.run(request, image)
        assert result.seeds == alone.seeds and result.subseeds == alone.subseeds
        assert result.infotexts == alone.infotexts and result.images[0].size == alone.images[0].size
        assert diff(result.images[0], alone.images[0]) <= TOLERANCE
    assert together[0].images[0].size == (96, 64)  # keep_size: back on the input's pixels
    assert together[1].images[0].size == (80, 56)  # the generation size (aspect 3:2 at the native area)


def test_text_to_image_jobs_and_long_prompts_together(engine):
    long_prompt = "a very detailed painting of " + ", ".join(f"tree number {i}" for i in range(40))  # > 75 tokens
    jobs = [(Request("a castle", seed=5, steps=3, cfg_scale=3.0, width=64, height=96), None),
            (Request(long_prompt, seed=6, steps=3, cfg_scale=3.0, width=64, height=96), None)]
    together = engine.run_together(jobs)  # different token lengths: run one after the other, same results
    for (request, _), result in zip(jobs, together):
        alone = engine.run(request, None)
        assert result.images[0].size == alone.images[0].size and diff(result.images[0], alone.images[0]) <= TOLERANCE


def test_jobs_that_differ_in_a_shared_setting_are_refused_together(engine):
    base = Request("a", seed=1, steps=3)
    image = png(96, 64, 1)
    key = engine.together_key(engine.prepare(base), image)
    assert engine.together_key(engine.prepare(base.replace(prompt="b", seed=9, batch_size=3)), png(96, 64, 2)) == key
    for different in (base.replace(steps=4), base.replace(strength=0.5), base.replace(cfg_scale=3.0),
                      base.replace(sampler="DDIM"), base.replace(width=128), base.replace(clip_skip=2),
                      base.replace(tiling=True)):
        assert engine.together_key(engine.prepare(different), image) != key, different
    with_lora = engine.prepare(base).replace(prompt="a <lora:kohya:0.5>")  # LoRAs apply to the whole call
    assert engine.together_key(with_lora, image) != key
    assert engine.together_key(with_lora, image) != engine.together_key(with_lora.replace(prompt="<lora:kohya:1>"),
                                                                        image)
    assert engine.together_key(engine.prepare(base), png(64, 96, 1)) != key  # another input size
    assert engine.together_key(engine.prepare(base), None) != key  # text-to-image
    with pytest.raises(InvalidRequest, match="must agree"):
        engine.run_together([(base, image), (base.replace(steps=4), image)])
    assert engine.run_together([]) == []  # no jobs, no results (and no model loaded for them)
    # what a shared call cannot do for one job alone: each such job runs on its own
    for alone in (base.replace(mask_from_alpha=True), base.replace(outpaint=(8, 0, 0, 0)),
                  base.replace(resize_mode="latent")):
        assert engine.together_key(engine.prepare(alone), image) is None, alone
        with pytest.raises(InvalidRequest, match="must agree"):
            engine.run_together([(alone, image), (alone.replace(seed=2), image)])
    assert engine.together_key(engine.prepare(base), [image, image]) is None  # several inputs


def test_an_inpainting_model_runs_jobs_given_together_one_after_another(tiny_sd_inpainting):
    from img2img.engine import Engine

    inpainting = Engine(str(tiny_sd_inpainting), device="cpu")
    jobs = [(Request("a wall", seed=4, steps=3), png(64, 64, 1)), (Request("a door", seed=5, steps=3), png(64, 64, 2))]
    together = inpainting.run_together(jobs)  # its extra inputs are prepared per job: no shared call
    for (request, image), result in zip(jobs, together):
        alone = inpainting.run(request, image)
        assert result.seeds == alone.seeds and result.infotexts == alone.infotexts
        assert diff(result.images[0], alone.images[0]) == 0


# ---------------------------------------------------------------- the server: serve --max-batch

@pytest.fixture(scope="module")
def batching_server(tiny_sd, tmp_path_factory):
    from img2img.server.config import ServerConfig
    from img2img.server.runner import ServerThread

    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, max_batch=4, batch_wait_ms=0,
                          history_dir=str(tmp_path_factory.mktemp("batching-server-data")))
    with ServerThread(config) as running:
        yield running


def test_server_runs_queued_jobs_together_and_each_answer_equals_the_job_alone(batching_server, engine):
    import base64
    import threading

    import httpx
    from helpers import wait_for
    from PIL import Image

    service = batching_server.service
    common = {"steps": 4, "cfg_scale": 5.0, "denoising_strength": 0.6, "sampler_name": "Euler a", "width": 64,
              "height": 64}
    payloads = [{"prompt": "a lighthouse", "negative_prompt": "fog", "seed": 42, **common},
                {"prompt": "a harbour", "seed": 9, "batch_size": 2, **common},
                {"prompt": "a lighthouse", "seed": 42, **common, "steps": 5}]  # another step count: runs alone
    for index, payload in enumerate(payloads):
        payload["init_images"] = [base64.b64encode(png(64, 64, index + 1)).decode()]
    before = service.health()["queue"]
    release = hold_worker(service, timeout=60)
    answers = [None] * len(payloads)

    def post(index):
        answers[index] = httpx.post(batching_server.url + "/sdapi/v1/img2img", json=payloads[index], timeout=120)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    wait_for(lambda: service.queue.waiting == len(payloads))
    release.set()
    for thread in threads:
        thread.join(120)
    after = service.health()["queue"]
    assert after["batched_calls"] - before["batched_calls"] == 1  # the first two, not the third
    assert after["batched_jobs"] - before["batched_jobs"] == 2
    for index, (payload, answer) in enumerate(zip(payloads, answers)):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        expected = engine.transform(png(64, 64, index + 1), payload["prompt"],
                                    negative_prompt=payload.get("negative_prompt", ""), seed=payload["seed"],
                                    steps=payload["steps"], cfg_scale=5.0, strength=0.6, sampler="Euler a",
                                    width=64, height=64, resize_mode="stretch",
                                    batch_size=payload.get("batch_size", 1))
        import json

        assert json.loads(body["info"])["infotexts"] == expected.infotexts
        for got, reference in zip(body["images"], expected.images):
            image = Image.open(io.BytesIO(base64.b64decode(got))).convert("RGB")
            assert diff(image, reference) <= TOLERANCE


def test_interrupting_one_job_of_a_batch_keeps_the_others(batching_server, engine):
    service = batching_server.service
    slot = service.current
    jobs, image = [], png(64, 64, 1)
    release = hold_worker(service, timeout=60)
    for seed in (1, 2, 3):
        request, _ = service.prepare(slot, Request("a hill", seed=seed, steps=3, width=64, height=64))
        jobs.append(service.queue.submit(lambda job, r=request: service.generate(job, slot, r, image),
                                         together=service.together(slot, request, image)))
    jobs[1].interrupt()  # before the call starts: the call still runs for the other two
    release.set()
    first, second, third = (job.future.result(timeout=120) for job in jobs)
    assert len(first.images) == 1 and first.seeds == [1] and not first.interrupted
    assert second.interrupted and not second.images and "interrupted: 0 of 1" in second.notices[0]
    assert len(third.images) == 1 and third.seeds == [3] and not third.interrupted
    alone = engine.transform(image, "a hill", seed=1, steps=3, width=64, height=64)
    assert diff(first.images[0], alone.images[0]) <= TOLERANCE


def test_max_batch_flags_are_validated_and_reach_the_server(capsys):
    from typer.testing import CliRunner

    from img2img.cli import app, main
    from img2img.server.config import ServerConfig

    with pytest.raises(InvalidRequest, match="--max-batch must be between 1 and 64"):
        ServerConfig(max_batch=0).validate()
    with pytest.raises(InvalidRequest, match="--batch-wait must be between 0 and 60000"):
        ServerConfig(batch_wait_ms=-1).validate()
    with pytest.raises(InvalidRequest, match="with --engine ray leave it at 1"):
        ServerConfig(engine="ray", max_batch=4).validate()
    help_text = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output
    assert "--max-batch" in help_text and "--batch-wait" in help_text
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--max-batch", "0", "--no-ui", "--lazy"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--max-batch must be between 1 and 64" in err and len(err.splitlines()) == 1
