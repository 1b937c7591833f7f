"""The HTTP service started for real on a loopback port and called with a real HTTP client."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from emocare.labels import DEFAULT_LABELS as LABELS
from emocare.predict import EmoCare
from emocare.serving.app import create_app
from emocare.serving.config import ServeConfig

DEVICE = os.environ.get("EMOCARE_TEST_DEVICE", "cpu")  # cuda on a GPU machine: the model process there


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def upload_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-tmp")


def start_server(bundle: Path, tmp: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`emocare serve` on a free loopback port, with uploads spooled under ``tmp``; waits until it answers."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "emocare.cli", "serve", "--models", str(bundle), "--host",
                             "127.0.0.1", "--port", str(port), "--device", DEVICE, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "TQDM_DISABLE": "1", "TMPDIR": str(tmp)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode()) from None
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("service did not start within 90 s")


@pytest.fixture(scope="module")
def server(trained_bundle: Path, upload_tmp: Path):
    proc, url = start_server(trained_bundle, upload_tmp, "--max-upload-mb", "0.5", "--max-batch", "8")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_health_labels_docs(server: str):
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    assert [x["name"] for x in httpx.get(f"{server}/labels").json()["labels"]] == LABELS
    assert httpx.get(f"{server}/docs").status_code == 200
    assert "/predict" in httpx.get(f"{server}/openapi.json").json()["paths"]


def test_docs_load_only_from_the_service(server: str):
    """/docs works offline: the page's scripts, style, icon and spec all come from the service itself."""
    html = httpx.get(f"{server}/docs").text
    assert "://" not in html  # no CDN
    urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
    assert sorted(Path(u).suffix for u in urls) == sorted(kinds)
    for url in urls:
        r = httpx.get(server + url)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kinds[Path(url).suffix]), url
    assert httpx.get(f"{server}/redoc").status_code == 404  # off, not half-working from a CDN
    assert httpx.get(f"{server}/docs/assets/README.md").status_code == 404  # only the assets the page needs


@pytest.mark.browser
def test_docs_render_in_a_browser_offline(server: str):
    """Swagger UI draws every operation, with the network cut off but for loopback (browser.FLAGS cut that too)."""
    from browser import FLAGS, need_chromium

    flags = [f for f in FLAGS if not f.startswith("--proxy-bypass-list")]  # loopback direct, the rest a dead proxy
    page = subprocess.run([need_chromium(), *flags, "--virtual-time-budget=10000", "--dump-dom", f"{server}/docs"],
                          check=True, capture_output=True, text=True, timeout=120).stdout
    for path in ("/predict", "/health", "/ready", "/labels", "/metrics"):
        assert f'data-path="{path}"' in page, path


def test_openapi_describes_predict(server: str):
    spec = httpx.get(f"{server}/openapi.json").json()
    op = spec["paths"]["/predict"]["post"]
    body = op["requestBody"]["content"]
    form = body["multipart/form-data"]["schema"]["properties"]
    assert form["text"]["type"] == "string" and form["image"]["format"] == form["video"]["format"] == "binary"
    text = body["application/json"]["schema"]
    assert text["required"] == ["text"] and text["properties"]["text"]["maxLength"] == ServeConfig().max_text_chars
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Prediction")
    assert set(spec["components"]["schemas"]["Prediction"]["required"]) == {"label", "probabilities", "modalities"}
    for status in ("400", "413", "415", "422", "503", "504"):
        assert op["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorMessage")
    assert f"{ServeConfig().max_text_chars} characters" in spec["info"]["description"]


def _multipart(*fields: tuple[str, bytes]) -> dict:
    """httpx arguments for a multipart body of form fields given as raw bytes (httpx would send a str as UTF-8)."""
    body = b"".join(b'--B\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (name.encode(), value)
                    for name, value in fields)
    return dict(content=body + b"--B--\r\n", headers={"content-type": "multipart/form-data; boundary=B"})


