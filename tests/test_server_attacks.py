"""Attacks on a real `img2img serve` process, each one an exploit that worked before it was closed.

Two servers run for the whole module: the default keyless one on loopback (what any web page the user
visits can reach) and one exposed with an API key. While each attack runs, a watcher asks /v1/health every
0.1 s; every answer must come within a second, during and after the attack.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from helpers import ServeProcess, wait_for
from PIL import Image, PngImagePlugin

from img2img.history import History

pytestmark = pytest.mark.timeout(300)

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
SLOWEST_HEALTH: dict[str, float] = {}  # test -> slowest health answer during its attack, written at the end

KEY = "attack-test-key-" + secrets.token_hex(8)
REFUSED = "that file is not available here: only files uploaded through this page can be used"
FILE_TYPES = {"image", "file", "gallery", "imageslider", "video", "audio", "model3d", "uploadbutton",
              "downloadbutton", "annotatedimage", "imageeditor", "multimodaltextbox", "dataset", "simpleimage"}


class Served(ServeProcess):
    """`img2img serve` in a subprocess on a loopback port the system picks, its log in a file."""

    def __init__(self, folder: Path, model: Path, *args: str, env: dict | None = None):
        self.history = folder / "history"
        self.uploads = folder / "gradio"  # the server makes its private upload folder inside
        self.ui = None  # the UI's config, read once (ui_config)
        headers = {"Authorization": f"Bearer {env['IMG2IMG_API_KEY']}"} if env else {}
        super().__init__(folder, "--model", str(model), "--history-dir", str(self.history), *args,
                         env={"GRADIO_TEMP_DIR": str(self.uploads), **(env or {})}, headers=headers)

    def upload_folder(self) -> Path:
        (folder,) = [p for p in self.uploads.iterdir() if p.name.startswith("img2img-uploads-")]
        return folder


# Polls health from its own process, so the attack's threads in this one do not delay the measurement.
WATCHER = """
import json, sys, time, httpx
url, headers = sys.argv[1], json.loads(sys.argv[2])
with httpx.Client(headers=headers) as client:
    while sys.stdin.readline():  # one probe per line; the watch closes stdin to stop
        started = time.monotonic()
        try:
            status = client.get(url + "/v1/health", timeout=1.0).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        print(json.dumps([time.monotonic() - started, status]), flush=True)
"""


class HealthWatch:
    """Asks /v1/health every 0.1 s during an attack; `check()` requires every answer within a second."""

    def __init__(self, server: Served, expect=(200,)):
        self.server, self.expect = server, expect
        self.answers: list[tuple[float, int | str]] = []
        self._stop = threading.Event()
        self._process = subprocess.Popen([sys.executable, "-c", WATCHER, server.url, json.dumps(server.headers)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self._process.stdin.write("probe\n")
            self._process.stdin.flush()
            self.answers.append(tuple(json.loads(self._process.stdout.readline())))
            self._stop.wait(0.1)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._process.stdin.close()
        self._process.wait(timeout=30)

    def check(self) -> float:
        """Every answer as expected and within a second, then one more after the attack; returns the slowest."""
        bad = [answer for answer in self.answers if answer[1] not in self.expect or answer[0] >= 1.0]
        assert self.answers and not bad, f"health failed during the attack: {bad[:5]}"
        started = time.monotonic()
        assert httpx.get(self.server.url + "/v1/health", headers=self.server.headers, timeout=1.0).status_code == 200
        slowest = max(max(seconds for seconds, _ in self.answers), time.monotonic() - started)
        assert slowest < 1.0, f"health took {slowest:.2f} s after the attack"
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
        SLOWEST_HEALTH[test] = round(max(slowest, SLOWEST_HEALTH.get(test, 0.0)), 3)
        return slowest


@pytest.fixture(scope="module", autouse=True)
def health_report():
    """Leaves the slowest health answer per attack in test-artifacts/health-under-attack.json."""
    yield
    if SLOWEST_HEALTH:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "health-under-attack.json").write_text(json.dumps(SLOWEST_HEALTH, indent=1) + "\n")


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> tuple[Path, str]:
    """A file no client may read, with content that must never show up in an answer or a copy."""
    text = "TOP-SECRET-" + secrets.token_hex(12)
    path = tmp_path_factory.mktemp("private") / "secret.png"  # an image name: no file-type check stops it
    path.write_text(text)
    return path, text


@pytest.fixture(scope="module")
def server(tiny_sd, tmp_path_factory):
    """The default: loopback, no key. Small limits so the tests can reach them."""
    served = Served(tmp_path_factory.mktemp("open-server"), tiny_sd, "--client-timeout", "2", "--max-body-mb", "16",
                    "--upload-cache-mb", "16")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def keyed(tiny_sd, tmp_path_factory):
    """Exposed the careful way: an API key, one allowed CORS origin, one extra host name, few connections."""
    served = Served(tmp_path_factory.mktemp("keyed-server"), tiny_sd, "--lazy", "--cors-origin",
                    "https://app.example", "--allowed-host", "img2img.lan", "--max-connections", "16",
                    "--client-timeout", "2", env={"IMG2IMG_API_KEY": KEY})
    yield served
    served.stop()


def png(width=64, height=64, text: str | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("parameters", text)
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def a1111(**fields) -> dict:
    return {"init_images": [base64.b64encode(png()).decode()], "steps": 4, **fields}


# ---------------------------------------------------------------------------------------------- the UI's events


def ui_config(server: Served) -> tuple[dict, dict]:
    """The UI's declared components and events (fetched once per server: building it is work for the server)."""
    if server.ui is None:
        config = httpx.get(server.url + "/config", headers=server.headers, timeout=30).json()
        server.ui = config, {component["id"]: component for component in config["components"]}
    return server.ui


