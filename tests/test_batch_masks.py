"""Batch inpainting: masks from a manifest column or matched by name in --mask-dir; resumable like any batch."""

import pytest
import torch
from PIL import Image

from img2img import Engine
from img2img.batch.log import item_records
from img2img.cli import main
from img2img.images import read_infotext
from img2img.testing import make_photo


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()  # --cpu-threads changes this process's torch setting
    yield
    torch.set_num_threads(threads)


def batch(*args) -> int:
    with pytest.raises(SystemExit) as stopped:
        main(["batch", *map(str, args)])
    return stopped.value.code


def square(box):
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, box)
    return mask


@pytest.fixture
def photos(tmp_path):
    """photos/a.png, photos/sub/b.png, photos/c.png; masks for a and sub/b (by path) in photos/masks/."""
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    (src / "masks" / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.png", "sub/b.png", "c.png"]):
        make_photo(64, 64, seed=i).save(src / name)
    square((8, 8, 32, 32)).save(src / "masks" / "a.png")
    square((30, 30, 60, 60)).save(src / "masks" / "sub" / "b.webp", lossless=True)
    return src


def expected(tiny_sd, image, mask, seed, **fields):
    return Engine(str(tiny_sd), device="cpu").transform(image, "a red door", mask=mask, seed=seed, steps=4,
                                                        **fields).image.tobytes()


def test_mask_dir_matches_masks_by_name_and_a_missing_one_fails_alone(photos, tmp_path, tiny_sd):
    out = tmp_path / "out"
    code = batch(photos, "-r", "-o", out, "--mask-dir", photos / "masks", "-p", "a red door", "-m", tiny_sd,
                 "--steps", 4, "--seed", 5, "--inpaint-fill", "fill", "-q")
    assert code == 1  # c.png has no mask
    records = {r["key"]: r for r in item_records(out / "results.jsonl")}
    assert sorted(records) == ["a", "c", "sub/b"]  # the masks folder inside the source is not read as input
    assert records["c"]["status"] == "failed" and "masks/c.png: no such file" in records["c"]["error"]
    for key, mask in (("a", photos / "masks" / "a.png"), ("sub/b", photos / "masks" / "sub" / "b.webp")):
        assert records[key]["status"] == "done"
        output = Image.open(out / f"{key}.png")
        assert output.tobytes() == expected(tiny_sd, photos / f"{key}.png", mask, records[key]["seed"],
                                            inpaint_fill="fill")
        assert "Masked content: fill" in read_infotext(out / f"{key}.png")
    # resume: done items are skipped, the unmasked one is still refused
    assert batch(photos, "-r", "-o", out, "--mask-dir", photos / "masks", "-p", "a red door", "-m", tiny_sd,
                 "--steps", 4, "--retry-failed", "--inpaint-fill", "fill", "-q") == 1


def test_manifest_mask_column(photos, tmp_path, tiny_sd):
    manifest = photos / "jobs.csv"
    manifest.write_text("image,mask,seed\na.png,masks/a.png,11\nc.png,,12\n")
    out = tmp_path / "out"
    code = batch(manifest, "-o", out, "-p", "a red door", "-m", tiny_sd, "--steps", 4, "--noise-multiplier", 0.9,
                 "-q")
    assert code == 0
    assert Image.open(out / "a.png").tobytes() == expected(tiny_sd, photos / "a.png", photos / "masks" / "a.png", 11,
                                                           noise_multiplier=0.9)
    assert "Mask hash" in read_infotext(out / "a.png") and "Mask" not in read_infotext(out / "c.png")
    assert "Noise multiplier: 0.9" in read_infotext(out / "c.png")


@pytest.mark.parametrize("args, message", [
    (["--mask-dir", "{masks}", "--outpaint", "8,0,8,0"], "a mask and outpaint both set the area"),
    (["--invert-mask"], "invert_mask applies to a mask"),
    (["--mask-dir", "{missing}"], "--mask-dir"),
])
def test_bad_mask_options_stop_the_batch_before_it_starts(photos, tmp_path, tiny_sd, capsys, args, message):
    args = [a.format(masks=photos / "masks", missing=tmp_path / "nowhere") for a in args]
    code = batch(photos, "-o", tmp_path / "out", "-p", "x", "-m", tiny_sd, *args)
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.jsonl").exists()
