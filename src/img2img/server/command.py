"""The `img2img serve` command. Imports nothing heavy at module level: `img2img --help` stays instant."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command(name="serve")(serve)


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on. Any non-loopback address needs "
                                               "--api-key/--api-auth or --insecure."),
    port: int = typer.Option(7860, help="Port to listen on; 0 picks a free one (the address is printed)."),
    model: list[str] | None = typer.Option(None, "--model", "-m",
                                              help="Model: alias, hub id, folder or .safetensors; repeatable. "
                                                   "The first is the current one. (default: sd21-base)"),
    models: str | None = typer.Option(None, "--models", help="More models, comma-separated; clients may "
                                                                "switch among the configured ones only."),
    device: str | None = typer.Option(None, help="auto, cuda, cuda:N, mps or cpu. (default: auto)"),
    dtype: str | None = typer.Option(None, help="auto, float16, bfloat16 or float32. (default: auto)"),
    vae: str | None = typer.Option(None, "--vae", help="Autoencoder: taesd, a hub id, a VAE folder or "
                                                       ".safetensors. (default: the model's own)"),
    backend: str = typer.Option("auto", "--backend", help="auto, torch or openvino (CPU; exports each model "
                                                          "once). auto: openvino on the CPU when installed."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the UNet and VAE; compiled once at "
                                                          "load, reused by every request."),
    offload: str = typer.Option("auto", "--offload", help="CUDA: none, model or sequential. (default: auto, "
                                                          "from free memory)"),
    cpu_threads: int | None = typer.Option(None, "--cpu-threads", help="Torch CPU threads. (default: the "
                                                                          "number of physical cores)"),
    api_key: list[str] | None = typer.Option(None, "--api-key", envvar="IMG2IMG_API_KEY",
                                                help="Require 'Authorization: Bearer KEY'; repeatable. "
                                                     "Env: IMG2IMG_API_KEY (keeps it out of `ps`)."),
    api_auth: str | None = typer.Option(None, "--api-auth", envvar="IMG2IMG_API_AUTH",
                                           help="Require HTTP Basic auth, A1111 style: user:pass[,user2:pass2]."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback address without auth."),
    max_queue: int = typer.Option(8, "--max-queue", help="Jobs that may wait; more get 503 + Retry-After."),
    max_batch: int = typer.Option(1, "--max-batch", help="Run queued jobs that differ only in prompts, images and "
                                                         "seeds as one batched call of up to N images. (default: "
                                                         "1, one job at a time)"),
    batch_wait: float = typer.Option(50.0, "--batch-wait", help="With --max-batch: milliseconds a job may wait "
                                                                "for others to join its call."),
    max_pixels: int = typer.Option(16_777_216, "--max-pixels", help="Refuse input images with more pixels."),
    max_body_mb: float = typer.Option(50.0, "--max-body-mb", help="Refuse request bodies larger than this."),
    cors_origin: list[str] | None = typer.Option(None, "--cors-origin",
                                                    help="Allow browser calls from this origin; repeatable. "
                                                         "(default: CORS off)"),
    allowed_host: list[str] | None = typer.Option(None, "--allowed-host",
                                                     help="Also answer requests addressed to this host name (e.g. "
                                                          "behind a proxy); repeatable. Others get 400."),
    max_connections: int = typer.Option(256, "--max-connections",
                                        help="Open connections and requests in progress; more get 503."),
    client_timeout: float = typer.Option(15.0, "--client-timeout",
                                         help="Seconds a client may take to send its request headers, or stay "
                                              "silent while sending a body."),
    upload_cache_mb: float = typer.Option(1024.0, "--upload-cache-mb",
                                          help="The web UI's uploads are deleted oldest first beyond this size "
                                               "(and after a day)."),
    preload: bool = typer.Option(True, "--preload/--lazy", help="Load the model in the background at start-up, "
                                                               "or on the first request."),
    no_safety_checker: bool = typer.Option(False, "--no-safety-checker", help="Disable the model's checker."),
    shutdown_grace: float = typer.Option(30.0, "--shutdown-grace",
                                         help="Seconds the running job may finish after SIGTERM."),
    ui: bool = typer.Option(True, "--ui/--no-ui", help="Serve the web UI at / (needs the ui extra)."),
    history_dir: str | None = typer.Option(None, "--history-dir", envvar="IMG2IMG_HISTORY_DIR",
                                           help="The data folder: past generations (the web UI's history) and "
                                                "A1111 settings. (default: the user's data folder, e.g. "
                                                "~/.local/share/img2img)"),
    allow_image_urls: bool = typer.Option(False, "--allow-image-urls",
                                          help="A1111 API: fetch init images given as http(s) URLs (public "
                                               "addresses only, size- and time-limited). (default: refused)"),
    lora_dir: str | None = typer.Option(None, "--lora-dir", envvar="IMG2IMG_LORA_DIR",
                                        help="Folder of <lora:name> files. (default: loras/ in the data folder)"),
    embeddings_dir: str | None = typer.Option(None, "--embeddings-dir", envvar="IMG2IMG_EMBEDDINGS_DIR",
                                              help="Folder of textual-inversion embeddings. (default: "
                                                   "embeddings/ in the data folder)"),
    styles_file: str | None = typer.Option(None, "--styles-file", envvar="IMG2IMG_STYLES_FILE",
                                           help="A1111 styles.csv. (default: styles.csv in the data folder)"),
    engine: str = typer.Option("local", "--engine", help="Where generation runs: local (this process) or ray "
                                                         "(Ray Serve model replicas; needs the ray extra). The "
                                                         "routes, auth, limits and history stay here."),
    replicas: int = typer.Option(1, "--replicas", help="--engine ray: model replicas, one GPU each (or "
                                                       "--cpu-threads CPUs each on a CPU cluster)."),
    min_replicas: int | None = typer.Option(None, "--min-replicas", help="--engine ray: autoscale down to this "
                                                                         "many replicas, by queue depth."),
    max_replicas: int | None = typer.Option(None, "--max-replicas", help="--engine ray: autoscale up to this "
                                                                         "many replicas, by queue depth."),
    ray_address: str | None = typer.Option(None, "--ray-address",
                                           help="--engine ray: an existing Ray cluster, e.g. ray://head:10001 "
                                                "or auto. (default: a private Ray on this machine)"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
):
    """Serve the web UI (/), the A1111-compatible API (/sdapi/v1) and the native API (/v1); docs at /docs."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        from ..errors import Img2ImgError

        raise Img2ImgError("the server needs its extras: pip install 'img2img[server]'") from None
    from .config import ServerConfig, parse_api_auth
    from .runner import run_server

    specs = list(model or []) + [m.strip() for m in (models or "").split(",") if m.strip()]
    config = ServerConfig(
        models=specs, host=host, port=port, device=device, dtype=dtype, vae=vae, backend=backend, compile=compile,
        offload=offload, cpu_threads=cpu_threads, safety_checker=not no_safety_checker,
        api_keys=list(api_key or []), api_auth=parse_api_auth(api_auth) if api_auth else [], insecure=insecure,
        max_queue=max_queue, max_batch=max_batch, batch_wait_ms=batch_wait, max_pixels=max_pixels,
        max_body_mb=max_body_mb, cors_origins=list(cors_origin or []),
        allowed_hosts=list(allowed_host or []), max_connections=max_connections, client_timeout=client_timeout,
        upload_cache_mb=upload_cache_mb, preload=preload, shutdown_grace=shutdown_grace, ui=ui,
        history_dir=history_dir, lora_dir=lora_dir, embeddings_dir=embeddings_dir, styles_file=styles_file,
        allow_image_urls=allow_image_urls, engine=engine, replicas=replicas, min_replicas=min_replicas,
        max_replicas=max_replicas, ray_address=ray_address,
    ).validate()
    details = (f"models: {', '.join(specs) or 'sd21-base'}; auth: {'on' if config.auth_enabled else 'off'}; "
               f"model loading: {'in the background now' if preload else 'on first use'}"
               + (f"; engine: ray, {_replica_words(config)}" if engine == "ray" else ""))

    def announce(url: str) -> None:  # the real address: with --port 0 the system picked the port
        where = f"web UI at {url}/, API docs at /docs" if ui else "API docs at /docs"
        typer.echo(f"img2img server: listening on {url}; {where}; {details}", err=True)

    run_server(config, log_level=log_level, announce=announce)


def _replica_words(config) -> str:
    low, high = config.replica_bounds
    return f"{low} to {high} replicas (autoscaling)" if config.autoscaling else f"{config.replicas} replica(s)"
