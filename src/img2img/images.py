"""Image input and output: load (EXIF, alpha, modes, limits), apply a resize plan, save with infotext."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ImageError, OutputError
from .geometry import ResizePlan, restore_box
from .icc import to_srgb
from .infotext import shorten_infotext

DEFAULT_MAX_PIXELS = 100_000_000  # a 100-megapixel photo loads; a decompression bomb does not
FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
JPEG_MAX_MARKER_BYTES = 65533  # a JPEG APP1 segment (where EXIF lives) holds at most 64 KB


@dataclass
class LoadedImage:
    image: Any  # PIL.Image.Image in RGB
    original_size: tuple[int, int]  # after EXIF rotation: what the user sees
    digest: str  # sha256 of the RGB pixels, so the same picture hashes alike from any file format
    notices: list[str] = field(default_factory=list)


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__}>"


def _open(source: Any):
    """Open lazily (header only) so size limits apply before pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    name = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{name}: no such file")
        if path.is_dir():
            raise ImageError(f"{name}: is a folder, not an image file")
        if path.stat().st_size == 0:
            raise ImageError(f"{name}: the file is empty")
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError("image data is empty (0 bytes)")
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}")
    try:
        with pillow_pixel_limit_lifted():
            return Image.open(io.BytesIO(data)), name
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image, or a format Pillow cannot read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # a known format with a broken header
        raise ImageError(f"{name}: not an image, or a corrupt one ({exc})") from None


_PILLOW_LIMIT_LOCK = threading.RLock()


@contextmanager
def pillow_pixel_limit_lifted() -> Iterator[None]:
    """Pillow's own decompression-bomb limit (89.5 MP: a warning; 179 MP: an error) lifted while we read.

    The caller's max_pixels is the limit, checked on the header before any pixel is decoded; Pillow's
    would refuse what the caller allowed, or warn about it. Pillow's limit is a process-wide setting, so
    it is changed under a lock and restored at once.
    """
    from PIL import Image

    with _PILLOW_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _to_rgb(img, background: str, icc: bytes | None = None, name: str = "<image>"):
    """(RGB image, notices): colours converted to sRGB when a profile says otherwise, alpha composited on
    `background`, 16-bit and float modes scaled, not clipped."""
    import numpy as np
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode != "F" else max(float(arr.max()), 1.0)
        if img.mode == "I" and arr.max() <= 255:
            top = 255.0
        grey = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        key = img.info.get("transparency")  # a 16-bit PNG's colour key, in 16-bit values
        if isinstance(key, int):
            grey = Image.merge("LA", (grey, Image.fromarray(np.where(arr == key, 0, 255).astype(np.uint8), "L")))
        img = grey
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "La":  # premultiplied grey + alpha: Pillow converts it to LA only
        img = img.convert("LA")
    if img.mode in ("PA", "RGBa"):
        img = img.convert("RGBA")
    img, notice = to_srgb(img, icc, name)  # before compositing: the background colour is sRGB already
    notices = [notice] if notice else []
    if img.mode == "LA" or (img.mode in ("1", "L", "RGB") and "transparency" in img.info):  # PNG colour keys too
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        canvas = Image.new("RGB", img.size, background)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas, notices
    return (img.convert("RGB") if img.mode != "RGB" else img), notices


def load_image(source: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, background: str = "white") -> LoadedImage:
    """Load an image from a path, bytes, a PIL image or a numpy array, as RGB, upright."""
    from PIL import Image, ImageOps

    notices: list[str] = []
    if isinstance(source, Image.Image):
        img, name = source, "<image>"
    elif type(source).__module__ == "numpy":
        img, name = _from_array(source), "<array>"
    else:
        img, name = _open(source)
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError(f"{name}: the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,}"
        )
    try:
        with pillow_pixel_limit_lifted():  # checked above; decoding a GIF's frames checks again
            if getattr(img, "n_frames", 1) > 1:
                notices.append(f"{name} has {img.n_frames} frames; using the first")
                img.seek(0)
            img.load()
        icc = img.info.get("icc_profile")
        img = ImageOps.exif_transpose(img) or img
        rgb, colour_notices = _to_rgb(img, background, icc, name)
        notices += colour_notices
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt pixel data
        raise ImageError(f"{name}: the image data is corrupt or truncated ({exc})") from None
    digest = hashlib.sha256(rgb.tobytes()).hexdigest()
    return LoadedImage(rgb, rgb.size, digest, notices)


def _from_array(array):
    """HxW, HxWx1, HxWx3 or HxWx4; uint8 as is, floats taken as 0..1."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or arr.size == 0:
        raise ImageError(f"<array>: expected an HxW, HxWx3 or HxWx4 array, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageError("<array>: contains NaN or infinite values")
        arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif arr.dtype == np.uint16:
        arr = (arr // 257).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageError(f"<array>: unsupported dtype {arr.dtype}; use uint8, uint16 or float in 0..1")
    return Image.fromarray(arr)


def apply_plan(image, plan: ResizePlan):
    """Resize (and crop or fill) an RGB image as planned."""
    from PIL import Image

    resample = Image.Resampling.LANCZOS
    region = image if plan.crop == (0, 0, *image.size) else image.crop(plan.crop)
    scaled = region if region.size == plan.scaled else region.resize(plan.scaled, resample)
    if not plan.needs_fill:
        return scaled
    # "Resize and fill": stretch the image's outermost rows/columns across the empty bands.
    canvas = scaled.resize(plan.target, resample)
    (tw, th), (sw, sh), (ox, oy) = plan.target, plan.scaled, plan.offset
    if oy > 0:
        canvas.paste(scaled.crop((0, 0, sw, 1)).resize((tw, oy)), (0, 0))
    if th - oy - sh > 0:
        canvas.paste(scaled.crop((0, sh - 1, sw, sh)).resize((tw, th - oy - sh)), (0, oy + sh))
    if ox > 0:
        canvas.paste(scaled.crop((0, 0, 1, sh)).resize((ox, th)), (0, 0))
    if tw - ox - sw > 0:
        canvas.paste(scaled.crop((sw - 1, 0, sw, sh)).resize((tw - ox - sw, th)), (ox + sw, 0))
    canvas.paste(scaled, plan.offset)
    return canvas


def restore_size(image, plan: ResizePlan):
    """Map a generated image back onto the source's pixels (keep_size): the inverse of apply_plan."""
    from PIL import Image

    box = restore_box(plan)
    if box is None:
        raise ValueError("the plan cut part of the source off; the result cannot line up with all of it")
    region = image if box == (0, 0, *image.size) else image.crop(box)
    return region if region.size == plan.source else region.resize(plan.source, Image.Resampling.LANCZOS)


