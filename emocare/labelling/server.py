"""``emocare label``: a page that shows one post at a time and records each decision with one keypress;
one server for a team.

The server is the standard library's threading HTTP server (no extra dependency): the page and its script
are one file of package data (``page.html``, no CDN), the API is JSON. A decision is written durably (a labels
database, :mod:`~emocare.labelling.store`, or a labels file, :class:`~emocare.labelling.decisions.LabelLog`)
before the answer goes back, and the page moves on only on that answer. The model's guess is never shown: an
annotator who sees it tends to agree.

Each member of the team has a link with their own token (the page keeps it as a same-site cookie named
after the port, so servers on one host keep theirs); the admin's link opens ``admin.html``: progress, pace,
agreement, the review queue (:mod:`~emocare.labelling.admin`). Posts are routed between annotators with an
overlap and leases (:mod:`~emocare.labelling.routing`). Every request needs a token: the page writes files and
shows private posts, so neither another host nor another web page open in the same browser may use it.
Requests must also name this server as their Host (no DNS rebinding), and changes come as JSON only (no
cross-site form posts). It binds 127.0.0.1 unless ``--host`` says otherwise (then put it behind TLS).
"""

from __future__ import annotations

import hmac
import io
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
from itertools import chain
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from emocare.data.manifest import iter_manifest, resolve_media
from emocare.io import file_stamp
from emocare.labelling.admin import review_queue, team_state
from emocare.labelling.decisions import AlreadyLabelled, LabelLog
from emocare.labelling.live import LiveModel
from emocare.labelling.queue import DEFAULT, LIVE, NEEDS_MODELS, order, uncertainty_scores
from emocare.labelling.routing import LEASE_S, OVERLAP, K, Router
from emocare.labelling.store import LabelStore, open_labels
from emocare.labels import LabelSet
from emocare.media.thumbs import video_strip

COOKIE = "emocare_label_token"  # + the port
TIMEOUT_S = 30
META_SHOWN = ("subreddit", "created_utc", "flair", "author", "permalink")
MAX_BODY = 64 * 1024


