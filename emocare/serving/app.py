"""HTTP service: `emocare serve` (FastAPI + uvicorn, the optional ``serve`` extra).

``POST /predict`` takes multipart (a ``text`` field, optional ``image`` and ``video`` files) or
JSON ``{"text": ...}`` (both described in the OpenAPI spec; a text of at most ``max_text_chars``
characters either way). Under load it holds up:

- the event loop never runs the model: media are decoded in a thread pool, and posts are scored
  in dynamic micro-batches (:mod:`emocare.serving.batcher`) by a process of their own that holds the
  model (:mod:`emocare.serving.worker`), so the model never holds this process's interpreter lock;
- a request takes a place in the queue only once its body has arrived, so slow clients cannot hold
  the queue: a body must arrive within ``body_timeout_s`` (else 408), and a client that leaves before
  sending it is counted as 499 (nginx's "client closed request"), not as a server error;
- at most ``max_queue`` requests are in the service at once; the next gets 503 with
  ``Retry-After``; one that is not answered within ``timeout_s`` gets 504;
- the body is counted as it arrives, chunked or not, and cut off with 413 at the limit; an image
  over ``max_pixels`` (validation's limit) is 413, judged from its header before it is decoded;
- ``GET /health`` (liveness: never touches the model), ``GET /ready`` (model loaded, queue below
  its limit) and ``GET /metrics`` (Prometheus) answer at once, however full the queue;
- ``GET /labels``: the classes, and the bundle's evaluation (macro-F1 with its 95% interval, the labels behind
  it, a warning when its lower end is near chance) so a client can say how far to trust the answers;
- on SIGTERM uvicorn stops accepting connections, the requests already in finish, then it exits.

Media types are judged from the content, not the file name; bad input gets a 4xx JSON error
naming the problem, never a 500. Every error, the framework's own (404, 405) included, is
``{"error": message}``. ``/docs`` (Swagger UI) loads its scripts from this service
(``emocare/serving/swagger_ui``), not from a CDN, so it works offline; ReDoc is off.
"""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser
from starlette.requests import ClientDisconnect

from emocare.bundle import evaluation_line, evaluation_warning
from emocare.media.image import image_size_problem
from emocare.media.sniff import HEAD_BYTES, sniff
from emocare.predict import NO_MODALITY, EmoCare
from emocare.serving.config import ServeConfig
from emocare.serving.worker import ModelProcessExited, ModelWorker

SWAGGER_UI = Path(__file__).parent / "swagger_ui"  # what /docs needs, with its licence (package data)
DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
               "favicon-32x32.png": "image/png"}


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


class Prediction(BaseModel):
    """A prediction, as ``POST /predict`` answers it."""

    label: str = Field(description="the most probable class")
    probabilities: dict[str, float] = Field(description="every class of the model, with its probability (sum 1)")
    modalities: list[Literal["text", "image", "video"]] = Field(description="the modalities the prediction used")
    attribution: dict[str, float] = Field(default_factory=dict, description=(
        "per modality used: how much the label's probability falls when it is hidden (none for a single modality)"))
    ocr_text: str | None = Field(None, description="the text read from the image or video (models trained with "
                                 "text.ocr only)")


class ErrorMessage(BaseModel):
    """Every error the service answers, whatever its status."""

    error: str = Field(description="what was wrong, in words")


def _predict_body(max_text_chars: int) -> dict:
    """``POST /predict``'s OpenAPI request body (the route reads the request itself: FastAPI cannot infer it)."""
    text = {"type": "string", "maxLength": max_text_chars,
            "description": f"the post's text, at most {max_text_chars} characters (UTF-8)"}
    media = "a{} file, its type judged from its content (not its name): {}"
    return {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "additionalProperties": False, "properties": {
            "text": text,
            "image": {"type": "string", "format": "binary",
                      "description": media.format("n image", "PNG, JPEG, GIF, BMP or WebP")},
            "video": {"type": "string", "format": "binary", "description": media.format(" video", "MP4, AVI or WebM")},
        }}},
        "application/json": {"schema": {"type": "object", "properties": {"text": text}, "required": ["text"],
                                         "additionalProperties": False}},
    }}


