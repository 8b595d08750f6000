"""Masks over HTTP: A1111's inpainting payloads (its own API tests' and the webuiapi client's) and the native
multipart `mask` field, on a real server."""

import base64
import io
import json

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image

from img2img.images import read_infotext
from img2img.infotext import parse_infotext
from img2img.server.config import ServerConfig
from img2img.server.runner import ServerThread
from img2img.testing import make_photo

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(tiny_sd):
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", ui=False, max_pixels=200 * 200)
    with ServerThread(config) as running:
        yield running


def b64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def box_mask(size=(64, 64), box=(16, 12, 44, 40)):
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def far_from(mask, reach=10):
    """Pixels further than `reach` from the mask (the blur cannot touch them)."""
    from PIL import ImageFilter

    return np.asarray(mask.filter(ImageFilter.MaxFilter(2 * reach + 1))) == 0


def decoded(answer, index=0):
    return Image.open(io.BytesIO(base64.b64decode(answer["images"][index])))


def test_webuiapi_mask_matches_the_python_api(server, engine):
    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
    image = make_photo(96, 64)
    mask = box_mask(image.size, (60, 10, 80, 30))
    # webuiapi's defaults are A1111's API defaults: only masked, no padding, masked content "fill"
    result = api.img2img(images=[image], mask_image=mask, prompt="a window", seed=3, steps=6, cfg_scale=5.0,
                         sampler_name="Euler", denoising_strength=0.7, width=64, height=64)
    expected = engine.transform(image, "a window", mask=mask, seed=3, steps=6, cfg_scale=5.0, sampler="Euler",
                                strength=0.7, width=64, height=64, resize_mode="stretch", inpaint_fill="fill",
                                inpaint_area="masked", inpaint_padding=0)
    assert result.image.size == (96, 64)  # only masked answers at the input's size
    assert result.image.tobytes() == expected.image.tobytes()
    params = parse_infotext(result.info["infotexts"][0])[2]
    assert params["Inpaint area"] == "Only masked" and params["Masked area padding"] == "0"


def test_a1111_mask_of_another_size_is_resized_with_a_notice(server):
    image = make_photo(64, 64)
    payload = {"init_images": [b64(image)], "mask": b64(box_mask((128, 128), (32, 24, 88, 80))), "steps": 4,
               "width": 64, "height": 64, "seed": 1}
    answer = httpx.post(server.url + "/sdapi/v1/img2img", json=payload, timeout=120)
    assert answer.status_code == 200, answer.text
    notices = json.loads(answer.json()["info"])["notices"]
    assert any("mask (128x128) was resized to the init image's 64x64" in n for n in notices)
    assert answer.json()["parameters"]["mask"] is None  # not echoed back unless include_init_images


@pytest.mark.parametrize("changes, message, field", [
    ({"mask": b64(Image.new("L", (64, 64), 0))}, "mask: nothing to repaint", "mask"),
    ({"mask": b64(Image.new("L", (64, 64), 255)), "inpainting_mask_invert": 1}, "inverted it selects no pixel",
     "mask"),
    ({"mask": "bm90IGFuIGltYWdl"}, "mask: not an image", "mask"),
    ({"mask": b64(box_mask()), "inpainting_fill": 7}, "inpaint_fill must be one of", "inpaint_fill"),
    ({"mask": b64(box_mask()), "latent_mask": "bm90IGFuIGltYWdl"}, "latent_mask: not an image", "latent_mask"),
])
def test_a1111_bad_masks_answer_422(server, changes, message, field):
    payload = {"init_images": [b64(make_photo(64, 64))], "steps": 4} | changes
    answer = httpx.post(server.url + "/sdapi/v1/img2img", json=payload, timeout=60)
    assert answer.status_code == 422 and message in answer.text, answer.text
    assert answer.json()["field"] == field


def test_native_mask_field(server, engine):
    image, mask = make_photo(64, 64), box_mask()
    form = {"prompt": "a door", "seed": "5", "steps": "6", "sampler": "Euler", "mask_blur": "2",
            "inpaint_fill": "latent-noise"}
    answer = httpx.post(server.url + "/v1/img2img", files={"image": png(image), "mask": png(mask)}, data=form,
                        timeout=120)
    assert answer.status_code == 200, answer.text
    expected = engine.transform(image, "a door", mask=mask, seed=5, steps=6, sampler="Euler", mask_blur=2,
                                inpaint_fill="latent-noise")
    got = Image.open(io.BytesIO(answer.content))
    assert got.tobytes() == expected.image.tobytes()
    assert "Masked content: latent noise" in read_infotext(got)


def test_native_outpaint_and_mask_from_alpha(server):
    outpainted = httpx.post(server.url + "/v1/img2img", files={"image": png(make_photo(64, 48))},
                            data={"prompt": "x", "steps": "4", "outpaint": "16,0,16,0", "keep_size": "true"},
                            timeout=120)
    assert outpainted.status_code == 200, outpainted.text
    assert Image.open(io.BytesIO(outpainted.content)).size == (96, 48)
    erased = make_photo(64, 64).convert("RGBA")
    erased.paste((0, 0, 0, 0), (20, 20, 40, 40))
    answer = httpx.post(server.url + "/v1/img2img", files={"image": png(erased)},
                        data={"prompt": "x", "steps": "4", "mask_from_alpha": "true"}, timeout=120)
    assert answer.status_code == 200 and "Mask from alpha: True" in read_infotext(answer.content)


@pytest.mark.parametrize("files, form, message", [
    ({"mask": png(box_mask((32, 32), (0, 0, 8, 8)))}, {}, "32x32 does not match the image's 64x64"),
    ({"mask": png(Image.new("L", (64, 64), 0))}, {}, "nothing to repaint"),
    ({}, {"mask_from_alpha": "true"}, "has no transparent pixels"),
    ({}, {"invert_mask": "true"}, "invert_mask applies to a mask"),
    ({}, {"outpaint": "1,2"}, "LEFT,TOP,RIGHT,BOTTOM"),
])
def test_native_bad_masks_answer_422(server, files, form, message):
    answer = httpx.post(server.url + "/v1/img2img", files={"image": png(make_photo(64, 64))} | files,
                        data={"prompt": "x", "steps": "4"} | form, timeout=60)
    assert answer.status_code == 422 and message in answer.text, answer.text


def test_a1111_outpainting_with_resize_and_fill_plus_a_mask(server):
    # How A1111 clients outpaint: a wider size, resize mode 2 (fill) and a mask whose edges are white; the
    # mask follows the image through the same resize plan, so the new bands are the masked area.
    image = make_photo(64, 64)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 1, 64))
    mask.paste(255, (63, 0, 64, 64))
    payload = {"init_images": [b64(image)], "mask": b64(mask), "resize_mode": 2, "width": 96, "height": 64,
               "inpaint_full_res": False, "inpainting_fill": 0, "denoising_strength": 1.0, "steps": 4, "seed": 2}
    answer = httpx.post(server.url + "/sdapi/v1/img2img", json=payload, timeout=120)
    assert answer.status_code == 200, answer.text
    out = np.asarray(decoded(answer.json())).astype(int)
    assert out.shape == (64, 96, 3)
    centre = np.asarray(image).astype(int)[:, 12:52]  # beyond the blur's reach of the bands
    assert np.array_equal(out[:, 16 + 12:16 + 52], centre)
    assert np.abs(out[:, :12] - np.asarray(image).astype(int)[:, :1]).mean() > 5  # the left band is painted
