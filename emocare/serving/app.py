"""HTTP service: `emocare serve` (FastAPI + uvicorn, the optional ``serve`` extra).

``POST /predict`` takes multipart (a ``text`` field, optional ``image`` and ``video`` files) or
JSON ``{"text": ...}``. Under load it holds up:

- the event loop never runs the model: media are decoded in a thread pool, and posts are scored
  in dynamic micro-batches (:mod:`emocare.serving.batcher`) by a process of their own that holds the
  model (:mod:`emocare.serving.worker`), so the model never holds this process's interpreter lock;
- at most ``max_queue`` requests are in the service at once; the next gets 503 with
  ``Retry-After``; one that is not answered within ``timeout_s`` gets 504;
- the body is counted as it arrives, chunked or not, and cut off with 413 at the limit;
- ``GET /health`` (liveness: never touches the model), ``GET /ready`` (model loaded, queue below
  its limit) and ``GET /metrics`` (Prometheus) answer at once, however full the queue;
- on SIGTERM uvicorn stops accepting connections, the requests already in finish, then it exits.

Media types are judged from the content, not the file name; bad input gets a 4xx JSON error
naming the problem, never a 500.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from emocare.media.sniff import HEAD_BYTES, sniff
from emocare.predict import NO_MODALITY, EmoCare
from emocare.serving.config import ServeConfig
from emocare.serving.worker import ModelProcessExited, ModelWorker


class RequestError(Exception):
    """A request the service answers with ``status`` and a JSON ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("emocare_requests_total", "Prediction requests answered, by HTTP status", ["status"],
                                registry=self.registry)
        self.latency = Histogram("emocare_request_seconds", "Prediction request latency",
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self.batch = Histogram("emocare_batch_size", "Posts scored per model call",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.queue = Gauge("emocare_queue_depth", "Prediction requests in the service (decoding, queued, scoring)",
                           registry=self.registry)
        self.load_seconds = Gauge("emocare_model_load_seconds", "Time taken to load the models",
                                  registry=self.registry)


class _Guard:
    """ASGI middleware: the body limit (413 for a declared Content-Length over it, before anything is read,
    and for a body, chunked or not, once what has arrived passes it) and the request metrics."""

    def __init__(self, app, limit: int, metrics: Metrics):
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received = 0
        status = 500

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise RequestError(413, f"upload exceeds the limit of {self.limit} bytes (cut off at {received})")
            return message

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        app = self.app
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            app = JSONResponse({"error": f"upload of {int(length)} bytes exceeds the limit of {self.limit}"}, 413)
        if scope["path"] != "/predict":
            return await app(scope, counted_receive, send)
        started = time.perf_counter()
        try:
            await app(scope, counted_receive, send_status)
        finally:
            self.metrics.requests.labels(str(status)).inc()
            self.metrics.latency.observe(time.perf_counter() - started)


async def _read_post(request: Request, files: ExitStack) -> dict:
    """The post in a request (JSON or multipart); media bytes checked by content; 4xx on bad input.

    A video is written to a temporary folder (its decoder reads files) that ``files`` removes.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError as e:
            raise RequestError(400, f"body is not valid JSON: {e}") from e
        if not isinstance(body, dict) or not isinstance(body.get("text", ""), str):
            raise RequestError(422, "JSON body must be an object with a string 'text'")
        return {"text": body.get("text", "")}
    if not content_type.startswith("multipart/form-data"):
        raise RequestError(415, f"unsupported content type {content_type or 'none'!r}: "
                                "use multipart/form-data or application/json")
    try:
        form = await request.form(max_files=2, max_fields=8)
    except RequestError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the multipart parser rejects is the client's error
        raise RequestError(400, f"malformed multipart body: {e}") from e
    try:
        post: dict = {"text": form.get("text") or ""}
        if not isinstance(post["text"], str):
            raise RequestError(422, "'text' must be a form field, not a file")
        for field in ("image", "video"):
            upload = form.get(field)
            if upload is None or isinstance(upload, str):
                continue
            data = await upload.read()
            if not data:
                raise RequestError(422, f"{field} file is empty")
            found = sniff(data[:HEAD_BYTES])
            if found is None or found[0] != field:
                what = f"a {found[0]} ({found[1]})" if found else "not a recognised image or video"
                raise RequestError(415, f"{field} upload {upload.filename!r} is {what}")
            if field == "image":
                post["image"] = data
            else:
                path = Path(files.enter_context(tempfile.TemporaryDirectory(prefix="emocare-upload-"))) / \
                    f"video.{found[1]}"
                path.write_bytes(data)
                post["video"] = str(path)
        return post
    finally:
        await form.close()


def create_app(model: EmoCare, cfg: ServeConfig | None = None, load_seconds: float = 0.0) -> FastAPI:
    """The service around an already loaded model."""
    cfg = cfg or ServeConfig()
    metrics = Metrics()
    metrics.load_seconds.set(load_seconds)
    pool = ThreadPoolExecutor(cfg.decode_threads, thread_name_prefix="decode")
    state = {"inflight": 0, "arriving": 0, "batcher": None, "worker": None}  # arriving: admitted, not yet queued

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        from emocare.serving.batcher import Batcher

        state["worker"] = worker = ModelWorker(model, cfg.worker_nice)
        state["batcher"] = Batcher(worker.score, cfg.max_batch, cfg.max_wait_ms / 1000, metrics.batch.observe,
                                   arriving=lambda: state["arriving"])
        yield
        state["batcher"].close()  # uvicorn has let the requests in flight finish
        worker.close()
        pool.shutdown()

    app = FastAPI(title="EmoCare", description="Multimodal emotion classification of social-media posts",
                  lifespan=lifespan)
    app.add_middleware(_Guard, limit=cfg.max_upload_bytes, metrics=metrics)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, e: RequestError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)

    @app.get("/health")
    async def health() -> JSONResponse:  # the model process must be alive; the model itself is not asked
        alive = state["worker"] is None or state["worker"].alive
        return JSONResponse({"status": "ok" if alive else "model process exited"}, 200 if alive else 503)

    @app.get("/ready")
    async def ready() -> JSONResponse:
        is_ready = state["batcher"] is not None and state["worker"].alive and state["inflight"] < cfg.max_queue
        return JSONResponse({"ready": is_ready, "queue": state["inflight"], "max_queue": cfg.max_queue,
                             "modalities": model.fusion.modalities}, status_code=200 if is_ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/labels")
    async def labels() -> dict:
        classes = model.label_set  # the bundle's own classes, display names and colours
        return {"labels": [{"name": c, "display": classes.display[c], "colour": classes.colours[c]} for c in classes]}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        if state["inflight"] >= cfg.max_queue:
            raise RequestError(503, f"the service is at its limit of {cfg.max_queue} requests; retry shortly",
                               {"Retry-After": "1"})
        state["inflight"] += 1
        state["arriving"] += 1
        metrics.queue.set(state["inflight"])
        deadline = time.monotonic() + cfg.timeout_s
        try:
            try:
                with ExitStack() as files:
                    post = await _read_post(request, files)
                    if "image" in post or "video" in post:  # decoding media takes a while: off the event loop
                        inputs, failed = await _within(deadline, asyncio.get_running_loop().run_in_executor(
                            pool, model.decode, post), cfg.timeout_s)
                    else:
                        inputs, failed = model.decode(post)
            finally:
                state["arriving"] -= 1
            if failed:
                raise RequestError(422, next(iter(failed.values())))
            if not inputs:
                raise RequestError(422, NO_MODALITY)
            try:
                return JSONResponse(await _within(deadline, state["batcher"].submit(inputs), cfg.timeout_s))
            except ModelProcessExited as e:  # not the client's fault, and /health now says so
                raise RequestError(503, str(e)) from e
        finally:
            state["inflight"] -= 1
            metrics.queue.set(state["inflight"])

    return app


async def _within(deadline: float, awaitable, timeout_s: float):
    try:
        return await asyncio.wait_for(awaitable, max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise RequestError(504, f"no answer within {timeout_s} s: the service is overloaded") from None


def serve(models_dir: str, host: str, port: int, cfg: ServeConfig, device: str = "auto") -> None:
    """Load the models and run the service until SIGTERM/SIGINT (then drain and exit)."""
    import uvicorn

    started = time.perf_counter()
    model = EmoCare.load(models_dir, device)
    if model.demo_warning:
        print(model.demo_warning, file=sys.stderr)
    app = create_app(model, cfg, time.perf_counter() - started)
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=int(cfg.timeout_s) + 5,
                backlog=max(2048, cfg.max_queue * 2), access_log=cfg.access_log)
