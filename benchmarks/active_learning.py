"""The labelling loop, simulated on real labelled sets: test macro-F1 against the number of labels for each
of `emocare label`'s live strategies. Prints JSON; writes it and the curves (PNG) to ``--out``.

Each set is a folder with ``labels.csv`` (id, text, label[, split]) and ``minilm.npy`` (frozen all-MiniLM-L6-v2
embeddings, mean-pooled and normalised, in ``minilm_ids.txt``'s order): the features the page's live model
uses. The test set is fixed (the ``test`` split, else 30 % by seed 0; at most ``--test`` posts); per seed the
pool is ``--pool`` other posts, their labels hidden, and a simulated annotator answers with the hidden label.
The asking order is the server's (:mod:`emocare.labelling.queue`): ``--random-share`` of the pool set aside
as the evaluation sample and interleaved from the first post, the first ``START`` posts random, then every
``--step`` labels the live model (:func:`emocare.labelling.live.fit`) is retrained and the strategy picks
the next ones. Test macro-F1 is of that same live model.

    python benchmarks/active_learning.py --data /work/data/meld --data /work/data/goemotions \\
        [--seeds 5] [--max 1000] [--step 25] [--pool 3000] [--out benchmarks/results]
    python benchmarks/active_learning.py --demo-cache cache/embeddings --max 300   # smoke test on the demo
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from emocare.io import read_json, write_json
from emocare.labelling.live import PostFeatures, fit
from emocare.labelling.queue import DEFAULT, LIVE, START, interleave, rank
from emocare.metrics import macro_f1

CHECKPOINTS = (100, 200, 300, 600)  # the rule: the default never trails random by > 0.01 here
TRAIL, LEAD = 0.01, 0.02


def live_features(folder: Path, rows: dict[str, dict], workdir: Path) -> tuple[list[str], np.ndarray]:
    """The features the page's live model computes (:class:`emocare.labelling.live.PostFeatures`: text, and the
    frozen image/video towers of params.yaml for posts with media), kept under ``workdir``."""
    import yaml

    params = yaml.safe_load(Path("params.yaml").read_text())
    vision = {m: {k: params[m][k] for k in ("backbone", "pretrained", "frames") if k in params[m]}
              for m in ("image", "video")}
    posts = {i: {"id": i, "text": r["text"], **{m: r[m] for m in ("image", "video") if r.get(m)}}
             for i, r in rows.items()}
    features = PostFeatures(workdir / folder.name, posts, folder, vision=vision)
    todo = features.missing(list(posts))
    for start in range(0, len(todo), PostFeatures.CHUNK):
        features.compute(todo[start:start + PostFeatures.CHUNK])
    if features.media_errors:
        print(f"{folder.name}: {len(features.media_errors)} posts' media unreadable (text kept)", file=sys.stderr)
    ids = list(posts)
    return ids, np.stack([features.x[i] for i in ids])


def load_set(folder: Path, test_cap: int, workdir: Path | None = None) -> dict:
    """Features, class indices, the fixed test rows and the rows a pool is drawn from."""
    rows = {r["id"]: r for r in csv.DictReader(open(folder / "labels.csv", encoding="utf-8", newline=""))}
    if workdir is None:
        ids = (folder / "minilm_ids.txt").read_text().split()
        x = np.load(folder / "minilm.npy").astype(np.float32)
    else:
        ids, x = live_features(folder, rows, workdir)
    names = sorted({rows[i]["label"] for i in ids})
    y = np.array([names.index(rows[i]["label"]) for i in ids])
    split = np.array([rows[i].get("split") or "" for i in ids])
    rng = np.random.default_rng(0)
    test = np.flatnonzero(split == "test") if (split == "test").any() else \
        rng.permutation(len(ids))[: int(0.3 * len(ids))]
    test = np.sort(rng.permutation(test)[:test_cap])
    rest = np.setdiff1d(np.arange(len(ids)), test)
    train = rest[split[rest] == "train"] if (split[rest] == "train").any() else rest
    return {"name": folder.name + ("+media" if workdir else ""), "x": x, "y": y, "classes": names, "test": test,
            "pool_from": train}


def load_demo(cache_dir: str) -> dict:
    from emocare.cache import load_cache

    cache = load_cache(cache_dir)
    return {"name": "demo", "x": cache.emb["text"].numpy(), "y": np.asarray(cache.labels),
            "classes": list(cache.label_names), "test": cache.rows("test"), "pool_from": cache.rows("train")}


def curve(data: dict, strategy: str, seed: int, sizes: list[int], pool_size: int, step: int,
          share: float) -> list[float]:
    """Test macro-F1 of the live model at each of ``sizes`` labels, asking in ``strategy``'s served order."""
    rng = np.random.default_rng(seed)
    x, y, k = data["x"], data["y"], len(data["classes"])
    pool = rng.permutation(data["pool_from"])[:pool_size]
    in_sample = rng.random(len(pool)) < share
    sample = list(pool[in_sample])  # already in random order
    others = list(pool[~in_sample])
    labelled: list[int] = []
    n_sample = 0
    out = []
    model = None
    while len(labelled) < sizes[-1] and (sample or others):
        if len(labelled) < START:
            ranked, want = others, START - len(labelled)
        else:
            model = fit(x[labelled], y[labelled], k)
            if len(labelled) in sizes:
                out.append(macro_f1(y[data["test"]], model(x[data["test"]]).argmax(1), k))
            counts = np.bincount(y[labelled], minlength=k)
            ranked = [others[i] for i in rank(strategy, model(x[others]), counts, step, rng)] if others else []
            want = step
        picks = list(itertools.islice(interleave(sample, ranked, n_sample, len(labelled) - n_sample, share), want))
        for post, from_sample in picks:
            (sample if from_sample else others).remove(post)
            labelled.append(post)
            n_sample += from_sample
    if len(out) < len(sizes):  # the last size: trained after the loop
        model = fit(x[labelled], y[labelled], k)
        out.append(macro_f1(y[data["test"]], model(x[data["test"]]).argmax(1), k))
    return out


