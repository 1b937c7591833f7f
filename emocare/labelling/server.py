"""``emocare label``: a page that shows one post at a time and records each decision with one keypress.

The server is the standard library's threading HTTP server (no extra dependency): the page and its script
are one file of package data (``page.html``, no CDN), the API is JSON. A decision is appended to the labels
file and fsynced (:class:`~emocare.labelling.decisions.LabelLog`) before the answer goes back, and the page
moves on only on that answer. The model's guess is never shown: an annotator who sees it tends to agree.

It binds 127.0.0.1. Every request needs the token in the URL printed at start (the page keeps it as a
same-site cookie): the page writes files and shows private posts, so neither another host nor another web
page open in the same browser may use it. Requests must also name this server as their Host (no DNS
rebinding), and changes come as JSON only (no cross-site form posts).
"""

from __future__ import annotations

import hmac
import io
import itertools
import json
import mimetypes
import secrets
import shutil
import sys
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from emocare.data.manifest import iter_manifest, resolve_media
from emocare.io import file_stamp
from emocare.labelling.decisions import LabelLog, current, last_undoable
from emocare.labelling.live import LiveModel
from emocare.labelling.queue import DEFAULT, LIVE, NEEDS_MODELS, order, uncertainty_scores
from emocare.labels import LabelSet
from emocare.media.thumbs import video_strip

COOKIE = "emocare_label_token"
META_SHOWN = ("subreddit", "created_utc", "flair", "author", "permalink")
MAX_BODY = 64 * 1024


