"""masks.py: box arithmetic as tables (A1111's numbers), mask loading rules, blur, fill, overlay, outpaint canvas."""

import io

import numpy as np
import pytest
from PIL import Image

from img2img import ImageError, InvalidRequest
from img2img.masks import (
    LoadedMask,
    blur,
    bounding_box,
    fill,
    fit_box_to_aspect,
    gaussian_kernel,
    load_mask,
    mask_from_alpha,
    outpaint,
    pad_box,
    parse_blur,
    parse_outpaint,
    paste_back,
    plan_masked_area,
    plan_outpaint,
    prepare_inpaint,
    repaint_area,
)
from img2img.testing import make_photo

IMAGE = (100, 80)


@pytest.mark.parametrize("box, target, expected", [
    ((40, 30, 60, 50), (64, 64), (40, 30, 60, 50)),  # already square
    ((10, 30, 50, 40), (64, 64), (10, 15, 50, 55)),  # wide: rows added, centred
    ((0, 0, 20, 10), (64, 64), (0, 0, 20, 20)),  # top-left corner: pushed back inside, grows down
    ((90, 75, 100, 80), (64, 64), (90, 70, 100, 80)),  # bottom-right corner: grows up
    ((95, 0, 100, 80), (64, 64), (20, 0, 100, 80)),  # tall strip at the right edge: grows left
    ((0, 0, 100, 80), (64, 64), (0, 0, 100, 80)),  # full image: cannot grow, stays inside
    ((10, 10, 30, 40), (512, 384), (0, 10, 40, 40)),  # 4:3 target; 30 * (512/384) is exactly 40
    ((50, 40, 51, 41), (64, 32), (50, 40, 52, 41)),  # one pixel, 2:1 target: the odd pixel goes right
    ((50, 40, 51, 41), (64, 64), (50, 40, 51, 41)),  # one pixel, square target
])
def test_fit_box_to_aspect(box, target, expected):
    assert fit_box_to_aspect(box, target, IMAGE) == expected


@pytest.mark.parametrize("box, padding, expected", [
    ((40, 30, 60, 50), 0, (40, 30, 60, 50)),
    ((40, 30, 60, 50), 8, (32, 22, 68, 58)),
    ((0, 0, 10, 10), 16, (0, 0, 26, 26)),  # padding past the top-left border is cut
    ((90, 70, 100, 80), 32, (58, 38, 100, 80)),  # and past the bottom-right one
    ((0, 0, 100, 80), 64, (0, 0, 100, 80)),
])
def test_pad_box(box, padding, expected):
    assert pad_box(box, padding, IMAGE) == expected


@pytest.mark.parametrize("mask_box, padding, native, size, expected_box, expected_size", [
    # automatic size: the padded box's aspect at the model's native area (64 px here), snapped to 8
    ((40, 30, 60, 50), 0, 64, None, (40, 30, 60, 50), (64, 64)),
    ((40, 30, 60, 50), 10, 64, None, (30, 20, 70, 60), (64, 64)),
    ((10, 30, 50, 40), 0, 64, None, (10, 30, 50, 40), (128, 32)),  # 4:1 strip: a 4:1 generation
    ((0, 0, 5, 5), 32, 64, None, (0, 0, 37, 37), (64, 64)),  # corner, padding past the border
    ((99, 79, 100, 80), 0, 64, None, (99, 79, 100, 80), (64, 64)),  # one pixel in the corner
    ((0, 0, 100, 80), 32, 64, None, (0, 0, 100, 80), (72, 56)),  # full mask: the whole image
    # given size: the box grows to its aspect (A1111's inpaint_full_res with width/height)
    ((40, 30, 60, 50), 0, 64, (128, 64), (30, 30, 70, 50), (128, 64)),
    ((0, 0, 5, 5), 0, 64, (64, 128), (0, 0, 5, 10), (64, 128)),
])
def test_plan_masked_area(mask_box, padding, native, size, expected_box, expected_size):
    width, height = size or (None, None)
    plan = plan_masked_area(mask_box, padding, IMAGE, native, width, height)
    assert plan.box == expected_box
    assert plan.size == expected_size
    box_size = (expected_box[2] - expected_box[0], expected_box[3] - expected_box[1])
    assert plan.forward.source == box_size and plan.forward.target == expected_size
    assert plan.back.source == expected_size and plan.back.target == box_size


def test_gaussian_kernel_is_a1111s():
    kernel = gaussian_kernel(4)
    assert len(kernel) == 2 * int(2.5 * 4 + 0.5) + 1 == 21
    assert kernel.sum() == pytest.approx(1.0)
    assert np.argmax(kernel) == 10 and kernel[0] == pytest.approx(kernel[-1])
    assert kernel[10] / kernel[14] == pytest.approx(np.exp(16 / 32))