class LabelError(ValueError):
    """A request the session refuses, with the HTTP status to answer."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Session:
    """A team's labelling of a posts file: the asking order (the live model's, :mod:`~emocare.labelling.live`,
    one for the team; or the bundle's), the routing between annotators (:class:`~emocare.labelling.routing.Router`:
    of the posts in asking order, each annotator gets the first that is theirs), each annotator's standing
    decisions and skips. ``annotator`` is the one a request without a name speaks for (a team of one)."""

    posts_path: Path
    log: LabelStore | LabelLog
    classes: LabelSet
    annotator: str
    queue: list[tuple[str, str, float | None]]
    target: int
    posts: dict[str, dict] = field(default_factory=dict)
    router: Router | None = None
    stamp: list[int] = field(default_factory=list)  # emocare.io.file_stamp of the posts file at start
    lock: threading.RLock = field(default_factory=threading.RLock)  # one request at a time changes the session
    skipped: dict[str, set[str]] = field(default_factory=dict)  # per annotator
    front: dict[str, list[str]] = field(default_factory=dict)  # per annotator: undone posts, asked again first
    labels: dict[tuple[str, str], str] = field(default_factory=dict)  # (annotator, post) -> standing label
    members: dict[str, tuple[str, str]] = field(default_factory=dict)  # token -> (name, role)
    features: dict[str, object] = field(default_factory=dict)  # a text -> its embedding, for the review queue
    live: LiveModel | None = None  # the live strategies' model and order (then ``queue`` is empty)

    @classmethod
    def open(cls, posts_path: str | Path, labels_path: str | Path, classes: LabelSet, annotator: str = "anonymous",
             strategy: str = DEFAULT, random_share: float = 0.2, target: int | None = None,
             models_dir: str | Path | None = None, seed: int = 0, overlap: float = OVERLAP, k: int = K,
             lease_s: float = LEASE_S, ocr: bool = False, vision: dict[str, dict] | None = None) -> Session:
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
        log = open_labels(labels_path)
        live, queue = None, []
        if strategy in LIVE:  # no bundle scoring up front: the live model ranks, in the background
            live = LiveModel(posts, posts_path, log, classes, labels_path.with_name(labels_path.name + ".live"),
                             strategy, random_share, seed, ocr, Path(models_dir) if models_dir else None, vision)
        else:
            if models_dir is None or not Path(models_dir).is_dir():
                raise ValueError(NEEDS_MODELS.format(strategy=strategy))
            scores = uncertainty_scores(posts_path, Path(models_dir), labels_path)
            queue = order(list(posts), strategy, scores, random_share, seed)
        labels = {k_: v for k_, v in log.standing().items() if k_[1] in posts}
        router = Router(list(posts), labels, overlap, k, lease_s, seed)
        return cls(posts_path, log, classes, annotator, queue, target or len(posts), posts, router, stamp=stamp,
                   labels=labels, live=live)

    def __post_init__(self) -> None:
        self.picks = {pid: (how, score) for pid, how, score in self.queue}
        if self.router is None:
            self.router = Router(list(self.posts), self.labels, overlap=0)

    def _check_unchanged(self) -> None:
        if file_stamp(self.posts_path) != self.stamp:
            raise LabelError(HTTPStatus.CONFLICT, f"{self.posts_path} changed since `emocare label` started: "
                                                  "restart it, so that ids and media are read again")

    def _resync(self) -> None:
        """Read the standing decisions again: another server wrote to the same labels."""
        self.labels = {k: v for k, v in self.log.standing().items() if k[1] in self.posts}
        self.router.reset(self.labels)

    def _changed(self) -> None:
        """A decision was written or taken back: the live model retrains soon."""
        if self.live:
            self.live.poke()

    def _asked(self, who: str) -> Iterable[str]:
        """The posts in the order they are asked of ``who``: their undone posts, then the live model's order (or
        the bundle's); the router takes the first that is theirs to label. The live order leaves out the posts
        closed to ``who`` and counts them as asked, so the evaluation sample keeps its share of the team's posts."""
        front = self.front.get(who, [])
        if not self.live:
            return chain(front, (i for i, _, _ in self.queue))
        done = self.router.closed_to(who) | self.skipped.get(who, set())
        return chain(front, (i for i, _, _ in self.live.order(done)))

    def state(self, who: str | None = None) -> dict:
        """The next post to ask ``who`` (None when every post is labelled, skipped or with others) and the progress."""
        who = who or self.annotator
        with self.lock:
            nxt = self.router.next_for(who, self._asked(who), self.skipped.get(who, set()))
            per_class = Counter(label for (w, _), label in self.labels.items() if w == who)
            if self.live:  # after the first post is chosen: loading the encoder must not delay it
                self.live.start()
            return {"post": self._show(nxt) if nxt else None, "labelled": per_class.total(), "target": self.target,
                    "skipped": len(self.skipped.get(who, ())), "per_class": dict(per_class), "annotator": who}

    def _show(self, pid: str) -> dict:
        rec = self.posts[pid]
        meta = {k: rec[k] for k in META_SHOWN if rec.get(k) not in (None, "")}
        if isinstance(meta.get("created_utc"), int | float):
            meta["created_utc"] = _date(meta["created_utc"])
        return {"id": pid, "text": rec.get("text") or "", "image": bool(rec.get("image")),
                "video": bool(rec.get("video")), "meta": meta}

    def _pick(self, pid: str) -> tuple[str, float | None]:
        if pid not in self.posts:
            raise LabelError(HTTPStatus.NOT_FOUND, f"unknown post id {pid!r}: not in {self.posts_path.name}")
        return self.live.pick(pid) if self.live else self.picks[pid]

    def label(self, pid: str, label: str, who: str | None = None) -> dict:
        who = who or self.annotator
        with self.lock:
            self._check_unchanged()
            strategy, score = self._pick(pid)
            if label not in self.classes.names:
                raise LabelError(HTTPStatus.UNPROCESSABLE_ENTITY,
                                 f"label {label!r} is not one of the classes {list(self.classes.names)}")
            try:  # checked in the store, under its lock: a second tab or server is refused
                self.log.decide({"id": pid, "label": label, "annotator": who, "strategy": strategy, "score": score})
            except AlreadyLabelled:
                self._resync()
                raise LabelError(HTTPStatus.CONFLICT, f"post {pid!r} is already labelled by {who}; "
                                                      "press u to undo that decision first") from None
            self.labels[(who, pid)] = label
            self.router.decided(who, pid)
            self._changed()
            self.front[who] = [i for i in self.front.get(who, []) if i != pid]
            return self.state(who)

    def skip(self, pid: str, who: str | None = None) -> dict:
        who = who or self.annotator
        with self.lock:
            self._pick(pid)
            self.skipped.setdefault(who, set()).add(pid)
            self.router.release(who)
            return self.state(who)

    def undo(self, who: str | None = None) -> dict:
        who = who or self.annotator
        with self.lock:
            self._check_unchanged()
            pid = self.log.undo_last(who, self.posts)
            if pid is None:
                raise LabelError(HTTPStatus.CONFLICT, "nothing to undo")
            self.labels.pop((who, pid), None)
            self.router.undone(who, pid)
            self.skipped.get(who, set()).discard(pid)
            self.front.setdefault(who, []).insert(0, pid)
            self._changed()
            return self.state(who)

    def adjudicate(self, pid: str, label: str, reviewer: str) -> dict:
        """Record ``reviewer``'s label for ``pid``: what ``label export`` takes over the annotators' votes."""
        with self.lock:
            self._pick(pid)
            if label not in self.classes.names:
                raise LabelError(HTTPStatus.UNPROCESSABLE_ENTITY,
                                 f"label {label!r} is not one of the classes {list(self.classes.names)}")
            return self.log.append({"id": pid, "label": label, "annotator": reviewer, "adjudication": True})

    def add_member(self, name: str, role: str = "annotator") -> str:
        """Add ``name`` to the team; returns the token of their link (kept in a labels database, so links survive
        a restart; with a labels file, new at each start)."""
        with self.lock:
            if isinstance(self.log, LabelStore):
                token = self.log.add_annotator(name, role)
            else:
                member = LabelStore.check_member(name, role)
                token = next((t for t, m in self.members.items() if m == member), None) or secrets.token_urlsafe(16)
            self.members[token] = (name, role)
            return token

    def media(self, pid: str, kind: str) -> tuple[Path | bytes, str]:
        """A post's image or video file (its path), or ``frames`` (a strip of its video's sampled frames, JPEG)."""
        rec = self.posts.get(pid)
        field_ = "video" if kind == "frames" else kind
        if rec is None or kind not in ("image", "video", "frames") or not rec.get(field_):
            raise LabelError(HTTPStatus.NOT_FOUND, f"post {pid!r} has no {kind}")
        path = resolve_media(self.posts_path.parent, rec[field_])
        if not path.is_file():  # gone since validation, or a folder: say so (an empty 200 shows nothing)
            raise LabelError(HTTPStatus.NOT_FOUND, f"post {pid!r}: its {field_} {rec[field_]} is not a file")
        if kind == "frames":
            buf = io.BytesIO()
            video_strip(path, frames=8, px=960).save(buf, "JPEG", quality=85)
            return buf.getvalue(), "image/jpeg"
        return path, mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _date(t: float) -> str:
    """A Unix time as a UTC date; one no calendar holds (1e20) as the number it is."""
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return f"{t!r} (not a date)"


