"""Load test for a running img2img server: N concurrent clients, bounded in count and time, loopback only.

    # against a server you started (give its pid to see its memory):
    python benchmarks/load.py --url http://127.0.0.1:7860 --requests 200 --clients 16 --server-pid 12345
    # or let the script start one with a tiny random-weight model (no download):
    python benchmarks/load.py --spawn-tiny --requests 200 --clients 16
    # the same on Ray Serve replicas (scaling: compare --replicas 1 and 2 with one thread each):
    python benchmarks/load.py --spawn-tiny --engine ray --replicas 2 --cpu-threads 1 --requests 60 --clients 8
    # micro-batching: the same load against a server with --max-batch 1, then one with --max-batch 8
    python benchmarks/load.py --spawn-tiny --requests 64 --clients 8 --max-batch 1 --max-batch 8

Prints throughput, p50/p99 latency, error counts by HTTP status, the server's RSS before and after (the front
process's only, with --engine ray) and the machine's load average; with several --max-batch values (spawned
servers only), each one's throughput relative to the first, and how many jobs ran in batched calls.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

MAX_REQUESTS = 10_000
MAX_CLIENTS = 64
MAX_SECONDS = 600


def rss_mb(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def loopback_only(url: str) -> str:
    host = urlparse(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to load-test {host!r}: this script only targets loopback addresses")
    return url.rstrip("/")


def picture_b64(size: int) -> str:
    from img2img.testing import make_photo

    buffer = io.BytesIO()
    make_photo(size, size).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def spawn_tiny(max_queue: int, engine: str = "local", replicas: int = 1, cpu_threads: int | None = None,
               max_batch: int = 1, batch_wait: float = 50.0,
               model: str | None = None) -> tuple[subprocess.Popen, str, tempfile.TemporaryDirectory]:
    from img2img.testing import build_tiny_sd

    folder = tempfile.TemporaryDirectory(prefix="img2img-load-")
    model = model or build_tiny_sd(Path(folder.name) / "tiny-sd")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "img2img.cli", "serve", "--model", str(model), "--device", "cpu", "--port",
               str(port), "--max-queue", str(max_queue), "--log-level", "warning", "--no-ui", "--history-dir",
               str(Path(folder.name) / "data"), "--engine", engine]
    if engine == "ray":
        command += ["--replicas", str(replicas)]
    if cpu_threads:
        command += ["--cpu-threads", str(cpu_threads)]
    if max_batch > 1:
        command += ["--max-batch", str(max_batch), "--batch-wait", str(batch_wait)]
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1", "IMG2IMG_DTYPE": "float32",
                                             "IMG2IMG_BACKEND": "torch"})
    return process, f"http://127.0.0.1:{port}", folder


def wait_healthy(client, url: str, headers: dict, timeout: float = 600.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get(url + "/v1/health", headers=headers, timeout=2).json().get("model_loaded"):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.25)
    raise SystemExit(f"the server at {url} did not become healthy in {timeout:g} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=300, help="stop after this many seconds")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="input and output side in pixels")
    parser.add_argument("--api-key", default=os.environ.get("IMG2IMG_API_KEY"))
    parser.add_argument("--server-pid", type=int, help="pid of the server, to report its RSS")
    parser.add_argument("--spawn-tiny", action="store_true", help="start a server with a tiny model for the run")
    parser.add_argument("--max-queue", type=int, default=16, help="with --spawn-tiny: the server's --max-queue")
    parser.add_argument("--engine", choices=("local", "ray"), default="local", help="with --spawn-tiny: the "
                        "server's --engine")
    parser.add_argument("--replicas", type=int, default=1, help="with --spawn-tiny --engine ray: model replicas")
    parser.add_argument("--cpu-threads", type=int, help="with --spawn-tiny: torch threads (per replica)")
    parser.add_argument("--max-batch", type=int, action="append", default=None,
                        help="with --spawn-tiny: the server's --max-batch; repeat to compare (default: 1)")
    parser.add_argument("--batch-wait", type=float, default=50.0, help="with --spawn-tiny: --batch-wait in ms")
    parser.add_argument("--model", default=None, help="with --spawn-tiny: serve this model instead of a tiny one")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.clients <= MAX_CLIENTS or \
            not 0 < args.duration <= MAX_SECONDS:
        raise SystemExit(f"bounds: requests 1..{MAX_REQUESTS}, clients 1..{MAX_CLIENTS}, duration (0, {MAX_SECONDS}]")
    batches = args.max_batch or [1]
    if len(batches) > 1 and not args.spawn_tiny:
        raise SystemExit("comparing several --max-batch values needs --spawn-tiny (a server per value)")
    first = None
    for max_batch in batches:
        throughput = run_load(args, max_batch)
        first = first or throughput
        if len(batches) > 1:
            print(f"--max-batch {max_batch}: throughput x{throughput / first:.2f} of --max-batch {batches[0]}\n")


def run_load(args, max_batch: int) -> float:
    """One load run (against a server spawned for it, or the one at --url); prints it, returns ok req/s."""

    import httpx

    process = folder = None
    url, pid = loopback_only(args.url), args.server_pid
    if args.spawn_tiny:
        process, url, folder = spawn_tiny(args.max_queue, args.engine, args.replicas, args.cpu_threads, max_batch,
                                          args.batch_wait, args.model)
        pid = process.pid
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    payload = {"prompt": "a lighthouse at dusk", "init_images": [picture_b64(args.size)], "steps": args.steps,
               "width": args.size, "height": args.size, "seed": -1}
    try:
        with httpx.Client(timeout=120) as probe:
            wait_healthy(probe, url, headers)
            warm = [threading.Thread(target=probe.post, args=(url + "/sdapi/v1/img2img",),
                                     kwargs={"json": payload, "headers": headers}) for _ in range(args.replicas)]
            for thread in warm:  # one warm-up request per replica at once, not counted
                thread.start()
            for thread in warm:
                thread.join()
            engine = probe.get(url + "/v1/health", headers=headers).json().get("engine", "local")
        load_before = os.getloadavg()
        before = rss_mb(pid)
        latencies: list[float] = []
        statuses: Counter = Counter()
        issued = 0
        lock = threading.Lock()
        deadline = time.monotonic() + args.duration

        def client_loop():
            nonlocal issued
            with httpx.Client(timeout=120, headers=headers) as client:
                while time.monotonic() < deadline:
                    with lock:
                        if issued >= args.requests:
                            return
                        issued += 1
                    started = time.perf_counter()
                    try:
                        status = client.post(url + "/sdapi/v1/img2img", json=payload).status_code
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    elapsed = time.perf_counter() - started
                    with lock:
                        latencies.append(elapsed)
                        statuses[status] += 1

        began = time.perf_counter()
        threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(args.duration + 130)
        wall = time.perf_counter() - began
        after = rss_mb(pid)
        load_after = os.getloadavg()
        with httpx.Client(timeout=10, headers=headers) as probe:
            queue = probe.get(url + "/v1/health").json().get("queue", {})
    finally:
        if process is not None:
            process.terminate()
            process.wait(60)
        if folder is not None:
            folder.cleanup()

    ok = statuses.get(200, 0)
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")

    print(f"requests: {len(latencies)} in {wall:.1f} s with {args.clients} clients "
          f"({args.steps} steps, {args.size}x{args.size}); engine: {engine}"
          + (f", {args.replicas} replica(s)" if args.spawn_tiny and engine == "ray" else "")
          + f", server --max-batch {queue.get('max_batch', '?')}")
    if queue.get("batched_calls") is not None:
        print(f"batched: {queue['batched_jobs']} jobs in {queue['batched_calls']} shared calls")
    print(f"throughput: {ok / wall:.2f} ok req/s ({len(latencies) / wall:.2f} req/s all)")
    print(f"latency: p50 {pct(50) * 1000:.0f} ms, p99 {pct(99) * 1000:.0f} ms, "
          f"mean {statistics.fmean(ordered) * 1000 if ordered else float('nan'):.0f} ms")
    print("status counts: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str)))
    if before is not None:
        print(f"server RSS: {before:.0f} MB before, {after:.0f} MB after ({after - before:+.0f} MB)")
    else:
        print("server RSS: unknown (pass --server-pid or --spawn-tiny)")
    print("load average (1 min) before / after: " + f"{load_before[0]:.2f} / {load_after[0]:.2f}")
    return ok / wall


if __name__ == "__main__":
    main()