def test_one_text_limit_for_json_and_multipart(server: str):
    limit = ServeConfig().max_text_chars
    at_limit = "é" * limit  # two bytes each in UTF-8: the limit counts characters
    too_long = f"'text' is longer than the limit of {limit} characters"
    for text, status in ((at_limit, 200), (at_limit + "x", 413), ("x" * (4 * limit + 1), 413)):
        for r in (httpx.post(f"{server}/predict", json={"text": text}),
                  httpx.post(f"{server}/predict", **_multipart(("text", text.encode())))):
            assert r.status_code == status, (len(text), r.request.headers["content-type"], r.text[:200])
            assert status == 200 or r.json() == {"error": too_long}


def test_max_text_chars_flag_sets_the_limit_and_the_spec(trained_bundle: Path, tmp_path: Path):
    proc, url = start_server(trained_bundle, tmp_path, "--max-text-chars", "10")
    try:
        spec = httpx.get(f"{url}/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
        assert spec["application/json"]["schema"]["properties"]["text"]["maxLength"] == 10
        assert httpx.post(f"{url}/predict", json={"text": "x" * 10}).status_code == 200
        r = httpx.post(f"{url}/predict", **_multipart(("text", b"x" * 11)))
        assert r.status_code == 413 and r.json() == {"error": "'text' is longer than the limit of 10 characters"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_form_fields_must_be_valid_utf8(server: str):
    r = httpx.post(f"{server}/predict", **_multipart(("text", b"caf\xe9 so mad")))  # Latin-1, not UTF-8
    assert r.status_code == 400 and r.json()["error"].startswith("form field 'text' is not valid utf-8 text")
    assert httpx.post(f"{server}/predict", **_multipart(("text", "café so mad".encode()))).status_code == 200


def test_every_error_is_one_shape(server: str):
    not_found, wrong_method = httpx.get(f"{server}/nope"), httpx.get(f"{server}/predict")
    bad = httpx.post(f"{server}/predict", content=b"{oops", headers={"content-type": "application/json"})
    for r, status in ((not_found, 404), (wrong_method, 405), (bad, 400)):
        assert r.status_code == status and list(r.json()) == ["error"], r.text
    assert wrong_method.headers["allow"] == "POST"


def test_validation_errors_and_bugs_get_the_same_shape(trained_bundle: Path):
    """FastAPI's validation errors and an unexpected exception answer {"error"} too (tried on routes added here)."""
    from fastapi.testclient import TestClient

    app = create_app(EmoCare.load(trained_bundle, "cpu"))

    @app.get("/square")
    async def square(n: int) -> int:  # a declared parameter: FastAPI validates it
        return n * n

    @app.get("/bug")
    async def bug() -> None:
        raise KeyError("not the client's fault")

    client = TestClient(app, raise_server_exceptions=False)  # outside `with`: no lifespan, no model process
    r = client.get("/square", params={"n": "four"})
    assert r.status_code == 422 and r.json()["error"].startswith("invalid request: query.n:")
    r = client.get("/bug")
    assert r.status_code == 500 and r.json() == {"error": "internal server error (KeyError)"}


def test_corrupt_video_message_names_the_upload_not_a_temp_path(server: str, upload_tmp: Path):
    junk = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8  # an MP4 header, then nothing a decoder can read
    r = httpx.post(f"{server}/predict", data={"text": ""}, files={"video": ("clip.mp4", junk, "video/mp4")})
    assert r.status_code == 422, r.text
    message = r.json()["error"]
    assert "could not be decoded" in message and "'clip.mp4'" in message
    assert str(upload_tmp) not in message and tempfile.gettempdir() not in message and "emocare-upload" not in message


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


# --- under load ----------------------------------------------------------------------------------

def _posts(demo_dir: Path, n: int) -> list[dict]:
    """``n`` different text+image posts from the demo set (paths, for the offline model) ."""
    recs = [json.loads(x) for x in (demo_dir / "manifest.jsonl").read_text().splitlines()]
    recs = [r for r in recs if r.get("image")]
    return [{"text": f"{recs[i % len(recs)]['text']} #{i}", "image": str(demo_dir / recs[i % len(recs)]["image"])}
            for i in range(n)]


def _send(client: httpx.Client, url: str, post: dict) -> httpx.Response:
    return client.post(f"{url}/predict", data={"text": post["text"]},
                       files={"image": ("i.png", Path(post["image"]).read_bytes())})


def _same(a: dict, b: dict) -> bool:
    return a["label"] == b["label"] and all(abs(a["probabilities"][c] - b["probabilities"][c]) < 1e-4 for c in LABELS)


def test_health_answers_while_64_requests_are_in_flight(server: str, demo_dir: Path, trained_bundle: Path):
    posts = _posts(demo_dir, 64)
    offline = EmoCare.load(trained_bundle, DEVICE).predict_batch(posts)
    assert len({json.dumps(o["probabilities"]) for o in offline}) > 32  # answers differ: crossing would show
    health: list[float] = []
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=80)) as client, \
            ThreadPoolExecutor(max_workers=64) as pool:
        futures = [pool.submit(_send, client, server, p) for p in posts]
        time.sleep(0.2)
        while not all(f.done() for f in futures) and len(health) < 200:
            started = time.perf_counter()
            assert httpx.get(f"{server}/health", timeout=5).status_code == 200
            health.append(time.perf_counter() - started)
            time.sleep(0.02)
        responses = [f.result() for f in futures]
    assert health and max(health) < 1.0, f"/health took {max(health):.2f} s under load"
    assert all(r.status_code == 200 for r in responses)
    for r, o in zip(responses, offline, strict=True):
        assert _same(r.json(), o)  # every answer is its own request's
    metrics = httpx.get(f"{server}/metrics").text
    batches = float(re.search(r"^emocare_batch_size_count (\S+)", metrics, re.M).group(1))
    posts_scored = float(re.search(r"^emocare_batch_size_sum (\S+)", metrics, re.M).group(1))
    assert posts_scored / batches > 1.5, "requests were not batched"
    assert 'emocare_requests_total{status="200"}' in metrics and "emocare_model_load_seconds" in metrics


