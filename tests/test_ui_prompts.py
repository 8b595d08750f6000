"""The web UI's LoRA and style pickers and prompt options, driven in a real browser."""

import pytest
from test_ui import ARTIFACTS, Server, open_page

from img2img.images import read_infotext


@pytest.mark.timeout(600)
def test_browser_lora_and_style_pickers(browser, tiny_sd, folders, square_path, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    server = Server(tiny_sd, tmp_path / "history", "--lora-dir", str(folders / "loras"),
                    "--embeddings-dir", str(folders / "embeddings"), "--styles-file", str(folders / "styles.csv"))
    try:
        page = open_page(browser, server.url)
        page.locator("#input-image input[type=file]").set_input_files(str(square_path))
        page.locator("#prompt textarea").fill("a harbour, fuzzy")
        # the LoRA picker lists the folder's files and inserts the tag with the chosen weight
        page.locator("#lora-picker input").click()
        page.get_by_role("option", name="kohya").click()
        page.locator("#lora-weight input").fill("0.6")
        page.locator("#add-lora").click()
        page.wait_for_function(
            "document.querySelector('#prompt textarea').value === 'a harbour, fuzzy <lora:kohya:0.6>'")
        # the style picker offers the styles file's names
        page.locator("#styles-picker input").click()
        page.get_by_role("option", name="film").click()
        page.keyboard.press("Escape")
        page.locator("#seed input").fill("21")
        page.locator("#generate").click()
        page.wait_for_function("document.querySelector('#status').innerText.startsWith('done')")
        page.screenshot(path=str(ARTIFACTS / "ui-prompts.png"), full_page=True)
        with page.expect_download() as download_info:
            page.locator("#download").click()
        downloaded = tmp_path / "download.png"
        download_info.value.save_as(downloaded)
        text = read_infotext(downloaded)
        assert text.startswith("a harbour, fuzzy <lora:kohya:0.6>, film grain\nNegative prompt: blurry\n")
        assert 'Lora hashes: "kohya: ' in text and 'TI hashes: "fuzzy: ' in text and "Seed: 21," in text
        page.close()
    finally:
        server.stop()