PREDICT_ERRORS = {
    400: "malformed body: invalid JSON (or nested too deeply) or multipart, or a form field that is not valid text "
         "in its charset",
    408: "the body did not arrive within the service's body timeout",
    413: "the body is over the upload limit, the text over the text limit, or an image over the pixel limit",
    415: "neither multipart/form-data nor application/json, or an image or video upload that is not one",
    422: "nothing to score (no text, no usable media), media that cannot be decoded, a text that is not a string, "
         "or a field the request does not take (e.g. 'txt')",
    503: "the queue is full (with Retry-After), or the model process has exited",
    504: "no answer within the service's timeout",
}


def _too_long(field: str, max_chars: int) -> RequestError:
    return RequestError(413, f"{field!r} is longer than the limit of {max_chars} characters")


class _FormParser(MultiPartParser):
    """Starlette's multipart parser with the service's rules for form fields (files are untouched): a field is
    cut off once its bytes prove it over the text limit (4 per character, the most UTF-8 takes), and its bytes
    must be valid in the body's charset (UTF-8 unless it says otherwise), where Starlette would read them as Latin-1.
    """

    def __init__(self, request: Request, max_chars: int):
        super().__init__(request.headers, request.stream(), max_files=2, max_fields=8, max_part_size=4 * max_chars)
        self.max_chars = max_chars

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current_part
        if part.file is None and len(part.data) + end - start > self.max_part_size:
            raise _too_long(part.field_name, self.max_chars)  # the same message as JSON's, not Starlette's own
        super().on_part_data(data, start, end)

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                part.data.decode(self._charset)
            except UnicodeDecodeError as e:
                raise RequestError(400, f"form field {part.field_name!r} is not valid {self._charset} text "
                                        f"(byte {e.start})") from None
        super().on_part_end()


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


FORM_FIELDS = ("text", "image", "video")


def _unknown_fields(names, allowed: tuple[str, ...], where: str) -> None:
    """A misspelt field (``{"txt": ...}``) is named, rather than answered with "no usable modality"."""
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise RequestError(422, f"unknown field(s) {unknown} in the {where}: it takes only {list(allowed)}")


def _image_size_checked(data: bytes, name: str, max_pixels: int) -> None:
    """413 for an image over ``max_pixels``, from its header (nothing is decoded); a file Pillow cannot open
    is left to the decoder, whose message is the 422."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            problem = image_size_problem(img.size, max_pixels)
    except Image.DecompressionBombError as e:
        problem = f"image_too_large: {e}"
    except (OSError, ValueError):
        return
    if problem:
        raise RequestError(413, f"image upload {name!r}: {problem}")


async def _read_body(request: Request, timeout_s: float) -> None:
    """Read the whole body within ``timeout_s`` (Starlette keeps it for ``request.json()`` and the form parser);
    408 when it is late, 499 when the client left."""
    try:
        await asyncio.wait_for(request.body(), timeout_s)
    except TimeoutError:
        raise RequestError(408, f"the request body did not arrive within {timeout_s} s",
                           {"Connection": "close"}) from None
    except ClientDisconnect:
        raise RequestError(499, "the client closed the connection before its body arrived") from None


async def _read_post(request: Request, files: ExitStack, max_chars: int,
                     max_pixels: int) -> tuple[dict, dict[str, str]]:
    """The post in a request (JSON or multipart), media bytes checked by content, 4xx on bad input; and what
    messages call its temporary files.

    A video is written to a temporary folder (its decoder reads files) that ``files`` removes; that path is the
    server's business, so messages name the upload instead.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError as e:
            raise RequestError(400, f"body is not valid JSON: {e}") from e
        except RecursionError:
            raise RequestError(400, "body is not valid JSON: nested too deeply") from None
        if not isinstance(body, dict) or not isinstance(body.get("text", ""), str):
            raise RequestError(422, "JSON body must be an object with a string 'text'")
        _unknown_fields(body, ("text",), "JSON body")
        if len(body.get("text", "")) > max_chars:
            raise _too_long("text", max_chars)
        return {"text": body.get("text", "")}, {}
    if not content_type.startswith("multipart/form-data"):
        raise RequestError(415, f"unsupported content type {content_type or 'none'!r}: "
                                "use multipart/form-data or application/json")
    try:
        form: FormData = await _FormParser(request, max_chars).parse()
    except RequestError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the multipart parser rejects is the client's error
        raise RequestError(400, f"malformed multipart body: {e}") from e
    try:
        _unknown_fields(form.keys(), FORM_FIELDS, "form")
        post: dict = {"text": form.get("text") or ""}
        shown: dict[str, str] = {}
        if not isinstance(post["text"], str):
            raise RequestError(422, "'text' must be a form field, not a file")
        if len(post["text"]) > max_chars:
            raise _too_long("text", max_chars)
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
                _image_size_checked(data, upload.filename or "the image", max_pixels)
                post["image"] = data
            else:
                path = Path(files.enter_context(tempfile.TemporaryDirectory(prefix="emocare-upload-"))) / \
                    f"video.{found[1]}"
                path.write_bytes(data)
                post["video"] = str(path)
                shown[str(path)] = repr(upload.filename) if upload.filename else "the video"
        return post, shown
    finally:
        await form.close()


def create_app(model: EmoCare, cfg: ServeConfig | None = None, load_seconds: float = 0.0) -> FastAPI:
    """The service around an already loaded model: a :class:`Service`'s routes, the error handlers and ``/docs``."""
    service = Service(model, cfg or ServeConfig(), load_seconds)
    cfg = service.cfg
    app = FastAPI(title="EmoCare", description="Multimodal emotion classification of social-media posts. "
                  f"Limits: a body of at most {cfg.max_upload_bytes} bytes, a text of at most {cfg.max_text_chars} "
                  'characters (413 beyond either). Every error is a JSON object `{"error": message}`.',
                  lifespan=service.lifespan, docs_url=None, redoc_url=None)  # /docs below, its scripts served here
    app.add_middleware(_Guard, limit=cfg.max_upload_bytes, metrics=service.metrics)
    for error, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(error, handler)
    app.add_api_route("/docs", docs, include_in_schema=False)
    app.add_api_route("/docs/assets/{name}", docs_asset, include_in_schema=False)
    app.add_api_route("/health", service.health)
    app.add_api_route("/ready", service.ready)
    app.add_api_route("/metrics", service.prometheus)
    app.add_api_route("/labels", service.labels)
    app.add_api_route("/predict", service.predict, methods=["POST"], response_model=Prediction,
                      openapi_extra={"requestBody": _predict_body(cfg.max_text_chars)},
                      responses={status: {"model": ErrorMessage, "description": why}
                                 for status, why in PREDICT_ERRORS.items()},
                      summary="Classify one post", description="A post: text, an image, a video or any of them "
                      "together (multipart/form-data), or text alone (application/json). Answers the most probable "
                      "class and every class's probability.")
    return app


