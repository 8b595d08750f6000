"""Batch building blocks without a model: sources -> items, output names, seeds, the results log."""

import json

import pytest

from img2img.batch.items import check_unique_outputs, collect_items, output_names
from img2img.batch.job import derive_seed, remove_stale_temp_files
from img2img.batch.log import ResultsLog, item_records, read_log
from img2img.errors import InvalidRequest


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    for name in ("b.png", "a.JPG", "c.webp", "notes.txt", ".hidden.png", "sub/d.png", "sub/deeper/e.jpeg"):
        touch(src / name)
    return src


def test_folder_takes_image_files_sorted_and_skips_hidden_and_others(tree):
    items = collect_items(tree)
    assert [i.key for i in items] == ["a", "b", "c"]
    assert items[0].input == str(tree / "a.JPG")


def test_recursive_folder_mirrors_subfolders_and_skips_the_output_folder(tree):
    touch(tree / "out" / "old.png")
    items = collect_items(tree, recursive=True, exclude=tree / "out")
    assert [i.key for i in items] == ["a", "b", "c", "sub/d", "sub/deeper/e"]


def test_glob_keys_are_relative_to_the_fixed_part(tree):
    items = collect_items(str(tree / "sub" / "**" / "*.*"))
    assert [i.key for i in items] == ["d", "deeper/e"]


def test_missing_source_and_empty_folder_are_clear_errors(tmp_path):
    with pytest.raises(InvalidRequest, match="no such folder"):
        collect_items(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidRequest, match="nothing to do.*--recursive"):
        collect_items(tmp_path / "empty")


def test_csv_manifest_rows_paths_relative_to_the_manifest(tmp_path):
    folder = tmp_path / "data"
    touch(folder / "img" / "one.png")
    manifest = folder / "list.csv"
    manifest.write_text("image,prompt,strength,seed,output,negative_prompt\n"
                        "img/one.png,a fox,0.5,12,foxes/first.png,blur\n"
                        "img/two.png,,,,,\n")
    first, second = collect_items(manifest)
    assert (first.key, first.input, first.prompt, first.strength, first.seed, first.negative_prompt, first.row) == (
        "foxes/first", str(folder / "img" / "one.png"), "a fox", 0.5, 12, "blur", 2)
    assert (second.key, second.prompt, second.strength, second.seed, second.row) == ("img/two", None, None, None, 3)


def test_jsonl_manifest_with_blank_lines_and_seed_minus_one(tmp_path):
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "prompt": "x", "seed": 5}) + "\n\n"
                        + json.dumps({"path": "/abs/b.png", "seed": -1}) + "\n")
    a, b = collect_items(manifest)
    assert (a.key, a.seed, a.row) == ("a", 5, 1)
    assert (b.key, b.input, b.seed, b.row) == ("b", "/abs/b.png", None, 3)


@pytest.mark.parametrize("content, message", [
    ("image,strength\na.png,strong\n", r"row 2: strength must be a number, got 'strong'"),
    ("image,seed\na.png,1.5\n", r"row 2: seed must be a whole number"),
    ("prompt\nx\n", r"row 2: no image path"),
    ("image,colour\na.png,red\n", r"row 1: unknown column 'colour'"),
    ("image,output\na.png,../escape.png\n", r"row 2: output '../escape.png' must stay inside"),
    ("image,output\na.png,/etc/x.png\n", r"row 2: output '/etc/x.png' must stay inside"),
    ("image,output\na.png,x.jpg\n", r"row 2: output 'x.jpg' does not match the output format"),
    ("image\na.png,extra\n", r"row 2: more cells than header columns"),
])
def test_csv_row_errors_name_the_row_and_field(tmp_path, content, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(content)
    with pytest.raises(InvalidRequest, match=message):
        collect_items(manifest)


@pytest.mark.parametrize("line, message", [
    ("[1, 2]", r"row 1: expected a JSON object"),
    ("{oops", r"row 1: not valid JSON"),
    ('{"image": 3}', r"row 1: image must be a path string"),
    ('{"image": "a.png", "prompt": 7}', r"row 1: prompt must be text"),
    ('{"image": "a.png", "strength": true}', r"row 1: strength must be a number"),
])
def test_jsonl_row_errors(tmp_path, line, message):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(line + "\n")
    with pytest.raises(InvalidRequest, match=message):
        collect_items(manifest)


def test_collisions_are_refused_up_front(tree):
    touch(tree / "b.jpg")  # b.png and b.jpg -> b.png
    items = collect_items(tree)
    with pytest.raises(InvalidRequest, match=r"b\.(png|jpg) and .*b\.(png|jpg) would both write b\.png"):
        check_unique_outputs(items, 1, ".png")
    check_unique_outputs(collect_items(tree / "sub", recursive=True), 1, ".png")


def test_manifest_rows_for_one_image_need_output_names(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,prompt\na.png,snow\na.png,rain\n")
    with pytest.raises(InvalidRequest, match=r"row 2 .* and row 3 .* would both write a\.png.*`output` column"):
        check_unique_outputs(collect_items(manifest), 1, ".png")
    manifest.write_text("image,prompt,output\na.png,snow,a-snow\na.png,rain,A-Snow.png\n")
    with pytest.raises(InvalidRequest, match="(?i)would both write a-snow.png"):  # case-insensitive filesystems
        check_unique_outputs(collect_items(manifest), 1, ".png")


def test_output_names():
    assert output_names("a/b", 1, ".png") == ["a/b.png"]
    assert output_names("a/b", 3, ".jpg") == ["a/b-1.jpg", "a/b-2.jpg", "a/b-3.jpg"]


def test_derived_seeds_are_stable_distinct_and_in_range():
    assert derive_seed(7, "photos/a") == derive_seed(7, "photos/a")
    seeds = {derive_seed(7, f"img{i}") for i in range(200)}
    assert len(seeds) == 200
    assert all(0 <= s < 2**32 for s in seeds)
    assert derive_seed(8, "a") == (derive_seed(7, "a") + 1) % 2**32
    assert derive_seed(2**32 - 1, "a") < 2**32


def test_log_appends_whole_lines_and_tolerates_a_torn_tail(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResultsLog(path) as log:
        log.append({"event": "start", "base_seed": 11})
        log.append({"key": "a", "status": "failed", "error": "bad"})
        log.append({"key": "a", "status": "done", "error": None})
        log.append({"key": "b", "status": "done", "error": None})
    with open(path, "ab") as handle:
        handle.write(b'{"key": "c", "stat')  # what a SIGKILL mid-write leaves
    state = read_log(path)
    assert state.torn and state.base_seed == 11
    assert {k: r["status"] for k, r in state.latest.items()} == {"a": "done", "b": "done"}
    with ResultsLog(path) as log:  # reopening cuts the torn tail before appending
        log.append({"key": "c", "status": "done", "error": None})
    lines = path.read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    assert [r["key"] for r in item_records(path)] == ["a", "a", "b", "c"]
    assert not read_log(path).torn


def test_log_with_a_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"key": "a", "status": "done"}\nnot json\n{"key": "b", "status": "done"}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_log(path)


def test_stale_temp_files_are_removed(tmp_path):
    stale = touch(tmp_path / "sub" / ".x.png.ab_c1234.tmp")
    keep = [touch(tmp_path / "x.png"), touch(tmp_path / ".notes.tmp"), touch(tmp_path / ".x.png.short.tmp")]
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert all(path.exists() for path in keep) and not stale.exists()
