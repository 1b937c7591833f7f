"""The service against hostile clients (issue 39): slow bodies, clients that leave, huge images, deep JSON,
misspelt fields. `emocare serve` runs for real on a loopback port; the slow clients are raw sockets."""

from __future__ import annotations

import io
import re
import socket
import struct
import time
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image
from test_serve import _multipart, start_server

from emocare.media.image import DEFAULT_MAX_PIXELS
from emocare.serving.config import ServeConfig

BODY_TIMEOUT_S = 2.0
MAX_QUEUE = 4


@pytest.fixture(scope="module")
def service(trained_bundle: Path, tmp_path_factory) -> str:
    proc, url = start_server(trained_bundle, tmp_path_factory.mktemp("hostile-tmp"), "--max-queue", str(MAX_QUEUE),
                             "--body-timeout-s", str(BODY_TIMEOUT_S), "--max-pixels", "10000")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _slow_client(url: str) -> socket.socket:
    """A client that declares a 100-byte JSON body and sends 8 bytes of it."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n" + b'{"text":')
    return sock


def _requests_by_status(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    return {m[0]: float(m[1]) for m in re.findall(r'emocare_requests_total\{status="(\d+)"\} (\S+)', text)}


def test_slow_clients_hold_no_place_in_the_queue_and_are_timed_out(service: str):
    slow = [_slow_client(service) for _ in range(3 * MAX_QUEUE)]  # three times the queue
    try:
        time.sleep(0.3)  # all of them are in, waiting for their bodies
        ready = httpx.get(f"{service}/ready", timeout=5)
        assert ready.status_code == 200 and ready.json()["queue"] == 0, ready.text
        r = httpx.post(f"{service}/predict", json={"text": "so happy today"}, timeout=30)
        assert r.status_code == 200, r.text
        started = time.monotonic()
        for sock in slow:  # each gets 408 once its body is late, and the connection is closed
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
            assert b"did not arrive within" in reply
        assert time.monotonic() - started < BODY_TIMEOUT_S + 5
    finally:
        for sock in slow:
            sock.close()
    assert _requests_by_status(service).get("408") == 3 * MAX_QUEUE


def test_a_client_that_leaves_is_not_a_server_error(service: str):
    before = _requests_by_status(service)
    for _ in range(5):
        _slow_client(service).close()
    deadline = time.monotonic() + 10
    while _requests_by_status(service).get("499", 0) - before.get("499", 0) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    after = _requests_by_status(service)
    assert after.get("499", 0) - before.get("499", 0) == 5
    assert after.get("500", 0) == before.get("500", 0) == 0
    assert httpx.get(f"{service}/ready").json()["queue"] == 0


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` and whose pixel data is a few bytes: only a header check
    can tell it is too large, a decoder would call it broken."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_images_over_the_pixel_limit_are_refused_from_their_header(service: str):
    assert ServeConfig().max_pixels == DEFAULT_MAX_PIXELS  # validation's limit is the service's default
    for data, name in ((_png_header_only(13_000, 13_000), "bomb.png"), (_png(101, 100), "big.png")):
        r = httpx.post(f"{service}/predict", files={"image": (name, data, "image/png")}, timeout=30)
        assert r.status_code == 413, r.text
        w, h = (13_000, 13_000) if name == "bomb.png" else (101, 100)
        assert r.json() == {"error": f"image upload {name!r}: image_too_large: {w}x{h} exceeds 10000 pixels"}
    r = httpx.post(f"{service}/predict", files={"image": ("ok.png", _png(100, 100), "image/png")}, timeout=30)
    assert r.status_code == 200, r.text


def test_deeply_nested_json_is_a_400(service: str):
    for body in ("[" * 100_000 + "]" * 100_000, '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        r = httpx.post(f"{service}/predict", content=body, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400 and r.json() == {"error": "body is not valid JSON: nested too deeply"}, r.text
    assert _requests_by_status(service).get("500", 0) == 0


def test_a_misspelt_field_is_named(service: str):
    r = httpx.post(f"{service}/predict", json={"txt": "so happy"})
    assert r.status_code == 422
    assert r.json() == {"error": "unknown field(s) ['txt'] in the JSON body: it takes only ['text']"}
    r = httpx.post(f"{service}/predict", **_multipart(("text", b"fine"), ("imgae", b"x")))
    assert r.status_code == 422
    assert r.json() == {"error": "unknown field(s) ['imgae'] in the form: it takes only ['text', 'image', 'video']"}
