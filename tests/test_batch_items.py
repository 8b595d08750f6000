"""Batch building blocks without a model: sources -> items, output names, seeds, the results log."""

import json
import re

import pytest

from img2img.batch.items import attach_masks, check_unique_outputs, collect_items, output_names
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
    with pytest.raises(InvalidRequest, match=r"no such folder, manifest \(\.csv/\.jsonl\), glob pattern or file$") \
            as info:
        collect_items(tmp_path / "nope")
    assert info.value.field == "source"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidRequest, match=r"^nothing to do: .*empty \(no image files; pass --recursive to look in "
                                             r"subfolders\)$"):
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


@pytest.mark.parametrize("content, field, message", [
    ("image,strength\na.png,strong\n", "strength", r"row 2: strength must be a number, got 'strong'"),
    ("image,seed\na.png,1.5\n", "seed", r"row 2: seed must be a whole number, got '1.5'"),
    ("prompt\nx\n", "image", r"row 2: no image path \(column `image`\)"),
    ("image,colour\na.png,red\n", "manifest", r"row 1: unknown column 'colour'; expected image \(or path\), prompt, "
                                               r"negative_prompt, strength, seed, output, mask"),
    ("image,output\na.png,../escape.png\n", "output",
     r"row 2: output '../escape.png' must stay inside the output folder \(no absolute paths, no \.\.\)"),
    ("image,output\na.png,/etc/x.png\n", "output", r"row 2: output '/etc/x.png' must stay inside the output folder .*"),
    ("image,output\na.png,x.jpg\n", "output",
     r"row 2: output 'x.jpg' does not match the output format \(\.png\); change the extension or --format"),
    ("image\na.png,extra\n", "manifest", r"row 2: more cells than header columns"),
])
def test_csv_row_errors_name_the_row_and_field(tmp_path, content, field, message):
    manifest = tmp_path / "m.csv"
    manifest.write_text(content)
    with pytest.raises(InvalidRequest, match=f"^{re.escape(str(manifest))}: {message}$") as info:
        collect_items(manifest)
    assert info.value.field == field


@pytest.mark.parametrize("line, field, message", [
    ("[1, 2]", "manifest", r"row 1: expected a JSON object, got list"),
    ("{oops", "manifest", r"row 1: not valid JSON \(Expecting property name enclosed in double quotes\)"),
    ('{"image": 3}', "image", r"row 1: image must be a path string, got 3"),
    ('{"path": ["a.png"]}', "path", r"row 1: path must be a path string, got \['a.png'\]"),
    ('{"image": "a.png", "prompt": 7}', "prompt", r"row 1: prompt must be text, got 7"),
    ('{"image": "a.png", "strength": true}', "strength", r"row 1: strength must be a number, got True"),
    ('{"image": "a.png", "strength": [0.5]}', "strength", r"row 1: strength must be a number, got \[0.5\]"),
    ('{"image": "a.png", "seed": 2.5}', "seed", r"row 1: seed must be a whole number, got 2.5"),
])
def test_jsonl_row_errors(tmp_path, line, field, message):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(line + "\n")
    with pytest.raises(InvalidRequest, match=f"^{re.escape(str(manifest))}: {message}$") as info:
        collect_items(manifest)
    assert info.value.field == field


def test_collisions_are_refused_up_front(tree):
    touch(tree / "b.jpg")  # b.png and b.jpg -> b.png
    items = collect_items(tree)
    with pytest.raises(InvalidRequest, match=r"b\.(png|jpg) and .*b\.(png|jpg) would both write b\.png"):
        check_unique_outputs(items, 1, ".png")
    check_unique_outputs(collect_items(tree / "sub", recursive=True), 1, ".png")


