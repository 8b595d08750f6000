import pickle

import pytest

from img2img.geometry import (
    MAX_SIDE,
    MIN_SIDE,
    ResizePlan,
    automatic_min_side,
    native_area_size,
    plan_resize,
    restore_box,
    snap,
    target_size,
)


@pytest.mark.parametrize("value, expected", [(0, 8), (3, 8), (12, 16), (511, 512), (516, 520), (515, 512)])
def test_snap_to_multiple_of_8(value, expected):
    assert snap(value) == expected


@pytest.mark.parametrize(
    "size, native, expected",
    [
        ((512, 512), 512, (512, 512)),
        ((1024, 1024), 512, (512, 512)),
        ((600, 400), 512, (624, 416)),  # 3:2 photo: area ~ 512^2, aspect kept
        ((400, 600), 512, (416, 624)),
        ((4000, 3000), 768, (888, 664)),
        ((1920, 1080), 1024, (1368, 768)),
    ],
)
def test_native_area_keeps_aspect(size, native, expected):
    width, height = native_area_size(*size, native)
    assert (width, height) == expected
    assert width % 8 == 0 and height % 8 == 0
    assert abs(width * height - native * native) / (native * native) < 0.06
    assert abs(width / height - size[0] / size[1]) / (size[0] / size[1]) < 0.05


def test_tiny_sizes_still_snap():
    assert native_area_size(96, 64, 64) == (80, 56)  # at 64 px the multiple-of-8 grid dominates


@pytest.mark.parametrize(
    "want, expected",
    [((None, None), (624, 416)), ((768, None), (768, 512)), ((None, 256), (384, 256)), ((300, 200), (300, 200))],
)
def test_target_size(want, expected):
    size = target_size(600, 400, 512, *want)
    assert size == expected and not size.limited
    width, height = size  # unpacks as a pair, as callers use it


@pytest.mark.parametrize(
    "source, target, crop, scaled, offset",
    [
        ((600, 400), (512, 512), (100, 0, 500, 400), (512, 512), (0, 0)),  # wide -> crop sides
        ((400, 600), (512, 512), (0, 100, 400, 500), (512, 512), (0, 0)),  # tall -> crop top/bottom
        ((600, 400), (600, 400), (0, 0, 600, 400), (600, 400), (0, 0)),
        ((1000, 100), (512, 256), (400, 0, 600, 100), (512, 256), (0, 0)),
    ],
)
def test_plan_crop(source, target, crop, scaled, offset):
    plan = plan_resize(source, target, "crop")
    assert (plan.crop, plan.scaled, plan.offset) == (crop, scaled, offset)
    assert not plan.needs_fill


@pytest.mark.parametrize(
    "source, target, scaled, offset",
    [
        ((600, 400), (512, 512), (512, 341), (0, 85)),  # wide -> bands top and bottom
        ((400, 600), (512, 512), (341, 512), (85, 0)),
        ((512, 512), (512, 512), (512, 512), (0, 0)),
    ],
)
def test_plan_fill(source, target, scaled, offset):
    plan = plan_resize(source, target, "fill")
    assert (plan.scaled, plan.offset, plan.crop) == (scaled, offset, (0, 0, *source))


def test_plan_stretch_uses_whole_image():
    plan = plan_resize((600, 400), (512, 512), "stretch")
    assert (plan.crop, plan.scaled, plan.offset) == ((0, 0, 600, 400), (512, 512), (0, 0))


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown resize mode"):
        plan_resize((1, 1), (8, 8), "zoom")


@pytest.mark.parametrize(
    "size, native, expected",
    [
        ((1000, 4000), 1024, (512, 2048, False)),  # 1:4 fits: aspect kept
        ((10000, 500), 1024, (4096, 256, True)),  # 20:1 would be 4576 wide: clamped to 4096, area kept
        ((500, 10000), 1024, (256, 4096, True)),
        ((9000, 120), 512, (4096, 64, True)),  # 75:1 would be 56 high: clamped to the 64 px minimum
        ((9000, 120), 64, (128, 32, True)),  # a tiny test model: at least half its native size
        ((600, 400), 512, (624, 416, False)),
    ],
)
def test_automatic_sizes_respect_the_side_limits(size, native, expected):
    result = target_size(*size, native, None, None)
    assert (result.width, result.height, result.limited) == expected