def verdict(results: dict, info: dict) -> dict:
    """Per strategy: its worst gap to random at the checkpoints and its best lead anywhere (means over seeds,
    paired), over every set; the default is the strategy with the largest mean lead among those that never
    trail by more than 0.01 and lead by 0.02 somewhere, else ``balanced`` (the issue's rule)."""
    out = {}
    for s in LIVE:
        if s == "random" or not all(s in r for r in results.values()):
            continue
        gaps = {name: np.mean(np.array(r[s]) - np.array(r["random"]), 0) for name, r in results.items()}
        at = [float(g[info[name]["sizes"].index(n)]) for name, g in gaps.items()
              for n in CHECKPOINTS if n in info[name]["sizes"]]
        worst = min(at) if at else None  # None: a set too small to reach 100 labels
        best = max(float(g.max()) for g in gaps.values())
        out[s] = {"worst_gap_at_checkpoints": None if worst is None else round(worst, 4),
                  "best_lead": round(best, 4),
                  "mean_lead": round(float(np.mean([g.mean() for g in gaps.values()])), 4),
                  "qualifies": worst is not None and worst >= -TRAIL and best >= LEAD}
    winners = [s for s in out if out[s]["qualifies"]]
    return {"per_strategy": out, "default": max(winners, key=lambda s: out[s]["mean_lead"]) if winners
            else "balanced", "code_default": DEFAULT}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, action="append", default=[], help="a set's folder (repeat)")
    ap.add_argument("--demo-cache", help="the demo's cache/embeddings instead (its text embeddings): a smoke test")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--start", type=int, default=50, help="the first size measured")
    ap.add_argument("--max", type=int, default=1000)
    ap.add_argument("--every", type=int, default=50, help="measure every this many labels")
    ap.add_argument("--step", type=int, default=25, help="labels between retrains")
    ap.add_argument("--pool", type=int, default=3000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--random-share", type=float, default=0.2)
    ap.add_argument("--strategies", default=",".join(LIVE))
    ap.add_argument("--live-features", type=Path, metavar="WORKDIR",
                    help="compute the live model's own features (text + params.yaml's image/video towers) into "
                    "WORKDIR instead of reading minilm.npy")
    ap.add_argument("--merge", type=Path, action="append", default=[],
                    help="an earlier run's active_learning.json whose sets join this one's (same settings)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args()
    sets = [load_set(d, a.test, a.live_features) for d in a.data] + ([load_demo(a.demo_cache)] if a.demo_cache else [])
    if not sets and not a.merge:
        ap.error("give --data (or --demo-cache, or --merge)")
    strategies = a.strategies.split(",")
    sizes = list(range(a.start, a.max + 1, a.every))
    results: dict[str, dict[str, list[list[float]]]] = {}
    info = {}
    for earlier in map(read_json, a.merge):
        if (earlier["seeds"], earlier["step"], earlier["random_share"]) != (a.seeds, a.step, a.random_share):
            ap.error(f"--merge: a run with other settings ({earlier['seeds']} seeds, step {earlier['step']})")
        results.update(earlier["runs"])
        info.update(earlier["sets"])
    for data in sets:
        usable = [n for n in sizes if n <= len(data["pool_from"]) * 0.95]
        started = time.perf_counter()
        results[data["name"]] = {s: [curve(data, s, seed, usable, a.pool, a.step, a.random_share)
                                     for seed in range(a.seeds)] for s in strategies}
        info[data["name"]] = {"posts": int(len(data["y"])), "classes": data["classes"],
                              "pool": int(min(a.pool, len(data["pool_from"]))), "test": int(len(data["test"])),
                              "sizes": usable, "seconds": round(time.perf_counter() - started, 1)}
    table = {name: {s: {"mean": [round(float(v), 4) for v in np.mean(r[s], 0)],
                        "sd": [round(float(v), 4) for v in np.std(r[s], 0, ddof=1)],
                        **({"minus_random_mean": [round(float(v), 4) for v in
                                                  np.mean(np.array(r[s]) - np.array(r["random"]), 0)],
                            "minus_random_sd": [round(float(v), 4) for v in
                                                np.std(np.array(r[s]) - np.array(r["random"]), 0, ddof=1)]}
                           if "random" in r and s != "random" else {})}
                    for s in strategies} for name, r in results.items()}
    out = {"sets": info, "seeds": a.seeds, "step": a.step, "random_share": a.random_share, "start": START,
           "learner": "emocare.labelling.live.fit (logistic regression on frozen MiniLM embeddings)",
           "macro_f1": table, "runs": results}
    if "random" in strategies:
        out["verdict"] = verdict(results, info)
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "active_learning.json", out)
    plot(table, info, strategies, a.out / "active_learning.png")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))


def plot(table: dict, info: dict, strategies: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(4.2 * len(table), 3.8), dpi=100, squeeze=False)
    for ax, (name, per) in zip(axes[0], table.items(), strict=True):
        sizes = info[name]["sizes"]
        for s in strategies:
            mean, sd = np.array(per[s]["mean"]), np.array(per[s]["sd"])
            ax.plot(sizes, mean, label=s, lw=2 if s in ("random", DEFAULT) else 1)
            ax.fill_between(sizes, mean - sd, mean + sd, alpha=0.1)
        ax.set_title(f"{name} (pool {info[name]['pool']}, test {info[name]['test']})")
        ax.set_xlabel("labels")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test macro-F1 (mean ± sd over seeds)")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