class LabelError(ValueError):
    """A request the session refuses, with the HTTP status to answer."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Session:
    """One annotator's labelling of a posts file: the asking order, what stands, what was skipped."""

    posts_path: Path
    log: LabelLog
    classes: LabelSet
    annotator: str
    queue: list[tuple[str, str, float | None]]
    target: int
    posts: dict[str, dict] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)
    front: list[str] = field(default_factory=list)  # undone posts, asked again first
    stamp: list[int] = field(default_factory=list)  # emocare.io.file_stamp of the posts file at start
    lock: threading.RLock = field(default_factory=threading.RLock)  # one request at a time changes the session
    live: LiveModel | None = None  # the live strategies' model and order (then ``queue`` is empty)

    @classmethod
    def open(cls, posts_path: str | Path, labels_path: str | Path, classes: LabelSet, annotator: str = "anonymous",
             strategy: str = DEFAULT, random_share: float = 0.2, target: int | None = None,
             models_dir: str | Path | None = None, seed: int = 0, ocr: bool = False,
             vision: dict[str, dict] | None = None) -> Session:
        posts_path, labels_path = Path(posts_path), Path(labels_path)
        if not posts_path.is_file():
            raise FileNotFoundError(f"posts file {posts_path} not found")
        if target is not None and target < 1:
            raise ValueError(f"--target must be at least 1, not {target}")
        stamp = file_stamp(posts_path)  # before reading and scoring: a change while they run is caught too
        posts = {}
        for line in iter_manifest(posts_path):
            rec = line.record
            if rec is None:
                raise ValueError(f"{posts_path}: {line.error}")
            if "id" not in rec:
                raise ValueError(f"{posts_path}: line {line.line_no} has no id")
            if str(rec["id"]) in posts:
                raise ValueError(f"{posts_path}: line {line.line_no}: id {rec['id']!r} appears twice")
            posts[str(rec["id"])] = rec
        if strategy in LIVE:  # no bundle scoring up front: the live model ranks, in the background
            log = LabelLog(labels_path)
            live = LiveModel(posts, posts_path, log, classes, labels_path.with_name(labels_path.name + ".live"),
                             strategy, random_share, seed, ocr, Path(models_dir) if models_dir else None, vision)
            return cls(posts_path, log, classes, annotator, [], target or len(posts), posts, stamp=stamp, live=live)
        scores = None
        if strategy != "random":
            if models_dir is None or not Path(models_dir).is_dir():
                raise ValueError(NEEDS_MODELS.format(strategy=strategy))
            scores = uncertainty_scores(posts_path, Path(models_dir), labels_path)
        queue = order(list(posts), strategy, scores, random_share, seed)
        return cls(posts_path, LabelLog(labels_path), classes, annotator, queue, target or len(posts), posts,
                   stamp=stamp)

    def _check_unchanged(self) -> None:
        if file_stamp(self.posts_path) != self.stamp:
            raise LabelError(HTTPStatus.CONFLICT, f"{self.posts_path} changed since `emocare label` started: "
                                                  "restart it, so that ids and media are read again")

    def _mine(self) -> dict[str, dict]:
        """This annotator's standing decisions on this posts file's posts (the labels file may hold others)."""
        return {pid: r for (_, pid), r in current(self.log.read(), self.annotator).items() if pid in self.posts}

    def _queue(self, done: set[str]) -> Iterable[tuple[str, str, float | None]]:
        return self.live.order(done) if self.live else self.queue

    def state(self) -> dict:
        """The next post to ask about (None when every post is labelled or skipped) and the progress."""
        mine = self._mine()
        asked = itertools.chain(self.front, (i for i, _, _ in self._queue(set(mine) | self.skipped)))
        nxt = next((i for i in asked if i not in mine and i not in self.skipped), None)
        per_class = dict(Counter(r["label"] for r in mine.values()))
        if self.live:  # after the first post is chosen: loading the encoder must not delay it
            self.live.start()
        return {"post": self._show(nxt) if nxt else None, "labelled": len(mine), "target": self.target,
                "skipped": len(self.skipped), "per_class": per_class}

    def _show(self, pid: str) -> dict:
        rec = self.posts[pid]
        meta = {k: rec[k] for k in META_SHOWN if rec.get(k) not in (None, "")}
        if isinstance(meta.get("created_utc"), int | float):
            meta["created_utc"] = datetime.fromtimestamp(meta["created_utc"], UTC).strftime("%Y-%m-%d %H:%M UTC")
        return {"id": pid, "text": rec.get("text") or "", "image": bool(rec.get("image")),
                "video": bool(rec.get("video")), "meta": meta}

    def _pick(self, pid: str) -> tuple[str, float | None]:
        if self.live and pid in self.posts:
            return self.live.pick(pid)
        for i, strategy, score in self.queue:
            if i == pid:
                return strategy, score
        raise LabelError(HTTPStatus.NOT_FOUND, f"unknown post id {pid!r}: not in {self.posts_path.name}")

    def label(self, pid: str, label: str) -> dict:
        with self.lock:
            self._check_unchanged()
            strategy, score = self._pick(pid)
            if label not in self.classes.names:
                raise LabelError(HTTPStatus.UNPROCESSABLE_ENTITY,
                                 f"label {label!r} is not one of the classes {list(self.classes.names)}")
            if pid in self._mine():  # a second tab, or a page from before a restart: undo it first
                raise LabelError(HTTPStatus.CONFLICT, f"post {pid!r} is already labelled by {self.annotator}; "
                                                      "press u to undo that decision first")
            self.log.append({"id": pid, "label": label, "annotator": self.annotator, "strategy": strategy,
                             "score": score})
            self.front = [i for i in self.front if i != pid]
            if self.live:
                self.live.poke()
            return self.state()

    def skip(self, pid: str) -> dict:
        with self.lock:
            self._pick(pid)
            self.skipped.add(pid)
            return self.state()

    def undo(self) -> dict:
        with self.lock:
            self._check_unchanged()
            pid = last_undoable(self.log.read(), self.annotator, self.posts)
            if pid is None:
                raise LabelError(HTTPStatus.CONFLICT, "nothing to undo")
            self.log.append({"id": pid, "annotator": self.annotator, "undo": True})
            self.skipped.discard(pid)
            self.front.insert(0, pid)
            if self.live:
                self.live.poke()
            return self.state()

    def media(self, pid: str, kind: str) -> tuple[Path | bytes, str]:
        """A post's image or video file (its path), or ``frames`` (a strip of its video's sampled frames, JPEG)."""
        rec = self.posts.get(pid)
        field_ = "video" if kind == "frames" else kind
        if rec is None or kind not in ("image", "video", "frames") or not rec.get(field_):
            raise LabelError(HTTPStatus.NOT_FOUND, f"post {pid!r} has no {kind}")
        path = resolve_media(self.posts_path.parent, rec[field_])
        if kind == "frames":
            buf = io.BytesIO()
            video_strip(path, frames=8, px=960).save(buf, "JPEG", quality=85)
            return buf.getvalue(), "image/jpeg"
        return path, mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _handler(session: Session, token: str, host: str):
    page = files("emocare.labelling").joinpath("page.html").read_bytes()
    config = {"classes": [{"name": n, "display": session.classes.display[n], "colour": session.classes.colours[n]}
                          for n in session.classes.names], "annotator": session.annotator}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: the terminal shows what matters, not every request
            pass

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except ConnectionError:  # the page moved on while a video was still loading: nothing to answer
                self.close_connection = True

        def _send(self, status: int, body: bytes | Path, kind: str, cookie: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(body.stat().st_size if isinstance(body, Path) else len(body)))
            self.send_header("Cache-Control", "no-store")
            if cookie:
                self.send_header("Set-Cookie", f"{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict")
            self.end_headers()
            if isinstance(body, Path):
                with open(body, "rb") as f:
                    shutil.copyfileobj(f, self.wfile)
            else:
                self.wfile.write(body)

        def _json(self, status: int, obj: dict) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _run(self, action) -> None:
            try:
                result = action()
            except LabelError as e:
                return self._json(e.status, {"error": str(e)})
            except (ValueError, OSError) as e:  # unreadable media or labels file: say so, keep serving
                return self._json(400, {"error": f"{type(e).__name__}: {e}"})
            except Exception as e:  # noqa: BLE001 - a bug must not leave the page without an answer
                return self._json(500, {"error": f"{type(e).__name__}: {e}"})
            if isinstance(result, tuple):
                self._send(200, *result)
            else:
                self._json(200, result)

        def _allowed(self, given: str | None) -> bool:
            """The request names this server and carries the token (header, cookie or ``?token=``)."""
            port = self.server.server_address[1]
            hosts = {f"{h}:{port}" for h in (host, "127.0.0.1", "localhost")}
            if self.headers.get("Host") not in hosts:
                self._json(421, {"error": f"this server answers as {sorted(hosts)}, not {self.headers.get('Host')}"})
                return False
            cookie = SimpleCookie(self.headers.get("Cookie") or "")
            offered = given or self.headers.get("X-EmoCare-Token") or (cookie[COOKIE].value if COOKIE in cookie
                                                                       else "")
            if not hmac.compare_digest(offered, token):
                self._json(403, {"error": "open the URL `emocare label` printed at start (it carries the token)"})
                return False
            return True

        def do_GET(self) -> None:
            url = urlparse(self.path)
            given = parse_qs(url.query).get("token", [None])[0]
            if not self._allowed(given):
                return
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            if url.path == "/":
                self._send(200, page, "text/html; charset=utf-8", cookie=token)
            elif url.path == "/api/config":
                self._json(200, config)
            elif url.path == "/api/state":
                self._run(session.state)
            elif url.path == "/api/live":  # the live model's figures (the page's "when to stop" panel)
                self._json(200, session.live.report if session.live else {"strategy": None})
            elif len(parts) == 3 and parts[0] == "media":
                self._run(lambda: session.media(parts[1], parts[2]))
            else:
                self._json(404, {"error": f"no such page: {url.path}"})

        def do_POST(self) -> None:
            if not self._allowed(None):
                return
            if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
                return self._json(415, {"error": "send JSON (Content-Type: application/json)"})
            length = self.headers.get("Content-Length") or "0"
            if not length.isdigit() or int(length) > MAX_BODY:
                return self._json(413, {"error": f"the body must have a length of at most {MAX_BODY} bytes"})
            try:
                body = json.loads(self.rfile.read(int(length)) or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                return self._json(400, {"error": f"the body is not JSON: {e}"})
            if not isinstance(body, dict):
                return self._json(400, {"error": "the body must be a JSON object"})
            actions = {"/api/label": lambda: session.label(str(body.get("id")), str(body.get("label"))),
                       "/api/skip": lambda: session.skip(str(body.get("id"))), "/api/undo": session.undo}
            action = actions.get(urlparse(self.path).path)
            if action is None:
                return self._json(404, {"error": f"no such action: {self.path}"})
            self._run(action)

    return Handler


def serve(session: Session, host: str = "127.0.0.1", port: int = 8010) -> None:
    """Serve the labelling page until interrupted."""
    token = secrets.token_urlsafe(16)
    try:
        server = ThreadingHTTPServer((host, port), _handler(session, token, host))
    except OSError as e:
        raise RuntimeError(f"cannot listen on {host}:{port} ({e.strerror}): is another server there? try --port"
                           ) from None
    url = f"http://{host}:{server.server_address[1]}/?token={token}"
    print(f"label: {len(session.posts)} posts, annotator {session.annotator}, decisions to {session.log.path}; "
          f"open {url}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if session.live:
            session.live.stop()
