"""Kill `img2img batch` with SIGKILL mid-run, run it again: every item done exactly once, no partial files."""

import collections
import os
import signal
import subprocess
import sys
import time

from PIL import Image

from img2img.batch.log import item_records
from img2img.images import read_infotext
from img2img.testing import make_photo

ITEMS = 8


def count_done(log) -> int:
    """Done items in complete log lines (a torn last line does not count, as on resume)."""
    return sum(r["status"] == "done" for r in item_records(log)) if log.exists() else 0


def test_sigkill_mid_batch_then_rerun_does_every_item_exactly_once(tmp_path, tiny_sd):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(ITEMS):
        make_photo(64, 64, seed=i).save(src / f"p{i}.png")
    out = tmp_path / "out"
    log = out / "results.jsonl"
    command = [sys.executable, "-m", "img2img.cli", "batch", str(src), "-o", str(out), "-p", "a harbour",
               "-m", str(tiny_sd), "--steps", "8", "--cpu-threads", "1", "-q"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    victim = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while count_done(log) < 2 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    still_running = victim.poll() is None
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert still_running, "the batch finished (or died) before it could be killed; see its output"
    assert victim.returncode == -signal.SIGKILL
    done_before = count_done(log)
    assert 2 <= done_before < ITEMS

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = rerun.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"done {ITEMS - done_before}, skipped {done_before}, failed 0;"), summary

    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.name != "results.jsonl")
    assert outputs == [f"p{i}.png" for i in range(ITEMS)]  # one output per input, no temp or partial files
    done = collections.Counter(r["key"] for r in item_records(log) if r["status"] == "done")
    assert done == {f"p{i}": 1 for i in range(ITEMS)}  # nothing redone, nothing lost
    assert not [r for r in item_records(log) if r["status"] != "done"]
    seeds = {r["key"]: r["seed"] for r in item_records(log)}
    for i in range(ITEMS):
        with Image.open(out / f"p{i}.png") as image:
            image.load()  # decodes completely: not truncated
            assert image.size == (64, 64)
        assert f"Seed: {seeds[f'p{i}']}," in read_infotext(out / f"p{i}.png")
