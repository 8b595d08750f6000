"""The Ray engine on a local Ray with 2 CPU workers against the local engine: same bytes, same log."""

import pytest
import torch

from img2img.batch.log import item_records, read_log
from img2img.cli import main
from img2img.testing import make_photo

pytest.importorskip("ray.data")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray's own deprecations

VOLATILE = ("time", "seconds")  # wall-clock fields; everything else must match


def batch(*args) -> int:
    with pytest.raises(SystemExit) as stopped:
        main(["batch", *map(str, args)])
    return stopped.value.code


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_sd):
    """One local run and one Ray run (2 workers) over the same inputs, run once for the module."""
    root = tmp_path_factory.mktemp("ray-parity")
    src = root / "src"
    (src / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.png", "c.jpg", "sub/d.png", "e.png"]):
        make_photo(64 + 8 * (i % 2), 64, seed=i).save(src / name)
    (src / "broken.png").write_bytes(b"not an image at all")
    threads = torch.get_num_threads()
    args = ["-r", "-p", "a lighthouse", "-m", tiny_sd, "--steps", "6", "--seed", 11, "--cpu-threads", 1, "-q"]
    try:
        codes = {"local": batch(src, "-o", root / "local", *args),
                 "ray": batch(src, "-o", root / "ray", "--engine", "ray", "--workers", 2, "--batch-size", 2, *args)}
    finally:
        torch.set_num_threads(threads)
    return root, codes, args, src


def comparable(path):
    records = [{k: v for k, v in r.items() if k not in VOLATILE} for r in item_records(path)]
    return sorted(records, key=lambda r: r["key"])


def test_ray_run_reports_the_bad_file_and_exits_non_zero(runs):
    _, codes, _, _ = runs
    assert codes == {"local": 1, "ray": 1}


def test_ray_outputs_are_byte_identical_to_the_local_engine(runs):
    root, _, _, _ = runs
    local = sorted(p.relative_to(root / "local") for p in (root / "local").rglob("*.png"))
    ray = sorted(p.relative_to(root / "ray") for p in (root / "ray").rglob("*.png"))
    assert [p.as_posix() for p in local] == ["a.png", "b.png", "c.png", "e.png", "sub/d.png"]
    assert ray == local
    for name in local:
        assert (root / "ray" / name).read_bytes() == (root / "local" / name).read_bytes(), name


def test_ray_log_matches_the_local_log(runs):
    root, _, _, _ = runs
    local, ray = comparable(root / "local" / "results.jsonl"), comparable(root / "ray" / "results.jsonl")
    assert len(local) == 6 and [r["status"] for r in local].count("failed") == 1
    assert ray == local
    assert read_log(root / "ray" / "results.jsonl").base_seed == 11


def test_ray_rerun_resumes_without_starting_work(runs, capsys):
    root, _, args, src = runs
    assert batch(src, "-o", root / "ray", "--engine", "ray", "--workers", 2, *args) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("done 0, skipped 5, failed 1 (1 in an")
    assert len(item_records(root / "ray" / "results.jsonl")) == 6
