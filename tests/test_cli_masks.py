"""Inpainting and outpainting through the real `img2img run` command: every flag, --params-from, errors."""

import pytest
from PIL import Image

from img2img import Engine
from img2img.cli import main
from img2img.images import read_infotext
from img2img.infotext import parse_infotext
from img2img.testing import make_photo


def cli(*args, capsys):
    """Run the command in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-masks")
    make_photo(96, 64).save(folder / "photo.png")
    mask = Image.new("L", (96, 64), 0)
    mask.paste(255, (56, 8, 80, 32))
    mask.save(folder / "mask.png")
    other = Image.new("L", (96, 64), 0)
    other.paste(255, (10, 30, 30, 50))
    other.save(folder / "other-mask.png")
    return folder


def test_every_inpainting_flag_matches_the_python_api(files, tmp_path, tiny_sd, capsys):
    out = tmp_path / "out.png"
    code, _, err = cli("run", files / "photo.png", "-p", "a window", "-m", tiny_sd, "--seed", 3, "--steps", 6,
                       "--mask", files / "mask.png", "--invert-mask", "--mask-blur", "2,6", "--inpaint-fill",
                       "latent-nothing", "--inpaint-area", "masked", "--inpaint-padding", 12, "--noise-multiplier", 0.8,
                       "-o", out, capsys=capsys)
    assert code == 0, err
    assert "96x64, generated at" in err  # only masked: the output has the input's size
    expected = Engine(str(tiny_sd), device="cpu").transform(
        files / "photo.png", "a window", mask=files / "mask.png", seed=3, steps=6, invert_mask=True,
        mask_blur=(2, 6), inpaint_fill="latent-nothing", inpaint_area="masked", inpaint_padding=12,
        noise_multiplier=0.8)
    assert Image.open(out).tobytes() == expected.image.tobytes()
    params = parse_infotext(read_infotext(out))[2]
    assert (params["Mask blur x"], params["Mask blur y"], params["Mask mode"]) == ("2", "6", "Inpaint not masked")
    assert (params["Masked content"], params["Inpaint area"], params["Masked area padding"]) == (
        "latent nothing", "Only masked", "12")
    assert params["Noise multiplier"] == "0.8"


def test_params_from_asks_for_the_mask_again(files, tmp_path, tiny_sd, capsys):
    first = tmp_path / "first.png"
    code, _, err = cli("run", files / "photo.png", "-p", "x", "-m", tiny_sd, "--steps", 6, "--mask",
                       files / "mask.png", "--inpaint-fill", "fill", "-o", first, capsys=capsys)
    assert code == 0, err
    code, _, err = cli("run", files / "photo.png", "--params-from", first, "-m", tiny_sd, "-o", tmp_path / "x.png",
                       capsys=capsys)
    assert code == 2 and err.count("\n") == 1
    assert "was made with a mask (Mask hash " in err and "pass the same mask again with --mask FILE" in err
    again = tmp_path / "again.png"
    code, _, err = cli("run", files / "photo.png", "--params-from", first, "-m", tiny_sd, "--mask",
                       files / "mask.png", "-o", again, capsys=capsys)
    assert code == 0, err
    assert again.read_bytes() == first.read_bytes()
    code, _, err = cli("run", files / "photo.png", "--params-from", first, "-m", tiny_sd, "--mask",
                       files / "other-mask.png", "-o", tmp_path / "other.png", capsys=capsys)
    assert code == 0 and "came from a mask with hash" in err


def test_outpaint_and_mask_from_alpha(files, tmp_path, tiny_sd, capsys):
    wide = tmp_path / "wide.png"
    code, _, err = cli("run", files / "photo.png", "-p", "x", "-m", tiny_sd, "--steps", 4, "--outpaint", "32,0,32,0",
                       "--keep-size", "-o", wide, capsys=capsys)
    assert code == 0, err
    assert Image.open(wide).size == (160, 64) and 'Outpaint: "32,0,32,0"' in read_infotext(wide)
    erased = make_photo(64, 64).convert("RGBA")
    erased.paste((0, 0, 0, 0), (8, 8, 24, 24))
    erased.save(tmp_path / "erased.png")
    code, _, err = cli("run", tmp_path / "erased.png", "-p", "x", "-m", tiny_sd, "--steps", 4, "--mask-from-alpha",
                       "-o", tmp_path / "filled.png", capsys=capsys)
    assert code == 0, err
    assert "Mask from alpha: True" in read_infotext(tmp_path / "filled.png")


@pytest.mark.parametrize("args, message", [
    (["--mask", "missing.png"], "missing.png: no such file"),
    (["--outpaint", "1,2"], "outpaint must be four whole numbers"),
    (["--mask", "{mask}", "--outpaint", "8,0,0,0"], "a mask and outpaint both set the area"),
    (["--invert-mask"], "invert_mask applies to a mask"),
    (["--mask-blur", "soft"], "mask_blur must be a whole number"),
    (["--inpaint-fill", "noise"], "inpaint_fill must be one of"),
])
def test_bad_inpainting_flags_fail_in_one_line(files, tiny_sd, args, message, capsys):
    args = [a.format(mask=files / "mask.png") for a in args]
    code, _, err = cli("run", files / "photo.png", "-p", "x", "-m", tiny_sd, "--steps", 4, *args, capsys=capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_the_mask_file_is_never_overwritten(files, tiny_sd, capsys):
    before = (files / "mask.png").read_bytes()
    code, _, err = cli("run", files / "photo.png", "-p", "x", "-m", tiny_sd, "--steps", 4, "--mask",
                       files / "mask.png", "-o", files / "mask.png", "--overwrite", capsys=capsys)
    assert code == 2 and "mask.png: refusing to overwrite an input image" in err
    assert (files / "mask.png").read_bytes() == before