def file_inputs(server: Served):
    """(event, input position, component) for every file-typed input of every event the UI declares."""
    config, components = ui_config(server)
    for event in config["dependencies"]:
        for position, component_id in enumerate(event["inputs"]):
            component = components[component_id]
            if component["type"] in FILE_TYPES or "FileData" in json.dumps(component.get("api_info")):
                yield event, position, component


def event_data(server: Served, event: dict, position: int | None = None, value=None) -> list:
    """The event's inputs at their defaults, with `value` at `position`."""
    _, components = ui_config(server)
    data = [components[i]["props"].get("value") for i in event["inputs"]]
    if position is not None:
        data[position] = value
    return data


def join(server: Served, event: dict, data: list, session: str | None = None) -> httpx.Response:
    trigger = event["targets"][0][0] if event["targets"] else None
    body = {"data": data, "fn_index": event["id"], "trigger_id": trigger, "event_data": None,
            "session_hash": session or secrets.token_hex(6)}
    return httpx.post(server.url + "/gradio_api/queue/join", json=body, headers=server.headers, timeout=10)


def outcome(server: Served, event: dict, data: list, timeout: float = 60) -> dict:
    """Run an event through Gradio's queue and return its process_completed message."""
    session = secrets.token_hex(6)
    assert join(server, event, data, session).status_code == 200
    with httpx.stream("GET", server.url + "/gradio_api/queue/data", params={"session_hash": session},
                      headers=server.headers, timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and "process_completed" in line:
                return json.loads(line[5:])
    raise AssertionError("no result")


def event_named(server: Served, name: str) -> dict:
    config, _ = ui_config(server)
    return next(event for event in config["dependencies"] if event["api_name"] == name)


def upload(server: Served, data: bytes, name: str = "photo.png") -> str:
    answer = httpx.post(server.url + "/gradio_api/upload", files={"files": (name, data, "image/png")},
                        headers=server.headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()[0]


def file_value(component: dict, path: str, shape: str):
    data = {"path": path, "orig_name": "photo.png"}
    if shape == "meta":
        data["meta"] = {"_type": "gradio.FileData"}
    elif shape == "url":
        data.update(meta={"_type": "gradio.FileData"}, url=f"http://127.0.0.1/gradio_api/file={path}")
    return [{"image": data, "caption": None}] if component["type"] == "gallery" else data


def files_containing(folder: Path, text: str) -> list[Path]:
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            if not path.is_symlink() and path.is_file() and text.encode() in path.read_bytes():
                found.append(path)
    return found


def test_no_ui_event_reads_a_file_it_did_not_receive(server, secret):
    """1. Arbitrary file read: any event with a file input was a way to read (or copy) any file."""
    secret_path, secret_text = secret
    link = server.upload_folder() / "link-to-secret.png"  # a link inside the upload folder leads out of it
    link.symlink_to(secret_path)
    targets = [str(secret_path), str(secret_path.parent / "no-such-file.png"), "/proc/self/environ",
               "../" * 12 + str(secret_path).lstrip("/"), str(link), "http://127.0.0.1:9/x.png", "", "/"]
    found = list(file_inputs(server))
    assert {"image", "file", "gallery"} <= {component["type"] for _, _, component in found}
    refusals = set()
    with HealthWatch(server) as watch:
        for event, position, component in found:
            for target in targets:
                for shape in ("meta", "bare", "url"):
                    data = event_data(server, event, position, file_value(component, target, shape))
                    answers = [join(server, event, data)]
                    if event["api_name"]:
                        answers.append(httpx.post(f"{server.url}/gradio_api/run/{event['api_name']}",
                                                  json={"data": data}, timeout=10))
                        answers.append(httpx.post(f"{server.url}/gradio_api/call/{event['api_name']}",
                                                  json={"data": data}, timeout=10))
                    for answer in answers:
                        assert answer.status_code == 403, (event["api_name"], component["type"], target, answer.text)
                        assert secret_text not in answer.text
                        refusals.add(answer.text)
    watch.check()
    assert refusals == {json.dumps({"error": "FileNotAvailable", "detail": REFUSED})}  # one message for all
    assert files_containing(server.uploads, secret_text) == []  # not even copied into the upload folder
    assert secret_text not in server.log() and "Traceback" not in server.log()


def test_non_regular_and_oversized_files_are_never_read(server, tmp_path):
    """2. /dev/zero (or a FIFO, or a link to either) in a file input made the server read forever."""
    folder = server.upload_folder()
    fifo = folder / "pipe.png"
    os.mkfifo(fifo)
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "huge.png").write_bytes(b"\0" * (16 * 1024 * 1024 + 1))  # over --max-body-mb: never read whole
    (folder / "a-folder.png").mkdir()
    run = event_named(server, "run")
    position = next(p for e, p, c in file_inputs(server) if e["id"] == run["id"] and c["type"] == "image")
    with HealthWatch(server) as watch:
        for target in ("/dev/zero", "/dev/urandom", str(fifo), str(folder / "zero.png"), str(folder / "huge.png"),
                       str(folder / "a-folder.png")):
            answer = join(server, run, event_data(server, run, position, file_value({"type": "image"}, target, "meta")))
            assert answer.status_code == 403 and REFUSED in answer.text, target
    watch.check()
    fifo.unlink()
    (folder / "huge.png").unlink()


def test_uploads_still_work_and_history_files_are_not_served(server, secret):
    """7. The whole history folder (history.sqlite3 with every prompt) was served; uploads must still work."""
    run = event_named(server, "run")
    _, components = ui_config(server)
    position = [components[i]["type"] for i in run["inputs"]].index("image")
    data = event_data(server, run, position, file_value({"type": "image"}, upload(server, png(96, 64)), "meta"))
    data[[components[i].get("props", {}).get("elem_id") for i in run["inputs"]].index("prompt")] = "a boat"
    done = outcome(server, run, data)
    assert done["success"], done
    status, *_ = done["output"]["data"]
    assert status.startswith("done: 1 image(s)")
    result_url = done["output"]["data"][2][0]["image"]["url"]  # Gradio's copy, in the upload folder
    assert httpx.get(result_url).status_code == 200
    (server.history / "notes.txt").write_text(secret[1])
    entry = History(server.history).list()[0]
    refused = []
    for path in (server.history / "history.sqlite3", entry.image, server.history / "notes.txt", secret[0],
                 Path("/etc/hostname")):
        for route in ("file=", "file/"):
            answer = httpx.get(f"{server.url}/gradio_api/{route}{path}")
            refused.append((answer.status_code, answer.text))
    assert set(refused) == {(403, json.dumps({"error": "FileNotAvailable", "detail": REFUSED}))}
    fetch = httpx.get(f"{server.url}/gradio_api/file=https://example.org/x.png")
    proxy = httpx.get(f"{server.url}/gradio_api/proxy=https://example.org/x.png")
    assert fetch.status_code == 403 and proxy.status_code == 403


# ---------------------------------------------------------------------------------------------- hangs and CPU


def test_tiny_strength_is_answered_at_once(server):
    """3. strength 1e-300 spun a worker thread forever; 41 such requests took the server down."""
    with HealthWatch(server) as watch, ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(
            lambda _: httpx.post(server.url + "/sdapi/v1/img2img", json=a1111(denoising_strength=1e-300, steps=25),
                                 timeout=30), range(48)))
        native = httpx.post(server.url + "/v1/img2img", files={"image": png()},
                            data={"prompt": "x", "strength": "5e-324"}, timeout=30)
    # The A1111 API runs what A1111 runs: one denoising step (the last of the schedule), at once; the strict
    # native route refuses. Either way nothing spins.
    ran = [answer for answer in answers if answer.status_code == 200]
    assert ran and all(answer.status_code in (200, 503) for answer in answers)
    assert all("ran one denoising step" in " ".join(json.loads(answer.json()["info"])["notices"]) for answer in ran)
    assert native.status_code == 422
    assert "even 500 steps give none, so raise strength to at least 0.002" in native.json()["detail"]
    watch.check()
    run = event_named(server, "run")
    _, components = ui_config(server)
    data = event_data(server, run, [components[i]["type"] for i in run["inputs"]].index("image"),
                      file_value({"type": "image"}, upload(server, png()), "meta"))
    data[[components[i].get("props", {}).get("elem_id") for i in run["inputs"]].index("strength")] = 1e-300
    done = outcome(server, run, data, timeout=30)  # the form's own bounds stop it before our checks
    assert not done["success"] and "less than minimum value 0.01" in done["output"]["error"]


