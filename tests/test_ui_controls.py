"""The web UI's controls, each driven in a real browser and checked by what it must change: the model dropdown,
"reuse last" seed, batch size, "use as input", live preview and Interrupt, deleting from History.

The server runs in this process (a real uvicorn on a loopback port) so a test can hold a job inside its
denoising loop: the preview and Interrupt are exercised while the job certainly runs, not after a guess.
"""

import hashlib
import itertools
import threading

import numpy as np
import pytest
from helpers import wait_for
from PIL import Image
from test_ui import ARTIFACTS

from img2img.history import History
from img2img.images import read_infotext
from img2img.infotext import parse_infotext
from img2img.server.config import ServerConfig
from img2img.server.runner import ServerThread

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def ui_server(tiny_sd, tiny_sd_b, tmp_path_factory):
    history = tmp_path_factory.mktemp("ui-controls-history")
    config = ServerConfig(models=[str(tiny_sd), str(tiny_sd_b)], device="cpu", history_dir=str(history))
    with ServerThread(config) as server:
        yield server, History(history)


def generate(page, expect: str = "done: ") -> str:
    """Click Generate and wait for a status that contains `expect` (a text the previous status does not have)."""
    page.locator("#generate").click()
    page.wait_for_function("expect => document.querySelector('#status').innerText.includes(expect)", arg=expect)
    return page.locator("#status").inner_text()


def set_number(page, selector: str, value) -> None:
    field = page.locator(selector)
    field.fill(str(value))
    field.press("Enter")


def download(page, path):
    with page.expect_download() as info:
        page.locator("#download").click()
    info.value.save_as(path)
    return path


def test_controls_in_the_browser(browser, ui_server, photo_path, tmp_path):
    server, history = ui_server
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1400}, accept_downloads=True)
    page.set_default_timeout(90_000)
    page.goto(server.url, wait_until="domcontentloaded")
    page.wait_for_selector("#generate")
    page.locator("#input-image input[type=file]").set_input_files(str(photo_path))
    page.locator("#prompt textarea").fill("a red kite")

    # 1. the model dropdown: the second model generates, and the image says so
    page.locator("#model input").click()
    page.get_by_role("option", name="tiny-sd-b").click()
    page.wait_for_timeout(200)  # the model's defaults arrive in the form: set steps after them
    set_number(page, "#steps input[type=number]", 4)
    page.wait_for_function("document.querySelector('#steps-hint').innerText.includes('3 denoising steps')")
    status = generate(page)
    seed = int(status.rsplit("seeds ", 1)[1].split()[0])  # seed -1: a random one, reported
    first = download(page, tmp_path / "first.png")
    assert parse_infotext(read_infotext(first))[2]["Model"] == "tiny-sd-b"

    # 2. "reuse last" puts the seed of the last run into the seed field
    assert page.locator("#seed input").input_value() == "-1"
    page.locator("#reuse-seed").click()
    page.wait_for_function(f"document.querySelector('#seed input').value === '{seed}'")

    # 3. batch size 2 with that seed: two images, seeds counting up
    set_number(page, "#batch-size input[type=number]", 2)
    generate(page, f"done: 2 image(s), 80×56, 3 denoising steps, seeds {seed}, {seed + 1}")
    page.wait_for_function("document.querySelectorAll('#results img').length === 2")
    batch_first = download(page, tmp_path / "batch-first.png")
    assert parse_infotext(read_infotext(batch_first))[2]["Seed"] == str(seed)

    # 4. "use as input": the selected result becomes the input of the next run (its pixels are hashed there)
    page.locator("#results img").first.click()
    page.locator("#use-as-input").click()
    page.wait_for_function("!document.querySelector('#input-image img')?.src.includes('photo')")
    set_number(page, "#batch-size input[type=number]", 1)
    generate(page, f"done: 1 image(s), 80×56, 3 denoising steps, seeds {seed}")
    chained = download(page, tmp_path / "chained.png")
    result_pixels = np.asarray(Image.open(batch_first).convert("RGB"))
    assert parse_infotext(read_infotext(chained))[2]["Init image hash"] == \
        hashlib.sha256(result_pixels.tobytes()).hexdigest()[:10]

    # 5. live preview, then Interrupt, while the job is held at its third step
    reached, release, calls = threading.Event(), threading.Event(), itertools.count(1)

    def hold(module, args):
        if next(calls) == 3:
            reached.set()
            release.wait(60)

    unet = server.service.find_model("tiny-sd-b").engine.load().pipe.unet
    handle = unet.register_forward_pre_hook(hold)
    try:
        page.locator("#generate").click()
        assert reached.wait(60)
        page.wait_for_function("document.querySelector('#status').innerText.startsWith('step 2 / 3')")
        page.wait_for_selector("#preview img", state="visible")
        page.screenshot(path=str(ARTIFACTS / "ui-preview.png"), full_page=True)
        page.locator("#interrupt").click()
        wait_for(lambda: server.service.queue.progress().interrupted)
    finally:
        release.set()
        handle.remove()
    page.wait_for_function("document.querySelector('#status').innerText.includes('interrupted')")
    kept = history.count()
    assert kept == 4  # 1 + 2 + 1 finished images; the interrupted run added none

    # 6. History: select the newest entry and delete it; its file goes with its row
    page.get_by_role("tab", name="History").click()
    page.wait_for_function("document.querySelector('#history-details').innerText.startsWith('4 generation(s)')")
    newest = history.list()[0]
    page.locator("#history img").first.click()
    page.wait_for_function(f"document.querySelector('#history-details').innerText.includes('{newest.image.name}')")
    page.locator("#history-delete").click()
    page.wait_for_function("document.querySelector('#history-details').innerText.startsWith('3 generation(s)')")
    assert history.count() == 3 and history.get(newest.id) is None and not newest.image.exists()
    page.screenshot(path=str(ARTIFACTS / "ui-history-delete.png"), full_page=True)
    page.close()