def _mask(size=(40, 30), box=(15, 10, 25, 20)):
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def test_blur_spreads_along_its_own_axis_only():
    mask = _mask()
    assert blur(mask, 0, 0) is mask
    across = np.asarray(blur(mask, 3, 0))
    down = np.asarray(blur(mask, 0, 3))
    both = np.asarray(blur(mask, 3, 3))
    assert across[15, 12] > 0 and across[7, 20] == 0  # x blur: left of the box yes, above it no
    assert down[7, 20] > 0 and down[15, 12] == 0
    assert both[7, 12] > 0
    assert across[15, 20] > 220 and 100 < across[15, 15] < 155  # edges fall to about half
    assert np.array_equal(across[:, ::-1], np.asarray(blur(mask.transpose(Image.FLIP_LEFT_RIGHT), 3, 0)))


def test_blur_at_the_border_mirrors():
    mask = _mask(box=(0, 0, 10, 30))  # touches the left border
    row = np.asarray(blur(mask, 4, 0))[5]
    assert row[0] >= 250 and row[9] > 120  # no dark band pulled in from outside the image (zero padding: ~128)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_load_mask_from_path_bytes_pil_and_arrays(tmp_path):
    mask = _mask()
    path = tmp_path / "mask.png"
    mask.convert("RGB").save(path)  # an RGB mask file works (luminance)
    expected = np.asarray(mask)
    for source in (path, str(path), path.read_bytes(), mask, expected, expected > 0, expected / 255.0):
        loaded = load_mask(source, (40, 30), max_pixels=10**6)
        assert np.array_equal(np.asarray(loaded.image), expected), type(source)
        assert loaded.digest == load_mask(mask, (40, 30), max_pixels=10**6).digest


def test_a_mask_with_transparency_is_read_from_its_alpha_like_a1111():
    painted = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    painted.paste((20, 20, 20, 200), (15, 10, 25, 20))  # dark but opaque strokes = repaint
    loaded = load_mask(painted, (40, 30), max_pixels=10**6)
    assert np.array_equal(np.asarray(loaded.image), np.asarray(_mask()))
    soft = load_mask(painted, (40, 30), max_pixels=10**6, round_alpha=False)
    assert np.asarray(soft.image)[15, 20] == 200


def test_load_mask_errors(tmp_path):
    _mask().save(tmp_path / "m.png")
    with pytest.raises(InvalidRequest, match=r"mask .*m.png: 40x30 does not match the image's 64x64"):
        load_mask(tmp_path / "m.png", (64, 64), max_pixels=10**6)
    with pytest.raises(ImageError, match="no such file"):
        load_mask(tmp_path / "missing.png", (40, 30), max_pixels=10**6)
    with pytest.raises(ImageError, match="not an image"):
        load_mask(b"not a picture", (40, 30), max_pixels=10**6)
    with pytest.raises(ImageError, match="over the limit"):
        load_mask(_png(_mask()), (40, 30), max_pixels=100)


def test_mask_follows_exif_rotation():
    mask = _mask((40, 30), (0, 0, 10, 5))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    buffer = io.BytesIO()
    mask.save(buffer, "JPEG", exif=exif.tobytes(), quality=100)
    loaded = load_mask(buffer.getvalue(), (30, 40), max_pixels=10**6)
    assert loaded.image.size == (30, 40)
    assert np.asarray(loaded.image)[2, 27] > 200 and np.asarray(loaded.image)[2, 2] < 50


def test_mask_from_alpha_transparent_means_repaint():
    image = make_photo(40, 30).convert("RGBA")
    image.paste((0, 0, 0, 0), (15, 10, 25, 20))
    loaded = mask_from_alpha(_png(image), max_pixels=10**6)
    assert np.array_equal(np.asarray(loaded.image), np.asarray(_mask()))
    with pytest.raises(InvalidRequest, match="has no transparent pixels"):
        mask_from_alpha(_png(make_photo(40, 30)), max_pixels=10**6)


def test_repaint_area_refuses_empty_masks_and_inverts():
    black = LoadedMask(Image.new("L", (8, 8), 0), "")
    white = LoadedMask(Image.new("L", (8, 8), 255), "")
    with pytest.raises(InvalidRequest, match="nothing to repaint: the mask is all black"):
        repaint_area(black)
    with pytest.raises(InvalidRequest, match="all white, so inverted it selects no pixel"):
        repaint_area(white, inverted=True)
    assert np.asarray(repaint_area(black, inverted=True)).min() == 255
    assert bounding_box(repaint_area(LoadedMask(_mask(), ""), inverted=True)) == (0, 0, 40, 30)