def test_long_infotexts_are_parsed_in_linear_time_and_capped(server):
    """4. A 100 KB infotext (field or PNG chunk) took 54 s of the event loop; every route stalled."""
    line = "a " * 32_000  # the worst case for a backtracking parser, just under the cap
    with HealthWatch(server) as watch:
        for text in (line, "Steps: 4, " + "x" * 60_000):
            answer = httpx.post(server.url + "/sdapi/v1/img2img", json=a1111(infotext=text), timeout=60)
            assert answer.status_code in (200, 422), answer.text
            info = httpx.post(server.url + "/sdapi/v1/png-info",
                              json={"image": base64.b64encode(png(text=text)).decode()}, timeout=60)
            assert info.status_code == 200 and info.json()["info"] == text
        too_long = httpx.post(server.url + "/sdapi/v1/img2img", json=a1111(infotext="a" * 100_000), timeout=60)
        chunk = httpx.post(server.url + "/sdapi/v1/png-info",
                           json={"image": base64.b64encode(png(text="a, " * 34_000)).decode()}, timeout=60)
    for answer in (too_long, chunk):
        assert answer.status_code == 422
        assert "characters long; the limit is 65,536 characters" in answer.json()["detail"]
    watch.check()


def test_prompt_length_is_capped_everywhere(server):
    """5. A 15 MB prompt was accepted: 90 s of tokenizing and 3 GB of memory."""
    with HealthWatch(server) as watch:
        huge = httpx.post(server.url + "/sdapi/v1/img2img", json=a1111(prompt="cat " * 3_750_000), timeout=60)
        negative = httpx.post(server.url + "/sdapi/v1/img2img", json=a1111(negative_prompt="n" * 10_001), timeout=60)
        native = httpx.post(server.url + "/v1/img2img", files={"image": png()}, data={"prompt": "p" * 20_000},
                            timeout=60)
    assert huge.status_code == 422 and huge.json()["field"] == "prompt"
    assert "prompt is 15,000,000 characters long; the limit is 10,000 characters" in huge.json()["detail"]
    assert negative.status_code == 422 and negative.json()["field"] == "negative_prompt"
    assert native.status_code == 422 and "the limit is 10,000 characters" in native.json()["detail"]
    watch.check()
    assert httpx.post(server.url + "/sdapi/v1/img2img", json=a1111(prompt="p" * 10_000, steps=2),
                      timeout=120).status_code == 200  # the limit itself is fine


