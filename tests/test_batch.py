"""`img2img batch` with the local engine, end to end on the tiny model: counts, log, exit codes, resume."""

import json
import os
import sys

import pytest
import torch
from PIL import Image

from img2img.batch.job import derive_seed
from img2img.batch.log import item_records, read_log
from img2img.cli import main
from img2img.images import read_infotext
from img2img.infotext import parse_infotext
from img2img.testing import make_photo


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()  # --cpu-threads changes this process's torch setting
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def common(tiny_sd):
    return ["-m", str(tiny_sd), "--steps", "4", "--cpu-threads", "1", "-q"]


def batch(*args) -> int:
    with pytest.raises(SystemExit) as stopped:
        main(["batch", *map(str, args)])
    return stopped.value.code


def summary(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.fixture
def mixed(tmp_path):
    """Four good images (one in a subfolder), a corrupt one, an empty one and one over the size limit."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.jpg", "sub/c.png", "d.webp"]):
        make_photo(64, 64, seed=i).save(src / name)
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    (src / "empty.jpg").write_bytes(b"")
    make_photo(200, 200, seed=9).save(src / "huge.png")
    return src


def test_folder_with_good_and_bad_images(mixed, tmp_path, common, capsys):
    out = tmp_path / "out"
    code = batch(mixed, "-o", out, "-r", "-p", "a castle", "--seed", 123, "--max-pixels", 100 * 100, *common)
    assert code == 1
    assert summary(capsys) == f"done 4, skipped 0, failed 3; log: {out / 'results.jsonl'}"
    records = {r["key"]: r for r in item_records(out / "results.jsonl")}
    assert sorted(records) == ["a", "b", "corrupt", "d", "empty", "huge", "sub/c"]
    assert {k for k, r in records.items() if r["status"] == "done"} == {"a", "b", "d", "sub/c"}
    assert "not an image" in records["corrupt"]["error"] or "corrupt" in records["corrupt"]["error"]
    assert "empty" in records["empty"]["error"]
    assert "over the limit" in records["huge"]["error"]
    for key in ("a", "b", "d", "sub/c"):
        record = records[key]
        assert record["error"] is None and record["output"] == f"{key}.png"
        assert record["seed"] == derive_seed(123, key)
        assert record["parameters"]["prompt"] == "a castle" and record["parameters"]["steps"] == 4
        path = out / record["output"]
        assert Image.open(path).size == (64, 64)
        prompt, _, params = parse_infotext(read_infotext(path))
        assert prompt == "a castle" and params["Seed"] == str(record["seed"])
    assert not (out / "corrupt.png").exists()
    assert read_log(out / "results.jsonl").base_seed == 123


def test_rerun_skips_done_items_and_retries_failed_only_when_asked(mixed, tmp_path, common, capsys):
    out = tmp_path / "out"
    args = [mixed, "-o", out, "-r", "-p", "a castle", "--seed", 5, "--max-pixels", 100 * 100, *common]
    assert batch(*args) == 1
    capsys.readouterr()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    lines = len(item_records(out / "results.jsonl"))

    assert batch(*args) == 1  # earlier failures still count
    assert summary(capsys).startswith("done 0, skipped 4, failed 3 (3 in an earlier run;")
    assert len(item_records(out / "results.jsonl")) == lines  # nothing redone, nothing logged again
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps

    make_photo(64, 64, seed=20).save(mixed / "corrupt.png")  # the user fixes one bad file
    assert batch(*args, "--retry-failed") == 1
    assert summary(capsys).startswith("done 1, skipped 4, failed 2;")
    assert read_log(out / "results.jsonl").latest["corrupt"]["status"] == "done"

    os.unlink(mixed / "empty.jpg")
    os.unlink(mixed / "huge.png")
    assert batch(*args) == 0
    assert summary(capsys).startswith("done 0, skipped 5, failed 0;")


def test_manifest_rows_override_options(tmp_path, common, capsys):
    make_photo(64, 64, seed=1).save(tmp_path / "one.png")
    make_photo(80, 64, seed=2).save(tmp_path / "two.png")
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("image,prompt,negative_prompt,strength,seed,output\n"
                        "one.png,a red barn,fog,0.5,77,barns/red.png\n"
                        "two.png,,,,,\n"
                        "missing.png,a ghost,,,,\n")
    out = tmp_path / "out"
    assert batch(manifest, "-o", out, "-p", "default prompt", "--seed", 1, "--images-per-input", 2, *common) == 1
    assert summary(capsys).startswith("done 2, skipped 0, failed 1;")
    records = {r["key"]: r for r in item_records(out / "results.jsonl")}
    red = records["barns/red"]
    assert red["outputs"] == ["barns/red-1.png", "barns/red-2.png"] and red["seed"] == 77
    assert (red["parameters"]["prompt"], red["parameters"]["negative_prompt"], red["parameters"]["strength"]) == (
        "a red barn", "fog", 0.5)
    assert [parse_infotext(read_infotext(out / name))[2]["Seed"] for name in red["outputs"]] == ["77", "78"]
    two = records["two"]
    assert two["parameters"]["prompt"] == "default prompt" and two["seed"] == derive_seed(1, "two")
    assert Image.open(out / "two-1.png").size == (72, 56)  # 80x64 fitted to the tiny model's 64x64 area
    assert "no such file" in records["missing"]["error"]


def test_bad_options_and_rows_fail_before_any_work(tmp_path, mixed, common, capsys):
    out = tmp_path / "out"
    assert batch(mixed, "-o", out, "-p", "x", "--strength", 2, *common) == 2
    assert "strength must be in (0, 1], got 2" in capsys.readouterr().err
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "prompt": "x"}) + "\n"
                        + json.dumps({"image": "b.png", "prompt": "y", "strength": 0}) + "\n")
    assert batch(manifest, "-o", out, *common) == 2
    assert "row 2 (" in capsys.readouterr().err
    assert batch(mixed, "-o", out, *common) == 2  # no prompt anywhere
    assert "no prompt" in capsys.readouterr().err
    assert batch(mixed, "-o", out, "-p", "x", "--workers", 2, *common) == 2
    assert "--workers applies to --engine ray only" in capsys.readouterr().err
    assert not out.exists()


def test_existing_files_are_not_overwritten_without_the_flag(tmp_path, common, capsys):
    src = tmp_path / "src"
    src.mkdir()
    make_photo(64, 64).save(src / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"somebody else's file")
    assert batch(src, "-o", out, "-p", "x", "--seed", 1, *common) == 1
    assert "already exists (pass --overwrite" in read_log(out / "results.jsonl").latest["a"]["error"]
    assert (out / "a.png").read_bytes() == b"somebody else's file"
    capsys.readouterr()
    assert batch(src, "-o", out, "-p", "x", "--seed", 1, "--retry-failed", "--overwrite", *common) == 0
    assert read_infotext(out / "a.png")


def test_output_of_a_run_killed_before_logging_is_kept_and_logged_once(tmp_path, common, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        make_photo(64, 64, seed=i).save(src / f"p{i}.png")
    out = tmp_path / "out"
    args = [src, "-o", out, "-p", "x", *common]  # no --seed: a random base, kept in the log
    assert batch(*args) == 0
    log = out / "results.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    assert json.loads(lines[-1])["key"] == "p1"
    # What SIGKILL can leave: p1 written but not logged, a torn log line, a temp file of a later item.
    log.write_text("".join(lines[:-1]) + '{"key": "p1", "sta')
    (out / ".p2.png.k1l2m3n4.tmp").write_bytes(b"partial")
    inode = (out / "p1.png").stat().st_ino
    capsys.readouterr()
    assert batch(*args) == 0
    assert summary(capsys).startswith("done 1, skipped 1, failed 0;")
    records = item_records(log)
    assert [r["key"] for r in records] == ["p0", "p1"]
    assert records[1]["recovered"] is True and records[1]["status"] == "done"
    assert (out / "p1.png").stat().st_ino == inode
    assert not list(out.glob(".*.tmp"))
    assert all(json.loads(line) for line in log.read_text().splitlines())


def test_random_base_seed_is_reused_so_a_redone_item_gives_the_same_bytes(tmp_path, common, capsys):
    src = tmp_path / "src"
    src.mkdir()
    make_photo(64, 64).save(src / "a.png")
    out = tmp_path / "out"
    assert batch(src, "-o", out, "-p", "x", *common) == 0
    first = (out / "a.png").read_bytes()
    base = read_log(out / "results.jsonl").base_seed
    assert read_log(out / "results.jsonl").latest["a"]["seed"] == derive_seed(base, "a")
    (out / "a.png").unlink()  # logged as done but gone: it is made again
    assert batch(src, "-o", out, "-p", "x", *common) == 0
    assert (out / "a.png").read_bytes() == first
    assert [r["status"] for r in item_records(out / "results.jsonl")] == ["done", "done"]


def test_ray_engine_without_ray_says_how_to_install(tmp_path, mixed, common, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert batch(mixed, "-o", tmp_path / "out", "-p", "x", "--engine", "ray", *common) == 2
    assert 'pip install "img2img[ray]"' in capsys.readouterr().err


def test_help_names_the_batch_size_meaning():
    from typer.testing import CliRunner

    from img2img.cli import app

    result = CliRunner().invoke(app, ["batch", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "not images per input" in result.output and "--images-per-input" in result.output


def test_resume_recognises_outputs_whose_seeds_wrapped(tmp_path):
    # Two images per input from the largest seed: the second one's seed is 0, as the engine counts a batch.
    # A run killed before logging the item left both files; the next run must take them as its own.
    from img2img.batch.items import Item
    from img2img.batch.job import BatchOptions, plan_batch
    from img2img.batch.log import LogState
    from img2img.images import save_image
    from img2img.infotext import format_infotext
    from img2img.request import MAX_SEED, Request

    out = tmp_path / "out"
    out.mkdir()
    for name, seed in (("a-1.png", MAX_SEED), ("a-2.png", 0)):
        text = format_infotext("x", "", {"Steps": 4, "Seed": seed, "Denoising strength": 0.5})
        save_image(Image.new("RGB", (8, 8)), out / name, infotext=text)
    request = Request(prompt="x", strength=0.5, steps=4, batch_size=2)
    plan = plan_batch([Item("a", str(tmp_path / "a.png"), seed=MAX_SEED)], [request], LogState(),
                      BatchOptions(str(out)), base_seed=1, model="m")
    assert plan.tasks == []
    assert [(r["status"], r.get("recovered")) for r in plan.records] == [("done", True)]
