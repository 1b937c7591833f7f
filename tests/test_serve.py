"""The HTTP service started for real on a loopback port and called with a real HTTP client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from emocare.labels import LABELS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def upload_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-tmp")


@pytest.fixture(scope="module")
def server(trained_bundle: Path, upload_tmp: Path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "emocare.cli", "serve", "--models", str(trained_bundle),
                             "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--max-upload-mb", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "TQDM_DISABLE": "1", "TMPDIR": str(upload_tmp)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode()) from None
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("service did not start within 90 s")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_health_labels_docs(server: str):
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    assert [x["name"] for x in httpx.get(f"{server}/labels").json()["labels"]] == LABELS
    assert httpx.get(f"{server}/docs").status_code == 200
    assert "/predict" in httpx.get(f"{server}/openapi.json").json()["paths"]


def test_valid_requests(server: str, demo_dir: Path, upload_tmp: Path):
    r = httpx.post(f"{server}/predict", json={"text": "so mad at this matchmaking"})
    assert r.status_code == 200 and r.json()["modalities"] == ["text"]
    png = next((demo_dir / "media").glob("*.png"))
    mp4 = next((demo_dir / "media").glob("*.mp4"))
    r = httpx.post(f"{server}/predict", data={"text": "me rn:"}, files={"image": ("x.bin", png.read_bytes())})
    assert r.status_code == 200 and r.json()["modalities"] == ["text", "image"]
    r = httpx.post(f"{server}/predict", data={"text": ""}, files={"video": ("clip", mp4.read_bytes(), "video/mp4")})
    assert r.status_code == 200 and r.json()["modalities"] == ["video"]
    assert not list(upload_tmp.glob("emocare-upload-*"))  # uploads were cleaned up


def test_bad_requests_get_4xx_json_errors(server: str, demo_dir: Path):
    mp4 = next((demo_dir / "media").glob("*.mp4"))
    cases = [
        (dict(files={"image": ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 600_000)}), 413, "exceeds the limit"),
        (dict(data={"text": "x"}, files={"image": ("c.png", b"\x89PNG\r\n\x1a\n" + b"corrupt" * 50)}), 422,
         "could not be decoded"),
        (dict(data={"text": "x"}, files={"image": ("looks.png", mp4.read_bytes())}), 415, "is a video"),
        (dict(data={"text": "x"}, files={"video": ("v.mp4", b"hello world, not a video")}), 415, "not a recognised"),
        (dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported content type"),
        (dict(content=b"{oops", headers={"content-type": "application/json"}), 400, "not valid JSON"),
        (dict(json={"text": ""}), 422, "no usable modality"),
    ]
    for kwargs, status, message in cases:
        r = httpx.post(f"{server}/predict", **kwargs)
        assert r.status_code == status, (message, r.status_code, r.text)
        assert message in r.json()["error"]


def test_fifty_concurrent_requests(server: str):
    texts = [f"post {i}: " + ("so happy" if i % 2 else "so mad") for i in range(50)]
    expected = {t: httpx.post(f"{server}/predict", json={"text": t}).json() for t in texts[:2]}
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(lambda t: client.post(f"{server}/predict", json={"text": t}), texts))
    assert all(r.status_code == 200 for r in responses)
    for t, r in zip(texts, responses, strict=True):
        assert r.json()["label"] in LABELS
        if t in expected:
            assert r.json()["label"] == expected[t]["label"]