# ---------------------------------------------------------------------------------------------- browsers


def test_cross_origin_and_foreign_host_requests_are_refused(server):
    """6. Any web page could run generations (multipart POST), interrupt jobs, and read answers through
    DNS rebinding on the keyless default."""
    before = server.health()["queue"]["completed"]
    entries = History(server.history).count()
    with HealthWatch(server) as watch:
        for origin in ("https://evil.example", "null", "http://localhost:1", f"http://127.0.0.1:{server.port + 1}"):
            forged = httpx.post(server.url + "/v1/img2img", files={"image": png()},
                                data={"prompt": "csrf", "steps": "4", "save": "true"}, headers={"Origin": origin})
            assert forged.status_code == 403 and forged.json()["error"] == "ForeignOrigin", origin
            assert httpx.post(server.url + "/sdapi/v1/interrupt", headers={"Origin": origin}).status_code == 403
            run = event_named(server, "run")
            assert httpx.post(server.url + "/gradio_api/queue/join", headers={"Origin": origin},
                              json={"data": [], "fn_index": run["id"], "session_hash": "x"}).status_code == 403
        for host in ("evil.example", f"rebind.evil.example:{server.port}", "127.0.0.1.evil.example", "[::1"):
            for path in ("/v1/health", "/", "/config", "/sdapi/v1/options"):
                answer = httpx.get(server.url + path, headers={"Host": host})
                assert answer.status_code == 400 and answer.json()["error"] == "InvalidHost", (host, path)
    watch.check()
    assert server.health()["queue"]["completed"] == before and History(server.history).count() == entries
    # the page itself, and plain clients, still work
    same_origin = {"Origin": server.url}
    assert httpx.post(server.url + "/sdapi/v1/interrupt", headers=same_origin).status_code == 200
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"):
        assert httpx.get(server.url + "/v1/health", headers={"Host": host}).status_code == 200
    assert httpx.post(server.url + "/v1/img2img", files={"image": png()}, data={"prompt": "ok", "steps": "2"},
                      timeout=120).status_code == 200


