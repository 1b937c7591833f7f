"""The labelling page's live model: logistic regression on frozen features of the posts, retrained in the
background as decisions arrive, and what it says about when to stop.

* **Features** (:class:`FeatureStore`): each post's text as the frozen text encoder embeds it (all-MiniLM-L6-v2,
  mean-pooled and normalised, the offline default; with ``text.ocr`` the text read from its image or video
  follows), computed once per post in asking order (the posts about to be asked first) and kept in chunks
  under ``<labels file>.live/``, so a restart resumes.
* **Learner** (:func:`fit`): the same logistic regression `benchmarks/active_learning.py` simulates with.
* **Evaluation** (:func:`evaluate`): macro-F1 on the random picks (the evaluation sample of
  :mod:`emocare.labelling.queue`), each scored by a model that never trained on it (5 folds by post id), with
  a bootstrap 95 % interval; the learning curve; whether the last 100 labels paid; and the last trained
  bundle's macro-F1 on the same picks (intervals from :mod:`emocare.metrics`, as the pipeline's reports:
  paired where two models are compared).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from emocare.bundle import fusion_path
from emocare.data.manifest import resolve_media
from emocare.io import atomic_path
from emocare.labelling.decisions import LabelLog, current, resolve
from emocare.labelling.queue import START, interleave, margins, rank
from emocare.labelling.store import LabelStore
from emocare.labels import LabelSet
from emocare.metrics import macro_f1, macro_f1_interval, paired_difference

C = 10.0  # inverse L2 strength; unit-norm embeddings need a weak penalty
FOLDS = 5
CURVE_STEP = 50
ENCODER = "all-MiniLM-L6-v2, mean-pooled, normalised, 128 tokens"  # in feature keys: another encoder, new features


def fit(x: np.ndarray, y: np.ndarray, k: int):
    """Logistic regression (classes balanced) on features ``x`` and class indices ``y``; a callable giving the
    probabilities of all ``k`` classes (a class not yet labelled gets 0; one class only: it always wins)."""
    present = np.unique(y)
    if len(present) < 2:
        def constant(z: np.ndarray) -> np.ndarray:
            out = np.zeros((len(z), k))
            out[:, present[0] if len(present) else 0] = 1.0
            return out
        return constant
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, max_iter=300, class_weight="balanced").fit(x, y)

    def probs(z: np.ndarray) -> np.ndarray:
        out = np.zeros((len(z), k))
        out[:, model.classes_] = model.predict_proba(z)
        return out
    return probs


def fold_of(pid: str) -> int:
    """A post's evaluation fold: fixed by its id, so a fold's models stay valid as the sample grows."""
    return int(hashlib.sha1(pid.encode()).hexdigest()[:8], 16) % FOLDS


class Evaluator:
    """Macro-F1 of the live model on the random picks, each scored by a model that never trained on it.

    A pick in fold f is scored by a model trained on the labels so far minus fold f's picks. The learning
    curve repeats that with the first n labels (in the order they were given) for n = 50, 100, ...; the
    models of a curve point are kept while their training posts are unchanged, so a retrain costs the new
    point and the current one."""

    def __init__(self, k: int):
        self.k = k
        self._models: dict[tuple, object] = {}
        self._used: dict[tuple, object] = {}

    def _model(self, x: dict[str, np.ndarray], order: list[str], labels: dict[str, int], n: int, fold: int,
               held: set[str]):
        train = [p for p in order[:n] if p not in held]
        key = (n, fold, hashlib.sha1("\n".join(train).encode()).hexdigest(), tuple(labels[p] for p in train))
        if key not in self._models:
            self._models[key] = fit(np.stack([x[p] for p in train]), np.array([labels[p] for p in train]), self.k)
        self._used[key] = self._models[key]
        return self._models[key]

    def predictions(self, x: dict[str, np.ndarray], order: list[str], labels: dict[str, int], picks: list[str],
                    n: int) -> np.ndarray:
        """Each pick's predicted class by the model of the first ``n`` labels less the pick's fold."""
        pred = np.zeros(len(picks), dtype=int)
        folds = np.array([fold_of(p) for p in picks])
        for f in range(FOLDS):
            rows = np.flatnonzero(folds == f)
            if len(rows):
                held = {picks[i] for i in rows}
                model = self._model(x, order, labels, n, f, held)
                pred[rows] = model(np.stack([x[picks[i]] for i in rows])).argmax(1)
        return pred

    def evaluate(self, x: dict[str, np.ndarray], order: list[str], labels: dict[str, int], picks: list[str],
                 bundle_pred: dict[str, int] | None = None) -> dict:
        """The figures the page shows: current macro-F1 with its interval, the curve, whether the last 100
        labels paid, and the bundle on the same picks (when ``bundle_pred`` has them)."""
        self._used: dict[tuple, object] = {}
        try:
            return self._evaluate(x, order, labels, picks, bundle_pred)
        finally:  # keep the models this evaluation used, not every one ever fitted
            self._models = self._used

    def _evaluate(self, x: dict[str, np.ndarray], order: list[str], labels: dict[str, int], picks: list[str],
                  bundle_pred: dict[str, int] | None) -> dict:
        n, y = len(order), np.array([labels[p] for p in picks])
        out: dict = {"labels": n, "random_picks": len(picks)}
        if len(picks) < FOLDS * 2 or n < 2:
            return {**out, "macro_f1": None, "curve": []}
        live = self.predictions(x, order, labels, picks, n)
        sizes = sorted({*range(CURVE_STEP, n, CURVE_STEP), n})
        curve = [(s, macro_f1(y, self.predictions(x, order, labels, picks, s), self.k)) for s in sizes]
        out.update(macro_f1=round(macro_f1(y, live, self.k), 4), interval=macro_f1_interval(y, live, self.k),
                   curve=[[s, round(f, 4)] for s, f in curve])
        if n >= 100 + CURVE_STEP:  # paired bootstrap: both models scored on each resample of the same picks
            gain = paired_difference(y, live, self.predictions(x, order, labels, picks, n - 100), self.k)
            out["last_100"] = {"gain": gain["difference"], "interval": gain["interval"],
                               "paid": gain["interval"][0] > 0}
        if bundle_pred is not None:
            scored = [i for i, p in enumerate(picks) if bundle_pred.get(p, -1) >= 0]  # -1: it could not score
            if len(scored) >= FOLDS * 2:
                yb = y[scored]
                pb = np.array([bundle_pred[picks[i]] for i in scored])
                versus = paired_difference(yb, live[scored], pb, self.k)
                out["bundle"] = {"posts": len(scored), "macro_f1": round(macro_f1(yb, pb, self.k), 4),
                                 "interval": macro_f1_interval(yb, pb, self.k),
                                 "live_minus_bundle": versus["difference"],
                                 "live_minus_bundle_interval": versus["interval"]}
        return out


class PostFeatures:
    """Each post's frozen features, kept in chunks ``<root>/<n>.npz`` (keys and rows); a post's key digests its
    id, text, media names and the encoders, so an edited post is embedded again and nothing stale is read.

    A row is the text embedding, then for each of image and video that some post has (``vision``: that
    modality's ``backbone``, ``pretrained`` and ``frames`` from params.yaml) the frozen tower's pooled features
    (zeros without that media), through :class:`emocare.media.feature_store.FeatureStore` under ``root``."""

    CHUNK = 32  # posts per encoder call and per file: small, so the next posts' features come first

    def __init__(self, root: Path, posts: dict[str, dict], posts_dir: Path, ocr: bool = False,
                 vision: dict[str, dict] | None = None):
        self.root, self.posts, self.posts_dir, self.ocr = Path(root), posts, posts_dir, ocr
        self.vision = {m: cfg for m, cfg in (vision or {}).items() if any(rec.get(m) for rec in posts.values())}
        self.media_errors: dict[str, str] = {}  # post id -> why its media gave no features (its text still counts)
        tag = json.dumps([ENCODER, ocr, sorted(self.vision.items())])
        self.keys = {pid: hashlib.sha1(json.dumps([tag, pid, rec.get("text") or "", rec.get("image"),
                                                   rec.get("video")]).encode()).hexdigest()[:20]
                     for pid, rec in posts.items()}
        by_key = {key: pid for pid, key in self.keys.items()}
        self.x: dict[str, np.ndarray] = {}
        self._encoder = None
        self._towers: dict = {}
        for chunk in sorted(self.root.glob("*.npz")):
            try:
                with np.load(chunk) as z:
                    for key, row in zip(z["keys"], z["x"], strict=True):
                        if str(key) in by_key:
                            self.x[by_key[str(key)]] = row
            except (OSError, ValueError, KeyError):  # a chunk cut short: its posts are embedded again
                continue

    def missing(self, order: list[str]) -> list[str]:
        return [p for p in order if p not in self.x]

    def _text(self, pid: str) -> str:
        rec = self.posts[pid]
        text = rec.get("text") or ""
        if self.ocr:
            from emocare.media.ocr import media_text, with_ocr

            media = next((m for m in ("image", "video") if rec.get(m)), None)
            if media:
                try:
                    text = with_ocr(text, media_text(resolve_media(self.posts_dir, rec[media]), media))
                except Exception as e:  # noqa: BLE001 - unreadable media: the post's own text still counts
                    self.media_errors[pid] = f"OCR of its {media}: {e}"
        return text

    def _tower(self, modality: str):
        """The frozen tower of ``modality`` and its feature store (loaded once)."""
        if modality not in self._towers:
            from emocare.media.feature_store import tower_store
            from emocare.models.towers import load_vision_tower
            from emocare.models.vision import VisionSpecialist

            cfg = self.vision[modality]
            tower, preprocess, dim = load_vision_tower(cfg["backbone"], cfg.get("pretrained"), offline=True)
            spec = VisionSpecialist(tower, modality, cfg["backbone"], preprocess, dim, ["_", "_"],
                                    frames=cfg.get("frames", 8), frozen=True).eval()
            self._towers[modality] = spec, tower_store(spec, self.root)  # eager fp32: the training stages' entries
        return self._towers[modality]

    def _media(self, pid: str, modality: str):
        """One post's pooled tower features of its ``modality`` (zeros without it, or when it can't be read)."""
        import torch

        spec, store = self._tower(modality)
        out = np.zeros(spec.dim, np.float32)
        if not self.posts[pid].get(modality):
            return out
        path = resolve_media(self.posts_dir, self.posts[pid][modality])
        try:
            found = store.get(path)
            if found is None:
                with torch.inference_mode():
                    found = spec.encode({"pixels": spec.decode(path).unsqueeze(0)}).float().numpy()[0]
                store.put(path, found)
        except Exception as e:  # noqa: BLE001 - an unreadable file: the post keeps its text features
            self.media_errors[pid] = f"{modality} {path}: {type(e).__name__}: {e}"
            return out
        return found / max(float(np.linalg.norm(found)), 1e-12)  # unit length, as the text embedding

    def compute(self, pids: list[str]) -> None:
        """Embed ``pids`` (at most :attr:`CHUNK`) and keep them on disk."""
        import torch

        if self._encoder is None:  # here, not at import: the first post must not wait for transformers
            from emocare.models.text import MINILM, load_text_backbone

            self._encoder = load_text_backbone(MINILM, offline=True)
        model, tokenizer = self._encoder
        with torch.inference_mode():
            enc = tokenizer([self._text(p) for p in pids], padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
            h = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            emb = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1).clamp(min=1.0), dim=1).numpy()
        rows = np.concatenate([emb] + [np.stack([self._media(p, m) for p in pids]) for m in self.vision],
                              axis=1).astype(np.float32)
        self.root.mkdir(parents=True, exist_ok=True)
        name = self.root / f"{len(list(self.root.glob('*.npz'))):06d}.npz"
        with atomic_path(name, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, keys=np.array([self.keys[p] for p in pids]), x=rows)
        self.x.update(zip(pids, rows, strict=True))


class LiveModel:
    """The live model of one labelling session: features, background retraining, the asking order, the figures.

    The posts are split once (seeded) into the evaluation sample (``random_share``, a coin each) and the rest.
    The background thread embeds posts in asking order, and after new decisions retrains on every standing
    decision on these posts (all annotators, majority label), re-ranks the rest for the next
    :data:`AHEAD` asks and evaluates. The page's requests only read what it last published."""

    AHEAD = 100

    def __init__(self, posts: dict[str, dict], posts_path: Path, log: LabelStore | LabelLog, classes: LabelSet,
                 store: Path, strategy: str, random_share: float = 0.2, seed: int = 0, ocr: bool = False,
                 models_dir: Path | None = None, vision: dict[str, dict] | None = None):
        self.posts, self.log, self.classes, self.strategy = posts, log, classes, strategy
        self.share = random_share
        rng = np.random.default_rng(seed)
        ids = list(posts)
        coin = rng.random(len(ids)) < random_share
        shuffled = [ids[i] for i in rng.permutation(len(ids))]
        self.sample = {p for p, c in zip(ids, coin, strict=True) if c}
        self.sample_order = [p for p in shuffled if p in self.sample]
        self.others_order = [p for p in shuffled if p not in self.sample]
        self.features = PostFeatures(store, posts, posts_path.parent, ocr, vision)
        self.models_dir = models_dir
        self._rng = rng
        self._evaluator = Evaluator(len(classes.names))
        self._bundle: dict[str, int] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._seen: tuple | None = None  # the decisions the published state was made from
        self.ranked: list[tuple[str, float]] = []  # the strategy's next picks and their scores
        self.trained_on = 0
        self.report: dict = {"strategy": strategy, "labels": 0, "macro_f1": None, "curve": [],
                             "features": len(self.features.x), "posts": len(posts), "error": None}

    # -- what the page asks (request threads: reads only) ------------------------------------------------
    def _tag(self, ranked: bool) -> str:
        if self.strategy == "random":
            return "random"
        return self.strategy if ranked and self.trained_on >= START else "start"

    def order(self, done: set[str]) -> Iterator[tuple[str, str, float | None]]:
        """Every post not in ``done`` as ``(id, strategy, score)`` in asking order (lazily: the page needs the
        first few)."""
        n_sample = sum(p in self.sample for p in done)
        ranked = [(p, s) for p, s in self.ranked if p not in done]
        first = {p for p, _ in ranked}
        others = itertools.chain(((p, self._tag(True), s) for p, s in ranked),
                                 ((p, self._tag(False), None) for p in self.others_order
                                  if p not in done and p not in first))
        sample = (p for p in self.sample_order if p not in done)
        for item, from_sample in interleave(sample, others, n_sample, len(done) - n_sample, self.share):
            yield (item, "random", None) if from_sample else item

    def pick(self, pid: str) -> tuple[str, float | None]:
        """The strategy that asks ``pid`` now, and its score (what the labels file records)."""
        if pid in self.sample:
            return "random", None
        ranked = dict(self.ranked)
        return (self._tag(True), ranked[pid]) if pid in ranked else (self._tag(False), None)

    def poke(self) -> None:
        """A decision arrived: retrain soon."""
        self._wake.set()

    # -- the background thread ---------------------------------------------------------------------------
    def start(self) -> LiveModel:
        """Start the background thread (once)."""
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="live-model", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception as e:  # noqa: BLE001 - the page keeps working without a live model; it says why
                self.report = {**self.report, "error": f"{type(e).__name__}: {e}"}
                busy = False
            if not busy:
                self._wake.wait(timeout=5)
                self._wake.clear()

    def step(self) -> bool:
        """One unit of background work: retrain when decisions changed, else embed the next chunk of posts (in
        asking order), else score the random picks with the bundle. False when there was nothing to do."""
        records = self.log.read()
        standing = sorted((r for (_, pid), r in current(records).items() if pid in self.posts),
                          key=lambda r: r["seq"])
        seen = tuple((r["id"], r["label"], r["annotator"]) for r in standing)
        order = list(dict.fromkeys(r["id"] for r in standing))  # first decision first: the curve's x
        asked = [p for p, _, _ in itertools.islice(self.order(set(order)), PostFeatures.CHUNK * 2)]
        missing = self.features.missing(order + asked)
        if missing:  # the labelled posts and the next ones first
            self.features.compute(missing[: PostFeatures.CHUNK])
            self.report = {**self.report, "features": len(self.features.x),
                           "media_errors": len(self.features.media_errors)}
            return True
        if seen != self._seen:
            self._retrain(records, order)
            self._seen = seen
            return True
        missing = self.features.missing(self.others_order + self.sample_order)
        if missing:
            self.features.compute(missing[: PostFeatures.CHUNK])
            self.report = {**self.report, "features": len(self.features.x)}
            self._seen = None  # more posts can be ranked now
            return True
        return self._score_bundle(order)

    def _retrain(self, records: list[dict], order: list[str]) -> None:
        names = list(self.classes.names)
        labels = {pid: names.index(r["label"]) for pid, r in resolve(records).items()
                  if pid in self.posts and r["label"] in names}
        order = [p for p in order if p in labels]
        x = self.features.x
        k = len(names)
        if order:
            model = fit(np.stack([x[p] for p in order]), np.array([labels[p] for p in order]), k)
            done = set(order)
            candidates = [p for p in self.others_order if p not in done and p in x]
            if len(order) >= START and candidates and self.strategy != "random":
                probs = model(np.stack([x[p] for p in candidates]))
                picks = rank(self.strategy, probs, np.bincount([labels[p] for p in order], minlength=k),
                             self.AHEAD, self._rng)
                unsure = margins(probs)
                self.ranked = [(candidates[i], round(float(unsure[i]), 4)) for i in picks]
            self.trained_on = len(order)
        picks = [p for p in order if p in self.sample]
        figures = self._evaluator.evaluate(x, order, labels, picks, self._bundle)
        self.report = {**self.report, **figures, "trained_on": self.trained_on, "error": None,
                       "bundle_name": str(self.models_dir) if self.models_dir else None}

    def _score_bundle(self, order: list[str]) -> bool:
        """The last trained bundle's class for each random pick not yet scored (a few at a time)."""
        if self.models_dir is None or not fusion_path(self.models_dir).is_file():
            return False
        todo = [p for p in order if p in self.sample and p not in (self._bundle or {})][:16]
        if not todo:
            return False
        from emocare.predict import EmoCare

        if not hasattr(self, "_bundle_model"):
            self._bundle_model = EmoCare.load(self.models_dir, device="cpu")
            self.report = {**self.report, "bundle_warning": self._bundle_model.demo_warning}
        names = list(self.classes.names)
        posts = [{"text": self.posts[p].get("text") or "",
                  **{m: str(resolve_media(self.features.posts_dir, self.posts[p][m]))
                     for m in ("image", "video") if self.posts[p].get(m)}} for p in todo]
        scored = dict(self._bundle or {})
        for p, result in zip(todo, self._bundle_model.predict_batch(posts), strict=True):
            scored[p] = names.index(result["label"]) if result.get("label") in names else -1
        self._bundle = scored
        self._seen = None  # evaluate again with them
        return True
