"""The web UI's inpainting: a mask painted with real mouse moves in Chromium changes only the painted part.
Also the mask and option plumbing of the inpainting panel, without a browser."""

import io

import numpy as np
import pytest
from PIL import Image
from test_ui import ARTIFACTS, Server, open_page

from img2img.images import read_infotext
from img2img.infotext import fields_from_infotext, parse_infotext
from img2img.testing import make_photo
from img2img.ui.inpaint import painted_mask, request_fields, settings_from_fields


def test_painted_layers_become_one_white_mask():
    stroke = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    stroke.paste((255, 255, 255, 190), (5, 5, 15, 10))
    other = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    other.paste((255, 255, 255, 40), (30, 20, 35, 25))  # a faint stroke counts too
    mask = np.asarray(Image.open(io.BytesIO(painted_mask({"layers": [stroke, other]}))))
    assert mask.shape == (30, 40) and set(np.unique(mask)) == {0, 255}
    assert mask[7, 10] == mask[22, 32] == 255 and mask[0, 0] == 0 and (mask > 0).sum() == 50 + 25
    assert painted_mask({"layers": [Image.new("RGBA", (8, 8))]}) is None  # nothing painted: no mask
    assert painted_mask(None) is None


def test_panel_values_become_request_fields():
    assert request_fields(False, True, 6, "auto", "masked", 48, 0, 0, 0, 0) == {
        "mask_from_alpha": False, "invert_mask": True, "mask_blur": 6, "inpaint_fill": None, "inpaint_area": "masked",
        "inpaint_padding": 48, "outpaint": None}
    assert request_fields(False, False, 4, "fill", "whole", 32, 0, 16, 0, 8.0)["outpaint"] == (0, 16, 0, 8)


def test_stored_parameters_fill_the_panel():
    stored = fields_from_infotext('x\nSteps: 4, Seed: 1, Mask blur: 6, Masked content: latent noise, '
                                  'Inpaint area: Only masked, Masked area padding: 8, Outpaint: "8,0,8,0", '
                                  'Mask mode: Inpaint not masked')
    assert settings_from_fields(stored) == [False, True, 6, "latent-noise", "masked", 8, 8, 0, 8, 0]
    plain = fields_from_infotext("x\nSteps: 4, Seed: 1, Size: 8x8")  # no mask: the panel's defaults
    assert settings_from_fields(plain) == [False, False, 4, "auto", "whole", 32, 0, 0, 0, 0]


@pytest.mark.timeout(600)
def test_browser_paints_a_mask_and_only_that_area_changes(browser, tiny_sd, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    photo = make_photo(96, 64)
    photo.save(tmp_path / "photo.png")
    server = Server(tiny_sd, tmp_path / "history")
    try:
        page = open_page(browser, server.url)
        viewport = page.viewport_size
        generate, prompt = page.locator("#generate").bounding_box(), page.locator("#prompt").bounding_box()
        assert generate["y"] + generate["height"] <= viewport["height"]  # visible without scrolling
        assert generate["x"] > prompt["x"] + prompt["width"] - 1 and generate["y"] < prompt["y"] + prompt["height"]

        page.locator("#input-image input[type=file]").set_input_files(str(tmp_path / "photo.png"))
        page.get_by_text("Inpaint / outpaint").click()
        page.locator("#inpaint-area").get_by_text("only masked").click()
        page.locator("#mask-editor canvas").first.wait_for()
        page.wait_for_timeout(1000)  # the editor draws the photo
        page.locator("#mask-editor button[aria-label='Brush']").first.click()
        canvas = page.locator("#mask-editor canvas").first.bounding_box()
        # a short downward stroke near the right edge (the photo is centred in the canvas, magnified)
        cx, cy = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
        page.mouse.move(cx + 120, cy - 40)
        page.mouse.down()
        for step in range(1, 11):
            page.mouse.move(cx + 120 + step, cy - 40 + step * 8, steps=3)
        page.mouse.up()
        page.locator("#prompt textarea").fill("a brass door knob")
        page.locator("#seed input").fill("21")
        page.locator("#generate").click()
        page.wait_for_function("document.querySelector('#status').innerText.startsWith('done')")
        page.screenshot(path=str(ARTIFACTS / "ui-inpaint.png"), full_page=True)
        before_after = page.locator("#compare img")
        assert before_after.count() == 2  # the photo and the result, on the slider
        with page.expect_download() as download_info:
            page.locator("#download").click()
        result_path = tmp_path / "result.png"
        download_info.value.save_as(result_path)
        page.close()
    finally:
        server.stop()
    result = np.asarray(Image.open(result_path).convert("RGB")).astype(int)
    original = np.asarray(photo).astype(int)
    assert result.shape == original.shape  # only masked: the photo's own size
    assert np.array_equal(result[:, :40], original[:, :40])  # the unpainted left part: exactly the photo
    changed = np.argwhere(np.abs(result - original).sum(axis=2) > 0)
    assert len(changed) > 20 and changed[:, 1].min() >= 40  # something changed, all of it on the painted side
    params = parse_infotext(read_infotext(result_path))[2]
    assert params["Inpaint area"] == "Only masked" and len(params["Mask hash"]) == 10
