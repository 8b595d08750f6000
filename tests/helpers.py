"""Small helpers shared by test modules."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02):
    """Poll until predicate() is truthy and return its value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(interval)


def hold_worker(service, timeout: float = 30.0):
    """Occupy the server's worker with a job that waits for the returned event, so the next jobs queue up."""
    import threading

    started, release = threading.Event(), threading.Event()
    service.queue.submit(lambda job: started.set() or release.wait(timeout))
    assert started.wait(20)
    return release


LISTENING = re.compile(r"img2img server: listening on http://(\S+?):(\d+);")


class ServeProcess:
    """`img2img serve` as users start it: a subprocess on a port the system picks (`--port 0`: no race between
    choosing a free port and binding it), its output in `folder/server.log`. Ready once it says where it
    listens and /v1/health answers (with the model loaded, unless `--lazy`)."""

    def __init__(self, folder: Path, *args: str, env: dict | None = None, headers: dict | None = None,
                 wait_loaded: bool | None = None, timeout: float = 180.0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path = self.folder / "server.log"
        self.headers = dict(headers or {})
        command = [sys.executable, "-m", "img2img.cli", "serve", "--port", "0", "--device", "cpu", *args]
        environment = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", **(env or {}))
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, env=environment, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=self.folder)
        try:
            found = wait_for(lambda: self._alive() and LISTENING.search(self.log()), timeout=timeout, interval=0.05)
            self.port = int(found.group(2))
            self.url = f"http://127.0.0.1:{self.port}"
            loaded = ("--lazy" not in args) if wait_loaded is None else wait_loaded
            wait_for(lambda: self._alive() and self._ready(loaded), timeout=timeout, interval=0.1)
        except BaseException:
            self.stop()
            raise

    def _alive(self) -> bool:
        assert self.process.poll() is None, f"server exited with {self.process.returncode}:\n{self.log()}"
        return True

    def _ready(self, loaded: bool) -> bool:
        try:
            health = httpx.get(self.url + "/v1/health", headers=self.headers, timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        return health.get("model_loaded") or not loaded

    def log(self, since: int = 0) -> str:
        """The server's output, from character `since` on (len(server.log()) marks a point)."""
        return self.log_path.read_text(errors="replace")[since:]

    def health(self) -> dict:
        return httpx.get(self.url + "/v1/health", headers=self.headers, timeout=1.0).json()

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode
