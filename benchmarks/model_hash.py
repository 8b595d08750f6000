"""What the on-disk hash cache saves: a single-file checkpoint's "Model hash" in a new process, cold and cached.

Writes a checkpoint-sized file of random bytes (default 2 GB, the size of an SD 1.5 fp16 .safetensors),
then computes its model hash in fresh processes: first with an empty cache (reads and hashes every byte),
then again (size and mtime match the cache entry: no reading). Compared with hashlib over the same file.

    python benchmarks/model_hash.py [--gb 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = ("import sys, time; from img2img.models import model_hash, resolve_model; t = time.perf_counter(); "
         "h = model_hash(resolve_model(sys.argv[1])); print(h, time.perf_counter() - t)")


def hash_in_new_process(path: Path, cache: Path) -> tuple[str, float]:
    env = {**os.environ, "IMG2IMG_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path, cache = Path(folder) / "checkpoint.safetensors", Path(folder) / "cache"
        block = os.urandom(1 << 20)
        with open(path, "wb") as handle:
            for _ in range(int(args.gb * 1024)):
                handle.write(block)
        started = time.perf_counter()
        with open(path, "rb") as handle:
            expected = hashlib.file_digest(handle, "sha256").hexdigest()[:10]
        bare = time.perf_counter() - started
        cold_hash, cold = hash_in_new_process(path, cache)
        warm_hash, warm = hash_in_new_process(path, cache)
        assert cold_hash == warm_hash == expected, (cold_hash, warm_hash, expected)
        print(f"{args.gb:g} GB checkpoint, model hash {expected}")
        print(f"  hashlib over the file:        {bare:8.3f} s")
        print(f"  new process, empty cache:     {cold:8.3f} s")
        print(f"  new process, cached on disk:  {warm:8.3f} s")


if __name__ == "__main__":
    main()