class Service:
    """The routes that need the model: its worker process and batcher (started and stopped by :meth:`lifespan`),
    the decoding threads, the queue's counts and the metrics."""

    def __init__(self, model: EmoCare, cfg: ServeConfig, load_seconds: float = 0.0):
        self.model, self.cfg = model, cfg
        self.metrics = Metrics()
        self.metrics.load_seconds.set(load_seconds)
        self.pool = ThreadPoolExecutor(cfg.decode_threads, thread_name_prefix="decode")
        self.inflight = self.arriving = 0  # arriving: admitted, not yet queued
        self.batcher = self.worker = None

    @asynccontextmanager
    async def lifespan(self, _: FastAPI):
        from emocare.serving.batcher import Batcher

        self.worker = ModelWorker(self.model, self.cfg.worker_nice)
        self.batcher = Batcher(self.worker.score, self.cfg.max_batch, self.cfg.max_wait_ms / 1000,
                               self.metrics.batch.observe, arriving=lambda: self.arriving)
        yield
        self.batcher.close()  # uvicorn has let the requests in flight finish
        self.worker.close()
        self.pool.shutdown()

    async def health(self) -> JSONResponse:  # the model process must be alive; the model itself is not asked
        alive = self.worker is None or self.worker.alive
        return JSONResponse({"status": "ok" if alive else "model process exited"}, 200 if alive else 503)

    async def ready(self) -> JSONResponse:
        is_ready = self.batcher is not None and self.worker.alive and self.inflight < self.cfg.max_queue
        return JSONResponse({"ready": is_ready, "queue": self.inflight, "max_queue": self.cfg.max_queue,
                             "modalities": self.model.fusion.modalities}, status_code=200 if is_ready else 503)

    async def prometheus(self) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def labels(self) -> dict:
        classes, measured = self.model.label_set, self.model.evaluation  # the bundle's classes, names and colours
        return {"labels": [{"name": c, "display": classes.display[c], "colour": classes.colours[c]} for c in classes],
                "evaluation": measured and {**measured, "summary": evaluation_line(measured),
                                            "warning": evaluation_warning(measured)}}

    async def predict(self, request: Request) -> JSONResponse:
        cfg = self.cfg
        await _read_body(request, cfg.body_timeout_s)  # before a place in the queue: a slow client holds none
        if self.inflight >= cfg.max_queue:
            raise RequestError(503, f"the service is at its limit of {cfg.max_queue} requests; retry shortly",
                               {"Retry-After": "1"})
        self.inflight += 1
        self.arriving += 1
        self.metrics.queue.set(self.inflight)
        deadline = time.monotonic() + cfg.timeout_s
        try:
            try:
                inputs, failed, shown = await self._decode(request, deadline)
            finally:
                self.arriving -= 1
            if failed:
                message = next(iter(failed.values()))
                for path, name in shown.items():
                    message = message.replace(path, name)
                raise RequestError(422, message)
            if not inputs:
                raise RequestError(422, NO_MODALITY)
            try:
                return JSONResponse(await _within(deadline, self.batcher.submit(inputs), cfg.timeout_s))
            except ModelProcessExited as e:  # not the client's fault, and /health now says so
                raise RequestError(503, str(e)) from e
        finally:
            self.inflight -= 1
            self.metrics.queue.set(self.inflight)

    async def _decode(self, request: Request, deadline: float) -> tuple[dict, dict, dict]:
        """The request's post read and decoded: the model's inputs, what failed, and the uploads' names by path."""
        with ExitStack() as files:
            post, shown = await _read_post(request, files, self.cfg.max_text_chars, self.cfg.max_pixels)
            if "image" in post or "video" in post:  # decoding media takes a while: off the event loop
                inputs, failed = await _within(deadline, asyncio.get_running_loop().run_in_executor(
                    self.pool, self.model.decode, post), self.cfg.timeout_s)
            else:
                inputs, failed = self.model.decode(post)
        return inputs, failed, shown


async def _request_error(_: Request, e: RequestError) -> JSONResponse:
    return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)


async def _http_error(_: Request, e: HTTPException) -> JSONResponse:  # the framework's own: 404, 405
    return JSONResponse({"error": e.detail}, status_code=e.status_code, headers=e.headers)


async def _validation_error(_: Request, e: RequestValidationError) -> JSONResponse:  # a route's declared parameters
    problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
    return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)


async def _server_error(_: Request, e: Exception) -> JSONResponse:
    """A bug: the client gets the same shape, the log the traceback."""
    return JSONResponse({"error": f"internal server error ({type(e).__name__})"}, status_code=500)


ERROR_HANDLERS = {RequestError: _request_error, HTTPException: _http_error,
                  RequestValidationError: _validation_error, Exception: _server_error}


async def docs(request: Request) -> HTMLResponse:
    """Swagger UI, its scripts served by :func:`docs_asset` (no CDN: it works offline)."""
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(openapi_url=root + request.app.openapi_url, title="EmoCare API",
                               swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
                               swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
                               swagger_favicon_url=f"{root}/docs/assets/favicon-32x32.png",
                               swagger_ui_parameters={"validatorUrl": None})  # else it sends the spec's URL out


async def docs_asset(name: str) -> FileResponse:
    if name not in DOCS_ASSETS:
        raise HTTPException(404, f"no docs asset {name!r}")
    return FileResponse(SWAGGER_UI / name, media_type=DOCS_ASSETS[name])


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
    for notice in model.notices:
        print(notice, file=sys.stderr)
    app = create_app(model, cfg, time.perf_counter() - started)
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=int(cfg.timeout_s) + 5,
                backlog=max(2048, cfg.max_queue * 2), access_log=cfg.access_log)
