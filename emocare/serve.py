"""HTTP service: `emocare serve` (FastAPI + uvicorn, the optional ``serve`` extra).

``POST /predict`` takes multipart (a ``text`` field, optional ``image`` and ``video`` files) or
JSON ``{"text": ...}``; ``GET /health``; ``GET /labels``; OpenAPI docs at ``/docs``. Media types
are checked from the content, not the file name; bad input gets a 4xx JSON error naming the
problem. Uploads are written to a temporary folder that is removed after each request.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from emocare.labels import DISPLAY
from emocare.media.sniff import sniff
from emocare.predict import EmoCare


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create_app(model: EmoCare, max_upload_bytes: int = 20 * 1024 * 1024) -> FastAPI:
    """The service around an already loaded model."""
    app = FastAPI(title="EmoCare", description="Multimodal emotion classification of social-media posts")

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, e: RequestError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.middleware("http")
    async def _limit_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload_bytes:
            return JSONResponse({"error": f"upload of {int(length)} bytes exceeds the limit of {max_upload_bytes}"},
                                status_code=413)
        return await call_next(request)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "modalities": model.fusion.modalities}

    @app.get("/labels")
    def labels() -> dict:
        return {"labels": [{"name": c, "display": DISPLAY[c]} for c in model.labels]}

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            try:
                body = await request.json()
            except ValueError as e:
                raise RequestError(400, f"body is not valid JSON: {e}") from e
            if not isinstance(body, dict) or not isinstance(body.get("text", ""), str):
                raise RequestError(422, "JSON body must be an object with a string 'text'")
            return _run(model, {"text": body.get("text", "")})
        if not content_type.startswith("multipart/form-data"):
            raise RequestError(415, f"unsupported content type {content_type or 'none'!r}: "
                                    "use multipart/form-data or application/json")
        form = await request.form()
        with tempfile.TemporaryDirectory(prefix="emocare-upload-") as tmp:
            post: dict = {"text": form.get("text") or ""}
            if not isinstance(post["text"], str):
                raise RequestError(422, "'text' must be a form field, not a file")
            for field in ("image", "video"):
                upload = form.get(field)
                if upload is None or isinstance(upload, str):
                    continue
                data = await upload.read()
                if len(data) > max_upload_bytes:
                    raise RequestError(413, f"{field} of {len(data)} bytes exceeds the limit of {max_upload_bytes}")
                if not data:
                    raise RequestError(422, f"{field} file is empty")
                found = sniff(data[:16])
                if found is None or found[0] != field:
                    what = f"a {found[0]} ({found[1]})" if found else "not a recognised image or video"
                    raise RequestError(415, f"{field} upload {upload.filename!r} is {what}")
                path = Path(tmp) / f"{field}.{found[1]}"
                path.write_bytes(data)
                post[field] = str(path)
            return _run(model, post)

    return app


def _run(model: EmoCare, post: dict) -> dict:
    result = model.predict_batch([post])[0]
    if "error" in result:
        raise RequestError(422, result["error"])
    return result


def serve(models_dir: str, host: str, port: int, max_upload_mb: float, device: str = "auto") -> None:
    import uvicorn

    app = create_app(EmoCare.load(models_dir, device), int(max_upload_mb * 1024 * 1024))
    uvicorn.run(app, host=host, port=port)
