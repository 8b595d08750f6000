import io
import os
import re

import numpy as np
import pytest
from PIL import Image

from img2img import ImageError, OutputError
from img2img.geometry import plan_resize
from img2img.images import (
    apply_plan,
    encode_image,
    load_image,
    read_infotext,
    restore_size,
    save_image,
    write_atomically,
)
from img2img.testing import make_photo


def png_bytes(image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


def test_exif_orientation_is_applied(tmp_path):
    # Stored 60x40 with EXIF "rotate 90 CW to display" (6): the user sees a 40x60 portrait.
    stored = Image.new("RGB", (60, 40), "red")
    stored.paste(Image.new("RGB", (10, 40), "blue"), (0, 0))  # blue band on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif.tobytes(), quality=100)
    loaded = load_image(path)
    assert loaded.original_size == (40, 60)
    top_middle = loaded.image.getpixel((20, 3))  # the stored left edge is now on top
    assert top_middle[2] > 200 and top_middle[0] < 60


@pytest.mark.parametrize("background, expected", [("white", (255, 255, 255)), ("black", (0, 0, 0)),
                                                  ("#00ff00", (0, 255, 0))])
def test_alpha_is_composited_on_background(background, expected):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (255, 0, 0, 255))  # one opaque red pixel
    loaded = load_image(png_bytes(rgba), background=background)
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((5, 5)) == expected
    assert loaded.image.getpixel((0, 0)) == (255, 0, 0)


def test_transparent_palette_image():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putpixel((1, 1), 1)
    data = png_bytes(image, transparency=0)
    loaded = load_image(data, background="white")
    assert loaded.image.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.image.getpixel((1, 1)) == (200, 100, 50)


def test_16_bit_grayscale_is_scaled_not_clipped():
    array = np.full((4, 4), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    image = Image.fromarray(array)
    assert image.mode.startswith("I;16")
    loaded = load_image(png_bytes(image))
    assert loaded.image.getpixel((0, 0)) == (128, 128, 128)


def test_cmyk_and_grayscale_become_rgb():
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # red in CMYK
    buffer = io.BytesIO()
    cmyk.save(buffer, "JPEG", quality=100)
    red = load_image(buffer.getvalue()).image.getpixel((1, 1))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    gray = load_image(png_bytes(Image.new("L", (4, 4), 77))).image
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (77, 77, 77)


def test_animated_image_uses_first_frame_with_notice():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    loaded = load_image(buffer.getvalue())
    assert loaded.image.getpixel((2, 2))[0] > 200
    assert loaded.notices == ["<bytes> has 3 frames; using the first"]


def test_pixel_limit_checked_before_decoding():
    big = png_bytes(Image.new("RGB", (300, 200)))
    with pytest.raises(ImageError, match=r"300x200 is 60,000 pixels, over the limit of 50,000"):
        load_image(big, max_pixels=50_000)


def test_decompression_bomb_header():
    # A PNG header claiming 100000x100000 pixels; only the header is needed to refuse it.
    import zlib

    data = bytearray(png_bytes(Image.new("L", (1, 1))))
    data[16:24] = (100000).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # keep the IHDR chunk valid
    with pytest.raises(ImageError, match="pixels"):
        load_image(bytes(data))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "image data is empty"),
        (b"this is plain text, not a picture", "not an image"),
    ],
)
def test_bad_bytes(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data)


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes(png_bytes(Image.effect_noise((64, 64), 50).convert("RGB"))[:300])
    with pytest.raises(ImageError, match="cut.png: the image data is corrupt or truncated"):
        load_image(path)


def test_missing_empty_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="the file is empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)


def test_numpy_inputs_match_pil():
    rgb = (np.arange(4 * 6 * 3) % 256).astype(np.uint8).reshape(4, 6, 3)
    from_uint8 = load_image(rgb)
    from_float = load_image(rgb.astype(np.float32) / 255.0)
    from_pil = load_image(Image.fromarray(rgb))
    assert from_uint8.digest == from_pil.digest == from_float.digest
    with pytest.raises(ImageError, match="expected an HxW"):
        load_image(np.zeros((2, 2, 5), dtype=np.uint8))
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.full((2, 2, 3), np.nan, dtype=np.float32))


def test_digest_depends_on_pixels_not_container():
    image = Image.new("RGB", (8, 8), "orange")
    assert load_image(png_bytes(image)).digest == load_image(png_bytes(image, compress_level=0)).digest


@pytest.mark.parametrize("mode, target", [("stretch", (64, 64)), ("crop", (64, 64)), ("fill", (64, 64)),
                                          ("crop", (48, 96)), ("fill", (96, 48))])