def test_the_ui_does_not_echo_other_origins(server, keyed):
    """8. Gradio answered any http://localhost:* origin with credentials allowed."""
    for origin in ("http://localhost:4444", "http://127.0.0.1:1", "https://evil.example", "null"):
        for served in (server, keyed):
            for method in ("GET", "OPTIONS"):
                answer = httpx.request(method, served.url + "/config", headers={
                    "Origin": origin, "Access-Control-Request-Method": "POST", **served.headers})
                assert "access-control-allow-origin" not in answer.headers, (origin, method)
                assert "access-control-allow-credentials" not in answer.headers
    allowed = httpx.get(keyed.url + "/config", headers={"Origin": "https://app.example", **keyed.headers})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    posted = httpx.post(keyed.url + "/sdapi/v1/interrupt", headers={"Origin": "https://app.example", **keyed.headers})
    assert posted.status_code == 200
    assert httpx.get(keyed.url + "/v1/health", headers={"Host": "img2img.lan", **keyed.headers}).status_code == 200


def test_uploads_are_swept_under_the_limit(server):
    """9. Uploads were never deleted (200 MB after five 40 MB uploads)."""
    folder = server.upload_folder()
    noise = [os.urandom(5 * 1024 * 1024) for _ in range(5)]  # 25 MB in all; the limit is 16 MB
    paths = [upload(server, data, f"big-{i}.png") for i, data in enumerate(noise)]

    def folder_size() -> int:
        return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())

    wait_for(lambda: folder_size() <= 16 * 1024 * 1024, timeout=20)  # swept right after each upload
    assert Path(paths[-1]).read_bytes() == noise[-1]  # the newest upload is kept
    assert not Path(paths[0]).exists()  # the oldest went first


# ---------------------------------------------------------------------------------------------- odd input


