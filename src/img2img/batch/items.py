"""SOURCE -> the list of items a batch works on: a folder, a glob, or a manifest (.csv / .jsonl).

Every item has a `key`: the output's path relative to the output folder, without extension. Keys
are unique (two inputs that would write the same file are refused up front) and stable, so they
name outputs, key the results log for resume, and seed the per-item random seeds.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from ..errors import InvalidRequest

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MANIFEST_SUFFIXES = {".csv", ".jsonl"}
IMAGE_COLUMNS = ("image", "path", "input")  # first one present names the input image
OPTIONAL_COLUMNS = ("prompt", "negative_prompt", "strength", "seed", "output", "mask")
_GLOB_MAGIC = set("*?[")


@dataclass(frozen=True)
class Item:
    key: str  # output path relative to the output folder, POSIX, no extension
    input: str  # the input image's path
    row: int | None = None  # manifest line number, for error messages
    prompt: str | None = None  # per-row overrides; None = the command's option
    negative_prompt: str | None = None
    strength: float | None = None
    seed: int | None = None
    mask: str | None = None  # the inpainting mask's path (manifest column, or found in --mask-dir)

    @property
    def label(self) -> str:
        return f"row {self.row} ({self.input})" if self.row is not None else self.input


def output_names(key: str, count: int, ext: str) -> list[str]:
    """`<key><ext>` for one image per input; `<key>-1<ext>`, `<key>-2<ext>`, ... for several."""
    if count == 1:
        return [key + ext]
    return [f"{key}-{i}{ext}" for i in range(1, count + 1)]


def collect_items(source: str | os.PathLike, *, recursive: bool = False, ext: str = ".png",
                  exclude: str | os.PathLike | list | None = None) -> list[Item]:
    """Items of a folder (optionally recursive), a glob, a manifest or a single image, sorted by key.

    `exclude` (the output folder, a mask folder) is never read as input, so outputs or masks inside the
    source are not picked up.
    """
    text = str(source)
    path = Path(text)
    folders = exclude if isinstance(exclude, list) else [exclude]
    excluded = [Path(folder).resolve() for folder in folders if folder is not None]
    if path.is_dir():
        items = _folder_items(path, recursive, excluded)
        where = f"{path} (no image files{'' if recursive else '; pass --recursive to look in subfolders'})"
    elif path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
        items = _manifest_items(path, ext)
        where = f"{path} (the manifest has no rows)"
    elif _GLOB_MAGIC & set(text):
        items = _glob_items(text, excluded)
        where = f"{text} (the pattern matches no files)"
    elif path.is_file():
        items = [Item(key=path.stem, input=text)]
        where = text
    else:
        raise InvalidRequest(f"{text}: no such folder, manifest (.csv/.jsonl), glob pattern or file", "source")
    if not items:
        raise InvalidRequest(f"nothing to do: {where}", "source")
    return sorted(items, key=lambda item: item.key)


def check_unique_outputs(items: list[Item], count: int, ext: str) -> None:
    """Refuse two inputs that map to one output name (compared case-insensitively, as macOS/Windows do)."""
    seen: dict[str, Item] = {}
    for item in items:
        for name in output_names(item.key, count, ext):
            other = seen.setdefault(name.casefold(), item)
            if other is not item:
                raise InvalidRequest(
                    f"{other.label} and {item.label} would both write {name}; rename one, or use a manifest "
                    "with an `output` column", "output")


def attach_masks(items: list[Item], mask_dir: str | os.PathLike) -> list[Item]:
    """Give each item without a mask the one in `mask_dir` with its name: `<key>.<ext>`, else `<input stem>.<ext>`
    for any image extension. An item with none gets the path it would have, so it fails alone, naming it."""
    folder = Path(mask_dir)
    if not folder.is_dir():
        raise InvalidRequest(f"--mask-dir {folder}: no such folder", "mask_dir")
    by_name: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            by_name.setdefault(path.relative_to(folder).with_suffix("").as_posix(), path)
    attached = []
    for item in items:
        if item.mask is None:
            found = by_name.get(item.key) or by_name.get(Path(item.input).stem)
            item = replace(item, mask=str(found or folder / f"{item.key}.png"))
        attached.append(item)
    return attached


def _inside(path: Path, folders: list[Path]) -> bool:
    for folder in folders:
        try:
            path.resolve().relative_to(folder)
            return True
        except ValueError:
            continue
    return False


def _folder_items(folder: Path, recursive: bool, excluded: list[Path]) -> list[Item]:
    items = []
    pattern = "**/*" if recursive else "*"
    for path in folder.glob(pattern):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):  # hidden files, our own temp files
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file() or _inside(path, excluded):
            continue
        items.append(Item(key=relative.with_suffix("").as_posix(), input=str(path)))
    return items


def _glob_items(pattern: str, excluded: list[Path]) -> list[Item]:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _GLOB_MAGIC & set(part):
            break
        fixed.append(part)
    base = Path(*fixed) if fixed else Path(".")
    items = []
    for match in glob.glob(pattern, recursive=True):
        path = Path(match)
        if not path.is_file() or _inside(path, excluded):
            continue
        items.append(Item(key=path.relative_to(base).with_suffix("").as_posix(), input=match))
    return items


def _manifest_items(manifest: Path, ext: str) -> list[Item]:
    rows = _csv_rows(manifest) if manifest.suffix.lower() == ".csv" else _jsonl_rows(manifest)
    return [_row_item(manifest, line, row, ext) for line, row in rows]


def _csv_rows(manifest: Path):
    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            return []
        header = [name.strip() for name in reader.fieldnames]
        _check_columns(manifest, 1, header)
        rows = []
        for raw in reader:
            if None in raw:
                raise InvalidRequest(f"{manifest}: row {reader.line_num}: more cells than header columns", "manifest")
            # An empty cell means "not given": the command's option applies.
            row = {name.strip(): value for name, value in raw.items() if value not in (None, "")}
            if row:
                rows.append((reader.line_num, row))
        return rows


def _jsonl_rows(manifest: Path):
    rows = []
    with open(manifest, encoding="utf-8-sig") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"{manifest}: row {line_number}: not valid JSON ({exc.msg})", "manifest") from None
            if not isinstance(row, dict):
                raise InvalidRequest(f"{manifest}: row {line_number}: expected a JSON object, got "
                                     f"{type(row).__name__}", "manifest")
            _check_columns(manifest, line_number, list(row))
            rows.append((line_number, {k: v for k, v in row.items() if v is not None and v != ""}))
    return rows


def _check_columns(manifest: Path, line: int, names: list[str]) -> None:
    known = set(IMAGE_COLUMNS) | set(OPTIONAL_COLUMNS)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidRequest(f"{manifest}: row {line}: unknown column {unknown[0]!r}; expected image (or path), "
                             f"{', '.join(OPTIONAL_COLUMNS)}", "manifest")


def _row_item(manifest: Path, line: int, row: dict, ext: str) -> Item:
    where = f"{manifest}: row {line}"
    image_column = next((name for name in IMAGE_COLUMNS if name in row), None)
    if image_column is None:
        raise InvalidRequest(f"{where}: no image path (column `image`)", "image")
    image = row[image_column]
    if not isinstance(image, str):
        raise InvalidRequest(f"{where}: {image_column} must be a path string, got {image!r}", image_column)
    image_path = Path(image)
    resolved = image_path if image_path.is_absolute() else manifest.parent / image_path
    fields: dict = {}
    for name in ("prompt", "negative_prompt"):
        if name in row:
            if not isinstance(row[name], str):
                raise InvalidRequest(f"{where}: {name} must be text, got {row[name]!r}", name)
            fields[name] = row[name]
    if "strength" in row:
        fields["strength"] = _number(where, "strength", row["strength"], float)
    if "seed" in row:
        seed = _number(where, "seed", row["seed"], int)
        fields["seed"] = None if seed == -1 else seed  # -1: derive, as when the column is empty
    if "mask" in row:
        if not isinstance(row["mask"], str):
            raise InvalidRequest(f"{where}: mask must be a path string, got {row['mask']!r}", "mask")
        mask_path = Path(row["mask"])
        fields["mask"] = str(mask_path if mask_path.is_absolute() else manifest.parent / mask_path)
    if "output" in row:
        key = _output_key(where, row["output"], ext)
    else:
        # The image's path relative to the manifest's folder; a path outside it keeps just its name.
        relative = PurePosixPath(image.replace("\\", "/"))
        inside = not image_path.is_absolute() and ".." not in relative.parts
        key = (relative if inside else PurePosixPath(relative.name)).with_suffix("").as_posix()
    return Item(key=key, input=str(resolved), row=line, **fields)


def _number(where: str, name: str, value, kind):
    if isinstance(value, bool):
        raise InvalidRequest(f"{where}: {name} must be a number, got {value!r}", name)
    if isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            raise InvalidRequest(f"{where}: {name} must be a {'whole ' if kind is int else ''}number, "
                                 f"got {value!r}", name) from None
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise InvalidRequest(f"{where}: {name} must be a {'whole ' if kind is int else ''}number, got {value!r}",
                             name)
    return kind(value)


def _output_key(where: str, value, ext: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{where}: output must be a file name, got {value!r}", "output")
    name = PurePosixPath(value.replace("\\", "/"))
    if name.is_absolute() or ".." in name.parts or Path(value).is_absolute() or Path(value).drive:
        raise InvalidRequest(f"{where}: output {value!r} must stay inside the output folder "
                             "(no absolute paths, no ..)", "output")
    if any(part.startswith(".") for part in name.parts if part != "."):
        raise InvalidRequest(f"{where}: output {value!r}: hidden names (starting with .) are not allowed",
                             "output")
    suffix = name.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        if suffix != ext and not (suffix == ".jpeg" and ext == ".jpg"):
            raise InvalidRequest(f"{where}: output {value!r} does not match the output format ({ext}); "
                                 "change the extension or --format", "output")
        name = name.with_suffix("")
    key = name.as_posix()
    if key in ("", "."):
        raise InvalidRequest(f"{where}: output must be a file name, got {value!r}", "output")
    return key