def resolve_format(fmt: str | None, path: str | os.PathLike | None = None) -> str:
    """PIL format name from an explicit format and/or the output file's extension (default PNG).

    Both given: they must agree (a .png file with JPEG bytes in it fools every viewer).
    """
    named = None
    if fmt:
        try:
            named = FORMATS[fmt.lower()]
        except KeyError:
            raise OutputError(f"unknown output format {fmt!r}; expected png, jpeg or webp") from None
    suffix = Path(path).suffix.lower().lstrip(".") if path is not None else ""
    if suffix and suffix not in FORMATS:
        raise OutputError(f"{path}: unknown image extension .{suffix}; use .png, .jpg or .webp")
    if suffix and named and FORMATS[suffix] != named:
        raise OutputError(f"{path}: the file name says .{suffix} but the format is {fmt}; make them agree "
                          "(or give only one of them)")
    return named or (FORMATS[suffix] if suffix else "PNG")


def encode_image(image, fmt: str = "PNG", infotext: str | None = None, quality: int | None = None,
                 notices: list[str] | None = None) -> bytes:
    """Encode with the infotext: PNG text chunk 'parameters', or EXIF UserComment for JPEG/WebP (quality
    1-100, default 95).

    JPEG's EXIF holds about 32,000 characters: a longer infotext is stored shortened (the prompts cut, the
    parameters line whole), and a notice is appended to `notices`. The image is never lost to its metadata.
    """
    from PIL import PngImagePlugin

    buffer = io.BytesIO()
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        if infotext:
            info.add_text("parameters", infotext)
        image.save(buffer, "PNG", pnginfo=info)
        return buffer.getvalue()
    if infotext and fmt == "JPEG":
        room = (JPEG_MAX_MARKER_BYTES - len(_exif_bytes(""))) // 2  # UTF-16: two bytes per unit
        shortened = shorten_infotext(infotext, room)
        if shortened != infotext and notices is not None:
            notices.append(f"the infotext is too long for JPEG metadata ({len(infotext):,} characters; JPEG holds "
                           f"about {room:,}): the file stores the prompts shortened (ending in …) and every "
                           "parameter; save as PNG or WebP to keep all of it")
        infotext = shortened
    image.save(buffer, fmt, quality=quality or 95, exif=_exif_bytes(infotext or None))
    return buffer.getvalue()


def _exif_bytes(infotext: str | None) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    if infotext is not None:
        # The EXIF "UNICODE" character code, UTF-16 big-endian: what A1111 writes and reads.
        exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"UNICODE\0" + infotext.encode("utf-16-be")
    return exif.tobytes()


def write_atomically(data: bytes, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write through a temporary file in the same folder, so a reader never sees a partial file.

    Without overwrite, the final step is a hard link, which fails if the name exists (no race).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(f"{path}: the folder {path.parent} does not exist")
    if not overwrite and path.exists():
        raise OutputError(f"{path}: already exists (pass --overwrite to replace it)")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600 files; give outputs the usual permissions
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputError(f"{path}: already exists (pass --overwrite to replace it)") from None
            except OSError as exc:  # filesystems without hard links: check-then-rename
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV) or path.exists():
                    raise
                os.replace(tmp, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OutputError(f"{path}: not enough disk space to write the image") from None
        if isinstance(exc, PermissionError):
            raise OutputError(f"{path}: permission denied") from None
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _read_umask() -> int:
    # Read once at import: os.umask can only be read by setting it, which is not thread-safe later on.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def save_image(image, path, *, fmt: str | None = None, infotext: str | None = None, overwrite: bool = False,
               notices: list[str] | None = None) -> Path:
    data = encode_image(image, resolve_format(fmt, path), infotext, notices=notices)
    return write_atomically(data, path, overwrite=overwrite)


def read_infotext(source: Any) -> str | None:
    """The generation parameters stored in an image (PNG 'parameters' or EXIF UserComment), or None."""
    from PIL import Image

    if isinstance(source, Image.Image):
        img = source
    else:
        img, _ = _open(source)
    text = img.info.get("parameters")
    if text:
        return str(text)
    raw = img.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    return _decode_user_comment(raw) if raw else None


def _decode_user_comment(raw) -> str | None:
    if isinstance(raw, str):
        return raw or None
    head, body = raw[:8], raw[8:]
    if head == b"UNICODE\0":
        # Big-endian is the standard; some writers use little-endian: pick the one with ASCII-like bytes.
        be_zeros = body[0::2].count(0)
        le_zeros = body[1::2].count(0)
        text = body.decode("utf-16-le" if le_zeros > be_zeros else "utf-16-be", errors="replace")
    elif head in (b"ASCII\0\0\0", b"\0" * 8):
        text = body.decode("utf-8", errors="replace")
    else:
        text = raw.decode("utf-8", errors="replace")
    return text.rstrip("\0") or None