def test_manifest_rows_for_one_image_need_output_names(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,prompt\na.png,snow\na.png,rain\n")
    with pytest.raises(InvalidRequest, match=r"row 2 .* and row 3 .* would both write a\.png; rename one, or use a "
                                             r"manifest with an `output` column$"):
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


def test_single_file_glob_and_empty_sources(tmp_path, tree):
    (only,) = collect_items(tree / "b.png")
    assert (only.key, only.input, only.row, only.label) == ("b", str(tree / "b.png"), None, str(tree / "b.png"))
    with pytest.raises(InvalidRequest, match=r"nothing to do: .*\*\.gif \(the pattern matches no files\)"):
        collect_items(str(tree / "*.gif"))
    (tree / "sub" / "deeper" / "e.jpeg").unlink()
    (tree / "sub" / "d.png").unlink()
    with pytest.raises(InvalidRequest, match=r"nothing to do: .*sub \(no image files\)$") as info:
        collect_items(tree / "sub", recursive=True)  # no --recursive hint when it was given
    assert info.value.field == "source"
    header_only = tmp_path / "m.csv"
    header_only.write_text("image,prompt\n")
    with pytest.raises(InvalidRequest, match=r"m\.csv \(the manifest has no rows\)"):
        collect_items(header_only)
    header_only.write_text("")
    with pytest.raises(InvalidRequest, match="the manifest has no rows"):
        collect_items(header_only)


def test_glob_skips_folders_and_the_output_folder(tree):
    (tree / "out").mkdir()
    touch(tree / "out" / "z.png")
    (tree / "dir.png").mkdir()  # a folder whose name matches the pattern
    items = collect_items(str(tree / "*.png"), exclude=tree / "out")
    assert [i.key for i in items] == ["b"]
    assert [i.key for i in collect_items(str(tree / "*" / "*.png"), exclude=tree / "out")] == ["sub/d"]
    assert [i.key for i in collect_items(str(tree / "*" / "*.png"))] == ["out/z", "sub/d"]


def test_folder_skips_hidden_folders_and_non_files(tree):
    touch(tree / ".cache" / "f.png")
    (tree / "folder.png").mkdir()
    assert [i.key for i in collect_items(tree, recursive=True)] == ["a", "b", "c", "sub/d", "sub/deeper/e"]


def test_manifest_image_columns_keys_and_numbers(tmp_path):
    manifest = tmp_path / "m.jsonl"
    rows = [{"input": "c.png", "path": "b.png", "image": "a.png"},  # `image` wins over `path` and `input`
            {"input": "in.png", "path": "p.png"},
            {"input": "sub\\win.png"},  # Windows separators
            {"input": "../outside/far.png"},  # outside the manifest's folder: just the name
            {"input": "/abs/where.png", "seed": 3.0, "strength": "0.25"},
            {"input": "s.png", "seed": " 12 ", "strength": 1, "prompt": "", "output": "x/y.jpeg"}]
    manifest.write_text("\ufeff" + "\n".join(json.dumps(r) for r in rows) + "\n")  # with a byte-order mark
    items = {i.row: i for i in collect_items(manifest, ext=".jpg")}
    assert [(items[n].key, items[n].input) for n in range(1, 6)] == [
        ("a", str(tmp_path / "a.png")), ("p", str(tmp_path / "p.png")), ("sub/win", str(tmp_path / "sub\\win.png")),
        ("far", str(tmp_path / "../outside/far.png")), ("where", "/abs/where.png")]
    assert (items[5].seed, type(items[5].seed), items[5].strength) == (3, int, 0.25)
    assert (items[6].key, items[6].seed, items[6].strength, type(items[6].strength), items[6].prompt) == (
        "x/y", 12, 1.0, float, None)  # an empty prompt is "not given"
    assert items[6].label == f"row 6 ({tmp_path / 's.png'})"


@pytest.mark.parametrize("output, ext, key", [("a.png", ".png", "a"), ("a.jpeg", ".jpg", "a"), ("a.JPG", ".jpg", "a"),
                                              ("dir/a", ".png", "dir/a"), ("./a.png", ".png", "a"),
                                              ("a.b.c", ".png", "a.b.c"), ("sub\\a.webp", ".webp", "sub/a")])
def test_output_column_keys(tmp_path, output, ext, key):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "x.png", "output": output}) + "\n")
    assert collect_items(manifest, ext=ext)[0].key == key


@pytest.mark.parametrize("row, field, message", [
    ({"output": "   "}, "output", "row 1: output must be a file name"),
    ({"output": 5}, "output", "row 1: output must be a file name, got 5"),
    ({"output": "."}, "output", r"row 1: output must be a file name, got '\.'"),
    ({"output": ".png"}, "output", r"hidden names \(starting with \.\) are not allowed"),
    ({"output": "a/.b/c"}, "output", "hidden names"),
    ({"output": "a/../../b"}, "output", "must stay inside the output folder"),
    ({"output": "..\\b"}, "output", "must stay inside the output folder"),
    ({"output": "a.jpeg"}, "output", r"does not match the output format \(\.png\)"),
    ({"output": "a.webp"}, "output", "does not match"),
    ({"seed": True}, "seed", "row 1: seed must be a number, got True"),
    ({"seed": [1]}, "seed", r"row 1: seed must be a whole number, got \[1\]"),
    ({"seed": "x"}, "seed", "row 1: seed must be a whole number, got 'x'"),
    ({"strength": "x"}, "strength", "row 1: strength must be a number, got 'x'"),
    ({"strength": None, "prompt": 3}, "prompt", "row 1: prompt must be text, got 3"),
    ({"negative_prompt": ["a"]}, "negative_prompt", "row 1: negative_prompt must be text"),
])
def test_row_values_are_checked_by_name(tmp_path, row, field, message):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "x.png", **row}) + "\n")
    with pytest.raises(InvalidRequest, match=message) as info:
        collect_items(manifest)
    assert info.value.field == field


