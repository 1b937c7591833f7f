"""`emocare serve` under load, on loopback: throughput, latency, batching, probes, overload.

Run after `dvc repro`. Starts the service on 127.0.0.1 and drives it with 16, 64 and 256
concurrent clients (each run bounded by --requests and --seconds), text-only and text+image
(multipart, demo PNGs). The clients are a lean keep-alive HTTP/1.1 loop over pre-encoded requests
(as load generators such as wrk are lean): on a 2-core machine the load generator shares the cores
with the service, and httpx's own per-request CPU (about 5 ms) would be taken from the model.
Reports per run: throughput, p50/p95/p99 latency, mean batch size (from
/metrics), /health p99 while loaded, status counts, and whether every answer equals that post's
offline prediction. In the same run: offline `predict_batch` throughput on the same posts, and
an overload run against a service with a small --max-queue (only 200 and 503 allowed).
Prints JSON.

    python benchmarks/serve_load.py [--clients 16 64 256] [--requests 512] [--seconds 60] [--max-wait-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(models: str, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "emocare.cli", "serve", "--models", models, "--host", "127.0.0.1",
                             "--port", str(port), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the service did not start")


def batch_stats(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics").text
    return tuple(float(re.search(rf"^emocare_batch_size_{k} (\S+)", text, re.M).group(1)) for k in ("sum", "count"))


def same(a: dict, b: dict) -> bool:
    return a.get("label") == b["label"] and all(abs(a["probabilities"][c] - p) < 1e-4
                                                for c, p in b["probabilities"].items())


def encode(url: str, post: dict) -> bytes:
    """The raw HTTP/1.1 request for a post (built once by httpx, sent many times)."""
    if "image" in post:
        req = httpx.Request("POST", f"{url}/predict", data={"text": post["text"]},
                            files={"image": ("i.png", Path(post["image"]).read_bytes())})
    else:
        req = httpx.Request("POST", f"{url}/predict", json={"text": post["text"]})
    body = req.read()
    headers = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items() if k.lower() != "host")
    return f"POST /predict HTTP/1.1\r\nhost: 127.0.0.1\r\n{headers}\r\n".encode() + body


class Connection:
    """One keep-alive connection sending pre-encoded requests and reading Content-Length responses."""

    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
        body = await self.reader.readexactly(length)
        if re.search(rb"connection: *close", head, re.I):
            self.writer.close()
            self.writer = None
        return int(head[9:12]), body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def drive(url: str, posts: list[dict], clients: int, requests: int, seconds: float) -> dict:
    """``clients`` concurrent clients sending posts round-robin until ``requests`` or ``seconds`` run out."""
    latencies, statuses, wrong = [], {}, 0
    next_i, stop_at = 0, time.monotonic() + seconds
    port = int(url.rsplit(":", 1)[1])

    async def one_client() -> None:
        nonlocal next_i, wrong
        conn = Connection(port)
        try:
            while next_i < requests and time.monotonic() < stop_at:
                i, next_i = next_i, next_i + 1
                post = posts[i % len(posts)]
                started = time.perf_counter()
                status, body = await conn.request(post["raw"])
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200 and not same(json.loads(body), post["offline"]):
                    wrong += 1
        finally:
            conn.close()

    # /health is probed from a process of its own: in this one, the probe would wait behind the clients
    probe = subprocess.Popen([sys.executable, __file__, "--probe", url], stdout=subprocess.PIPE, text=True)
    assert probe.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    probe.terminate()
    health = [float(x) for x in probe.communicate(timeout=30)[0].split()]
    assert health, "the /health probe took no sample"
    ok = statuses.get(200, 0)
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "throughput_per_s": round(ok / elapsed, 1), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "health_p99_ms": round(float(np.percentile(np.array(health) * 1000, 99)), 1) if health else None,
            "wrong_or_crossed_answers": wrong}


def probe_health(url: str) -> None:
    """Child process: GET /health every 50 ms until terminated, printing each latency in seconds."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with httpx.Client(timeout=30) as client:
        client.get(f"{url}/health")
        print("ready", flush=True)
        for _ in range(10_000):  # bounded: 10,000 probes at most
            started = time.perf_counter()
            client.get(f"{url}/health")
            print(time.perf_counter() - started, flush=True)
            time.sleep(0.05)


def main() -> None:
    if sys.argv[1:2] == ["--probe"]:
        return probe_health(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="models")
    ap.add_argument("--clients", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--requests", type=int, default=512, help="requests per run (at most)")
    ap.add_argument("--seconds", type=float, default=60, help="time per run (at most)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=20.0)
    ap.add_argument("--overload", action=argparse.BooleanOptionalAction, default=True, help="the overload run too")
    a = ap.parse_args()
    from emocare.predict import EmoCare  # here, not at the top: the probe process must start light

    recs = [json.loads(x) for x in Path("data/demo/manifest.jsonl").read_text().splitlines()]
    with_image = [r for r in recs if r.get("image")][:256]
    kinds = {"text": [{"text": r["text"]} for r in with_image],
             "text+image": [{"text": r["text"], "image": str(Path("data/demo") / r["image"])} for r in with_image]}
    model = EmoCare.load(a.models, "cpu")

    def offline(posts: list[dict]) -> float:
        """Offline ``predict_batch`` posts/s, with the service idle (this machine's speed drifts: measured
        again just before each load run, and the run is compared with that figure)."""
        started = time.perf_counter()
        model.predict_batch(posts, batch_size=a.max_batch)
        return round(len(posts) / (time.perf_counter() - started), 1)

    result: dict = {"cpu_cores": len(os.sched_getaffinity(0)), "max_batch": a.max_batch,
                    "max_wait_ms": a.max_wait_ms, "runs": {}}
    for posts in kinds.values():
        for post, o in zip(posts, model.predict_batch(posts, batch_size=a.max_batch), strict=True):
            post["offline"] = o
    proc, url = start(a.models, "--max-batch", str(a.max_batch), "--max-wait-ms", str(a.max_wait_ms), "--max-queue",
                      "1024", "--device", "cpu")
    for posts in kinds.values():
        for post in posts:
            post["raw"] = encode(url, post)  # the same bytes for the second service: only the port differs
    try:
        for kind, posts in kinds.items():
            for clients in a.clients:
                offline_per_s = offline(posts)
                before = batch_stats(url)
                run = asyncio.run(drive(url, posts, clients, a.requests, a.seconds))
                after = batch_stats(url)
                run["mean_batch"] = round((after[0] - before[0]) / max(1.0, after[1] - before[1]), 2)
                run["offline_per_s"] = offline_per_s
                run["over_offline"] = round(run["throughput_per_s"] / offline_per_s, 3)
                result["runs"][f"{kind}@{clients}"] = run
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    if a.overload:
        proc, url = start(a.models, "--max-batch", str(a.max_batch), "--max-queue", "32", "--device", "cpu")
        try:
            overload = asyncio.run(drive(url, kinds["text+image"], 256, a.requests, a.seconds))
            overload["only_200_and_503"] = set(overload["statuses"]) <= {"200", "503"}
            result["overload_max_queue_32_at_256"] = overload
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    result["goals"] = {"throughput_over_offline": 0.8, "health_p99_ms_at_256": 50}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
