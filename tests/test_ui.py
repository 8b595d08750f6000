"""The web UI: mounted by the server behind the same auth, sharing its history; driven in a real browser."""

import base64
import io
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers import ServeProcess
from PIL import Image

from img2img.history import History
from img2img.images import read_infotext
from img2img.server.app import create_app
from img2img.server.config import ServerConfig

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def ui_client(tiny_sd, tmp_path_factory):
    history_dir = tmp_path_factory.mktemp("history")
    config = ServerConfig(models=[str(tiny_sd)], device="cpu", preload=False, api_auth=[("ann", "pw")],
                          history_dir=str(history_dir))
    with TestClient(create_app(config), base_url="http://localhost") as client:
        yield client, history_dir


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_ui_is_mounted_behind_the_same_auth(ui_client):
    client, _ = ui_client
    assert client.get("/").status_code == 401
    page = client.get("/", headers=basic("ann", "pw"))
    assert page.status_code == 200 and "gradio" in page.text
    config = client.get("/config", headers=basic("ann", "pw")).json()
    assert config["title"] == "img2img" and "prompt" in str(config["components"])
    samplers = client.get("/sdapi/v1/samplers", headers=basic("ann", "pw"))  # API routes keep their paths
    assert samplers.status_code == 200 and "DPM++ 2M" in [s["name"] for s in samplers.json()]


def test_api_results_kept_in_history_only_when_asked(ui_client, square_path):
    client, history_dir = ui_client
    payload = {"init_images": [base64.b64encode(square_path.read_bytes()).decode()], "prompt": "kept",
               "steps": 4, "seed": 5}
    assert client.post("/sdapi/v1/img2img", json=payload, headers=basic("ann", "pw")).status_code == 200
    assert History(history_dir).count() == 0
    answer = client.post("/sdapi/v1/img2img", json=payload | {"save_images": True}, headers=basic("ann", "pw"))
    assert answer.status_code == 200
    native = client.post("/v1/img2img", files={"image": square_path.read_bytes()},
                         data={"prompt": "native kept", "steps": "4", "seed": "6", "save": "true"},
                         headers=basic("ann", "pw"))
    assert native.status_code == 200
    entries = History(history_dir).list()
    assert [(e.prompt, e.seed, e.origin) for e in entries] == [("native kept", 6, "api"), ("kept", 5, "api")]
    assert "Seed: 5," in read_infotext(entries[1].image) and entries[1].image.is_file()


def test_launch_inline_runs_the_ui(tiny_sd, tmp_path):
    import img2img.ui

    # No server_port: gradio binds the first free port of its range itself and says which one.
    blocks = img2img.ui.launch(str(tiny_sd), device="cpu", history_dir=str(tmp_path), server_name="127.0.0.1",
                               prevent_thread_lock=True, quiet=True)
    try:
        config = httpx.get(f"http://127.0.0.1:{blocks.server_port}/config", timeout=30).json()
        assert config["title"] == "img2img"
        assert (tmp_path / "history.sqlite3").exists()
    finally:
        blocks.close()


# ---------------------------------------------------------------------------------------------- browser


class Server(ServeProcess):
    """`img2img serve` as users start it, in a subprocess on a loopback port the system picks."""

    def __init__(self, model: Path, history: Path, *extra: str):
        super().__init__(history.parent / f"server-{history.name}", "--model", str(model), "--history-dir",
                         str(history), "--log-level", "warning", *extra)


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1200}, accept_downloads=True)
    page.set_default_timeout(90_000)
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#generate")
    return page


@pytest.mark.timeout(600)
def test_browser_generate_download_and_history_after_restart(browser, tiny_sd, photo_path, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    history = tmp_path / "history"
    server = Server(tiny_sd, history)
    try:
        page = open_page(browser, server.url)
        page.locator("#input-image input[type=file]").set_input_files(str(photo_path))
        page.locator("#prompt textarea").fill("a lighthouse in a storm")
        strength = page.locator("#strength input[type=number]")
        strength.fill("0.6")
        strength.press("Enter")
        page.wait_for_function("document.querySelector('#steps-hint').innerText.includes('15 denoising steps')")
        page.locator("#seed input").fill("1234")
        page.locator("#generate").click()
        page.wait_for_function("document.querySelector('#status').innerText.startsWith('done')")
        status = page.locator("#status").inner_text()
        assert "1 image(s), 80×56, 15 denoising steps, seeds 1234" in status
        page.wait_for_selector("#results img")
        page.screenshot(path=str(ARTIFACTS / "ui-generate.png"), full_page=True)

        with page.expect_download() as download_info:
            page.locator("#download").click()
        downloaded = tmp_path / "download.png"
        download_info.value.save_as(downloaded)
        assert Image.open(downloaded).size == (80, 56)
        text = read_infotext(downloaded)
        assert text.startswith("a lighthouse in a storm") and "Seed: 1234," in text
        assert "Denoising strength: 0.6," in text

        # the parameters drop zone fills the form from an earlier output
        page.locator("#prompt textarea").fill("")
        page.locator("#seed input").fill("-1")
        page.locator("#params-drop input[type=file]").set_input_files(str(downloaded))
        page.wait_for_function("document.querySelector('#prompt textarea').value === 'a lighthouse in a storm'")
        assert page.locator("#seed input").input_value() == "1234"

        # bad input: zero denoising steps is refused with a readable message in the page
        page.locator("#steps input[type=number]").fill("1")
        page.locator("#steps input[type=number]").press("Enter")
        page.locator("#generate").click()
        page.wait_for_selector("text=gives 0 denoising steps")
        page.locator("#steps input[type=number]").fill("25")
        page.locator("#steps input[type=number]").press("Enter")
        # bad input: a file that is no image, and an image over the server's pixel limit
        not_an_image = tmp_path / "notes.png"
        not_an_image.write_text("shopping list: eggs, milk")
        page.locator("#input-image input[type=file]").set_input_files(str(not_an_image))
        page.locator("#generate").click()
        page.wait_for_selector("text=input image: not an image")
        huge = tmp_path / "huge.png"
        Image.new("L", (4200, 4200)).save(huge)  # 17.6 MP, over the default 16.7 MP limit; a small file
        page.locator("#input-image input[type=file]").set_input_files(str(huge))
        page.locator("#generate").click()
        page.wait_for_selector("text=over this server's limit")
        page.screenshot(path=str(ARTIFACTS / "ui-error.png"), full_page=True)
        assert httpx.get(server.url + "/v1/health").json()["status"] == "ok"  # still serving
        page.close()
    finally:
        server.stop()

    server = Server(tiny_sd, history)  # a restart: the history must still be there
    try:
        page = open_page(browser, server.url)
        page.get_by_role("tab", name="History").click()
        page.wait_for_selector("#history img")
        page.locator("#history img").first.click()
        page.wait_for_function("document.querySelector('#history-details').innerText.includes('Seed: 1234')")
        details = page.locator("#history-details").inner_text()
        assert "a lighthouse in a storm" in details
        page.screenshot(path=str(ARTIFACTS / "ui-history.png"), full_page=True)
        page.close()
    finally:
        server.stop()
    assert Image.open(io.BytesIO(downloaded.read_bytes())).format == "PNG"