def test_apply_plan_output_size(mode, target):
    source = Image.new("RGB", (90, 60), "blue")
    out = apply_plan(source, plan_resize(source.size, target, mode))
    assert out.size == target


def test_fill_extends_edges_instead_of_black_bars():
    source = Image.new("RGB", (100, 50), "white")
    source.paste(Image.new("RGB", (100, 6), "red"), (0, 0))  # red top rows
    out = apply_plan(source, plan_resize(source.size, (64, 64), "fill"))
    assert out.getpixel((32, 2))[0] > 200 and out.getpixel((32, 2))[1] < 80  # top band: stretched red row


def test_crop_keeps_the_centre():
    source = Image.new("RGB", (300, 100), "black")
    source.paste(Image.new("RGB", (100, 100), "white"), (100, 0))
    out = apply_plan(source, plan_resize(source.size, (64, 64), "crop"))
    assert out.getpixel((32, 32)) == (255, 255, 255) and out.getpixel((2, 32))[0] > 200


@pytest.mark.parametrize("name", ["out.png", "out.jpg", "out.webp"])
def test_infotext_round_trip_every_format(tmp_path, name):
    text = 'a "quoted" prompt\nNegative prompt: x\nSteps: 5, Sampler: Euler, Seed: 1, Model: "a, b"'
    path = save_image(Image.new("RGB", (16, 16), "teal"), tmp_path / name, infotext=text)
    assert read_infotext(path) == text
    assert Image.open(path).format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[name.split(".")[1]]