def test_fill_takes_colours_from_around_the_mask():
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    image.paste((30, 30, 200), (32, 0, 64, 48))  # left red, right blue
    mask = _mask((64, 48), (8, 16, 20, 32))  # a hole in the red half
    filled = np.asarray(fill(image, mask)).astype(int)
    outside = np.asarray(mask) == 0
    assert np.array_equal(filled[outside], np.asarray(image).astype(int)[outside])
    hole = filled[20:28, 10:18]
    assert (hole[:, :, 0] > hole[:, :, 2] + 60).all()  # the hole is red-ish, not grey or blue


def test_paste_back_keeps_outside_pixels_exactly():
    image = make_photo(100, 80)
    mask = _mask((100, 80), (70, 10, 90, 30))
    inputs = prepare_inpaint(image, mask, blur_xy=(4, 4), fill_mode="original", area="masked", padding=8,
                             resize_mode="crop", native=64, width=None, height=None)
    assert inputs.area.box == (52, 0, 100, 48) and inputs.size == (64, 64)  # blur reaches 10 px, then 8 padding
    assert inputs.image.size == inputs.mask.size == (64, 64)
    generated = Image.new("RGB", inputs.size, (0, 255, 0))
    out = np.asarray(paste_back(generated, inputs)).astype(int)
    original = np.asarray(image).astype(int)
    overlay = np.asarray(inputs.overlay_mask)
    assert out.shape == original.shape  # "only masked" answers at the input's size
    assert np.array_equal(out[overlay == 0], original[overlay == 0])
    assert (out[overlay == 255] == [0, 255, 0]).all()


def test_whole_picture_overlay_is_the_doubled_blurred_mask():
    image = make_photo(64, 64)
    inputs = prepare_inpaint(image, _mask((64, 64), (20, 20, 40, 40)), blur_xy=(4, 4), fill_mode="original",
                             area="whole", padding=0, resize_mode="crop", native=64, width=None, height=None)
    blurred, overlay = np.asarray(inputs.mask).astype(int), np.asarray(inputs.overlay_mask).astype(int)
    assert np.array_equal(overlay, np.minimum(blurred * 2, 255))
    assert inputs.canvas.tobytes() == image.tobytes()  # native size: the input itself is the canvas


@pytest.mark.parametrize("size, margins, canvas, inner", [
    ((64, 48), (16, 0, 16, 0), (96, 48), (16, 0, 80, 48)),
    ((64, 48), (0, 8, 0, 24), (64, 80), (0, 8, 64, 56)),
    ((10, 10), (1, 2, 3, 4), (14, 16), (1, 2, 11, 12)),
])
def test_plan_outpaint(size, margins, canvas, inner):
    plan = plan_outpaint(size, margins)
    assert plan.canvas == canvas and plan.inner == inner


def test_outpaint_canvas_keeps_the_input_and_masks_the_new_area():
    image = make_photo(64, 48)
    canvas, mask = outpaint(image, (16, 8, 0, 0))
    assert canvas.size == mask.size == (80, 56)
    assert canvas.crop((16, 8, 80, 56)).tobytes() == image.tobytes()
    assert bounding_box(Image.eval(mask, lambda v: 255 - v)) == (16, 8, 80, 56)
    assert np.asarray(mask)[0, 0] == 255 and np.asarray(mask)[30, 40] == 0
    assert canvas.getpixel((0, 30)) == image.getpixel((0, 22))  # the edge spreads into the band


@pytest.mark.parametrize("value, expected", [("8,0,8,0", (8, 0, 8, 0)), ([0, 1, 2, 3], (0, 1, 2, 3)),
                                             (" 64, 0, 0, 0 ", (64, 0, 0, 0))])
def test_parse_outpaint(value, expected):
    assert parse_outpaint(value) == expected


@pytest.mark.parametrize("value", ["8,0,8", "0,0,0,0", "-8,0,0,0", "a,b,c,d", [1.5, 0, 0, 0], 8])
def test_parse_outpaint_refuses(value):
    with pytest.raises(InvalidRequest, match="LEFT,TOP,RIGHT,BOTTOM"):
        parse_outpaint(value)


@pytest.mark.parametrize("value, expected", [(4, (4, 4)), ("4,8", (4, 8)), ((0, 2), (0, 2)), ("6", (6, 6))])
def test_parse_blur(value, expected):
    assert parse_blur(value) == expected


@pytest.mark.parametrize("value", [-1, 1000, "4,8,2", "x", 2.5, True])
def test_parse_blur_refuses(value):
    with pytest.raises(InvalidRequest, match="mask_blur"):
        parse_blur(value)