class LabelServer(ThreadingHTTPServer):
    """The standard library's threading server, with a listen backlog for a team's burst of page loads (its
    default of 5 reset 72 of 100 simultaneous connections)."""

    request_queue_size = 256
    daemon_threads = True


def _handler(session: Session, token: str | None, host: str, names: list[str] | tuple = ()):
    """The request handler; ``token`` (when given) is ``session.annotator``'s, beside the team's tokens;
    ``names``: the host names (or name:port) browsers may use for this server besides ``host``."""
    if token is not None:
        session.members[token] = (session.annotator, "annotator")
    pages = files("emocare.labelling")
    return type("Handler", (LabelHandler,), {
        "session": session, "host": host, "names": tuple(names), "page": pages.joinpath("page.html").read_bytes(),
        "admin_page": pages.joinpath("admin.html").read_bytes(),
        "timeout": TIMEOUT_S})  # a connection that sends nothing (half open, or slow on purpose) frees its thread


class LabelHandler(BaseHTTPRequestHandler):
    """The pages and the JSON API, one method per route (:data:`GETS`, :data:`ADMIN_GETS`, :data:`POSTS`,
    :data:`ADMIN_POSTS`); :func:`_handler` makes the class for one session."""

    session: Session
    host: str
    names: tuple[str, ...]
    page: bytes
    admin_page: bytes
    GETS = {"/": "page", "/api/config": "config", "/api/state": "state", "/api/live": "live"}
    ADMIN_GETS = {"/admin": "admin_page", "/api/admin/state": "team_state", "/api/admin/review": "review"}
    POSTS = {"/api/label": "label", "/api/skip": "skip", "/api/undo": "undo"}
    ADMIN_POSTS = {"/api/admin/adjudicate": "adjudicate", "/api/admin/annotators": "add_member"}

    def log_message(self, *args) -> None:  # quiet: the terminal shows what matters, not every request
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):  # the page moved on, or the client went quiet: nothing to answer
            self.close_connection = True

    def do_GET(self) -> None:
        url = urlparse(self.path)
        member = self._member(parse_qs(url.query).get("token", [None])[0])
        if member is None:
            return
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if url.path in self.GETS:
            getattr(self, f"get_{self.GETS[url.path]}")(member)
        elif len(parts) == 3 and parts[0] == "media":
            self._run(lambda: self.session.media(parts[1], parts[2]))
        elif member[1] != "admin" and (url.path == "/admin" or url.path.startswith("/api/admin/")):
            self._json(403, {"error": "the admin link opens this page"})
        elif url.path in self.ADMIN_GETS:
            getattr(self, f"get_{self.ADMIN_GETS[url.path]}")(member)
        else:
            self._json(404, {"error": f"no such page: {url.path}"})

    def do_POST(self) -> None:
        member = self._member(None)
        if member is None:
            return
        body = self._body()
        if body is None:
            return
        routes = self.POSTS | (self.ADMIN_POSTS if member[1] == "admin" else {})
        route = routes.get(urlparse(self.path).path)
        if route is None:
            return self._json(404, {"error": f"no such action: {self.path}"})
        self._run(lambda: getattr(self, f"post_{route}")(body, member[0]))

    # GET routes: each takes the member (name, role) who asks

    def get_page(self, member: tuple[str, str]) -> None:
        self._send(200, self.page, "text/html; charset=utf-8", cookie=self._token(member))

    def get_config(self, member: tuple[str, str]) -> None:
        classes = self.session.classes
        self._json(200, {"classes": [{"name": n, "display": classes.display[n], "colour": classes.colours[n]}
                                     for n in classes.names], "annotator": member[0]})

    def get_state(self, member: tuple[str, str]) -> None:
        self._run(lambda: self.session.state(member[0]))

    def get_live(self, member: tuple[str, str]) -> None:  # the live model's figures (the "when to stop" panel)
        self._json(200, self.session.live.report if self.session.live else {"strategy": None})

    def get_admin_page(self, member: tuple[str, str]) -> None:
        self._send(200, self.admin_page, "text/html; charset=utf-8", cookie=self._token(member))

    def get_team_state(self, member: tuple[str, str]) -> None:
        self._run(lambda: team_state(self.session))

    def get_review(self, member: tuple[str, str]) -> None:
        self._run(lambda: review_queue(self.session))

    # POST routes: each takes the JSON body and who sends it, and returns the answer

    def post_label(self, body: dict, who: str) -> dict:
        return self.session.label(str(body.get("id")), str(body.get("label")), who)

    def post_skip(self, body: dict, who: str) -> dict:
        return self.session.skip(str(body.get("id")), who)

    def post_undo(self, body: dict, who: str) -> dict:
        return self.session.undo(who)

    def post_adjudicate(self, body: dict, who: str) -> dict:
        return self.session.adjudicate(str(body.get("id")), str(body.get("label")), who)

    def post_add_member(self, body: dict, who: str) -> dict:
        return _link_of(self.session, str(body.get("name")), str(body.get("role") or "annotator"))

    # the plumbing

    def _cookie(self) -> str:
        return f"{COOKIE}_{self.server.server_address[1]}"  # per port: servers on one host keep their own

    def _token(self, member: tuple[str, str]) -> str:
        return next(t for t, m in self.session.members.items() if m == member)

    def _send(self, status: int, body: bytes | Path, kind: str, cookie: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(body.stat().st_size if isinstance(body, Path) else len(body)))
        self.send_header("Cache-Control", "no-store")
        if cookie:
            self.send_header("Set-Cookie", f"{self._cookie()}={cookie}; Path=/; HttpOnly; SameSite=Strict")
        self.end_headers()
        if isinstance(body, Path):
            with open(body, "rb") as f:
                shutil.copyfileobj(f, self.wfile)
        else:
            self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _run(self, action) -> None:
        """Answer what ``action`` returns: (body, kind) as is, else as JSON; its errors as JSON errors."""
        try:
            result = action()
            if isinstance(result, tuple):
                return self._send(200, *result)
        except LabelError as e:
            return self._json(e.status, {"error": str(e)})
        except (ValueError, OSError) as e:  # unreadable media or labels file: say so, keep serving
            return self._json(400, {"error": f"{type(e).__name__}: {e}"})
        except Exception as e:  # noqa: BLE001 - a bug must not leave the page without an answer
            return self._json(500, {"error": f"{type(e).__name__}: {e}"})
        self._json(200, result)

    def _member(self, given: str | None) -> tuple[str, str] | None:
        """Who sends the request (name, role): it names this server and carries a member's token (header,
        cookie or ``?token=``). Else None, answered."""
        port = self.server.server_address[1]
        hosts = {f"{h}:{port}" for h in (self.host, "127.0.0.1", "localhost", *self.names)} | set(self.names)
        if self.headers.get("Host") not in hosts:
            self._json(421, {"error": f"this server answers as {sorted(hosts)}, not {self.headers.get('Host')}"})
            return None
        cookie = SimpleCookie(self.headers.get("Cookie") or "")
        offered = (given or self.headers.get("X-EmoCare-Token")
                   or (cookie[self._cookie()].value if self._cookie() in cookie else "")).encode()
        # every token compared (in constant time each): which one matched must not show in the timing
        found = [m for t, m in list(self.session.members.items()) if hmac.compare_digest(offered, t.encode())]
        if not found:
            self._json(403, {"error": "open your link: the URL `emocare label` printed (it carries your token)"})
            return None
        return found[0]

    def _body(self) -> dict | None:
        """A POST's JSON object; else None, answered (415, 413 or 400)."""
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
        return body


