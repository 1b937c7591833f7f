"""A local HTTP server on 127.0.0.1 that serves media under Reddit-like paths, and each kind of failure."""

from __future__ import annotations

import io
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from emocare.media.video import write_video


def jpeg_bytes(colour=(200, 30, 30), size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def png_bytes(colour=(30, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buf, "PNG")
    return buf.getvalue()


def mp4_bytes(tmp: Path) -> bytes:
    rng = np.random.default_rng(0)
    write_video(tmp / "clip.mp4", [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(6)])
    return (tmp / "clip.mp4").read_bytes()


class MediaServer:
    """Routes: path -> (status, headers, body); ``/slow...`` sleeps; ``/busy...`` and ``/flaky...`` fail first."""

    def __init__(self, tmp: Path, slow_s: float = 3.0):
        self.hits: dict[str, list[float]] = defaultdict(list)
        self.user_agents: set[str] = set()
        big = b"\xff\xd8\xff" + b"\0" * (3 * 1024 * 1024)
        self.routes = {
            "/i.redd.it/joy.jpg": (200, {"Content-Type": "image/jpeg"}, jpeg_bytes()),
            "/i.redd.it/second.png": (200, {"Content-Type": "image/png"}, png_bytes()),
            "/preview.redd.it/p.jpg": (200, {"Content-Type": "image/jpeg"}, jpeg_bytes((10, 10, 200))),
            "/v.redd.it/abc/DASH_480.mp4": (200, {"Content-Type": "video/mp4"}, mp4_bytes(tmp)),
            "/i.redd.it/huge.jpg": (200, {"Content-Type": "image/jpeg"}, big),
            "/i.redd.it/error.jpg": (200, {"Content-Type": "image/jpeg"},
                                     b"<!doctype html><html><body>Whoa there, pardner!</body></html>"),
            "/i.redd.it/moved.jpg": (302, {"Location": "/i.redd.it/joy.jpg"}, b""),
        }
        self.routes["/i.redd.it/really-a-video.jpg"] = (200, {"Content-Type": "image/jpeg"},
                                                        self.routes["/v.redd.it/abc/DASH_480.mp4"][2])
        self.streamed = {"/i.redd.it/chunked-huge.jpg": big}  # sent without Content-Length
        self.slow_s = slow_s
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.hits[self.path].append(time.monotonic())
                server.user_agents.add(self.headers.get("User-Agent", ""))
                n = len(server.hits[self.path])
                if self.path.startswith("/slow/"):
                    time.sleep(server.slow_s)
                    return self._send(200, {"Content-Type": "image/jpeg"}, jpeg_bytes())
                if self.path.startswith("/busy/") and n == 1:
                    return self._send(429, {"Retry-After": "1"}, b"slow down")
                if self.path.startswith("/flaky/") and n == 1:
                    return self._send(503, {}, b"try later")
                if self.path.startswith("/down/"):
                    return self._send(502, {}, b"bad gateway")
                path = urlsplit(self.path).path
                if path.startswith(("/busy/", "/flaky/")):
                    path = "/" + path.split("/", 2)[2]
                if path in server.streamed:
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.end_headers()
                    body = server.streamed[path]
                    try:
                        for i in range(0, len(body), 1 << 16):
                            self.wfile.write(body[i: i + (1 << 16)])
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return None
                status, headers, body = server.routes.get(path, (404, {}, b"not found"))
                return self._send(status, headers, body)

            def _send(self, status: int, headers: dict, body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> MediaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
