"""The prompt features through the real CLI: every flag, the infotext they write, --params-from, listings."""

import json

from PIL import Image
from test_cli import cli

from img2img.images import read_infotext


def dirs(folders):
    return ["--lora-dir", folders / "loras", "--embeddings-dir", folders / "embeddings",
            "--styles-file", folders / "styles.csv"]


def test_every_prompt_flag_is_recorded_and_reproduced(tmp_path, tiny_sd, folders, photo_path, capsys):
    first = tmp_path / "first.png"
    code, _, err = cli("run", photo_path, "-p", "(a red barn:1.2) fuzzy <lora:kohya:0.5> [day:night:0.5]",
                       "-m", tiny_sd, "--steps", "6", "--seed", "5", "--subseed", "77", "--subseed-strength", "0.4",
                       "--clip-skip", "2", "--style", "film", "--style", "warm", "--color-correction",
                       *dirs(folders), "-o", first, capsys=capsys)
    assert code == 0, err
    code, out, _ = cli("info", first, "--json", capsys=capsys)
    stored = json.loads(out)
    assert stored["prompt"] == "(a red barn:1.2) fuzzy <lora:kohya:0.5> [day:night:0.5], film grain, warm light"
    assert stored["negative_prompt"] == "blurry"
    params = stored["parameters"]
    assert params["Variation seed"] == "77" and params["Variation seed strength"] == "0.4"
    assert params["Clip skip"] == "2" and params["Color correction"] == "True"
    assert params["Lora hashes"].startswith("kohya: ") and params["TI hashes"].startswith("fuzzy: ")

    again = tmp_path / "again.png"
    code, _, err = cli("run", photo_path, "--params-from", first, "-m", tiny_sd, *dirs(folders), "-o", again,
                       capsys=capsys)
    assert code == 0, err
    assert Image.open(again).tobytes() == Image.open(first).tobytes()
    assert read_infotext(again) == read_infotext(first)

    plain = tmp_path / "plain.png"
    code, _, err = cli("run", photo_path, "-p", "(a red barn:1.2) fuzzy <lora:kohya:0.5> [day:night:0.5]",
                       "-m", tiny_sd, "--steps", "6", "--seed", "5", *dirs(folders), "-o", plain, capsys=capsys)
    assert code == 0, err
    assert Image.open(plain).tobytes() != Image.open(first).tobytes()


def test_unknown_lora_or_style_is_one_line_exit_2(tiny_sd, folders, square_path, capsys):
    code, out, err = cli("run", square_path, "-p", "x <lora:missing:1>", "-m", tiny_sd, *dirs(folders),
                         capsys=capsys)
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0
    assert "LoRA 'missing' not found" in err and "available: kohya, peft, xl-only" in err
    code, _, err = cli("run", square_path, "-p", "x", "--style", "noir", "-m", tiny_sd, *dirs(folders),
                       capsys=capsys)
    assert code == 2 and "style 'noir' not found" in err and "available: film, warm" in err
    code, _, err = cli("run", square_path, "-p", "x", "--clip-skip", "0", "-m", tiny_sd, capsys=capsys)
    assert code == 2 and "clip_skip must be between 1 and 12" in err


def test_loras_and_styles_listings(folders, capsys, monkeypatch):
    monkeypatch.setenv("IMG2IMG_LORA_DIR", str(folders / "loras"))
    code, out, _ = cli("loras", capsys=capsys)
    assert code in (0, None)
    assert "<lora:kohya:1>" in out and "<lora:peft:1>" in out and "old.pt" in out and "skipped" in out
    code, out, _ = cli("loras", "--json", capsys=capsys)
    listed = json.loads(out)
    assert [row["name"] for row in listed["loras"]] == ["kohya", "peft", "xl-only"]
    assert all(len(row["hash"]) == 12 for row in listed["loras"])
    code, out, _ = cli("styles", "--styles-file", folders / "styles.csv", capsys=capsys)
    assert "film: {prompt}, film grain  (negative: blurry)" in out and "warm: warm light" in out


def test_lora_dir_from_the_environment(tiny_sd, folders, square_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMG2IMG_LORA_DIR", str(folders / "loras"))
    code, _, err = cli("run", square_path, "-p", "x <lora:peft:1>", "-m", tiny_sd, "--steps", "4",
                       "-o", tmp_path / "out.png", capsys=capsys)
    assert code == 0, err
    assert "peft: " in read_infotext(tmp_path / "out.png")


def test_batch_takes_the_prompt_flags(tmp_path, tiny_sd, folders, square_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    Image.open(square_path).save(source / "one.png")
    code, _, err = cli("batch", source, "-o", tmp_path / "out", "-p", "x <lora:kohya:1>", "-m", tiny_sd,
                       "--steps", "4", "--seed", "3", "--style", "film", "--subseed", "9", "--subseed-strength",
                       "0.5", "--clip-skip", "2", *dirs(folders), "-q", capsys=capsys)
    assert code in (0, None), err
    (output,) = (tmp_path / "out").glob("*.png")
    text = read_infotext(output)
    assert text.startswith("x <lora:kohya:1>, film grain\nNegative prompt: blurry\n")
    assert "Lora hashes" in text and "Variation seed: 9" in text and "Clip skip: 2" in text
