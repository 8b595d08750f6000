"""Server settings and the checks that keep defaults safe. Pure Python: no FastAPI, no torch."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..errors import InvalidRequest
from ..images import DEFAULT_MAX_PIXELS
from ..request import MAX_BATCH

LOOPBACK_NAMES = ("localhost",)
ENGINES = ("local", "ray")
MAX_REPLICAS = 1024


@dataclass
class ServerConfig:
    models: list[str] = field(default_factory=list)  # aliases, hub ids or local paths; the first is current
    host: str = "127.0.0.1"
    port: int = 7860
    device: str | None = None
    dtype: str | None = None
    vae: str | None = None  # how the models run: see backends.Acceleration
    backend: str = "auto"
    compile: bool = False
    offload: str = "auto"
    cpu_threads: int | None = None
    safety_checker: bool = True
    api_keys: list[str] = field(default_factory=list)
    api_auth: list[tuple[str, str]] = field(default_factory=list)  # (user, password) pairs
    insecure: bool = False
    max_queue: int = 8  # jobs waiting (not counting the running one)
    max_batch: int = 1  # images one pipeline call may make for several queued jobs that share its settings
    batch_wait_ms: float = 50.0  # how long a job may wait for company when max_batch > 1
    max_pixels: int = 16_777_216  # 4096 x 4096 input pixels
    max_body_mb: float = 50.0
    cors_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)  # Host names served besides localhost and the bound address
    max_connections: int = 256  # open connections and requests in progress; more get 503
    client_timeout: float = 15.0  # seconds a client may take to send its headers, or pause while sending a body
    upload_cache_mb: float = 1024.0  # the web UI's upload folder is swept back under this size
    preload: bool = True  # load the current model in the background at start-up
    shutdown_grace: float = 30.0  # seconds the running job may finish after SIGTERM before it is interrupted
    ui: bool = True  # serve the web UI at /
    history_dir: str | None = None  # the data folder: kept outputs and A1111 settings (default: the user's)
    allow_image_urls: bool = False  # A1111 API: fetch http(s) init images from public addresses
    lora_dir: str | None = None  # <lora:name> files (default: networks.lora_dir())
    embeddings_dir: str | None = None  # textual-inversion embeddings (default: networks.embeddings_dir())
    styles_file: str | None = None  # A1111 styles.csv (default: styles.styles_file())
    engine: str = "local"  # where jobs run: "local" (this process) or "ray" (Ray Serve replicas)
    replicas: int = 1  # --engine ray: model replicas (the initial count when autoscaling)
    min_replicas: int | None = None  # --engine ray: autoscaling bounds (either one turns autoscaling on)
    max_replicas: int | None = None
    ray_address: str | None = None  # --engine ray: an existing cluster (default: a private local Ray)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys or self.api_auth)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def validate(self) -> ServerConfig:
        if not 0 <= self.port <= 65535:
            raise InvalidRequest(f"--port must be between 0 and 65535, got {self.port}", "port")
        if self.max_queue < 0:
            raise InvalidRequest(f"--max-queue must be 0 or more, got {self.max_queue}", "max_queue")
        if self.max_batch < 1 or self.max_batch > MAX_BATCH:
            raise InvalidRequest(f"--max-batch must be between 1 and {MAX_BATCH}, got {self.max_batch}", "max_batch")
        if not 0 <= self.batch_wait_ms <= 60_000:
            raise InvalidRequest(f"--batch-wait must be between 0 and 60000 ms, got {self.batch_wait_ms:g}",
                                 "batch_wait_ms")
        if not 0 < self.max_pixels <= DEFAULT_MAX_PIXELS:
            raise InvalidRequest(f"--max-pixels must be between 1 and {DEFAULT_MAX_PIXELS}, got {self.max_pixels}",
                                 "max_pixels")
        if not 0 < self.max_body_mb <= 1024:
            raise InvalidRequest(f"--max-body-mb must be in (0, 1024], got {self.max_body_mb:g}", "max_body_mb")
        if not 1 <= self.max_connections <= 100_000:
            raise InvalidRequest(f"--max-connections must be between 1 and 100000, got {self.max_connections}",
                                 "max_connections")
        if not 0 < self.client_timeout <= 3600:
            raise InvalidRequest(f"--client-timeout must be in (0, 3600] seconds, got {self.client_timeout:g}",
                                 "client_timeout")
        if not self.max_body_mb <= self.upload_cache_mb <= 1024 * 1024:
            raise InvalidRequest(f"--upload-cache-mb must be at least --max-body-mb ({self.max_body_mb:g}), got "
                                 f"{self.upload_cache_mb:g}", "upload_cache_mb")
        for name in self.allowed_hosts:
            if not _is_host_name(name):
                raise InvalidRequest(f"--allowed-host takes a host name without scheme or port, got {name!r}",
                                     "allowed_hosts")
        for origin in self.cors_origins:
            well_formed = origin.startswith(("http://", "https://")) and origin.rstrip("/").count("/") == 2
            if origin != "*" and not well_formed:
                raise InvalidRequest("--cors-origin takes scheme://host[:port], e.g. https://app.example, or '*'; "
                                     f"got {origin!r}", "cors_origins")
        from ..backends import BACKENDS, OFFLOAD_MODES

        if self.backend not in BACKENDS:
            raise InvalidRequest(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}", "backend")
        if self.offload not in OFFLOAD_MODES:
            raise InvalidRequest(f"--offload must be one of {', '.join(OFFLOAD_MODES)}, got {self.offload!r}",
                                 "offload")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise InvalidRequest(f"--cpu-threads must be 1 or more, got {self.cpu_threads}", "cpu_threads")
        self._validate_engine()
        if any(not key for key in self.api_keys):
            raise InvalidRequest("--api-key must not be empty", "api_key")
        if not is_loopback(self.host) and not self.auth_enabled and not self.insecure:
            raise InvalidRequest(
                f"refusing to listen on {self.host} without authentication: anyone who can reach it could use "
                "the GPU. Pass --api-key KEY or --api-auth user:pass, or --insecure if the network is trusted",
                "host",
            )
        return self


    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    @property
    def replica_bounds(self) -> tuple[int, int]:
        """(fewest, most) replicas: both are --replicas unless autoscaling."""
        if not self.autoscaling:
            return self.replicas, self.replicas
        low = self.min_replicas if self.min_replicas is not None else min(1, self.replicas)
        high = self.max_replicas if self.max_replicas is not None else max(self.replicas, low)
        return low, high

    def _validate_engine(self) -> None:
        if self.engine not in ENGINES:
            raise InvalidRequest(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}", "engine")
        ray_only = {"--replicas": self.replicas != 1, "--min-replicas": self.min_replicas is not None,
                    "--max-replicas": self.max_replicas is not None, "--ray-address": bool(self.ray_address)}
        if self.engine != "ray":
            given = [name for name, used in ray_only.items() if used]
            if given:
                raise InvalidRequest(f"{', '.join(given)} needs --engine ray", "engine")
            return
        if self.max_batch > 1:  # each replica runs one job at a time; more replicas are the way to scale
            raise InvalidRequest("--max-batch batches jobs in this process; with --engine ray leave it at 1 and "
                                 "scale with --replicas", "max_batch")
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise InvalidRequest(f"--replicas must be between 1 and {MAX_REPLICAS}, got {self.replicas}", "replicas")
        for name, value in (("--min-replicas", self.min_replicas), ("--max-replicas", self.max_replicas)):
            if value is not None and not (0 if name == "--min-replicas" else 1) <= value <= MAX_REPLICAS:
                raise InvalidRequest(f"{name} must be between {0 if name == '--min-replicas' else 1} and "
                                     f"{MAX_REPLICAS}, got {value}", name[2:].replace("-", "_"))
        low, high = self.replica_bounds
        if not low <= self.replicas <= high:
            raise InvalidRequest(f"--replicas {self.replicas} must lie between --min-replicas {low} and "
                                 f"--max-replicas {high}", "replicas")


def _is_host_name(name: str) -> bool:
    """A name or address as in a Host header, without scheme, port or path: "img2img.lan", "[::1]"."""
    if name.startswith("[") and name.endswith("]"):
        try:
            return ipaddress.ip_address(name[1:-1]).version == 6
        except ValueError:
            return False
    return bool(name) and not any(c in name for c in "/:@ []")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_api_auth(value: str) -> list[tuple[str, str]]:
    """A1111's --api-auth: "user:pass" or several, comma-separated."""
    pairs = []
    for item in value.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise InvalidRequest(f"--api-auth expects user:password[,user2:password2], got {item.strip()!r}",
                                 "api_auth")
        pairs.append((user, password))
    return pairs