def test_odd_requests_get_a_clear_4xx_and_no_traceback(server):
    """10. A lone surrogate in a prompt gave 500; the queue's data route (and Gradio's other routes, for an
    unknown event, endpoint or component) answered 500 or failed mid-stream, with a traceback in the log."""
    mark = len(server.log())
    body = json.dumps(a1111(prompt="x")).replace('"prompt": "x"', '"prompt": "\\ud800"')
    answer = httpx.post(server.url + "/sdapi/v1/img2img", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and answer.json()["field"] == "prompt"
    assert "unpaired surrogate" in answer.json()["detail"]
    for session in ("no-such-session", ""):
        data = httpx.get(server.url + "/gradio_api/queue/data", params={"session_hash": session}, timeout=10)
        assert data.status_code == 404 and data.json()["error"] == "NotFound"
    run = event_named(server, "run")
    odd = [("GET", "/gradio_api/call/run/no-such-event", None, 404),
           ("POST", "/gradio_api/queue/join", {"data": [], "fn_index": 999, "session_hash": "s"}, 404),
           ("POST", "/gradio_api/queue/join", {"data": [1], "fn_index": run["id"], "session_hash": "s"}, 422),
           ("POST", "/gradio_api/run/run", {"data": []}, 422),
           ("POST", "/gradio_api/run/no-such-endpoint", {"data": []}, 404),
           ("POST", "/gradio_api/call/no-such-endpoint", {"data": []}, 404),
           ("POST", "/gradio_api/component_server", {"session_hash": "s", "component_id": 9999, "fn_name": "x",
                                                     "data": None}, 404)]
    for method, path, payload, status in odd:
        answer = httpx.request(method, server.url + path, json=payload, timeout=10)
        assert answer.status_code == status and "detail" in answer.json(), (path, answer.text)
    time.sleep(0.5)
    log = server.log(since=mark)
    assert "Traceback" not in log and " 500 " not in log


# ---------------------------------------------------------------------------------------------- slow clients


def slow_sockets(port: int, count: int, request: bytes) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(4096) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_slow_clients_are_timed_out(server):
    """11. Slow clients were never timed out (2000 slow sockets held open)."""
    with HealthWatch(server) as watch:
        headers = slow_sockets(server.port, 60, b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        body = slow_sockets(server.port, 5, b"POST /sdapi/v1/png-info HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        deadline = time.monotonic() + 4  # --client-timeout 2: a byte every 0.3 s does not keep them open
        while time.monotonic() < deadline:
            for sock in headers:
                try:
                    sock.sendall(b"a")
                except OSError:
                    pass
            time.sleep(0.3)
        assert all(closed_by_server(sock) for sock in headers)
        answers = [sock.recv(4096) for sock in body]
        assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[0]
    watch.check()
    for sock in headers + body:
        sock.close()


def test_connections_are_limited(keyed):
    """11. A connection limit is set: beyond it requests get 503 at once, not a hang; afterwards all is well."""
    idle = slow_sockets(keyed.port, 20, b"")  # --max-connections 16
    with HealthWatch(keyed, expect=(503,)) as watch:
        time.sleep(0.5)
    for sock in idle:
        sock.close()
    watch.check()


# ---------------------------------------------------------------------------------------------- login


def test_key_login_sets_a_safe_cookie(keyed):
    """With --api-key alone a browser could not open the UI: it only knows how to send Basic credentials."""
    page = httpx.get(keyed.url + "/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and 'action="/login"' in page.text and KEY not in page.text
    assert httpx.get(keyed.url + "/v1/health").json()["error"] == "Unauthorized"  # API clients: JSON as before
    wrong = httpx.post(keyed.url + "/login", data={"key": KEY + "x", "next": "/"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    good = httpx.post(keyed.url + "/login", data={"key": KEY, "next": "/?tab=1"})
    assert good.status_code == 303 and good.headers["location"] == "/?tab=1"
    cookie = good.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "path", "max-age"} <= attributes and "SameSite=Strict" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    assert KEY not in token
    jar = {"img2img_auth": token}
    assert httpx.get(keyed.url + "/", cookies=jar).status_code == 200
    assert httpx.get(keyed.url + "/v1/health", cookies=jar).status_code == 200
    for forged in (token[:-1] + ("0" if token[-1] != "0" else "1"), "1." + token.split(".")[1], "9" * 12 + ".x"):
        assert httpx.get(keyed.url + "/v1/health", cookies={"img2img_auth": forged}).status_code == 401
    redirect = httpx.post(keyed.url + "/login", data={"key": KEY, "next": "//evil.example/"})
    assert redirect.headers["location"] == "/"
    login_csrf = httpx.post(keyed.url + "/login", data={"key": KEY}, headers={"Origin": "https://evil.example"})
    assert login_csrf.status_code == 403
    out = httpx.post(keyed.url + "/logout", cookies=jar, headers={"Origin": keyed.url})
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]


@pytest.mark.timeout(300)
def test_browser_logs_in_with_the_key(browser, keyed):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(keyed.url + "/")
    page.locator("#key").fill(KEY)
    page.locator("button[type=submit]").click()
    page.wait_for_selector("#generate")  # the UI itself, its calls authorized by the cookie
    page.get_by_role("tab", name="History").click()  # its events go through Gradio's queue: a POST and a stream
    page.wait_for_function("document.body.textContent.includes('generation(s) in')")
    (cookie,) = [c for c in context.cookies() if c["name"] == "img2img_auth"]
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it
    context.close()