def test_overload_gets_503_and_every_other_answer_is_right(trained_bundle: Path, demo_dir: Path, tmp_path: Path):
    proc, url = start_server(trained_bundle, tmp_path, "--max-queue", "6", "--max-batch", "4", "--max-wait-ms", "20")
    try:
        posts = _posts(demo_dir, 48)
        offline = EmoCare.load(trained_bundle, DEVICE).predict_batch(posts)
        with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64)) as client, \
                ThreadPoolExecutor(max_workers=48) as pool:
            responses = list(pool.map(lambda p: _send(client, url, p), posts))
            ready_during = httpx.get(f"{url}/ready").status_code
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) >= 6, codes
        assert all(r.headers["retry-after"] == "1" for r in responses if r.status_code == 503)
        for r, o in zip(responses, offline, strict=True):
            if r.status_code == 200:
                assert _same(r.json(), o)
        assert ready_during == 200  # the queue has drained
        assert 'emocare_requests_total{status="503"}' in httpx.get(f"{url}/metrics").text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_chunked_oversized_upload_is_cut_off(server: str, upload_tmp: Path):
    """A 4 MB body sent chunked (no Content-Length) to a 0.5 MB limit: 413 long before the end, nothing on disk."""
    host, port = server.removeprefix("http://").split(":")
    chunk, total, sent = b"x" * 65536, 4 * 1024 * 1024, 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=B\r\n\r\n")
        part = (b'--B\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
                b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n")
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        reply = b""
        while sent < total:
            if select.select([sock], [], [], 0.005)[0]:  # the service has answered
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(5)
        while b"exceeds the limit" not in reply:  # the rest of the 413 response
            more = sock.recv(65536)
            if not more:
                break
            reply += more
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    read_by_server = int(re.search(rb"cut off at (\d+)", reply).group(1))
    assert read_by_server < 512 * 1024 + 2 * len(chunk) + 1024, "the service read past the limit"
    # a file holding any of the upload: its PNG signature comes first, its chunks are 64 KiB of "x" (the service's
    # temporary folder may hold other processes' small files, e.g. ".ses" seen once under load)
    left = [f for f in upload_tmp.rglob("*") if f.is_file()
            and (f.stat().st_size >= len(chunk) or b"\x89PNG" in f.read_bytes()[:64] or b"x" * 1024 in f.read_bytes())]
    assert not left, "an upload was left on disk"


def test_sigterm_drains_the_queue(trained_bundle: Path, demo_dir: Path, tmp_path: Path):
    proc, url = start_server(trained_bundle, tmp_path, "--max-batch", "2", "--max-wait-ms", "50")
    posts = _posts(demo_dir, 16)
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(_send, client, url, p) for p in posts]
        deadline = time.time() + 30
        while time.time() < deadline:  # wait until the requests are inside the service
            depth = re.search(r"^emocare_queue_depth (\S+)", httpx.get(f"{url}/metrics").text, re.M).group(1)
            if float(depth) >= 8:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        responses = [f.result() for f in futures]
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert [r.status_code for r in responses] == [200] * 16
    log = proc.stdout.read().decode()
    assert "Waiting for application shutdown" in log and "Application shutdown complete" in log
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)