@pytest.mark.parametrize("native", [40, 64, 120, 256, 512, 768, 1024])  # 40, 120: latents of 5 and 15
@pytest.mark.parametrize("aspect", [1 / 200, 1 / 30, 1 / 7, 0.5, 1, 2.5, 9, 40, 150])
def test_automatic_sizes_always_fit(native, aspect):
    width, height = (round(3000 * aspect), 3000) if aspect < 1 else (3000, round(3000 / aspect))
    size = target_size(width, height, native, None, None)
    low = automatic_min_side(native)
    assert low <= size.width <= MAX_SIDE and low <= size.height <= MAX_SIDE
    assert size.width % 8 == 0 and size.height % 8 == 0  # on the latent grid, even at the minimum
    assert type(size.width) is int and type(size.height) is int  # they become tensor shapes
    # 64 px, or half a tiny model's native size, rounded down to the grid
    assert automatic_min_side(native) == (64 if native >= 128 else native // 16 * 8)
    assert type(automatic_min_side(native)) is int


@pytest.mark.parametrize("native, wide", [(64, (128, 32)), (256, (1024, 64)), (512, (4096, 64)),
                                          (1024, (4096, 256))])
def test_a_more_extreme_aspect_gives_the_same_limited_size(native, wide):
    """Past the limits the size stops following the aspect ratio: the short side at its minimum (or the long
    one at its maximum) and about the native area, however extreme the input."""
    for long_side in (10_000, 100_000, 1_000_000):  # 1000:1 to 100000:1 (the last one over MAX_SIDE at any native)
        assert target_size(long_side, 10, native, None, None) == wide
        assert target_size(10, long_side, native, None, None) == wide[::-1]
        assert target_size(long_side, 10, native, None, None).limited
    assert wide[0] * wide[1] == native * native  # the native area, not a 4096 px strip


@pytest.mark.parametrize("source, native, expected", [((64, 4096), 512, (64, 4096)), ((4096, 64), 512, (4096, 64)),
                                                      ((1, 64), 512, (64, 4096)), ((64, 1), 512, (4096, 64))])
def test_an_automatic_size_exactly_at_the_limits_is_not_limited(source, native, expected):
    size = target_size(*source, native, None, None)  # 1:64 at 512 px: 64 x 4096, both sides just within
    assert (size.width, size.height, size.limited) == (*expected, False)


@pytest.mark.parametrize("source, want, expected", [((512, 64), (64, None), (64, MIN_SIDE)),
                                                    ((64, 512), (None, 64), (MIN_SIDE, 64)),
                                                    ((1000, 4000), (1024, None), (1024, MAX_SIDE)),
                                                    ((4000, 1000), (None, 1024), (MAX_SIDE, 1024))])
def test_a_derived_side_exactly_at_a_limit_is_not_limited(source, want, expected):
    size = target_size(*source, 512, *want)
    assert (size.width, size.height, size.limited) == (*expected, False)


def test_a_target_size_survives_pickling():  # sizes travel to batch workers
    size = target_size(10_000, 500, 1024, None, None)
    copy = pickle.loads(pickle.dumps(size))
    assert (copy, copy.width, copy.height, copy.limited) == ((4096, 256), 4096, 256, True)


@pytest.mark.parametrize(
    "source, want, expected",
    [
        ((1000, 50), (4096, None), (4096, 208, False)),
        ((50, 1000), (4096, None), (4096, 4096, True)),  # 81920 high would be over the limit
        ((10000, 10), (64, None), (64, 8, True)),  # 0.064 high would be under the 8 px grid
        ((1000, 10), (None, 4096), (4096, 4096, True)),
    ],
)
def test_one_given_side_keeps_the_other_within_limits(source, want, expected):
    result = target_size(*source, 512, *want)
    assert (result.width, result.height, result.limited) == expected


def test_crop_box_is_never_empty():
    # a 1000:1 strip into a 1:512 target would keep 0.002 columns: the centre column is kept instead
    assert plan_resize((1000, 1), (8, 4096), "crop").crop == (499, 0, 500, 1)
    assert plan_resize((1, 1000), (4096, 8), "crop").crop == (0, 499, 1, 500)


@pytest.mark.parametrize(
    "source, target, mode, box",
    [
        ((96, 64), (80, 56), "stretch", (0, 0, 80, 56)),  # all of it maps back onto the source
        ((600, 400), (512, 512), "fill", (0, 85, 512, 426)),  # the part between the bands
        ((600, 400), (300, 200), "crop", (0, 0, 300, 200)),  # a crop that cut nothing
        ((600, 400), (512, 512), "crop", None),  # cut the sides off: nothing maps back onto the whole input
    ],
)
def test_restore_box(source, target, mode, box):
    assert restore_box(plan_resize(source, target, mode)) == box


@pytest.mark.parametrize("mode, expected", [
    ("stretch", ResizePlan((101, 50), (64, 64), (0, 0, 101, 50), (64, 64), (0, 0))),
    ("crop", ResizePlan((101, 50), (64, 64), (25, 0, 75, 50), (64, 64), (0, 0))),  # odd margin: whole pixels
    ("fill", ResizePlan((101, 50), (64, 64), (0, 0, 101, 50), (64, 32), (0, 16))),
])
def test_whole_plans(mode, expected):
    plan = plan_resize((101, 50), (64, 64), mode)
    assert plan == expected and all(isinstance(v, int) for part in (plan.crop, plan.offset) for v in part)


def test_crop_of_an_odd_tall_margin_is_whole_pixels():
    assert plan_resize((50, 101), (64, 64), "crop").crop == (0, 25, 50, 75)


@pytest.mark.parametrize("source, scaled, offset", [((1000, 1), (64, 1), (0, 31)), ((1, 1000), (1, 64), (31, 0))])
def test_fill_keeps_at_least_one_pixel(source, scaled, offset):
    plan = plan_resize(source, (64, 64), "fill")
    assert (plan.scaled, plan.offset, plan.needs_fill) == (scaled, offset, True)


def test_unknown_mode_lists_the_modes():
    with pytest.raises(ValueError, match="^unknown resize mode 'zoom'; expected one of stretch, crop, fill, latent$"):
        plan_resize((1, 1), (8, 8), "zoom")