def test_never_overwrites_without_permission(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        write_atomically(b"new", path)
    assert path.read_bytes() == b"precious"
    write_atomically(b"new", path, overwrite=True)
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary files left behind


def test_missing_folder_and_bad_extension(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        write_atomically(b"x", tmp_path / "nope" / "a.png")
    with pytest.raises(OutputError, match="unknown image extension .gif"):
        save_image(Image.new("RGB", (4, 4)), tmp_path / "a.gif")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_is_reported(tmp_path, monkeypatch):
    # Route the temporary file to /dev/full, which fails every write with ENOSPC.
    import img2img.images as images

    def full_mkstemp(prefix, suffix, dir):
        return os.open("/dev/full", os.O_WRONLY), str(tmp_path / "never-created.tmp")

    monkeypatch.setattr(images.tempfile, "mkstemp", full_mkstemp)
    with pytest.raises(OutputError, match="not enough disk space"):
        write_atomically(b"x" * 100_000, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_encode_png_without_infotext_has_no_parameters():
    data = encode_image(Image.new("RGB", (4, 4)), "PNG", None)
    assert read_infotext(data) is None


def test_written_files_follow_the_umask(tmp_path):
    from img2img.images import _UMASK

    path = write_atomically(b"data", tmp_path / "a.png")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_UMASK  # not mkstemp's private 0600


def _edge_column(image) -> int:
    """The first column whose red channel is mostly bright (the left edge of the white block)."""
    pixels = np.asarray(image.convert("RGB"), dtype=float)[:, :, 0]
    return int(np.argmax(pixels.mean(axis=0) > 127))


@pytest.mark.parametrize("mode, target", [("stretch", (80, 56)), ("fill", (64, 64)), ("stretch", (64, 96)),
                                          ("crop", (48, 32)), ("fill", (96, 160)),
                                          ("fill", (160, 64))])  # bands left and right
def test_restore_size_lines_up_with_the_input(mode, target):
    # What keep_size does: plan -> generate (here: the planned input itself) -> back onto the input's pixels.
    source = Image.new("RGB", (96, 64), "black")
    source.paste(Image.new("RGB", (36, 64), "white"), (60, 0))  # white from column 60 on
    plan = plan_resize(source.size, target, mode)
    back = restore_size(apply_plan(source, plan), plan)
    assert back.size == source.size
    assert abs(_edge_column(back) - 60) <= 1


def test_restore_size_resizes_back_with_lanczos():
    # keep_size scales the result back up with the high-quality filter the rest of the tool uses (Lanczos):
    # a cheaper filter would blur the detail the model just generated
    generated = make_photo(64, 64, seed=3)
    plan = plan_resize((96, 80), (64, 64), "stretch")
    back = restore_size(generated, plan)
    assert back.tobytes() == generated.resize((96, 80), Image.Resampling.LANCZOS).tobytes()
    assert back.tobytes() != generated.resize((96, 80), Image.Resampling.BICUBIC).tobytes()


def test_restore_size_refuses_a_crop_that_cut_the_input():
    plan = plan_resize((96, 64), (64, 64), "crop")
    with pytest.raises(ValueError, match="^the plan cut part of the source off; the result cannot line up with all "
                                         "of it$"):
        restore_size(Image.new("RGB", (64, 64)), plan)


def _png_header_claiming(width: int, height: int) -> bytes:
    """A 1x1 grayscale PNG whose header claims width x height pixels (only the header is valid)."""
    import zlib

    data = bytearray(png_bytes(Image.new("L", (1, 1))))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def test_our_pixel_limit_replaces_pillows():
    # 200 MP is over Pillow's own decompression-bomb limit (2 x 89.5 MP) but under the limit asked for:
    # it is not refused for its size (here it then fails as the truncated file it is).
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(_png_header_claiming(20_000, 10_000), max_pixels=300_000_000)
    # and over our limit the message names ours, not Pillow's
    with pytest.raises(ImageError, match="20000x10000 is 200,000,000 pixels, over the limit of 150,000,000"):
        load_image(_png_header_claiming(20_000, 10_000), max_pixels=150_000_000)


def test_no_pillow_warning_under_our_limit():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns from 89.5 MP on; 95 MP is under our default 100 MP
        with pytest.raises(ImageError, match="corrupt or truncated"):
            load_image(_png_header_claiming(9_500, 10_000))
    from PIL import Image as PILImage

    assert PILImage.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3)  # Pillow's own setting is left as it was


def test_long_infotext_is_shortened_to_fit_jpeg_exif():
    params = "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 64x64"
    text = f"{'castle, ' * 6000}\nNegative prompt: {'blurry, ' * 2000}\n{params}"
    notices: list[str] = []
    data = encode_image(Image.new("RGB", (16, 16)), "JPEG", text, notices=notices)
    stored = read_infotext(data)
    assert stored.endswith(params) and stored.startswith("castle, castle")
    assert "\nNegative prompt: blurry" in stored and len(stored) < len(text)
    assert notices and "too long for JPEG metadata" in notices[0] and "PNG" in notices[0]
    # PNG and WebP carry it whole
    for fmt in ("PNG", "WEBP"):
        notices = []
        assert read_infotext(encode_image(Image.new("RGB", (16, 16)), fmt, text, notices=notices)) == text
        assert notices == []


def test_a_shortened_jpeg_infotext_fills_the_exif_room_and_says_so(tmp_path):
    params = "Steps: 25, Seed: 1, Size: 64x64"
    text = f"{'castle, ' * 6000}\nNegative prompt: {'blurry, ' * 6000}\n{params}"
    notices: list[str] = []
    path = save_image(Image.new("RGB", (16, 16)), tmp_path / "long.jpg", infotext=text, notices=notices)
    assert len(notices) == 1
    room = int(re.search(r"JPEG holds about ([\d,]+)\)", notices[0])[1].replace(",", ""))
    assert 32_000 <= room < 32_768  # "about 32,000 characters": 64 KB of UTF-16, less the EXIF structure
    assert notices[0] == (
        f"the infotext is too long for JPEG metadata ({len(text):,} characters; JPEG holds about {room:,}): the file "
        "stores the prompts shortened (ending in …) and every parameter; save as PNG or WebP to keep all of it")
    stored = read_infotext(path)
    assert len(stored.encode("utf-16-be")) // 2 == room  # the whole room used, nothing more
    prompt, negative = stored.split("\n")[0], stored.split("\nNegative prompt: ")[1].split("\n")[0]
    assert prompt.endswith("…") and negative.endswith("…") and stored.endswith("\n" + params)
    # an infotext that fits is stored as it is, without a notice
    notices = []
    short = f"{'castle, ' * 100}\n{params}"
    assert read_infotext(encode_image(Image.new("RGB", (16, 16)), "JPEG", short, notices=notices)) == short
    assert notices == []


def test_display_p3_input_is_converted_to_srgb():
    from img2img.testing import display_p3_profile

    p3 = display_p3_profile()
    colour = (200, 60, 40)
    source = Image.new("RGB", (8, 8), colour)
    loaded = load_image(png_bytes(source, icc_profile=p3))
    # What Display P3 (200, 60, 40) is in sRGB, computed from the two colour spaces' published primaries.
    expected = _p3_to_srgb(colour)
    assert max(abs(a - b) for a, b in zip(loaded.image.getpixel((3, 3)), expected)) <= 2
    assert max(abs(a - b) for a, b in zip(expected, colour)) > 10  # a real shift, not rounding
    assert loaded.notices == ["<bytes>: converted from its colour profile (Display P3) to sRGB"]


def test_srgb_tagged_and_untagged_inputs_are_left_alone():
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = Image.new("RGB", (8, 8), (200, 60, 40))
    assert load_image(png_bytes(source, icc_profile=srgb)).image.getpixel((1, 1)) == (200, 60, 40)
    assert load_image(png_bytes(source, icc_profile=srgb)).notices == []
    assert load_image(png_bytes(source)).image.getpixel((1, 1)) == (200, 60, 40)


def test_p3_with_transparency_is_converted_before_compositing():
    from img2img.testing import display_p3_profile

    rgba = Image.new("RGBA", (8, 8), (200, 60, 40, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    loaded = load_image(png_bytes(rgba, icc_profile=display_p3_profile()), background="white")
    assert loaded.image.getpixel((0, 0)) == (255, 255, 255)  # the background colour is sRGB already
    assert max(abs(a - b) for a, b in zip(loaded.image.getpixel((3, 3)), _p3_to_srgb((200, 60, 40)))) <= 2


def test_unreadable_colour_profile_is_reported_not_fatal():
    source = Image.new("RGB", (8, 8), (200, 60, 40))
    loaded = load_image(png_bytes(source, icc_profile=b"definitely not an ICC profile"))
    assert loaded.image.getpixel((1, 1)) == (200, 60, 40)
    assert loaded.notices == ["<bytes>: its colour profile cannot be read; the pixels are taken as sRGB"]


def _p3_to_srgb(rgb):
    """Reference conversion: both spaces share the sRGB transfer curve and D65 white; only primaries differ."""
    def linear(c):
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    def encoded(c):
        c = min(max(c, 0.0), 1.0)
        return 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055

    def to_xyz(primaries):  # RGB -> XYZ matrix from xy chromaticities and the D65 white point
        m = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T
        white = np.array([0.95047, 1.0, 1.08883])
        return m * np.linalg.solve(m, white)

    p3 = to_xyz([(0.680, 0.320), (0.265, 0.690), (0.150, 0.060)])
    srgb = to_xyz([(0.640, 0.330), (0.300, 0.600), (0.150, 0.060)])
    out = np.linalg.solve(srgb, p3 @ np.array([linear(c) for c in rgb]))
    return tuple(round(encoded(c) * 255) for c in out)


def test_array_shapes_and_dtypes():
    grey = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    for array in (grey, grey[:, :, None]):  # HxW and HxWx1
        loaded = load_image(array)
        assert loaded.image.mode == "RGB" and loaded.image.getpixel((1, 0)) == (128, 128, 128)
    sixteen = load_image(np.array([[0, 65535, 32896]], dtype=np.uint16)).image
    assert [sixteen.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (255, 255, 255), (128, 128, 128)]
    floats = load_image(np.array([[-0.5, 0.0, 0.5, 0.999, 2.0]], dtype=np.float64)).image
    assert [floats.getpixel((x, 0))[0] for x in range(5)] == [0, 0, 128, 255, 255]  # rounded, clipped
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    loaded = load_image(rgba, background="#ff0000")
    assert loaded.image.getpixel((0, 0)) == (10, 20, 30) and loaded.image.getpixel((1, 1)) == (255, 0, 0)
    shape = r"expected an HxW, HxWx3 or HxWx4 array, got shape "
    for bad, message in ((np.zeros((2, 2), dtype=np.int32), "unsupported dtype int32; use uint8, uint16 or float"),
                         (np.zeros((0, 3, 3), dtype=np.uint8), shape + r"\(0, 3, 3\)"),
                         (np.zeros((2, 2, 2), dtype=np.uint8), shape + r"\(2, 2, 2\)"),
                         (np.zeros(4, dtype=np.uint8), shape + r"\(4,\)"),
                         (np.array([[np.inf]]), "contains NaN or infinite values")):
        with pytest.raises(ImageError, match=f"^<array>: {message}"):
            load_image(bad)


def test_sources_are_named_in_messages(tmp_path):
    with pytest.raises(ImageError, match="^cannot read an image from a int$"):
        load_image(42)
    with pytest.raises(ImageError, match="^<bytearray>: not an image, or a format Pillow cannot read$"):
        load_image(bytearray(b"nonsense"))
    with pytest.raises(ImageError, match="^image data is empty"):
        load_image(memoryview(b""))
    with pytest.raises(ImageError, match=r"^<image>: 3x2 is 6 pixels, over the limit of 5$"):
        load_image(Image.new("RGB", (3, 2)), max_pixels=5)
    assert load_image(Image.new("RGB", (3, 2)), max_pixels=6).original_size == (3, 2)  # the limit itself is fine
    path = tmp_path / "p.png"
    path.write_bytes(png_bytes(Image.new("RGB", (3, 2))))
    with pytest.raises(ImageError, match=f"^{path}: 3x2 is 6 pixels"):
        load_image(str(path), max_pixels=5)


@pytest.mark.parametrize("mode, values, expected", [
    ("I", [[0, 100, 255]], [0, 100, 255]),  # 32-bit integers within 0..255 are 8-bit values
    ("I", [[0, 65535, 32768]], [0, 255, 128]),  # else 16-bit
    ("F", [[0.0, 2.0, 4.0]], [0, 128, 255]),  # float: scaled to the brightest value
    ("F", [[0.0, 0.5, 1.0]], [0, 128, 255]),
    ("F", [[0.0, 0.25, 0.5]], [0, 64, 128]),  # never brightened past 1.0
])
def test_wide_modes_are_scaled(mode, values, expected):
    image = Image.fromarray(np.array(values, dtype=np.int32 if mode == "I" else np.float32), mode)
    rgb = load_image(image).image
    assert [rgb.getpixel((x, 0)) for x in range(3)] == [(v, v, v) for v in expected]


def test_grey_with_alpha_and_transparent_grey():
    la = Image.new("LA", (2, 1), (200, 255))
    la.putpixel((1, 0), (200, 0))
    assert [load_image(la, background="black").image.getpixel((x, 0)) for x in range(2)] == [
        (200, 200, 200), (0, 0, 0)]
    grey = Image.new("L", (2, 1), 9)
    grey.putpixel((1, 0), 50)
    loaded = load_image(png_bytes(grey, transparency=9), background="#0000ff").image
    assert [loaded.getpixel((x, 0)) for x in range(2)] == [(0, 0, 255), (50, 50, 50)]
    opaque_palette = Image.new("P", (1, 1), 0)
    opaque_palette.putpalette([1, 2, 3] + [0] * 765)
    assert load_image(opaque_palette).image.getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize("fmt, path, expected", [("png", None, "PNG"), ("JPG", "x.jpg", "JPEG"), ("webp", None, "WEBP"),
                                                 (None, "a/b.JPEG", "JPEG"), (None, "b.webp", "WEBP"),
                                                 (None, "noext", "PNG"), (None, None, "PNG"), ("", "x.jpg", "JPEG")])
def test_resolve_format(fmt, path, expected):
    from img2img.images import resolve_format

    assert resolve_format(fmt, path) == expected


def test_unknown_format_is_named():
    from img2img.images import resolve_format

    with pytest.raises(OutputError, match="^unknown output format 'tiff'; expected png, jpeg or webp$"):
        resolve_format("tiff")
    with pytest.raises(OutputError, match=r"^x\.tif: unknown image extension \.tif; use \.png, \.jpg or \.webp$"):
        resolve_format(None, "x.tif")


def test_jpeg_quality_and_no_infotext():
    image = Image.effect_noise((32, 32), 60).convert("RGB")
    default, low = encode_image(image, "JPEG"), encode_image(image, "JPEG", quality=20)
    assert len(low) < len(default) == len(encode_image(image, "JPEG", quality=95))
    assert read_infotext(default) is None


@pytest.mark.parametrize("raw, text", [
    (b"UNICODE\0" + "ünï".encode("utf-16-be"), "ünï"),
    (b"UNICODE\0" + "abc".encode("utf-16-le"), "abc"),  # some writers use little-endian
    (b"ASCII\0\0\0" + b"Steps: 1\0\0", "Steps: 1"),
    (b"\0" * 8 + "é".encode(), "é"),  # undefined character code: UTF-8
    (b"plain text", "plain text"),
    ("as a str", "as a str"),
    (b"ASCII\0\0\0\0\0", None),
    ("", None),
])
def test_user_comment_spellings(raw, text):
    from img2img.images import _decode_user_comment

    assert _decode_user_comment(raw) == text


def test_jpeg_user_comment_written_by_another_tool_is_read():
    from img2img.images import EXIF_IFD, USER_COMMENT

    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = b"ASCII\0\0\0a prompt\nSteps: 3"
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "JPEG", exif=exif.tobytes())
    assert read_infotext(buffer.getvalue()) == "a prompt\nSteps: 3"
    assert read_infotext(Image.open(io.BytesIO(png_bytes(Image.new("RGB", (2, 2)))))) is None


def test_fill_bands_on_every_side():
    """Resize and fill stretches the outermost rows (tall target) or columns (wide target) over the bands."""
    wide = Image.new("RGB", (40, 20), "white")
    wide.paste(Image.new("RGB", (40, 2), "red"), (0, 0))
    wide.paste(Image.new("RGB", (40, 2), "blue"), (0, 18))
    tall_out = apply_plan(wide, plan_resize(wide.size, (40, 40), "fill"))
    assert tall_out.getpixel((20, 0)) == (255, 0, 0) and tall_out.getpixel((20, 39)) == (0, 0, 255)
    assert tall_out.getpixel((20, 20)) == (255, 255, 255)
    tall = Image.new("RGB", (20, 40), "white")
    tall.paste(Image.new("RGB", (2, 40), "green"), (0, 0))
    tall.paste(Image.new("RGB", (2, 40), "yellow"), (18, 0))
    wide_out = apply_plan(tall, plan_resize(tall.size, (40, 40), "fill"))
    assert wide_out.getpixel((0, 20)) == (0, 128, 0) and wide_out.getpixel((39, 20)) == (255, 255, 0)
    assert wide_out.getpixel((20, 20)) == (255, 255, 255)


def test_plans_that_change_nothing_return_the_same_pixels():
    image = Image.effect_noise((24, 16), 40).convert("RGB")
    assert apply_plan(image, plan_resize((24, 16), (24, 16), "crop")).tobytes() == image.tobytes()
    cropped = apply_plan(image, plan_resize((24, 16), (16, 16), "crop"))
    assert cropped.tobytes() == image.crop((4, 0, 20, 16)).tobytes()  # the centre, not resampled


def test_written_files_are_complete_and_refuse_a_taken_name(tmp_path):
    target = tmp_path / "a.png"
    assert write_atomically(b"first", target) == target and target.read_bytes() == b"first"
    with pytest.raises(OutputError, match=f"^{target}: already exists \\(pass --overwrite to replace it\\)$"):
        write_atomically(b"second", str(target))
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def noise(size, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_resizes_use_lanczos_on_the_cropped_region():
    image = noise((30, 20))
    stretched = apply_plan(image, plan_resize((30, 20), (16, 16), "stretch"))
    assert stretched.tobytes() == image.resize((16, 16), Image.Resampling.LANCZOS).tobytes()
    cropped = apply_plan(image, plan_resize((30, 20), (16, 16), "crop"))
    assert cropped.tobytes() == image.crop((5, 0, 25, 20)).resize((16, 16), Image.Resampling.LANCZOS).tobytes()


@pytest.mark.parametrize("source, target", [((64, 62), (64, 64)), ((64, 59), (64, 64)), ((62, 64), (64, 64)),
                                            ((59, 64), (64, 64))])
def test_fill_pastes_the_image_whole_and_stretches_its_edges(source, target):
    """Bands of one pixel and of several: each band repeats the image's nearest row (or column)."""
    image = noise(source, seed=sum(source))
    plan = plan_resize(source, target, "fill")
    out = np.asarray(apply_plan(image, plan)).astype(int)
    (sw, sh), (ox, oy) = plan.scaled, plan.offset
    scaled = np.asarray(image if image.size == plan.scaled else image.resize(plan.scaled, Image.Resampling.LANCZOS))
    assert np.array_equal(out[oy:oy + sh, ox:ox + sw], scaled)  # pasted whole, at the offset
    bands = {"top": (out[:oy], scaled[:1]), "bottom": (out[oy + sh:], scaled[-1:]),
             "left": (out[:, :ox], scaled[:, :1]), "right": (out[:, ox + sw:], scaled[:, -1:])}
    for name, (band, edge) in bands.items():
        if band.size:
            assert np.abs(band - edge.astype(int)).max() <= 2, name  # the edge, stretched (bicubic rounding)
    assert sum(b.size > 0 for b, _ in bands.values()) == 2


def test_more_wide_modes():
    def row(mode, values, dtype):
        image = Image.fromarray(np.array([values], dtype=dtype), "I" if dtype == np.int32 else "F")
        return [load_image(image).image.getpixel((x, 0))[0] for x in range(len(values))]

    assert row("I", [0, 128, 256], np.int32) == [0, 0, 1]  # above 255: 16-bit values
    assert row("I", [0, 70000], np.int32) == [0, 255]  # beyond 16 bits: clipped, not wrapped around
    assert row("F", [-1.0, 0.5, 1.0], np.float32) == [0, 128, 255]  # negative: black, not wrapped
    big_endian = Image.frombytes("I;16B", (2, 1), bytes([0x80, 0x00, 0xFF, 0xFF]))
    little_endian = Image.frombytes("I;16L", (2, 1), bytes([0x00, 0x80, 0xFF, 0xFF]))
    for image in (big_endian, little_endian):
        rgb = load_image(image).image
        assert [rgb.getpixel((x, 0)) for x in range(2)] == [(128, 128, 128), (255, 255, 255)], image.mode
    # 65535 is white: 33025 / 65535 x 255 = 128.5 rounds to 129 (over 65536 it would be 128); 39578 gives 154
    sixteen = Image.frombytes("I;16", (3, 1), np.array([33025, 39578, 65278], dtype="<u2").tobytes())
    assert [load_image(sixteen).image.getpixel((x, 0))[0] for x in range(3)] == [129, 154, 254]
    assert load_image(np.array([[0.6, 0.3]])).image.getpixel((0, 0))[0] == 153  # floats: x 255, rounded


@pytest.mark.parametrize("mode, pixel, expected", [
    ("LA", (100, 0), (255, 255, 255)),
    ("RGBa", (50, 0, 0, 128), (177, 127, 127)), ("RGBA", (100, 0, 0, 128), (177, 127, 127)),
    ("PA", (0, 0), (255, 255, 255)),
])
def test_every_mode_with_alpha_is_composited(mode, pixel, expected):
    image = Image.new(mode, (1, 1), pixel)
    if mode == "PA":
        image.putpalette([9, 9, 9] * 256)
    assert load_image(image).image.getpixel((0, 0)) == expected  # the default background is white


def test_exact_hash_and_defaults():
    loaded = load_image(Image.new("RGB", (1, 1), (1, 2, 3)))
    assert loaded.digest == "039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81"  # sha256 of 1,2,3
    assert loaded.notices == []
    with pytest.raises(ImageError, match=r"^<array>: 3x2 is 6 pixels, over the limit of 5$"):
        load_image(np.zeros((2, 3, 3), dtype=np.uint8), max_pixels=5)
    with pytest.raises(ImageError, match=r"^<image>: the image has no pixels \(0x5\)$"):
        load_image(Image.new("RGB", (0, 5)))
    frames = [Image.new("RGB", (4, 4), c) for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert load_image(buffer.getvalue()).notices == ["<bytes> has 2 frames; using the first"]


def test_png_is_the_default_and_carries_a_text_chunk():
    png = encode_image(Image.new("RGB", (4, 4)), infotext="a prompt")  # PNG is the default
    opened = Image.open(io.BytesIO(png))
    assert opened.format == "PNG" and opened.text == {"parameters": "a prompt"}


def test_save_image_format_and_overwrite(tmp_path):
    path = tmp_path / "x.png"
    with pytest.raises(OutputError, match=r"the file name says \.png but the format is jpeg; make them agree "
                                          r"\(or give only one of them\)$"):
        save_image(Image.new("RGB", (4, 4)), path, fmt="jpeg")
    assert not path.exists()
    save_image(Image.new("RGB", (4, 4)), tmp_path / "y.jpg", fmt="jpeg")
    assert Image.open(tmp_path / "y.jpg").format == "JPEG"
    save_image(Image.new("RGB", (4, 4)), path)
    with pytest.raises(OutputError, match="already exists"):
        save_image(Image.new("RGB", (4, 4)), path)
    save_image(Image.new("RGB", (4, 4), "red"), path, overwrite=True)
    assert Image.open(path).format == "PNG" and Image.open(path).getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize("raw, text", [
    (b"UNICODE\0" + "日本".encode("utf-16-be"), "日本"),  # no zero bytes either way: big-endian, the standard
    (b"UNICODE\0" + "abcdef".encode("utf-16-le"), "abcdef"),
    (b"UNICODE\0" + "ab".encode("utf-16-be") + b"\0", "ab\ufffd"),  # an odd byte: replaced, not an error
    (b"ASCII\0\0\0" + b"\xff ok", "\ufffd ok"),
    (b"\xffraw", "\ufffdraw"),
    (b"ASCII\0\0\0MAX\0", "MAX"),  # only NULs are stripped from the end
])
def test_user_comment_corners(raw, text):
    from img2img.images import _decode_user_comment

    assert _decode_user_comment(raw) == text


def test_the_temporary_file_is_hidden_beside_the_target(tmp_path, monkeypatch):
    import img2img.images as images

    seen = []
    real_link = images.os.link
    monkeypatch.setattr(images.os, "link", lambda src, dst: (seen.append(src), real_link(src, dst))[1])
    write_atomically(b"data", tmp_path / "out.png")
    (tmp,) = seen
    assert os.path.dirname(tmp) == str(tmp_path) and os.path.basename(tmp).startswith(".out.png.")
    assert tmp.endswith(".tmp") and not os.path.exists(tmp)


@pytest.mark.parametrize("error, outcome", [
    (OSError(1, "Operation not permitted"), "written"),  # no hard links here: rename instead
    (OSError(95, "Operation not supported"), "written"),
    (OSError(5, "Input/output error"), r"^{path}: cannot write \(Input/output error\)$"),
    (FileExistsError(17, "File exists"), r"^{path}: already exists \(pass --overwrite to replace it\)$"),
    (PermissionError(13, "Permission denied"), r"^{path}: permission denied$"),
])
def test_hard_link_failures(tmp_path, monkeypatch, error, outcome):
    import img2img.images as images

    def fail(src, dst):
        raise error

    monkeypatch.setattr(images.os, "link", fail)
    path = tmp_path / "a.png"
    if outcome == "written":
        assert write_atomically(b"data", path) == path and path.read_bytes() == b"data"
    else:
        with pytest.raises(OutputError, match=outcome.format(path=re.escape(str(path)))):
            write_atomically(b"data", path)
        assert not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == (["a.png"] if outcome == "written" else [])


@pytest.mark.parametrize("raw, text", [
    (b"UNICODE\0" + "日a".encode("utf-16-le"), "日a"),  # one zero byte, in the odd place: little-endian
    (b"UNICODE\0" + "\x01".encode("utf-16-le"), "\x01"),
])
def test_user_comment_byte_order_is_read_from_the_zero_bytes(raw, text):
    from img2img.images import _decode_user_comment

    assert _decode_user_comment(raw) == text


def test_a_known_format_with_a_broken_header():
    with pytest.raises(ImageError, match=r"^<bytes>: not an image, or a corrupt one \(Truncated File Read\)$"):
        load_image(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR")


def test_premultiplied_grey_alpha_is_composited():
    grey = Image.new("LA", (2, 1), (100, 255))
    grey.putpixel((1, 0), (50, 0))  # fully transparent: the background shows
    loaded = load_image(grey.convert("La"), background="#ff0000").image
    assert [loaded.getpixel((x, 0)) for x in range(2)] == [(100, 100, 100), (255, 0, 0)]


def test_palette_transparency_is_by_index_not_by_colour():
    # index 0 is transparent; index 2 has the same colour and stays opaque (GIF-style palettes repeat colours)
    image = Image.new("P", (3, 1), 0)
    image.putpalette([10, 20, 30, 200, 100, 50, 10, 20, 30] + [0] * 759)
    image.putpixel((1, 0), 1)
    image.putpixel((2, 0), 2)
    loaded = load_image(png_bytes(image, transparency=0), background="#00ff00").image
    assert [loaded.getpixel((x, 0)) for x in range(3)] == [(0, 255, 0), (200, 100, 50), (10, 20, 30)]


def test_one_bit_and_16_bit_grey_png_colour_keys_are_composited():
    bilevel = Image.new("1", (2, 1), 0)
    bilevel.putpixel((1, 0), 1)
    loaded = load_image(png_bytes(bilevel, transparency=0), background="#0000ff").image  # black is transparent
    assert [loaded.getpixel((x, 0)) for x in range(2)] == [(0, 0, 255), (255, 255, 255)]
    deep = Image.fromarray(np.array([[0, 65535, 32768, 32769]], dtype=np.uint16))
    assert deep.mode.startswith("I;16")
    loaded = load_image(png_bytes(deep, transparency=32768), background="#0000ff").image  # the key: 16-bit, exact
    assert [loaded.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (255, 255, 255), (0, 0, 255), (128, 128, 128)]


def test_rgb_png_colour_key_is_composited_on_the_background():
    rgb = Image.new("RGB", (2, 1), (10, 20, 30))
    rgb.putpixel((1, 0), (200, 0, 0))
    buffer = io.BytesIO()
    rgb.save(buffer, "PNG", transparency=(200, 0, 0))  # tRNS: this exact colour is transparent
    loaded = load_image(buffer.getvalue(), background="#00ff00").image
    assert [loaded.getpixel((x, 0)) for x in range(2)] == [(10, 20, 30), (0, 255, 0)]
