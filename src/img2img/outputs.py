"""Where outputs go: names that never collide with earlier outputs, and atomic writes with infotext."""

from __future__ import annotations

from pathlib import Path

from .errors import OutputError
from .images import EXTENSIONS, resolve_format, save_image

DEFAULT_OUTPUT_DIR = "outputs"


def output_paths(stem: str, seeds: list[int], *, path=None, output_dir=None, fmt: str | None = None,
                 overwrite: bool = False) -> list[Path]:
    """One path per image.

    path: used as given for one image; for several, "<name>-1.png", "<name>-2.png", ...
    output_dir (default ./outputs): "<stem>-<seed>.png", with "-2", "-3" added when a name is taken,
    so earlier outputs survive without --overwrite.
    """
    if path is not None:
        path = Path(path)
        ext = path.suffix or EXTENSIONS[resolve_format(fmt, path)]
        if len(seeds) == 1:
            return [path if path.suffix else path.with_suffix(ext)]
        return [path.with_name(f"{path.stem}-{i}{ext}") for i in range(1, len(seeds) + 1)]
    folder = Path(output_dir or DEFAULT_OUTPUT_DIR)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None
    ext = EXTENSIONS[resolve_format(fmt)]
    chosen: list[Path] = []
    for seed in seeds:
        candidate = folder / f"{stem}-{seed}{ext}"
        n = 2
        while not overwrite and (candidate.exists() or candidate in chosen):
            candidate = folder / f"{stem}-{seed}-{n}{ext}"
            n += 1
        chosen.append(candidate)
    return chosen


def save_result(result, paths: list[Path], *, fmt: str | None = None, overwrite: bool = False) -> list[Path]:
    if len(paths) != len(result.images):
        raise OutputError(f"{len(result.images)} images but {len(paths)} output paths")
    notices: list[str] = []  # metadata that did not fit: said once, after the images are safe
    saved = [
        save_image(image, path, fmt=fmt, infotext=text, overwrite=overwrite, notices=notices)
        for image, text, path in zip(result.images, result.infotexts, paths)
    ]
    result.notices.extend(dict.fromkeys(notices))
    return saved
