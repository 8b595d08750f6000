"""Running the app under uvicorn: in the foreground with graceful SIGTERM handling, or in a thread for tests."""

from __future__ import annotations

import logging
import socket
import threading
import time

from .config import ServerConfig

log = logging.getLogger("img2img.server")


def _server_class():
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """On SIGTERM/SIGINT: stop accepting, fail queued jobs with 503, let the running job finish (it is
        interrupted after the grace period), then exit with status 0 instead of re-raising the signal."""

        service = None
        grace: float | None = None

        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()
            if self.service is not None:
                # Not inside the signal handler itself: the queue takes locks.
                threading.Thread(target=self.service.queue.shutdown, kwargs={"grace": self.grace},
                                 daemon=True).start()

    return GracefulServer


def _uvicorn_config(app, config: ServerConfig, log_level: str):
    import uvicorn

    return uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level, lifespan="on",
                          timeout_graceful_shutdown=int(config.shutdown_grace) + 60, server_header=False,
                          proxy_headers=False)


def run_server(config: ServerConfig, log_level: str = "info") -> None:
    """Serve in the foreground until SIGTERM or Ctrl+C."""
    from .app import create_app

    app = create_app(config)
    server = _server_class()(_uvicorn_config(app, config, log_level))
    server.service = app.state.service
    server.grace = config.shutdown_grace
    server.run()


class ServerThread:
    """A real uvicorn server on 127.0.0.1 with a free port, in a background thread.

        with ServerThread(ServerConfig(models=[folder], device="cpu", ui=False)) as server:
            httpx.get(server.url + "/v1/health")
    """

    def __init__(self, config: ServerConfig, *, start_timeout: float = 60.0, log_level: str = "warning"):
        from .app import create_app

        config.host = "127.0.0.1"
        self.config = config
        self.app = create_app(config)
        self.service = self.app.state.service
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config.port = self.port
        import uvicorn

        self.server = uvicorn.Server(_uvicorn_config(self.app, config, log_level))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="img2img-test-server", daemon=True)
        self._start_timeout = start_timeout

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.service.queue.shutdown(grace=0)
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
