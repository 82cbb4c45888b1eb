"""cxrkit serve on loopback: latency and throughput for one 1024 px JPEG; JSON.

    python benchmarks/timings/serve.py  # cnn4 at 128 px, 1/4/16 clients
    python benchmarks/timings/serve.py --model-file model.cxr \
        --requests 200 --seconds 60

The server runs as its own process (``python -m cxrkit.cli serve``, so that
the clients do not share its interpreter); each client is a thread with one
keep-alive ``httpx`` connection that posts the same JPEG to ``/predict``
again and again. For 1, 4 and 16 concurrent clients it reports the median
and 95th percentile latency seen by the clients, requests per second and
failed requests, with at most ``--requests`` requests or ``--seconds``
seconds per level.

The reference is ``clf.predict_proba([path])`` in-process on the same file,
with the image cache cleared before each call (``in_process_cold``: decoding
included, as the server decodes every upload) and not cleared
(``in_process_warm``: the decoded image reused, which a server cannot do for
new uploads), paired round by round with one request to the server
(``server_paired``). ``p50_ratio`` is the median of the per-round ratios of
the request's latency over the cold in-process call (the issue's goal: at
most 1.5).

The JPEG is one of ``../shared/data/chest_xray_fullres`` resized to 1024 px
on its long side, written to a temporary folder. The model is trained for one
epoch on 16 images (``--model-file`` serves a saved one): weights do not
change the speed.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from cxrkit import PneumoniaClassifier, clear_image_cache, load_image_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, SHARED, print_json


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _model_file(args: argparse.Namespace, folder: Path) -> Path:
    if args.model_file:
        return Path(args.model_file)
    X, y = load_image_folder(SHARED / "chest_xray" / "train")
    pick = np.concatenate([np.flatnonzero(y == c)[:8] for c in np.unique(y)])
    clf = PneumoniaClassifier(
        model=args.model, image_size=args.image_size, max_epochs=1, random_state=0
    ).fit(X[pick], y[pick])
    return clf.save(folder / "bench.cxr")


def _jpeg_1024(folder: Path) -> Path:
    source = sorted((SHARED / "chest_xray_fullres").rglob("*.jpeg"))
    source = next(p for p in source if max(Image.open(p).size) >= 1024)
    with Image.open(source) as img:
        img = img.convert("L")
        img.thumbnail((1024, 1024))
        path = folder / "xray-1024.jpeg"
        img.save(path, quality=90)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(model: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "cxrkit.cli", "serve", str(model)]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--device", "cpu"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start within 120 s")


def _level(url: str, body: bytes, clients: int, requests: int, seconds: float) -> dict:
    latencies: list[float] = []
    failed = 0
    lock = threading.Lock()
    issued = 0
    stop_at = time.monotonic() + seconds

    def client() -> None:
        nonlocal issued, failed
        with httpx.Client(base_url=url, timeout=120) as h:
            while True:
                with lock:
                    if issued >= requests or time.monotonic() > stop_at:
                        return
                    issued += 1
                start = time.perf_counter()
                try:
                    ok = (
                        h.post(
                            "/predict", files={"file": ("x.jpeg", body, "image/jpeg")}
                        ).status_code
                        == 200
                    )
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    failed += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "failed": failed,
        "p50_ms": round(1000 * _percentile(latencies, 50), 1),
        "p95_ms": round(1000 * _percentile(latencies, 95), 1),
        "requests_per_s": round(len(latencies) / wall, 1),
    }


def _paired(url: str, body: bytes, model: Path, path: Path, rounds: int) -> dict:
    """One-client latency, paired: each round one in-process call, one request.

    On a shared machine the load changes from minute to minute; pairing the
    two in each round (and the ratio as the median of per-round ratios) keeps
    it out of the comparison.
    """
    clf = PneumoniaClassifier.load(model, device="cpu")
    clf.predict_proba([path])  # first call: imports and allocations
    cold, warm, served, ratios = [], [], [], []
    with httpx.Client(base_url=url, timeout=120) as h:
        for _ in range(rounds):
            clear_image_cache()
            start = time.perf_counter()
            clf.predict_proba([path])
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            clf.predict_proba([path])
            warm.append(time.perf_counter() - start)
            start = time.perf_counter()
            response = h.post("/predict", files={"file": ("x.jpeg", body)})
            served.append(time.perf_counter() - start)
            assert response.status_code == 200, response.text
            ratios.append(served[-1] / cold[-1])
    return {
        "in_process_cold_p50_ms": round(1000 * statistics.median(cold), 1),
        "in_process_warm_p50_ms": round(1000 * statistics.median(warm), 1),
        "server_paired_p50_ms": round(1000 * statistics.median(served), 1),
        "p50_ratio": round(statistics.median(ratios), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cnn4")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--model-file", default=None)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=96, help="per level")
    parser.add_argument("--seconds", type=float, default=60, help="per level")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = _model_file(args, folder)
        jpeg = _jpeg_1024(folder)
        body = jpeg.read_bytes()
        port = _free_port()
        server = _start_server(model, port)
        url = f"http://127.0.0.1:{port}"
        try:
            _level(url, body, 1, 5, 30)  # warm-up
            reference = _paired(url, body, model, jpeg, max(10, args.requests // 2))
            levels = {
                str(n): _level(url, body, n, args.requests, args.seconds)
                for n in args.clients
            }
        finally:
            server.terminate()
            server.wait(timeout=30)
        params = PneumoniaClassifier.load(model, device="cpu").get_params()
        with Image.open(jpeg) as img:
            size = img.size
    result = {
        "model": params["model"],
        "image_size": params["image_size"],
        "jpeg": {"width": size[0], "height": size[1], "bytes": len(body)},
        "cpus": os.cpu_count(),
        "torch_threads": __import__("torch").get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        **reference,
        "server": levels,
    }
    print_json(result, indent=2)


if __name__ == "__main__":
    main()