def test_unknown_column_message_lists_the_known_ones(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "a.png", "sede": 1}\n')
    with pytest.raises(InvalidRequest, match=rf"^{re.escape(str(manifest))}: row 1: unknown column 'sede'; "
                                             r"expected image \(or path\), prompt, "
                                             r"negative_prompt, strength, seed, output, mask$") as info:
        collect_items(manifest)
    assert info.value.field == "manifest"


def test_csv_cells_are_trimmed_in_the_header_only(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(" image , prompt \na.png, a fox \n,\n")
    (item,) = collect_items(manifest)
    assert (item.key, item.prompt, item.row) == ("a", " a fox ", 2)


def test_collisions_are_checked_on_every_numbered_name(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,output\na.png,snow\nb.png,Snow\n")
    items = collect_items(manifest, ext=".webp")
    with pytest.raises(InvalidRequest, match=r"^row 3 \(.*b\.png\) and row 2 \(.*a\.png\) would both write "
                                             r"snow-1\.webp; rename one") as info:
        check_unique_outputs(items, 2, ".webp")
    assert info.value.field == "output"


def test_relative_glob_and_its_inputs(tree, monkeypatch):
    monkeypatch.chdir(tree)
    items = collect_items("*.png")  # no fixed folder: keys relative to the current one
    assert [(i.key, i.input) for i in items] == [("b", "b.png")]
    assert [(i.key, i.input) for i in collect_items("sub/*.png")] == [("d", "sub/d.png")]


def test_csv_keeps_line_breaks_inside_quoted_cells_and_reads_a_byte_order_mark(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b'\xef\xbb\xbfimage,prompt\r\na.png,"one\r\ntwo"\r\n')
    (item,) = collect_items(manifest)
    assert (item.key, item.prompt, item.row) == ("a", "one\r\ntwo", 3)


def test_every_excluded_folder_is_skipped(tree):
    touch(tree / "out" / "old.png")
    touch(tree / "masks" / "b.png")
    for exclude in ([tree / "out", tree / "masks"], [tree / "masks", tree / "out"]):
        assert [i.key for i in collect_items(tree, recursive=True, exclude=exclude)] == [
            "a", "b", "c", "sub/d", "sub/deeper/e"]
        assert [i.key for i in collect_items(str(tree / "*" / "*.png"), exclude=exclude)] == ["sub/d"]
    assert [i.key for i in collect_items(tree, recursive=True, exclude=[None, tree / "out"])] == [
        "a", "b", "c", "masks/b", "sub/d", "sub/deeper/e"]


def test_masks_from_a_folder_match_by_key_then_by_input_name(tmp_path, tree):
    masks = tmp_path / "masks"
    touch(masks / "a.png")
    touch(masks / "sub" / "d.WEBP")  # any image extension, in the key's subfolder
    touch(masks / "c.txt")  # not an image: not a mask
    items = attach_masks(collect_items(tree, recursive=True), masks)
    assert {i.key: i.mask for i in items} == {
        "a": str(masks / "a.png"), "sub/d": str(masks / "sub" / "d.WEBP"),
        # none found: the path it would have, so that item fails alone and names it
        "b": str(masks / "b.png"), "c": str(masks / "c.png"), "sub/deeper/e": str(masks / "sub" / "deeper" / "e.png")}
    # a manifest's item keyed by its output column finds its mask by the input's name; its own mask column wins
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "photos/a.jpg", "output": "renamed"}) + "\n"
                        + json.dumps({"image": "sub/d.png", "output": "other", "mask": "own.png"}) + "\n"
                        + json.dumps({"image": "x.png", "output": "sub/d"}) + "\n")
    items = {i.row: i for i in attach_masks(collect_items(manifest), masks)}
    assert items[1].mask == str(masks / "a.png")
    assert items[2].mask == str(tmp_path / "own.png")
    assert items[3].mask == str(masks / "sub" / "d.WEBP")  # the key first: sub/d
    with pytest.raises(InvalidRequest, match=rf"^--mask-dir {re.escape(str(tmp_path / 'none'))}: no such folder$") \
            as info:
        attach_masks(items.values(), tmp_path / "none")
    assert info.value.field == "mask_dir"


def test_manifest_mask_paths(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "mask": "masks/a.png"}) + "\n"
                        + json.dumps({"image": "b.png", "mask": "/abs/b.png"}) + "\n"
                        + json.dumps({"image": "c.png"}) + "\n")
    assert [i.mask for i in collect_items(manifest)] == [str(tmp_path / "masks" / "a.png"), "/abs/b.png", None]
    manifest.write_text(json.dumps({"image": "a.png", "mask": 5}) + "\n")
    with pytest.raises(InvalidRequest, match="row 1: mask must be a path string, got 5$") as info:
        collect_items(manifest)
    assert info.value.field == "mask"
