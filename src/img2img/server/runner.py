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


KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this long
MAX_HEADER_BYTES = 16 * 1024  # request line plus headers; more is answered 400


def _protocol_class(header_timeout: float):
    """uvicorn's h11 protocol, plus a deadline for the request line and headers: uvicorn itself waits forever
    for a client that sends them a byte at a time (any byte even resets its keep-alive timer)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):
        _deadline = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # no complete request in time: drop the connection

        def _follow(self) -> None:  # waiting for a new request's headers: deadline on; got them: off
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self._deadline is None:
                    self._arm()
            else:
                self._disarm()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm() if self.conn.their_state is h11.IDLE else self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol


def _uvicorn_config(app, config: ServerConfig, log_level: str):
    import uvicorn

    # Every limit explicit: slow or idle clients are dropped, and connections are bounded (more get 503).
    return uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level, lifespan="on",
                          timeout_graceful_shutdown=int(config.shutdown_grace) + 60, server_header=False,
                          proxy_headers=False, http=_protocol_class(config.client_timeout),
                          limit_concurrency=config.max_connections, timeout_keep_alive=KEEP_ALIVE_S,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES)


def listening_url(sock: socket.socket) -> str:
    """http://host:port of a bound socket: the real port, also when port 0 let the system pick one."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_server(config: ServerConfig, log_level: str = "info", announce=None) -> None:
    """Serve in the foreground until SIGTERM or Ctrl+C. `announce(url)` is called once the socket listens,
    with the real address (with --port 0 the system picks a free port, so a caller learns it from here)."""
    from .app import create_app

    app = create_app(config)
    uvicorn_config = _uvicorn_config(app, config, log_level)
    sock = uvicorn_config.bind_socket()  # bound before announcing: the address printed is already taken
    if announce is not None:
        announce(listening_url(sock))
    server = _server_class()(uvicorn_config)
    server.service = app.state.service
    server.grace = config.shutdown_grace
    server.run(sockets=[sock])


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
