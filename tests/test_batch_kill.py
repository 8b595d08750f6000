"""Kill `img2img batch` with SIGKILL mid-item, run it again: every item done exactly once, no partial files.

The kill lands at a fixed point, not after a guessed delay: the batch runs in a process whose os.link (the last
step of an atomic write) stops right after it linked the third output, tells the test, and waits to be killed.
That is the worst moment: an output on disk that the log does not know about, and its temporary file left over.
"""

import collections
import os
import signal
import subprocess
import sys

from PIL import Image

from img2img.batch.log import item_records
from img2img.images import read_infotext
from img2img.testing import make_photo

ITEMS = 6
STOP_AFTER_LINK = 3

# The real command, with os.link wrapped so the process stops where the test wants to kill it.
STOPPING_CLI = """
import os, sys, threading
real_link, count = os.link, [0]

def link(*args, **kwargs):
    real_link(*args, **kwargs)
    count[0] += 1
    if count[0] == int(os.environ["STOP_AFTER_LINK"]):
        print("linked", args[1], flush=True)
        threading.Event().wait()

os.link = link
from img2img.cli import main
main(sys.argv[1:])
"""


def test_sigkill_mid_item_then_rerun_does_every_item_exactly_once(tmp_path, tiny_sd):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(ITEMS):
        make_photo(64, 64, seed=i).save(src / f"p{i}.png")
    out = tmp_path / "out"
    log = out / "results.jsonl"
    args = ["batch", str(src), "-o", str(out), "-p", "a harbour", "-m", str(tiny_sd), "--steps", "4",
            "--cpu-threads", "1", "-q"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STOP_AFTER_LINK": str(STOP_AFTER_LINK)}

    victim = subprocess.Popen([sys.executable, "-c", STOPPING_CLI, *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        said = victim.stdout.readline()  # blocks until the third output is linked
        assert said.startswith("linked "), victim.communicate()[1]
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert said.strip().endswith(str(out / "p2.png"))
    # What the kill left: two items logged, a third output on disk but not logged, its temporary file.
    assert [r["key"] for r in item_records(log) if r["status"] == "done"] == ["p0", "p1"]
    assert (out / "p2.png").is_file() and len(list(out.glob(".p2.png.*.tmp"))) == 1
    p2 = (out / "p2.png").stat().st_ino

    rerun = subprocess.run([sys.executable, "-m", "img2img.cli", *args], env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = rerun.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"done {ITEMS - 2}, skipped 2, failed 0;"), summary

    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.name != "results.jsonl")
    assert outputs == [f"p{i}.png" for i in range(ITEMS)]  # one output per input, no temp or partial files
    records = item_records(log)
    done = collections.Counter(r["key"] for r in records if r["status"] == "done")
    assert done == {f"p{i}": 1 for i in range(ITEMS)}  # nothing redone, nothing lost
    assert [r["key"] for r in records if r.get("recovered")] == ["p2"]
    assert (out / "p2.png").stat().st_ino == p2  # kept, not made again
    assert not [r for r in records if r["status"] != "done"]
    seeds = {r["key"]: r["seed"] for r in records}
    for i in range(ITEMS):
        with Image.open(out / f"p{i}.png") as image:
            image.load()  # decodes completely: not truncated
            assert image.size == (64, 64)
        assert f"Seed: {seeds[f'p{i}']}," in read_infotext(out / f"p{i}.png")