def test_batcher_answers_each_caller_and_stops_cleanly():
    import asyncio

    from emocare.serving.batcher import Batcher

    sizes: list[int] = []
    batcher = Batcher(lambda xs: [{"echo": x["n"]} for x in xs], max_batch=8, max_wait_s=0.01, on_batch=sizes.append)

    async def main() -> list[dict]:
        return await asyncio.gather(*(batcher.submit({"n": i}) for i in range(50)))

    assert [r["echo"] for r in asyncio.run(main())] == list(range(50))
    assert max(sizes) == 8 and sum(sizes) == 50
    batcher.close()


def test_model_runs_in_its_own_process_and_its_death_is_reported(trained_bundle: Path, tmp_path: Path):
    """The model is scored in a child process; if it dies, probes and predictions say 503, never 500."""
    proc, url = start_server(trained_bundle, tmp_path)
    try:
        assert httpx.post(f"{url}/predict", json={"text": "what a match"}, timeout=30).status_code == 200
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        model = [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(model) == 1, "the model should run in one spawned child process"
        os.kill(model[0], signal.SIGKILL)
        deadline = time.time() + 10
        while httpx.get(f"{url}/health", timeout=5).status_code == 200 and time.time() < deadline:
            time.sleep(0.1)
        health = httpx.get(f"{url}/health", timeout=5)
        assert health.status_code == 503 and "exited" in health.json()["status"]
        assert httpx.get(f"{url}/ready", timeout=5).status_code == 503
        r = httpx.post(f"{url}/predict", json={"text": "what a match"}, timeout=30)
        assert r.status_code == 503 and "restart" in r.json()["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_batcher_waits_only_for_posts_on_their_way():
    """With ``arriving``, a batch goes as soon as nothing more is coming, and waits while something is."""
    import asyncio

    from emocare.serving.batcher import Batcher

    sizes: list[int] = []
    coming = {"n": 0}
    batcher = Batcher(lambda xs: [{"echo": x["n"]} for x in xs], max_batch=8, max_wait_s=5.0, on_batch=sizes.append,
                      arriving=lambda: coming["n"])

    async def main() -> float:
        started = time.perf_counter()
        assert (await batcher.submit({"n": 0}))["echo"] == 0  # nothing on its way: no 5 s wait
        lone = time.perf_counter() - started
        coming["n"] = 1  # a second post is being decoded
        first = batcher.submit({"n": 1})
        await asyncio.sleep(0.3)
        coming["n"] = 0
        second = batcher.submit({"n": 2})
        assert [r["echo"] for r in await asyncio.gather(first, second)] == [1, 2]
        return lone

    assert asyncio.run(main()) < 1.0
    assert sizes == [1, 2]  # the post that was on its way joined the batch
    batcher.close()