def _link_of(session: Session, name: str, role: str) -> dict:
    """Add a member; their link's path (the page adds its own address)."""
    token = session.add_member(name, role)
    return {"name": name, "role": role, "path": f"{'/admin' if role == 'admin' else '/'}?token={token}"}


def serve(session: Session, host: str = "127.0.0.1", port: int = 8010, annotators: list[str] | None = None,
          admin: str = "admin", names: list[str] | tuple = ()) -> None:
    """Serve the labelling pages until interrupted: a link per annotator (``annotators``, else
    ``session.annotator`` alone) and an admin link, printed."""
    for name in annotators or [session.annotator]:
        session.add_member(name)
    session.add_member(admin, "admin")
    if isinstance(session.log, LabelStore):  # members added on the admin page at an earlier run
        session.members |= {m["token"]: (n, m["role"]) for n, m in session.log.team().items()}
    try:
        server = LabelServer((host, port), _handler(session, None, host, names))
    except OSError as e:
        raise RuntimeError(f"cannot listen on {host}:{port} ({e.strerror}): is another server there? try --port"
                           ) from None
    base = f"http://{host}:{server.server_address[1]}"
    links = [f"  {name} ({role}): open {base}{'/admin' if role == 'admin' else '/'}?token={t}"
             for t, (name, role) in session.members.items()]
    print(f"label: {len(session.posts)} posts, decisions to {session.log.path}; a link each:\n" + "\n".join(links),
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if session.live:
            session.live.stop()
